"""The main job, ``sepconv demo``: the standard and the separable twin trained alike, measured, reported.

The demo sits above training, deployment and plotting, which it combines: :mod:`~sepconv.demo.recipe`
(the twins, their shared recipe, the up-front checks), :mod:`~sepconv.demo.twins` (running them into
one output folder), :mod:`~sepconv.demo.measure` (what is measured of each) and
:mod:`~sepconv.demo.report` (the table, plots and report files). Importing it is light: torch,
Lightning, ONNX Runtime and matplotlib load when a demo runs.
"""

from __future__ import annotations

from sepconv.demo.recipe import (
    DEMO_BATCH_SIZE,
    DEMO_EPOCHS,
    DEMO_LR,
    DEMO_MODELS,
    DemoDataError,
    check_demo_inputs,
    demo_config,
)
from sepconv.demo.report import execution_path, table_rows, write_report
from sepconv.demo.twins import run_demo

__all__ = [
    "DEMO_BATCH_SIZE",
    "DEMO_EPOCHS",
    "DEMO_LR",
    "DEMO_MODELS",
    "DemoDataError",
    "check_demo_inputs",
    "demo_config",
    "execution_path",
    "run_demo",
    "table_rows",
    "write_report",
]
