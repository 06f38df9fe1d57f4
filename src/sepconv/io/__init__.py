"""Files sepconv writes and reads: model files (safetensors + JSON recipe), recipe steps, atomic writes.

A model file stores its conversion steps as data; replaying them is the caller's (``sepconv.load_model``
passes :mod:`sepconv.convert`'s registry), so io imports no conversion.

``import sepconv.io`` is light (torch when a model-file name below is first used, safetensors when a
file is read or written). Training state (optimizer, scheduler, RNG) is kept with training, in
:mod:`sepconv.train.state`.
"""

from typing import TYPE_CHECKING

from sepconv._lazy import lazy_exports
from sepconv.io.atomic import atomic_write_bytes

if TYPE_CHECKING:  # what static type checkers see; at run time these come from __getattr__
    from sepconv.io.model_file import (
        FORMAT_NAME,
        FORMAT_VERSION,
        CheckpointError,
        load_model,
        read_model_metadata,
        save_model,
    )
    from sepconv.io.transforms import (
        NO_TRANSFORMS,
        Transforms,
        find_transform,
        model_transforms,
        record_transform,
    )

# Imported on first use: model files import torch, and the torch-free writers of this package (atomic
# writes, used by reports and by `sepconv --help`'s output checks) must not.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(
            (
                "FORMAT_NAME",
                "FORMAT_VERSION",
                "CheckpointError",
                "load_model",
                "read_model_metadata",
                "save_model",
            ),
            "sepconv.io.model_file",
        ),
        **dict.fromkeys(
            ("NO_TRANSFORMS", "Transforms", "find_transform", "model_transforms", "record_transform"),
            "sepconv.io.transforms",
        ),
    },
)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "NO_TRANSFORMS",
    "CheckpointError",
    "Transforms",
    "atomic_write_bytes",
    "find_transform",
    "load_model",
    "model_transforms",
    "read_model_metadata",
    "record_transform",
    "save_model",
]
