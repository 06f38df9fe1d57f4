"""Memory checks of the command line: a flag refused in one line when its value cannot fit in memory.

Library functions check their own parameters (``batch_sizes=100000 needs about ...``); :func:`with_flags`
puts such a message in the command line's words. :func:`require_input_memory` checks ``--input-size``
for commands that run the model once at that size.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sepconv.errors import UsageError


def with_flags(error: Exception, flags: Mapping[str, str]) -> UsageError:
    """``error``'s message with each parameter of ``flags`` (``{"batch_sizes": "--batch-sizes"}``) renamed.

    The library names its parameters (``batch_sizes=100000 needs about ...``); a user of the command
    line typed flags, so the one-line error must name those.

    >>> str(with_flags(ValueError("batch_sizes=[8] needs more; use a smaller batch_sizes"), {"batch_sizes": "--batch-sizes"}))
    '--batch-sizes=[8] needs more; use a smaller --batch-sizes'
    """
    return UsageError(flag_text(str(error), flags))


def flag_text(message: str, flags: Mapping[str, str]) -> str:
    """``message`` with each parameter of ``flags`` replaced by its flag (for warnings, as for errors)."""
    for parameter, flag in flags.items():
        message = re.sub(rf"(?<![\w-]){re.escape(parameter)}(?!\w)", flag, message)
    return message


def require_input_memory(text: str, model: Any, input_shape: Sequence[int], *, other_images: int = 0) -> None:
    """Refuse ``input_size`` (the ``--input-size`` given as ``text``) when a forward pass of ``model`` at ``input_shape`` cannot fit.

    ``input_shape`` includes the batch; ``other_images`` are images of the same size held meanwhile
    (another verification batch). The estimate (:func:`sepconv.analysis.memory.forward_bytes`: the
    input and the largest layer's call, from a pass on the meta device) is a lower bound, so a refused
    size could never have run.
    """
    from sepconv.analysis.memory import forward_bytes
    from sepconv.machine import require_memory

    image_bytes = 4 * math.prod(input_shape[1:])
    require_memory(
        "input_size",
        text,
        forward_bytes(model, input_shape) + other_images * image_bytes,
        what=f"a forward pass at {'x'.join(map(str, input_shape))} (the input and the largest layer)",
    )
