"""Files sepconv writes and reads: model files (safetensors + JSON recipe), transforms, atomic writes.

``import sepconv.io`` is light (torch only; safetensors when a file is read or written). Training
state (optimizer, scheduler, RNG) is kept with training, in :mod:`sepconv.train.state`.
"""

from sepconv.io.atomic import atomic_write_bytes
from sepconv.io.model_file import (
    FORMAT_NAME,
    FORMAT_VERSION,
    CheckpointError,
    load_model,
    read_model_metadata,
    save_model,
)
from sepconv.io.transforms import (
    get_transform,
    list_transforms,
    model_transforms,
    record_transform,
    register_transform,
)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CheckpointError",
    "atomic_write_bytes",
    "get_transform",
    "list_transforms",
    "load_model",
    "model_transforms",
    "read_model_metadata",
    "record_transform",
    "register_transform",
    "save_model",
]
