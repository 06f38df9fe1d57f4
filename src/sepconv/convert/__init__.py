"""Model transforms: functions that take a model and return a converted copy.

Importing this package registers each transform in :mod:`sepconv.convert.replay`, whose registry
:func:`sepconv.load_model` hands to :mod:`sepconv.io`, so a model file that recorded one replays it when
loaded.
"""

from sepconv.convert.fold import fold_batchnorm, fold_batchnorm_with_report
from sepconv.convert.low_rank import LowRankLayer, LowRankReport, low_rank_like, to_low_rank
from sepconv.convert.output_errors import layer_output_errors
from sepconv.convert.replay import get_transform, list_transforms, register_transform
from sepconv.convert.separable import (
    ConversionReport,
    ConversionWarning,
    LayerConversion,
    recalibrate_batchnorm,
    to_separable,
)

__all__ = [
    "ConversionReport",
    "ConversionWarning",
    "LayerConversion",
    "LowRankLayer",
    "LowRankReport",
    "fold_batchnorm",
    "fold_batchnorm_with_report",
    "get_transform",
    "layer_output_errors",
    "list_transforms",
    "low_rank_like",
    "recalibrate_batchnorm",
    "register_transform",
    "to_low_rank",
    "to_separable",
]
