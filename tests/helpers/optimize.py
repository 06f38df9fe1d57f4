"""A sample result document of ``sepconv optimize`` (the contents of ``plan.json``), consistent with itself.

The command writes this document and the report renders it; both are tested against this one sample,
so the two cannot drift apart. It is what optimizing the demo's trained ``standard_cnn`` (mnist5k, ONNX
Runtime fp32, batch 1, 2 threads, ``--speedup 3 --max-accuracy-drop 0.5``) looks like: six convolution
sites, made-up but realistic per-option latencies and losses, the stem kept because every separable
stem measures slower. Every derived number is computed here from those options as the optimizer
computes it, so a test can check one figure against another:

- per layer, MACs and parameters by the separable formulas (r C_in (k^2 + C_out) per position), bytes
  moved = input + output activations + weights at fp32, intensity = MACs / bytes;
- the Pareto front: from "keep everything", repeatedly the one-notch rank cut with the most ms saved
  per point of loss added (the stem's cuts, all slower, never qualify); predicted ms = fixed_ms + scale
  x the summed option ms, predicted loss = the summed losses;
- round 1 plans with the latency model taken from the original's measurement, measures 12% slower
  than predicted (the depthwise layers fuse less than the table assumes), misses the budget, refits
  (fixed_ms, scale) through the two measurements and plans again; round 2 meets it;
- ``relative_error`` = (predicted - measured) / measured; accuracy in percent, drops in points
  (original - fine-tuned), ``latency.speedup`` = original / optimized ms.

No torch: a test of a torch-free renderer may use it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["FORMAT", "SITE_NAMES", "is_consistent", "sample_document", "schema_differences"]

FORMAT = "sepconv-optimize/1"

# name, input channels, output channels, spatial size (square, stride 1, 'same' padding), exact rank
_SITES = (
    ("features.0.0", 1, 32, 28),
    ("features.1.0", 32, 64, 28),
    ("features.3.0", 64, 64, 14),
    ("features.4.0", 64, 128, 14),
    ("features.6.0", 128, 128, 7),
    ("features.7.0", 128, 256, 7),
)
SITE_NAMES = tuple(name for name, *_ in _SITES)
_KERNEL = 3
_MAX_RANK = 9  # min(C_out, 3 x 3) for every site

# Per site, per option (None = keep): (measured ms at batch 1, accuracy drop in points with only that
# layer converted, relative output error). The stem's separable options are all slower than the stem.
_OPTIONS: dict[str, dict[int | None, tuple[float, float, float]]] = {
    "features.0.0": {
        None: (0.024, 0.0, 0.0),
        1: (0.030, 0.9, 0.21),
        2: (0.034, 0.31, 0.12),
        4: (0.045, 0.06, 0.04),
    },
    "features.1.0": {
        None: (0.330, 0.0, 0.0),
        1: (0.058, 0.12, 0.11),
        2: (0.095, 0.05, 0.07),
        4: (0.170, 0.02, 0.03),
    },
    "features.3.0": {
        None: (0.150, 0.0, 0.0),
        1: (0.028, 0.10, 0.10),
        2: (0.047, 0.04, 0.06),
        4: (0.083, 0.01, 0.03),
    },
    "features.4.0": {
        None: (0.290, 0.0, 0.0),
        1: (0.046, 0.08, 0.09),
        2: (0.080, 0.03, 0.06),
        4: (0.150, 0.011, 0.03),
        8: (0.280, 0.002, 0.008),
    },
    "features.6.0": {
        None: (0.140, 0.0, 0.0),
        1: (0.021, 0.06, 0.08),
        2: (0.036, 0.02, 0.05),
        4: (0.068, 0.009, 0.025),
        8: (0.130, 0.001, 0.007),
    },
    "features.7.0": {
        None: (0.275, 0.0, 0.0),
        1: (0.039, 0.05, 0.07),
        2: (0.071, 0.021, 0.045),
        4: (0.135, 0.008, 0.02),
        8: (0.262, 0.001, 0.006),
    },
}

_ORIGINAL_MS = 1.30  # measured end to end; the per-layer times sum to 1.209, the rest is fixed cost
_MODEL_MACS = 58_031_104  # standard_cnn at 1x28x28 (sepconv summary)
_MODEL_PARAMS = 575_594
_BYTES_PER_VALUE = 4  # fp32


def _layer_macs(in_channels: int, out_channels: int, size: int, rank: int | None) -> int:
    positions = size * size
    if rank is None:
        return positions * in_channels * out_channels * _KERNEL**2
    return positions * in_channels * rank * (_KERNEL**2 + out_channels)


def _layer_weights(in_channels: int, out_channels: int, rank: int | None) -> int:
    if rank is None:
        return in_channels * out_channels * _KERNEL**2
    return in_channels * rank * (_KERNEL**2 + out_channels)


def _layer_bytes(in_channels: int, out_channels: int, size: int, rank: int | None, batch: int) -> int:
    activations = batch * (in_channels + out_channels) * size * size
    return (activations + _layer_weights(in_channels, out_channels, rank)) * _BYTES_PER_VALUE


def _option_sum(ranks: Mapping[str, int | None], column: int) -> float:
    return sum(_OPTIONS[name][rank][column] for name, rank in ranks.items())


def _chain(loss_column: int) -> list[dict[str, int | None]]:
    """The plans from "keep everything" to the fastest, one rank cut at a time, best trade first."""
    plan: dict[str, int | None] = dict.fromkeys(SITE_NAMES)
    plans = [dict(plan)]
    while True:
        best: tuple[float, str, int] | None = None
        for name in SITE_NAMES:
            options = _OPTIONS[name]
            lower = [
                rank for rank in options if rank is not None and (plan[name] is None or rank < plan[name])
            ]
            if not lower:
                continue
            rank = max(lower)
            saved = options[plan[name]][0] - options[rank][0]
            added = options[rank][loss_column] - options[plan[name]][loss_column]
            if saved <= 0:
                continue
            trade = saved / max(added, 1e-9)
            if best is None or trade > best[0]:
                best = (trade, name, rank)
        if best is None:
            return plans
        plan[best[1]] = best[2]
        plans.append(dict(plan))


def _choose(
    plans: list[dict[str, int | None]], fixed_ms: float, scale: float, target_ms: float, loss_column: int
) -> dict[str, int | None]:
    meeting = [plan for plan in plans if fixed_ms + scale * _option_sum(plan, 0) <= target_ms]
    return min(meeting, key=lambda plan: _option_sum(plan, loss_column))


def sample_document(
    *,
    dataset: str | None = "mnist5k",
    rounds: int = 2,
    rename: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The sample ``plan.json`` as a fresh dict (a test may change it freely).

    ``dataset=None``: a run without data, whose loss is the relative output error and which has no
    accuracy. ``rounds=1``: the first plan met the budget (measured 3% faster than predicted).
    ``rename`` maps site names to others (a hostile layer name, say) everywhere they appear.
    """
    if rounds not in (1, 2):
        raise ValueError(f"rounds must be 1 or 2, got {rounds}")
    loss_column = 1 if dataset is not None else 2
    speedup_asked = 3.0
    target_ms = _ORIGINAL_MS / speedup_asked
    plans = _chain(loss_column)
    reference_sum = _option_sum(plans[0], 0)
    fixed_ms, scale = _ORIGINAL_MS - reference_sum, 1.0
    round_rows = []
    chosen = _choose(plans, fixed_ms, scale, target_ms, loss_column)
    for number in range(1, rounds + 1):
        predicted = fixed_ms + scale * _option_sum(chosen, 0)
        last = number == rounds
        measured = round(predicted * (0.97 if last else 1.12), 4)
        round_rows.append(
            {
                "round": number,
                "predicted_ms": predicted,
                "measured_ms": measured,
                "relative_error": (predicted - measured) / measured,
                "latency_model": {"fixed_ms": fixed_ms, "scale": scale},
            }
        )
        if not last:  # refit through the original's and this plan's measurements, then plan again
            planned_sum = _option_sum(chosen, 0)
            scale = (measured - _ORIGINAL_MS) / (planned_sum - reference_sum)
            fixed_ms = _ORIGINAL_MS - scale * reference_sum
            chosen = _choose(plans, fixed_ms, scale, target_ms, loss_column)
    final = round_rows[-1]

    layers = []
    for name, in_channels, out_channels, size in _SITES:
        rank = chosen[name]
        ms_after, drop, error = _OPTIONS[name][rank]
        macs_before = _layer_macs(in_channels, out_channels, size, None)
        macs_after = _layer_macs(in_channels, out_channels, size, rank)
        bytes_before = _layer_bytes(in_channels, out_channels, size, None, 1)
        bytes_after = _layer_bytes(in_channels, out_channels, size, rank, 1)
        layers.append(
            {
                "name": name,
                "kind": "conv",
                "geometry": {
                    "in_channels": in_channels,
                    "out_channels": out_channels,
                    "kernel_size": [_KERNEL, _KERNEL],
                    "stride": [1, 1],
                    "padding": [1, 1],
                    "dilation": [1, 1],
                    "padding_mode": "zeros",
                    "bias": False,
                },
                "input_shape": [in_channels, size, size],
                "rank": rank,
                "max_rank": _MAX_RANK,
                "macs_before": macs_before,
                "macs_after": macs_after,
                "bytes_before": bytes_before,
                "bytes_after": bytes_after,
                "intensity_before": macs_before / bytes_before,
                "intensity_after": macs_after / bytes_after,
                "ms_before": _OPTIONS[name][None][0],
                "ms_after": ms_after,
                "output_error": None if rank is None else error,
                "accuracy_drop": None if rank is None or dataset is None else drop,
            }
        )
    macs_saved = sum(layer["macs_before"] - layer["macs_after"] for layer in layers)
    params_saved = sum(
        _layer_weights(i, o, None) - _layer_weights(i, o, chosen[name]) for name, i, o, _ in _SITES
    )
    pareto = [
        {
            "predicted_ms": fixed_ms + scale * _option_sum(plan, 0),
            "predicted_loss": _option_sum(plan, loss_column),
            "ranks": dict(plan),
            "chosen": plan == chosen,
        }
        for plan in plans
    ]
    accuracy = None
    if dataset is not None:
        original, converted, fine_tuned = 98.6, 96.9, 98.4
        accuracy = {
            "split": "test",
            "images": 1000,
            "original": original,
            "converted": converted,
            "fine_tuned": fine_tuned,
            "drop": round(original - fine_tuned, 10),
        }
    document: dict[str, Any] = {
        "format": FORMAT,
        "model": "runs/demo/standard_cnn.safetensors",
        "dataset": dataset,
        "engine": {
            "name": "ort",
            "description": "ONNX Runtime, fp32, CPU execution provider",
            "version": "1.20.1",
            "precision": "fp32",
            "batch_size": 1,
            "threads": 2,
            "cpu": {
                "model": "AMD EPYC 7B13",
                "features": {
                    "avx2": True,
                    "avx512": False,
                    "vnni": False,
                    "avx512_bf16": False,
                    "amx_tile": False,
                    "native_bf16": False,
                },
            },
        },
        "budget": {
            "speedup": speedup_asked,
            "latency_ms": None,
            "max_accuracy_drop": 0.5 if dataset is not None else None,
        },
        "loss_unit": "accuracy points" if dataset is not None else "relative output error",
        "layers": layers,
        "skipped": [["classifier.1", "256x10 linear layer: too small"]],
        "pareto": pareto,
        "rounds": round_rows,
        "latency": {
            "original_ms": _ORIGINAL_MS,
            "optimized_ms": final["measured_ms"],
            "predicted_ms": final["predicted_ms"],
            "speedup": _ORIGINAL_MS / final["measured_ms"],
            "spread_ms": {"original": 0.031, "optimized": 0.012},
            "reference_ms": _ORIGINAL_MS,
            "budget_ms": target_ms,
        },
        "accuracy": accuracy,
        "macs": {"before": _MODEL_MACS, "after": _MODEL_MACS - macs_saved},
        "params": {"before": _MODEL_PARAMS, "after": _MODEL_PARAMS - params_saved},
        "files": {
            "model": "out/model.safetensors",
            "deployable": "out/model.onnx",
            "plan": "out/plan.json",
            "html": "out/report.html",
        },
        "timings_s": {
            "sites": 0.4,
            "costs": 38.2,
            "sensitivity": 21.5 if dataset is not None else 1.3,
            "planning": 0.05,
            "measuring": 6.1 * rounds,
            "fine_tuning": 74.3 if dataset is not None else 0.0,
            "total": 0.0,
        },
        "cached": {
            "costs": {"measured": sum(len(options) for options in _OPTIONS.values()), "reused": 0},
            "sensitivity": {"measured": sum(len(options) - 1 for options in _OPTIONS.values()), "reused": 0},
        },
        "notes": [
            "features.0.0 kept: with 1 input channel every separable candidate measured slower than the layer.",
        ],
    }
    timings = document["timings_s"]
    timings["total"] = round(sum(value for key, value in timings.items() if key != "total") + 1.2, 2)
    if dataset is None:
        document["notes"].append("No data set: the loss is the relative output error on random images.")
    return _renamed(document, rename) if rename else document


def _renamed(document: dict[str, Any], rename: Mapping[str, str]) -> dict[str, Any]:
    renamed = copy.deepcopy(document)
    for layer in renamed["layers"]:
        layer["name"] = rename.get(layer["name"], layer["name"])
    renamed["skipped"] = [[rename.get(name, name), reason] for name, reason in renamed["skipped"]]
    for plan in renamed["pareto"]:
        plan["ranks"] = {rename.get(name, name): rank for name, rank in plan["ranks"].items()}
    for old, new in rename.items():
        renamed["notes"] = [note.replace(old, new) for note in renamed["notes"]]
    return renamed


def is_consistent(document: Mapping[str, Any]) -> bool:
    """Whether the figures that repeat across the document agree (a check for the sample and for runs)."""
    chosen = [plan for plan in document["pareto"] if plan["chosen"]]
    ranks = {layer["name"]: layer["rank"] for layer in document["layers"]}
    latency, final = document["latency"], document["rounds"][-1]
    return (
        len(chosen) == 1
        and chosen[0]["ranks"] == ranks
        and math.isclose(latency["predicted_ms"], final["predicted_ms"])
        and math.isclose(latency["optimized_ms"], final["measured_ms"])
        and math.isclose(latency["speedup"], latency["original_ms"] / latency["optimized_ms"])
    )


# Objects whose keys are data, not schema: layer names, the geometry of a conv or a linear layer, CPU flags.
_FREE_KEYS = frozenset({"ranks", "geometry", "features"})


def schema_differences(document: Mapping[str, Any], reference: Any = None, path: str = "") -> list[str]:
    """Where ``document``'s keys differ from the sample's: ``"+path"`` a key the sample lacks, ``"-path"`` one
    the document lacks. Lists compare each item with the sample's first; a null on either side (no
    accuracy, an error not measured) and the free-keyed objects (ranks, geometry, CPU features) pass.
    """
    reference = sample_document() if reference is None else reference
    if isinstance(document, Mapping) and isinstance(reference, Mapping):
        if path.rstrip(".").rsplit(".", 1)[-1] in _FREE_KEYS:
            return []
        differences = [f"+{path}{key}" for key in document if key not in reference]
        differences += [f"-{path}{key}" for key in reference if key not in document]
        for key in document.keys() & reference.keys():
            differences += schema_differences(document[key], reference[key], f"{path}{key}.")
        return differences
    if isinstance(document, list) and isinstance(reference, list) and reference:
        return [
            difference
            for index, item in enumerate(document)
            for difference in schema_differences(item, reference[0], f"{path}{index}.")
        ]
    return []
