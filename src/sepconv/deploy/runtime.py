"""Run an exported model with ONNX Runtime: raw logits, or predictions from images.

:class:`OnnxModel` wraps one ``onnxruntime.InferenceSession`` (CPU) and the metadata sepconv stored
in the file (input size, normalization, class names), so a deployed model needs nothing but the file.
The file is untrusted: that metadata is parsed within a size and depth bound and checked against the
graph (one mean and one std > 0 per input channel, one class name per output) when the file is opened.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
from torch import nn

from sepconv.checks import describe_integer
from sepconv.deploy.metadata import METADATA_KEY, ExportError, check_metadata, parse_metadata
from sepconv.errors import ParameterError

__all__ = ["DeployedModel", "OnnxModel", "deployed_accuracy"]


class DeployedModel:
    """What :class:`OnnxModel` and :class:`~sepconv.deploy.OpenVinoModel` share: an exported model file
    with sepconv's metadata, run on the CPU.

    Subclasses set ``path``, ``threads`` and ``metadata`` and implement :meth:`_run` (the engine's
    forward pass) and :meth:`bind`; this class gives them the rest of a deployed model's face: the
    stored input size, normalization and class names, logits for a tensor or an array,
    :meth:`predict` on raw images and :meth:`as_module`.
    """

    path: Path
    threads: int
    metadata: dict[str, Any]

    def _graph_input_size(self) -> tuple[int, ...] | None:
        """``(C, H, W)`` from the graph's input shape, or None where it is not fixed."""
        return None

    @property
    def input_size(self) -> tuple[int, ...] | None:
        """``(channels, height, width)`` the model was exported for (from the metadata or the graph)."""
        stored = self.metadata.get("input_size")
        if stored:
            return tuple(int(value) for value in stored)
        return self._graph_input_size()

    @property
    def class_names(self) -> list[str] | None:
        """The class names stored in the file's metadata at export; None when none were stored."""
        return self.metadata.get("class_names")

    @property
    def mean(self) -> list[float] | None:
        """The per-channel input mean stored at export (to normalize images); None when none was stored."""
        return self.metadata.get("mean")

    @property
    def std(self) -> list[float] | None:
        """The per-channel input standard deviation stored at export; None when none was stored."""
        return self.metadata.get("std")

    @overload
    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...
    @overload
    def __call__(self, images: np.ndarray) -> np.ndarray: ...
    def __call__(self, images: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Logits for a batch ``(N, C, H, W)`` of already-normalized float images (a tensor for a tensor)."""
        as_tensor = isinstance(images, torch.Tensor)
        array = (
            images.detach().cpu().float().numpy()
            if isinstance(images, torch.Tensor)
            else np.asarray(images, dtype=np.float32)
        )
        if array.ndim != 4:
            raise ValueError(f"images must be a batch (N, C, H, W), got shape {array.shape}")
        expected = self.input_size
        if expected is not None and tuple(array.shape[1:]) != tuple(expected):
            raise ValueError(
                f"images must have shape (N, {', '.join(map(str, expected))}), got {array.shape}"
            )
        logits = self._run(np.ascontiguousarray(array))
        return torch.from_numpy(logits) if as_tensor else logits

    def _run(self, array: np.ndarray) -> np.ndarray:
        """The model's first output for a checked, contiguous float32 batch."""
        raise NotImplementedError

    def bind(self, images: torch.Tensor | np.ndarray) -> Callable[[], Any]:
        """A call without arguments that runs the model on ``images`` and returns its first output."""
        raise NotImplementedError

    def predict(self, images: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Class indices and softmax probabilities for raw images.

        ``images``: one image ``(C, H, W)`` or a batch ``(N, C, H, W)``, either ``uint8`` in 0..255 or
        floats in [0, 1]; the stored mean and std (the training normalization) are applied here.
        Floats outside [0, 1] (0-255 images not yet divided by 255, or already-normalized ones: call
        the model itself for those), NaN and other dtypes are refused with a ValueError.
        """
        batch = torch.as_tensor(images)
        if batch.ndim == 3:
            batch = batch.unsqueeze(0)
        if batch.dtype == torch.uint8:
            batch = batch.float() / 255.0
        elif batch.is_floating_point():
            batch = batch.float()
            if batch.numel() and not bool(torch.isfinite(batch).all()):
                raise ValueError(
                    "images hold NaN or infinite values; predict takes uint8 in 0..255 or floats in [0, 1]"
                )
            if batch.numel() and (float(batch.min()) < 0.0 or float(batch.max()) > 1.0):
                raise ValueError(
                    f"images are floats in [{float(batch.min()):g}, {float(batch.max()):g}]; predict takes floats in "
                    f"[0, 1] or uint8 in 0..255 (divide 0-255 floats by 255; call the model itself on images "
                    f"already normalized)"
                )
        else:
            raise ValueError(
                f"images have dtype {str(batch.dtype).removeprefix('torch.')}; predict takes uint8 in 0..255 or "
                f"floats in [0, 1]"
            )
        if self.mean is not None and self.std is not None:
            from sepconv.data.splits import normalize

            batch = normalize(batch, self.mean, self.std)
        probabilities = torch.softmax(self(batch), dim=1)
        return probabilities.argmax(dim=1), probabilities

    def as_module(
        self, *, input_mean: list[float] | None = None, input_std: list[float] | None = None
    ) -> nn.Module:
        """This model as an inference-only ``nn.Module`` (for code that takes modules: evaluation).

        Given ``input_mean``/``input_std``, the module takes images normalized with them (a data set's)
        and feeds the model the same images under the file's stored normalization, as :meth:`predict`
        would: so evaluating on a data set measures the file as it is deployed. Without them, or for a
        file that stores no normalization, the images go in as given.
        """
        if (input_mean is None) != (input_std is None):
            raise ValueError("input_mean and input_std must be given together (a data set's normalization)")
        renormalize = None
        if input_mean is not None and self.mean is not None and self.std is not None:
            channels = len(self.mean)
            for name, values in (("input_mean", input_mean), ("input_std", input_std)):
                if len(values) != channels:  # type: ignore[arg-type]
                    raise ValueError(
                        f"{name} has {len(values)} values but {self.path} stores a normalization for "  # type: ignore[arg-type]
                        f"{channels} input channels"
                    )
            renormalize = (list(input_mean), list(input_std), self.mean, self.std)  # type: ignore[arg-type]
        return _DeployedModule(self, renormalize)


class OnnxModel(DeployedModel):
    """An exported ``.onnx`` file, ready to run on the CPU with ``threads`` intra-op threads.

    ``model(images)`` returns the logits (a tensor for a tensor, an array for an array);
    ``model.predict(images)`` normalizes raw images with the stored mean/std first and returns class
    indices and probabilities. ``threads`` defaults to torch's thread count, so ONNX Runtime and PyTorch
    are compared on the same cores. ``spin_wait=False`` parks ONNX Runtime's idle threads instead of
    letting them spin between calls: spinning saves ~6% of a call but, on a small CPU shared with
    PyTorch, steals its cores (measured on 2 cores: a 2.2 ms torch forward took 3.4-7.0 ms beside a
    spinning session). Turn it on for a process that only serves this model.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, threads: int | None = None, spin_wait: bool = False
    ) -> None:
        import onnxruntime

        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"ONNX model file not found: {file}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ParameterError(
                f"threads must be {describe_integer(1)} or None, got {threads!r}", param="threads"
            )
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not spin_wait:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise
        try:
            self.session = onnxruntime.InferenceSession(
                str(file), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # ORT raises its own exception types for a file it cannot read
            detail = " ".join(str(error).split())
            raise ExportError(f"{file} is not an ONNX model ONNX Runtime can load: {detail[:300]}") from None
        self.path = file
        self.threads = options.intra_op_num_threads
        self.input_name = self.session.get_inputs()[0].name
        self.metadata: dict[str, Any] = _read_metadata(self.session, file)

    def _graph_input_size(self) -> tuple[int, ...] | None:
        shape = self.session.get_inputs()[0].shape[1:]
        return tuple(shape) if all(isinstance(value, int) for value in shape) else None

    def _run(self, array: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: array})[0]

    def bind(self, images: torch.Tensor | np.ndarray) -> Callable[[], Any]:
        """A call without arguments that runs the session on ``images`` and returns its first output.

        The images are converted (float32, contiguous, numpy) once, here, and not checked against the
        stored input size: what is left in the call is the session's own run, which is what timing
        it (``sepconv bench``, the cost model of :mod:`sepconv.optimize`) must measure.
        """
        if isinstance(images, torch.Tensor):
            array = images.detach().cpu().float().contiguous().numpy()
        else:
            array = np.ascontiguousarray(images, dtype=np.float32)
        feed = {self.input_name: array}
        session = self.session
        return lambda: session.run(None, feed)[0]

    def __repr__(self) -> str:
        return f"OnnxModel({str(self.path)!r}, threads={self.threads})"


def deployed_accuracy(model: DeployedModel, dataset: Any, *, batch_size: int = 256) -> float:
    """Top-1 accuracy (a fraction) of a deployed ``model`` on ``dataset`` of ``(image, label)`` pairs,
    whose images are normalized as the model was trained."""
    from torch.utils.data import DataLoader

    correct = total = 0
    for images, labels in DataLoader(dataset, batch_size=batch_size):
        predicted = model(images).argmax(dim=1)
        correct += int((predicted == torch.as_tensor(labels)).sum())
        total += len(labels)
    if total == 0:
        raise ValueError("cannot measure accuracy on an empty data set")
    return correct / total


class _DeployedModule(nn.Module):
    def __init__(
        self,
        deployed: DeployedModel,
        renormalize: tuple[list[float], list[float], list[float], list[float]] | None = None,
    ) -> None:
        super().__init__()
        self.deployed = deployed
        self.renormalize = renormalize

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.renormalize is not None:
            from sepconv.data.splits import normalize

            given_mean, given_std, stored_mean, stored_std = self.renormalize
            shape = (1, -1, 1, 1)
            raw = images.float() * torch.tensor(given_std).reshape(shape) + torch.tensor(given_mean).reshape(
                shape
            )
            images = normalize(raw, stored_mean, stored_std)
        return self.deployed(images.contiguous())


def _read_metadata(session: Any, file: Path) -> dict[str, Any]:
    """The ONNX file's sepconv metadata, bounded and checked against its graph; ``{}`` for a file from elsewhere."""
    text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    return checked_metadata(text, file, session.get_inputs()[0].shape, session.get_outputs()[0].shape)


def checked_metadata(
    text: str | None, file: Path, graph_input: Sequence[Any], graph_output: Sequence[Any]
) -> dict[str, Any]:
    """A deployed file's stored metadata ``text`` parsed within bounds and checked against its graph's
    input and output shapes (an int per fixed dimension, anything else for a dynamic one); ``{}`` when
    the file stores none (a file from elsewhere: it runs, it just cannot describe itself)."""
    if text is None:
        return {}
    document = parse_metadata(text, where=str(file))
    num_classes = graph_output[1] if len(graph_output) == 2 and isinstance(graph_output[1], int) else None
    try:
        check_metadata(
            document,
            subject=f"{file}: its sepconv metadata's {{key}}",
            num_classes=num_classes,
            graph_input=list(graph_input[1:]) if len(graph_input) == 4 else None,
        )
    except ValueError as error:
        raise ExportError(str(error)) from None
    return document
