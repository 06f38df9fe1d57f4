"""Model transforms: functions that take a model and return a converted copy.

Importing this package registers each transform in :mod:`sepconv.convert.replay`, whose registry
:func:`sepconv.load_model` hands to :mod:`sepconv.io`, so a model file that recorded one replays it when
loaded.
"""

from sepconv.convert.fold import fold_batchnorm, fold_batchnorm_with_report
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
    "fold_batchnorm",
    "fold_batchnorm_with_report",
    "get_transform",
    "list_transforms",
    "recalibrate_batchnorm",
    "register_transform",
    "to_separable",
]
