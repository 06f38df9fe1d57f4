"""Imports that log noise on machines without CUDA, made quietly; shared by the deploy modules."""

from __future__ import annotations

import logging

__all__ = ["import_cpp_extension_quietly"]


def import_cpp_extension_quietly() -> None:
    """Import ``torch.utils.cpp_extension`` without the CUDA_HOME warning it logs on machines without CUDA.

    torch.compile's Inductor and NNCF both import it; importing it once, quietly, first keeps that line
    out of sepconv's output.
    """
    logger = logging.getLogger("torch.utils.cpp_extension")
    quiet = logging.Filter("nothing")  # a filter whose name matches no logger rejects every record
    logger.addFilter(quiet)
    try:
        import torch.utils.cpp_extension  # noqa: F401
    finally:
        logger.removeFilter(quiet)
