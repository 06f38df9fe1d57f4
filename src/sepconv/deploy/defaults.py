"""Defaults of the deploy functions that the command line also shows in its help, without importing torch.

``sepconv compare --help`` prints these numbers; the functions that use them (:func:`compare_models`)
import torch, so the numbers live here, where reading them costs nothing.
"""

from __future__ import annotations

__all__ = ["AGREEMENT_SAMPLES", "DEFAULT_BATCH_SIZE", "DEFAULT_REPEATS", "ENGINE_NAMES"]

# One batch size for both measurements: 2 is the smallest at which every BatchNorm can run in train
# mode (one value per channel is refused), and it keeps mobilenet_v2 at 224x224 near 0.3 s per round
# of the four timed calls on a 2-core machine, so the default run stays well under 30 s.
#: The batch size ``sepconv compare`` times by default.
DEFAULT_BATCH_SIZE = 2
# Rounds of interleaved timing; the median of 10 moved by under 10 % between runs on a busy machine.
#: Rounds of interleaved timing ``sepconv compare`` runs by default.
DEFAULT_REPEATS = 10
# Images for the output agreement: enough for top-1 agreement in steps of under 1 %, few enough that
# mobilenet_v2 at 224x224 takes a few seconds.
#: Images on which ``sepconv compare`` measures how often two models agree.
AGREEMENT_SAMPLES = 128
# The names of sepconv.deploy.engines.ENGINES, for the flags that choose one (`--measure`, `--engine`):
# their --help lists them without importing the engines (and torch). A test keeps the two equal.
#: The engines' names, known without importing them (and torch), for the flags' help.
ENGINE_NAMES = ("ort", "ort-int8", "torch", "openvino", "openvino-bf16", "openvino-int8")
