"""Cost and receptive-field analysis of any model: ``summarize(model, input_size)`` -> ``ModelSummary``.

Per layer: shapes, parameters, multiply-adds (MACs; FLOPs = 2 x MACs) and the receptive field of its
output (Araujo, Norris & Sim, Distill 2019), from one instrumented forward pass that follows every
ATen operator, so functional calls, residual adds, concatenations and re-used modules all count.
"""

from sepconv.analysis.profile import ModelInputError
from sepconv.analysis.render import human_bytes, human_count
from sepconv.analysis.summary import LayerSummary, ModelSummary, summarize

__all__ = ["LayerSummary", "ModelInputError", "ModelSummary", "human_bytes", "human_count", "summarize"]
