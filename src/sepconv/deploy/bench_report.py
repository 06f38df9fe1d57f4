"""What ``sepconv bench`` reports: one :class:`PathResult` per (path, batch size), gathered in a
:class:`BenchReport` that renders as JSON (``to_dict``), plain text (``format_table``) or rich tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sepconv.formatting import Table, format_ms, format_ratio

__all__ = ["BenchReport", "PathResult"]


@dataclass(frozen=True)
class PathResult:
    """Timing of one path at one batch size: latency of one call (a forward, or a training step).

    ``min_ms`` and ``max_ms`` are over rounds; each round's value is the mean of one block of calls.
    ``speedup`` is eager's median over this median at the same batch size (eager is exactly 1).
    ``max_abs_diff`` is the largest absolute difference of the output from eager float32 on the same
    input, ``max_rel_diff`` that divided by the largest eager output; ``None`` for training steps.
    """

    path: str
    batch_size: int
    median_ms: float
    min_ms: float
    max_ms: float
    images_per_s: float
    speedup: float
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of these fields; the output differences only when they were measured."""
        document: dict[str, Any] = {
            "path": self.path,
            "batch_size": self.batch_size,
            "latency_ms": {"median": self.median_ms, "min": self.min_ms, "max": self.max_ms},
            "images_per_s": self.images_per_s,
            "speedup": self.speedup,
        }
        if self.max_abs_diff is not None:
            document["max_abs_diff"] = self.max_abs_diff
        if self.max_rel_diff is not None:
            document["max_rel_diff"] = self.max_rel_diff
        return document


@dataclass(frozen=True)
class BenchReport:
    """What :func:`benchmark_paths` measured: inference results, training results when asked, skips."""

    input_size: tuple[int, int, int]
    threads: int
    results: list[PathResult]
    skipped: list[tuple[str, str]]
    train_results: list[PathResult] | None = None
    train_skipped: list[tuple[str, str]] | None = None
    #: The CPU, named with its instruction sets (:func:`sepconv.machine.cpu_summary`).
    cpu: str = ""
    #: Per timed path: the engine and its version, the precision and the settings it ran with.
    runtimes: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document ``sepconv bench --json`` prints: a result per path, why paths were skipped."""
        document: dict[str, Any] = {
            "input_size": list(self.input_size),
            "threads": self.threads,
            "cpu": self.cpu,
            "runtimes": self.runtimes,
            "results": [result.to_dict() for result in self.results],
        }
        if self.train_results is not None:
            document["train_results"] = [result.to_dict() for result in self.train_results]
        document["skipped"] = [{"path": path, "reason": reason} for path, reason in self.skipped]
        if self.train_skipped is not None:
            document["train_skipped"] = [
                {"path": path, "reason": reason} for path, reason in self.train_skipped
            ]
        return document

    def tables(self) -> list[Table]:
        """The inference table, then the training-step table when training was measured."""
        tables = [_table("inference", self.results, with_diff=True)]
        if self.train_results is not None:
            tables.append(_table("training step", self.train_results, with_diff=False))
        return tables

    def format_table(self) -> str:
        """Plain-text tables (inference, then training when measured) and the skipped paths."""
        sections = [table.to_text() for table in self.tables()]
        if self.runtimes:
            sections.append(self._runtimes_text())
        if self.skipped or self.train_skipped:
            sections.append(self._skipped_text())
        return "\n\n".join(sections) + "\n"

    def to_rich(self) -> list[Any]:
        """Rich renderables: the inference table, the training table when measured, the skipped paths."""
        from rich.text import Text

        renderables: list[Any] = [table.to_rich() for table in self.tables()]
        if self.runtimes:
            renderables.append(Text(self._runtimes_text()))
        if self.skipped or self.train_skipped:
            renderables.append(Text(self._skipped_text()))
        return renderables

    def _runtimes_text(self) -> str:
        lines = [f"on {self.cpu}:" if self.cpu else "engines:"]
        lines += [
            f"  {path}: {runtime['engine']}, {runtime['precision']}, {runtime['settings']}"
            for path, runtime in self.runtimes.items()
        ]
        return "\n".join(lines)

    def _skipped_text(self) -> str:
        skipped = self.skipped + [(f"{path} (train)", reason) for path, reason in self.train_skipped or []]
        return "skipped:\n" + "\n".join(f"  {path}: {reason}" for path, reason in skipped)


def _table(title: str, results: Sequence[PathResult], *, with_diff: bool) -> Table:
    headers = ["path", "batch", "median ms", "min ms", "max ms", "images/s", "speedup"]
    rows = []
    for result in results:
        row = [
            result.path,
            str(result.batch_size),
            format_ms(result.median_ms),
            format_ms(result.min_ms),
            format_ms(result.max_ms),
            f"{result.images_per_s:,.1f}",
            format_ratio(result.speedup),
        ]
        if with_diff:
            row.append("-" if result.max_abs_diff is None else f"{result.max_abs_diff:.2e}")
            row.append("-" if result.max_rel_diff is None else f"{result.max_rel_diff:.2e}")
        rows.append(row)
    return Table([*headers, "max |diff|", "rel diff"] if with_diff else headers, rows, title=title)
