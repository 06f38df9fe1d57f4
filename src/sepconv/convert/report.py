"""What a conversion did, layer by layer: :class:`ConversionReport` (separable convolutions) and
:class:`LowRankReport` (low-rank linear layers), and their tables.

The costs come from :mod:`sepconv.arithmetic` (parameters always; MACs at the output sizes the probe
run saw), the errors from :mod:`sepconv.convert.svd` and the probe run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import torch
from torch import nn

from sepconv.arithmetic import conv_macs, conv_params, separable_macs, separable_params
from sepconv.convert.svd import max_rank
from sepconv.formatting import Table, format_percent, ratio_of, short_count

__all__ = [
    "ConversionReport",
    "LayerConversion",
    "LowRankLayer",
    "LowRankReport",
    "layer_report",
    "low_rank_layer_report",
]


@dataclass(frozen=True)
class LayerConversion:
    """One converted convolution: its rank, its costs before and after, and how far the new one is off.

    weight_error: ||W - W_r||_F / ||W||_F of the rank-r weights (None for ``init="random"``);
    output_error: ||y_r - y||_F / ||y||_F of the layer's output on the calibration batch (None without one).
    max_rank: min(out_channels, k_h * k_w), the depth multiplier at which the conversion is exact.
    macs are per input image at the report's ``input_size`` (None when no input size is known).
    """

    name: str
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    depth_multiplier: int
    max_rank: int
    params_before: int
    params_after: int
    macs_before: int | None
    macs_after: int | None
    weight_error: float | None
    output_error: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {
            "name": self.name,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "depth_multiplier": self.depth_multiplier,
            "max_rank": self.max_rank,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "weight_error": self.weight_error,
            "output_error": self.output_error,
        }


@dataclass(frozen=True)
class _Report:
    """What a conversion did: its layers, those left alone, the whole model's totals, the warnings.

    Totals are of the whole model (converted layers and the rest): ``total_params_*`` always,
    ``total_macs_*`` per input at ``input_size`` when one is known.
    """

    layers: tuple[LayerConversion | LowRankLayer, ...]
    skipped: tuple[tuple[str, str], ...]
    init: str
    input_size: tuple[int, ...] | None
    total_params_before: int
    total_params_after: int
    total_macs_before: int | None
    total_macs_after: int | None
    calibration_samples: int | None = None
    warnings: tuple[str, ...] = field(default=())

    @classmethod
    def of(
        cls,
        model: nn.Module,
        converted: nn.Module,
        layers: Sequence[Any],
        *,
        skipped: Sequence[tuple[str, str]],
        init: str,
        input_size: tuple[int, ...] | None,
        calibration: torch.Tensor | None,
        notes: Sequence[str],
    ) -> Self:
        """The report of ``model`` converted into ``converted``, its totals counted here."""
        macs_before, macs_after = total_macs(model, input_size, layers)
        return cls(
            layers=tuple(layers),
            skipped=tuple(skipped),
            init=init,
            input_size=input_size,
            total_params_before=sum(p.numel() for p in model.parameters()),
            total_params_after=sum(p.numel() for p in converted.parameters()),
            total_macs_before=macs_before,
            total_macs_after=macs_after,
            calibration_samples=None if calibration is None else int(calibration.shape[0]),
            warnings=tuple(notes),
        )

    def to_dict(self) -> dict[str, Any]:
        """The report as one JSON-ready document (exact integers)."""
        return {
            "init": self.init,
            "input_size": None if self.input_size is None else list(self.input_size),
            "calibration_samples": self.calibration_samples,
            "units": {
                "macs": "multiply-accumulates per input image",
                "weight_error": "||W - W_r||_F / ||W||_F",
                "output_error": "||y_r - y||_F / ||y||_F on the calibration batch",
            },
            "layers": [layer.to_dict() for layer in self.layers],
            "skipped": [{"name": name, "reason": reason} for name, reason in self.skipped],
            "totals": {
                "params_before": self.total_params_before,
                "params_after": self.total_params_after,
                "macs_before": self.total_macs_before,
                "macs_after": self.total_macs_after,
            },
            "warnings": list(self.warnings),
        }

    def _with_footer(self, table: str, layers_noun: str) -> str:
        """``table``, then the totals, the layers left alone and the warnings, one per line."""
        lines = [table, ""]
        lines.append(
            f"total params: {_arrow(self.total_params_before, self.total_params_after)} "
            f"({ratio_of(self.total_params_after, self.total_params_before)})"
        )
        if self.total_macs_before is not None and self.total_macs_after is not None:
            size = "x".join(map(str, self.input_size or ()))
            lines.append(
                f"total MACs per {size} {'image' if len(self.input_size or ()) == 3 else 'input'}: "
                f"{_arrow(self.total_macs_before, self.total_macs_after)} "
                f"({ratio_of(self.total_macs_after, self.total_macs_before)})"
            )
        if self.calibration_samples:
            lines.append(f"output errors on {self.calibration_samples} calibration images, layer by layer")
        if self.skipped:
            lines.append(f"left as they were: {_skipped_text(self.skipped, layers_noun)}")
        lines.extend(f"warning: {message}" for message in self.warnings)
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        return self.format_table()

    def format_table(self) -> str:
        """A plain-text table, one row per converted layer, then the totals and the skipped layers."""
        raise NotImplementedError


@dataclass(frozen=True)
class ConversionReport(_Report):
    """What :func:`to_separable` did: one :class:`LayerConversion` per converted layer, and the totals.

    Totals are of the whole model (converted layers and the rest): ``total_params_*`` always,
    ``total_macs_*`` per input image at ``input_size`` when one is known. ``skipped`` names each
    ``nn.Conv2d`` left as it was, with the reason.
    """

    layers: tuple[LayerConversion, ...]

    def format_table(self) -> str:
        """A plain-text table, one row per converted layer, then the totals and the skipped layers."""
        headers = ["layer", "in", "out", "kernel", "r", "of", "params", "MACs", "weight err", "output err"]
        rows = [
            [
                layer.name,
                str(layer.in_channels),
                str(layer.out_channels),
                "x".join(map(str, layer.kernel_size)),
                str(layer.depth_multiplier),
                str(layer.max_rank),
                _arrow(layer.params_before, layer.params_after),
                _arrow(layer.macs_before, layer.macs_after),
                format_percent(layer.weight_error),
                format_percent(layer.output_error),
            ]
            for layer in self.layers
        ]
        return self._with_footer(Table(headers, rows).to_text(), "convolutions")


@dataclass(frozen=True)
class LowRankLayer:
    """One linear layer split into a low-rank pair: its rank, its costs before and after, its errors.

    weight_error: ||W - W_r||_F / ||W||_F of the rank-r weights (None for ``init="random"``);
    output_error: ||y_r - y||_F / ||y||_F of the layer's output on the calibration batch (None without one).
    max_rank: min(in_features, out_features), the rank at which the pair is exact.
    macs are per input image (the rows a call multiplies, summed over its calls) at the report's
    ``input_size`` (None when no input size is known).
    """

    name: str
    in_features: int
    out_features: int
    rank: int
    max_rank: int
    params_before: int
    params_after: int
    macs_before: int | None
    macs_after: int | None
    weight_error: float | None
    output_error: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class LowRankReport(_Report):
    """What :func:`~sepconv.convert.to_low_rank` did: one :class:`LowRankLayer` per split layer, and the totals.

    Totals are of the whole model, as in :class:`ConversionReport`; ``skipped`` names each
    ``nn.Linear`` left as it was, with the reason.
    """

    layers: tuple[LowRankLayer, ...]

    def format_table(self) -> str:
        """A plain-text table, one row per split layer, then the totals and the skipped layers."""
        headers = ["layer", "in", "out", "r", "of", "params", "MACs", "weight err", "output err"]
        rows = [
            [
                layer.name,
                str(layer.in_features),
                str(layer.out_features),
                str(layer.rank),
                str(layer.max_rank),
                _arrow(layer.params_before, layer.params_after),
                _arrow(layer.macs_before, layer.macs_after),
                format_percent(layer.weight_error),
                format_percent(layer.output_error),
            ]
            for layer in self.layers
        ]
        return self._with_footer(Table(headers, rows).to_text(), "linear layers")


def layer_report(
    name: str,
    conv: nn.Conv2d,
    rank: int,
    weight_error: float | None,
    spatial: list[tuple[int, int]] | None,
    output_error: float | None,
) -> LayerConversion:
    """The report row of one converted layer; MACs summed over the output ``spatial`` sizes of its calls."""
    kernel = (int(conv.kernel_size[0]), int(conv.kernel_size[1]))
    bias = conv.bias is not None
    return LayerConversion(
        name=name,
        in_channels=conv.in_channels,
        out_channels=conv.out_channels,
        kernel_size=kernel,
        depth_multiplier=rank,
        max_rank=max_rank(conv),
        params_before=conv_params(conv.in_channels, conv.out_channels, kernel, bias=bias),
        params_after=separable_params(conv.in_channels, conv.out_channels, kernel, rank, bias=bias),
        # A layer called more than once (a loop in forward) costs its MACs at every call.
        macs_before=None
        if spatial is None
        else sum(conv_macs(conv.in_channels, conv.out_channels, kernel, size) for size in spatial),
        macs_after=None
        if spatial is None
        else sum(separable_macs(conv.in_channels, conv.out_channels, kernel, size, rank) for size in spatial),
        weight_error=weight_error,
        output_error=output_error,
    )


def _skipped_text(skipped: Sequence[tuple[str, str]], layers_noun: str) -> str:
    """Each layer by name when there are a few; counts per reason when there are many (a MobileNet's 52)."""
    if len(skipped) <= 6:
        return ", ".join(f"{name} ({reason})" for name, reason in skipped)
    reasons = Counter(reason for _, reason in skipped)
    return f"{len(skipped)} {layers_noun}: " + ", ".join(
        f"{count} {reason}" for reason, count in reasons.most_common()
    )


def _arrow(before: int | None, after: int | None) -> str:
    """``before -> after`` in short counts; ``?`` when either is unknown."""
    return "?" if before is None or after is None else f"{short_count(before)} -> {short_count(after)}"


def low_rank_layer_report(
    name: str,
    linear: nn.Linear,
    rank: int,
    weight_error: float | None,
    rows: list[int] | None,
    output_error: float | None,
) -> LowRankLayer:
    """The report row of one split layer; MACs summed over the input ``rows`` (per image) of its calls."""
    bias = linear.out_features if linear.bias is not None else 0
    in_features, out_features = linear.in_features, linear.out_features
    return LowRankLayer(
        name=name,
        in_features=in_features,
        out_features=out_features,
        rank=rank,
        max_rank=min(in_features, out_features),
        params_before=in_features * out_features + bias,
        params_after=rank * (in_features + out_features) + bias,
        macs_before=None if rows is None else sum(rows) * in_features * out_features,
        macs_after=None if rows is None else sum(rows) * rank * (in_features + out_features),
        weight_error=weight_error,
        output_error=output_error,
    )


def total_macs(
    model: nn.Module, size: tuple[int, ...] | None, layers: Sequence[LayerConversion | LowRankLayer]
) -> tuple[int | None, int | None]:
    """The whole model's MACs per image before and after (None unless every converted layer's are known).

    Before is :func:`~sepconv.analysis.summarize`'s count; after changes only the converted layers.
    """
    known = [
        (layer.macs_before, layer.macs_after)
        for layer in layers
        if layer.macs_before is not None and layer.macs_after is not None
    ]
    if size is None or len(known) < len(layers):
        return None, None
    from sepconv.analysis import summarize

    before = summarize(model, (1, *size)).total_macs
    return before, before + sum(layer_after - layer_before for layer_before, layer_after in known)
