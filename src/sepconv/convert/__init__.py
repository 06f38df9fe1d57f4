"""Model transforms: functions that take a model and return a converted copy.

Importing this package registers each transform with :mod:`sepconv.io.transforms`, so a model file
that recorded one can replay it when loaded.
"""

from sepconv.convert.fold import fold_batchnorm, fold_batchnorm_with_report

__all__ = ["fold_batchnorm", "fold_batchnorm_with_report"]
