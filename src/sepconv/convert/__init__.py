"""Model transforms: functions that take a model and return a converted copy.

Importing this package registers each transform with :mod:`sepconv.io.transforms`, so a model file
that recorded one can replay it when loaded.
"""

from sepconv.convert.fold import fold_batchnorm, fold_batchnorm_with_report
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
    "recalibrate_batchnorm",
    "to_separable",
]
