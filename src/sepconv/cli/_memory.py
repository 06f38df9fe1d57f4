"""Memory checks of the command line: a flag refused in one line when its value cannot fit in memory.

Library functions check their own parameters (``batch_sizes=100000 needs about ...``) and
:func:`sepconv.cli.main.user_message` puts their flags in; :func:`require_input_memory` checks
``--input-size`` for commands that run the model once at that size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


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
