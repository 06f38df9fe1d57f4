"""Checkpoints that are safe to load and hard to break: model files, training state, atomic writes.

A model file is one ``.safetensors`` file: the ``state_dict`` (parameters and buffers) as tensors, and
in its metadata a JSON recipe, ``{"format": "sepconv", "version": 1, "spec": {"name", "kwargs"},
"transforms": [{"name", "kwargs"}, ...], "sha256": ...}``. Loading rebuilds the model with
:func:`sepconv.models.create_model`, applies the recorded post-build transforms (conversions such as
``to_separable`` register themselves with :func:`register_transform`), then loads the weights
strictly. Nothing is unpickled, so a model file cannot run code; the checksum over recipe and tensors
turns bit rot or a damaged copy into a :class:`CheckpointError` that names the file.

Training state (optimizer, scheduler, epoch, step, RNG states) is a ``torch.save`` payload behind a
small header with its SHA-256, read back only with ``torch.load(weights_only=True)``.

Every file is written atomically (:func:`atomic_write_bytes`): a reader sees the old file or the new
one, never half of one, even if the process dies mid-write.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import io
import json
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CheckpointError",
    "atomic_write_bytes",
    "capture_rng_state",
    "list_transforms",
    "load_model",
    "load_training_state",
    "model_transforms",
    "read_model_metadata",
    "record_transform",
    "register_transform",
    "restore_rng_state",
    "save_model",
    "save_training_state",
]

FORMAT_NAME = "sepconv"
FORMAT_VERSION = 1
_METADATA_KEY = "sepconv"
_STATE_MAGIC = b"SEPCONV-TRAINING-STATE\x00v1\n"
_DIGEST_BYTES = 32

Transform = Callable[..., nn.Module]
_TRANSFORMS: dict[str, Transform] = {}

PathLike = str | os.PathLike[str]


class CheckpointError(ValueError):
    """A checkpoint file that is corrupt, truncated, of another format, or that would need to run code."""


# --- post-build transforms ------------------------------------------------------------------------


def register_transform(name: str) -> Callable[[Transform], Transform]:
    """Decorator registering ``fn(model, **kwargs) -> model`` as the transform ``name``.

    A conversion that changes a model's structure (``to_separable``) registers itself here and
    records itself on the models it returns (:func:`record_transform`), so :func:`load_model` can
    rebuild the converted structure before loading its weights. Duplicate names are an error.
    """

    def decorate(transform: Transform) -> Transform:
        if name in _TRANSFORMS:
            raise ValueError(
                f"a transform named {name!r} is already registered ({_TRANSFORMS[name].__module__})"
            )
        _TRANSFORMS[name] = transform
        return transform

    return decorate


def list_transforms() -> list[str]:
    """Names of the registered transforms (after importing :mod:`sepconv.convert`, if present)."""
    _import_conversions()
    return sorted(_TRANSFORMS)


def model_transforms(model: nn.Module) -> list[dict[str, Any]]:
    """The transforms applied to ``model`` since ``create_model``, oldest first (``[]`` if none)."""
    return [dict(step) for step in getattr(model, "_sepconv_transforms", [])]


def record_transform(model: nn.Module, source: nn.Module, name: str, **kwargs: Any) -> nn.Module:
    """Mark ``model`` as ``source`` transformed by ``name(**kwargs)``: copies the recipe, appends the step.

    >>> from sepconv.models import create_model, model_spec
    >>> source = create_model("separable_cnn", widths=(4, 4, 4, 4))
    >>> converted = record_transform(nn.Sequential(), source, "example", factor=2)
    >>> model_spec(converted)["name"], model_transforms(converted)
    ('separable_cnn', [{'name': 'example', 'kwargs': {'factor': 2}}])
    """
    spec = getattr(source, "_sepconv_spec", None)
    if spec is not None:
        model._sepconv_spec = {"name": spec["name"], "kwargs": dict(spec["kwargs"])}
    model._sepconv_transforms = [*model_transforms(source), {"name": name, "kwargs": dict(kwargs)}]
    return model


def _import_conversions() -> None:
    # Conversions register their transforms when imported; import them lazily so that this module
    # does not depend on sepconv.convert (which sits above it), and only if it exists.
    if importlib.util.find_spec("sepconv.convert") is not None:
        importlib.import_module("sepconv.convert")


def _transform(name: str) -> Transform:
    if name not in _TRANSFORMS:
        _import_conversions()
    if name not in _TRANSFORMS:
        known = ", ".join(sorted(_TRANSFORMS)) or "none"
        raise ValueError(
            f"unknown transform {name!r} (registered: {known}); register it with register_transform"
        )
    return _TRANSFORMS[name]


# --- atomic writes --------------------------------------------------------------------------------


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix.

    Writes a temporary file in the same folder, flushes and fsyncs it, renames it over ``path``
    (``os.replace`` is atomic on one file system) and fsyncs the folder so the rename survives a
    crash. Creates missing parent folders. Returns ``path``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)
    return target


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":  # Windows cannot open a folder for fsync; its rename is durable enough
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# --- model files ----------------------------------------------------------------------------------


def _checksum(recipe: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the recipe (spec and transforms) and the names, dtypes, shapes and bytes of ``tensors``."""
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _checked_json(path: Path, label: str, value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"cannot save {path}: the {label} {value!r} is not plain JSON ({error}); build the model with "
            f"arguments that are numbers, strings, lists or dicts (e.g. act_layer='relu6', not a class)"
        ) from None


def save_model(model: nn.Module, path: PathLike, *, spec: Mapping[str, Any] | None = None) -> Path:
    """Save ``model`` as one safetensors file: weights plus the JSON recipe that rebuilds it.

    The recipe is the one ``create_model`` attached to the model (or ``spec``, a ``{"name",
    "kwargs"}`` dict for ``create_model``), plus the transforms recorded on it. The write is atomic.
    Returns the path written.
    """
    from safetensors.torch import save as safetensors_bytes

    target = Path(path)
    recipe = dict(spec) if spec is not None else getattr(model, "_sepconv_spec", None)
    if recipe is None:
        raise ValueError(
            f"cannot save {type(model).__name__} to {target}: it has no recipe to rebuild it from; build "
            f"it with sepconv.models.create_model(name, **kwargs), or pass "
            f"spec={{'name': ..., 'kwargs': {{...}}}}"
        )
    if set(recipe) != {"name", "kwargs"} or not isinstance(recipe["name"], str):
        raise ValueError(f"spec must be a dict with keys 'name' (str) and 'kwargs' (dict), got {recipe!r}")
    transforms = model_transforms(model)
    for step in transforms:
        _transform(step["name"])
    tensors = _unshared_state(model)
    rebuild = {"spec": {"name": recipe["name"], "kwargs": dict(recipe["kwargs"])}, "transforms": transforms}
    _checked_json(target, "model recipe", rebuild)
    document = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        **rebuild,
        "sha256": _checksum(rebuild, tensors),
    }
    metadata = {_METADATA_KEY: json.dumps(document, sort_keys=True)}
    return atomic_write_bytes(target, safetensors_bytes(tensors, metadata=metadata))


def _unshared_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict as contiguous CPU tensors that share no memory (safetensors refuses shared ones)."""
    tensors: dict[str, torch.Tensor] = {}
    seen_storages: set[int] = set()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        storage = tensor.untyped_storage().data_ptr()
        if tensor.numel() and storage in seen_storages:
            tensor = tensor.clone()
            storage = tensor.untyped_storage().data_ptr()
        seen_storages.add(storage)
        tensors[name] = tensor
    return tensors


def _read_model_file(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from safetensors.torch import load as safetensors_load

    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    data = path.read_bytes()
    not_ours = f"{path} is not a sepconv model file (a .safetensors file written by sepconv.save_model)"
    if len(data) < 8:
        raise CheckpointError(f"{not_ours}: it is {len(data)} bytes long, truncated or empty")
    header_size = int.from_bytes(data[:8], "little")
    if header_size > len(data) - 8:
        raise CheckpointError(f"{not_ours}: its header claims {header_size} bytes but the file is truncated")
    try:
        header = json.loads(data[8 : 8 + header_size])
        tensors = safetensors_load(data)
    except Exception as error:  # safetensors raises its own error type (and others) for any damage
        raise CheckpointError(f"{not_ours}: {' '.join(str(error).split())}") from None
    raw = header.get("__metadata__", {}).get(_METADATA_KEY) if isinstance(header, dict) else None
    if raw is None:
        raise CheckpointError(f"{not_ours}: it has no sepconv recipe in its metadata")
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: its sepconv recipe is not valid JSON ({error})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{not_ours}: unexpected recipe {document!r}")
    if document.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has sepconv format version {document.get('version')!r}; this sepconv reads version "
            f"{FORMAT_VERSION} (a newer sepconv may have written it)"
        )
    rebuild = {"spec": document.get("spec"), "transforms": document.get("transforms")}
    if _checksum(rebuild, tensors) != document.get("sha256"):
        raise CheckpointError(
            f"{path} is corrupt: its recipe or weights do not match the checksum stored with them"
        )
    return document, tensors


def read_model_metadata(path: PathLike) -> dict[str, Any]:
    """The JSON recipe stored in a model file (``format``, ``version``, ``spec``, ``transforms``), checked."""
    return _read_model_file(Path(path))[0]


def load_model(path: PathLike) -> nn.Module:
    """Rebuild the model saved in ``path`` by :func:`save_model`, in eval mode, without unpickling anything.

    Builds the architecture from the stored recipe, applies the stored transforms, and loads the
    weights strictly: a missing, extra or differently shaped tensor is a :class:`CheckpointError`.
    """
    from sepconv.models import create_model

    file = Path(path)
    document, tensors = _read_model_file(file)
    spec, transforms = document["spec"], document.get("transforms", [])
    try:
        model = create_model(spec["name"], **spec["kwargs"])
        for step in transforms:
            model = _transform(step["name"])(model, **step["kwargs"])
    except (TypeError, ValueError, KeyError) as error:
        raise CheckpointError(
            f"{file}: cannot rebuild the model from its recipe {spec!r}: {error}"
        ) from error
    model._sepconv_spec = {"name": spec["name"], "kwargs": dict(spec["kwargs"])}
    model._sepconv_transforms = [dict(step) for step in transforms]
    _load_strict(model, tensors, file)
    return model.eval()


def _load_strict(model: nn.Module, tensors: dict[str, torch.Tensor], file: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = [
        f"{name}: file {tuple(tensors[name].shape)} vs model {tuple(expected[name].shape)}"
        for name in sorted(set(expected) & set(tensors))
        if tensors[name].shape != expected[name].shape
    ]
    problems = [
        f"{label} ({len(items)}): {', '.join(items[:5])}{', ...' if len(items) > 5 else ''}"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
        if items
    ]
    if problems:
        raise CheckpointError(f"{file}: weights do not fit the rebuilt model; " + "; ".join(problems))
    model.load_state_dict(tensors, strict=True)


# --- training state -------------------------------------------------------------------------------


def save_training_state(path: PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) atomically, with a SHA-256 to check on load.

    Only what ``torch.load(weights_only=True)`` accepts may go in (optimizer and scheduler
    ``state_dict()``, ``torch.get_rng_state()``, ints); anything else is a ValueError here, at save
    time, rather than a checkpoint that cannot be resumed from.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    try:
        torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu")
    except Exception as error:
        raise ValueError(
            f"cannot save training state to {path}: it holds objects that safe loading refuses "
            f"({' '.join(str(error).split())[:300]}); store plain tensors, numbers, strings, lists and dicts"
        ) from None
    return atomic_write_bytes(path, _STATE_MAGIC + hashlib.sha256(payload).digest() + payload)


def load_training_state(path: PathLike) -> dict[str, Any]:
    """Read a state written by :func:`save_training_state`; never runs code from the file.

    A file that is truncated, altered, of another format, or that would need arbitrary objects
    (a malicious pickle) is a :class:`CheckpointError` naming the file.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"training state file not found: {file}")
    data = file.read_bytes()
    header_size = len(_STATE_MAGIC) + _DIGEST_BYTES
    if not data.startswith(_STATE_MAGIC):
        kind = "empty" if not data else "not a sepconv training state (written by save_training_state)"
        raise CheckpointError(f"{file} is {kind}")
    payload = data[header_size:]
    if len(data) < header_size or hashlib.sha256(payload).digest() != data[len(_STATE_MAGIC) : header_size]:
        raise CheckpointError(f"{file} is corrupt or truncated: its contents do not match their checksum")
    try:
        state = torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu")
    except Exception as error:  # weights_only refuses anything but tensors and plain containers
        message = " ".join(str(error).split())[:300]
        raise CheckpointError(
            f"{file}: refused to load (it holds objects that could run code): {message}"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: expected a dict of training state, got {type(state).__name__}")
    return state


def capture_rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's global and torch's (CPU and CUDA) random generators, in a form
    that :func:`save_training_state` accepts (tensors, ints and lists only), for exact resumption.
    """
    import random

    import numpy as np

    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [
            kind,
            torch.from_numpy(keys.astype(np.int64)),
            int(position),
            int(has_gauss),
            float(cached),
        ],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Put back the generator states captured by :func:`capture_rng_state`.

    >>> saved = capture_rng_state(); first = torch.rand(1)
    >>> restore_rng_state(saved); torch.equal(torch.rand(1), first)
    True
    """
    import random

    import numpy as np

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
