"""The sepconv model file: one ``.safetensors`` file with the weights and the JSON recipe that rebuilds them.

The tensors are the ``state_dict`` (parameters and buffers); the metadata holds ``{"format":
"sepconv", "version": 1, "spec": {"name", "kwargs"}, "transforms": [{"name", "kwargs"}, ...],
"sha256": ...}``. Loading rebuilds the model with :func:`sepconv.models.create_model`, replays the
recorded transforms with the functions the caller names for them (:mod:`sepconv.io.transforms`;
:func:`sepconv.load_model` passes sepconv.convert's) and loads the weights strictly. Nothing is
unpickled, so a model file cannot run code; the checksum over recipe and tensors turns bit rot or a
damaged copy into a :class:`CheckpointError` that names the file.

A file is untrusted: before anything real is built, the recipe is checked and the model it describes
is built on the ``meta`` device (:mod:`sepconv.io.recipe`), and its tensors' names, shapes and dtypes
must match the file's header. So a small file whose recipe asks for a huge model costs a header read
and a meta build (itself bounded: see :mod:`sepconv.io.recipe`), and the real build happens only for
a file that holds every byte of the weights.

Tied tensors (one tensor under several names, e.g. weight tying) are stored once per name and come
back tied because the rebuilt model ties them: :func:`save_model` refuses a model whose ties differ
from those of the model its recipe builds, and loading refuses a file whose tied names hold
different values.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sepconv.errors import ArgumentTypeError, SepconvError
from sepconv.io.atomic import PathLike, atomic_write_bytes
from sepconv.io.bounded_json import load_bounded_json
from sepconv.io.recipe import (
    MAX_RECIPE_CHARS,
    RecipeLimitError,
    TensorSpec,
    check_recipe,
    describe_spec,
    expected_tensors,
    expected_ties,
    rebuild,
    tied_names,
)
from sepconv.io.transforms import NO_TRANSFORMS, Transforms, find_transform, model_transforms

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CheckpointError",
    "load_model",
    "read_model_metadata",
    "save_model",
]

#: The format name written into every sepconv model file.
FORMAT_NAME = "sepconv"
#: The version of the model-file format this sepconv writes.
FORMAT_VERSION = 1
_METADATA_KEY = "sepconv"
# The whole recipe document (format, version, spec, transforms, checksum) around arguments that may
# nest MAX_RECIPE_DEPTH deep.
_MAX_DOCUMENT_DEPTH = 16


class CheckpointError(SepconvError, ValueError):
    """A checkpoint file that is corrupt, truncated, of another format, or that would need to run code."""


# --- saving ---------------------------------------------------------------------------------------


def save_model(
    model: nn.Module,
    path: PathLike,
    *,
    spec: Mapping[str, Any] | None = None,
    registry: Transforms = NO_TRANSFORMS,
) -> Path:
    """Save ``model`` as one safetensors file: weights plus the JSON recipe that rebuilds it.

    The recipe is the one ``create_model`` attached to the model (or ``spec``, a ``{"name",
    "kwargs"}`` dict for ``create_model``), plus the transforms recorded on it, each of which must be in
    ``registry`` (what loading can replay; :func:`sepconv.save_model` passes sepconv.convert's). The write
    is atomic. Returns the path written.
    """
    from safetensors.torch import save as safetensors_bytes

    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"model must be an nn.Module, got {type(model).__name__} {model!r:.80}")
    if spec is not None and not isinstance(spec, Mapping):
        raise ArgumentTypeError(
            f"spec must be a dict {{'name': ..., 'kwargs': {{...}}}} or None, got {spec!r:.80}"
        )
    target = _path("path", path)
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
        find_transform(registry, step["name"])
    tensors = _unshared_state(model)
    rebuild_recipe = {
        "spec": {"name": recipe["name"], "kwargs": dict(recipe["kwargs"])},
        "transforms": transforms,
    }
    _checked_json(target, "model recipe", rebuild_recipe)
    _check_ties_match_recipe(target, model, rebuild_recipe, registry)
    document = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        **rebuild_recipe,
        "sha256": _checksum(rebuild_recipe, tensors),
    }
    metadata = {_METADATA_KEY: json.dumps(document, sort_keys=True)}
    return atomic_write_bytes(target, safetensors_bytes(tensors, metadata=metadata))


def _checked_json(path: Path, label: str, value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"cannot save {path}: the {label} {value!r} is not plain JSON ({error}); build the model with "
            f"arguments that are numbers, strings, lists or dicts (e.g. act_layer='relu6', not a class)"
        ) from None


def _check_ties_match_recipe(
    path: Path, model: nn.Module, recipe: dict[str, Any], registry: Transforms
) -> None:
    """Refuse a model whose tied tensors (shared memory) differ from those its recipe's model ties.

    The file stores every name's values separately; ties come back only as the rebuilt model makes
    them. A tie made after ``create_model`` would load untied, and a tie the model undid would load
    one name's values into both: either way the loaded model would differ, so say so at save time.
    A recipe that cannot be rebuilt is left for loading to report.
    """
    try:
        # The recipe as the file stores it: create_model's tuples (widths=(4, 4)) become JSON lists,
        # which check_recipe requires; checked as given, such a model would skip this check.
        spec, transforms = check_recipe(json.loads(json.dumps(recipe)), registry=registry)
        expected = expected_ties(spec, transforms, registry=registry)
    except (TypeError, ValueError, KeyError, OverflowError, RuntimeError, NotImplementedError):
        return
    held = tied_names(model.state_dict())
    if held != expected:
        untied = [" = ".join(names) for names in held if names not in expected]
        retied = [" = ".join(names) for names in expected if names not in held]
        raise ValueError(
            f"cannot save {type(model).__name__} to {path}: a model file keeps only the ties (shared "
            f"tensors) its recipe ({describe_spec(spec)}) builds; "
            + "; ".join(
                f"{label}: {', '.join(groups)}"
                for label, groups in (
                    ("tied here but not by the recipe", untied),
                    ("tied by the recipe but not here", retied),
                )
                if groups
            )
        )


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


def _checksum(recipe: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the recipe (spec and transforms) and the names, dtypes, shapes and bytes of ``tensors``."""
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# --- loading --------------------------------------------------------------------------------------


def read_model_metadata(path: PathLike) -> dict[str, Any]:
    """The JSON recipe stored in a model file (``format``, ``version``, ``spec``, ``transforms``), checked."""
    file = Path(path)
    with _open(file) as handle:
        document = _document(file, handle)
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    _verify_checksum(file, document, tensors)
    return document


def load_model(path: PathLike, *, registry: Transforms = NO_TRANSFORMS) -> nn.Module:
    """Rebuild the model saved in ``path`` by :func:`save_model`, in eval mode, without unpickling anything.

    Checks the recipe and compares the tensors it needs with the file's header before building the
    model or reading any weight, then verifies the checksum, builds, and loads the weights strictly.
    Any problem is a one-line :class:`CheckpointError` naming the file. The recipe's conversion steps
    are replayed by ``registry``'s functions of their names (:func:`sepconv.load_model` passes
    sepconv.convert's); without one, a file with steps is refused.
    """
    file = _path("path", path)
    with _open(file) as handle:
        document = _document(file, handle)
        try:
            spec, transforms = check_recipe(document, registry=registry)
        except ValueError as error:
            raise CheckpointError(f"{file}: {error}") from None
        stored = {name: _header_spec(handle, name) for name in handle.keys()}  # noqa: SIM118
        _check_tensors_fit(file, spec, _expected(file, spec, transforms, registry), stored)
        tensors = {name: handle.get_tensor(name) for name in stored}
    _verify_checksum(file, document, tensors)
    model = rebuild(spec, transforms, registry=registry)
    _check_tied_values(file, model, tensors)
    model.load_state_dict(tensors, strict=True)
    return model.eval()


def _path(name: str, value: Any) -> Path:
    """``value`` as a Path if it is a str or an ``os.PathLike``, else a TypeError naming ``name``."""
    if not isinstance(value, str | os.PathLike):
        raise ArgumentTypeError(f"{name} must be a file path (str or os.PathLike), got {value!r:.80}")
    if not os.fspath(value).strip():
        raise ValueError(f"{name} must be a file path, got {value!r}")
    return Path(value)


def _check_tied_values(file: Path, model: nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    """Names the rebuilt model ties share one tensor, so the file must hold the same values for each."""
    for names in tied_names(model.state_dict()):
        first = tensors[names[0]]
        differing = [name for name in names[1:] if not torch.equal(tensors[name], first)]
        if differing:
            raise CheckpointError(
                f"{file}: the model ties {', '.join(names)} (one shared tensor), but the file holds "
                f"different values for {names[0]} and {', '.join(differing)}"
            )


def _open(file: Path) -> Any:
    """The file's safetensors handle (a context manager), or a CheckpointError for a damaged file."""
    from safetensors import SafetensorError, safe_open

    if not file.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {file}")
    if file.suffix.lower() == ".onnx":
        raise CheckpointError(_onnx_given(file))
    size = file.stat().st_size
    # The smallest safetensors file is 10 bytes: the 8-byte header length and the header "{}".
    if size < 10:
        raise CheckpointError(f"{_not_ours(file)}: it is {size} bytes long, truncated or empty")
    try:
        # Reads and validates the header only (offsets must cover the file exactly); data stays on disk.
        return safe_open(file, framework="pt", device="cpu")
    except SafetensorError as error:
        if _looks_like_onnx(file):
            raise CheckpointError(_onnx_given(file)) from None
        raise CheckpointError(f"{_not_ours(file)}: {' '.join(str(error).split())}") from None


def _onnx_given(file: Path) -> str:
    return (
        f"{file} is an ONNX file (as sepconv export writes), not a sepconv model file: run it with "
        f"'sepconv evaluate {file}' or sepconv.deploy.OnnxModel; commands that take a MODEL (summary, "
        f"bench, convert, compare, export, optimize) need the .safetensors model file it was exported from"
    )


def _looks_like_onnx(file: Path) -> bool:
    """Whether ``file`` starts as an ONNX ModelProto does: ir_version (field 1), then producer_name (field 2)."""
    with file.open("rb") as handle:
        start = handle.read(3)
    return len(start) == 3 and start[0] == 0x08 and start[1] < 0x80 and start[2] == 0x12


def _not_ours(file: Path) -> str:
    return f"{file} is not a sepconv model file (a .safetensors file written by sepconv.save_model)"


def _document(file: Path, handle: Any) -> dict[str, Any]:
    """The recipe document from the header's metadata, with its format and version checked."""
    raw = (handle.metadata() or {}).get(_METADATA_KEY)
    if raw is None:
        raise CheckpointError(f"{_not_ours(file)}: it has no sepconv recipe in its metadata")
    try:
        document = load_bounded_json(
            raw,
            what=f"{file}: its sepconv recipe",
            max_chars=MAX_RECIPE_CHARS,
            max_depth=_MAX_DOCUMENT_DEPTH,
        )
    except ValueError as error:
        raise CheckpointError(str(error)) from None
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{_not_ours(file)}: unexpected recipe {document!r:.300}")
    if document.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{file} has sepconv format version {document.get('version')!r}; this sepconv reads version "
            f"{FORMAT_VERSION} (a newer sepconv may have written it)"
        )
    return document


def _header_spec(handle: Any, name: str) -> tuple[tuple[int, ...], str]:
    view = handle.get_slice(name)  # header only: no tensor data is read
    return tuple(view.get_shape()), view.get_dtype()


def _expected(
    file: Path, spec: dict[str, Any], transforms: list[dict[str, Any]], registry: Transforms
) -> dict[str, TensorSpec]:
    try:
        return expected_tensors(spec, transforms, registry=registry)
    except RecipeLimitError as error:
        raise CheckpointError(f"{file}: {error}") from None
    except (TypeError, ValueError, KeyError, OverflowError, RuntimeError, NotImplementedError) as error:
        # The builders' argument errors, and torch's for sizes no tensor can have, on the meta device.
        message = " ".join(str(error).split())[:300]
        raise CheckpointError(
            f"{file}: cannot build the model its recipe describes ({describe_spec(spec)}): {message}"
        ) from error


def _check_tensors_fit(
    file: Path,
    spec: dict[str, Any],
    expected: dict[str, TensorSpec],
    stored: dict[str, tuple[tuple[int, ...], str]],
) -> None:
    """Raise a one-line CheckpointError unless the file holds exactly the tensors the recipe's model needs."""
    needed = sum(math.prod(shape) for shape, _ in expected.values())
    held = sum(math.prod(shape) for shape, _ in stored.values())
    if needed != held:
        raise CheckpointError(
            f"{file}: its recipe ({describe_spec(spec)}) builds a model with {len(expected)} tensors of "
            f"{needed:,} values, but the file holds {len(stored)} tensors of {held:,} values"
        )
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    mismatched = [
        f"{name}: file {tuple(stored[name][0])} vs model {expected[name][0]}"
        for name in sorted(set(expected) & set(stored))
        if tuple(stored[name][0]) != expected[name][0]
    ]
    mismatched += [
        f"{name}: file {stored[name][1]} vs model {str(expected[name][1]).removeprefix('torch.')}"
        for name in sorted(set(expected) & set(stored))
        if _dtype_kind(stored[name][1]) != _torch_dtype_kind(expected[name][1])
    ]
    problems = [
        f"{label} ({len(items)}): {', '.join(items[:5])}{', ...' if len(items) > 5 else ''}"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
        if items
    ]
    if problems:
        raise CheckpointError(f"{file}: weights do not fit the rebuilt model; " + "; ".join(problems))


def _dtype_kind(safetensors_dtype: str) -> str:
    # safetensors names: F64, F32, F16, BF16, F8_E4M3, ..., I64 ... I8, U64 ... U8, BOOL, C64.
    # Only the kind must match: a model saved in half precision loads (upcast) into the float32 build.
    if safetensors_dtype == "BOOL":
        return "bool"
    if safetensors_dtype.startswith(("F", "BF")):
        return "float"
    if safetensors_dtype.startswith("C"):
        return "complex"
    return "integer"


def _torch_dtype_kind(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "bool"
    if dtype.is_floating_point:
        return "float"
    return "complex" if dtype.is_complex else "integer"


def _verify_checksum(file: Path, document: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> None:
    recipe = {"spec": document.get("spec"), "transforms": document.get("transforms")}
    if _checksum(recipe, tensors) != document.get("sha256"):
        raise CheckpointError(
            f"{file} is corrupt: its recipe or weights do not match the checksum stored with them"
        )
