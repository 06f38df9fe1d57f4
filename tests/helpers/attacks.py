"""A pickle that runs a shell command when unpickled: what a loader must refuse without running it."""

from __future__ import annotations

import io
import os

import torch


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def malicious_pickle(marker) -> bytes:
    """``torch.save`` bytes that create the file ``marker`` if anything ever unpickles them."""
    buffer = io.BytesIO()
    torch.save({"model": Payload(marker)}, buffer)
    return buffer.getvalue()
