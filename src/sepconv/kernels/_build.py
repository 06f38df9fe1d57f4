"""Build (once per machine, then cached) and load the C++ kernels; warn once when that is impossible.

Each kernel family is one C++ file in ``csrc/`` (the code they share is in its headers); together they are compiled just in time (in parallel,
by ninja) by :func:`torch.utils.cpp_extension.load` into PyTorch's extension cache
(``$TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``) and loaded as one
``torch.library`` operator library (``torch.ops.sepconv.*``). The first use on a machine compiles for about a minute (a line on stderr
says so); later processes load the cached library in milliseconds. Compiling at first use rather than
at ``pip install`` keeps the install a plain pure-Python wheel that needs no torch to build.

Without a C++ compiler, or if the build fails, sepconv warns once (:class:`KernelBuildWarning`) and
the callers use plain PyTorch: slower, same results. ``SEPCONV_KERNELS=off`` skips the kernels.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["KernelBuildWarning", "compiler", "library_name", "load_kernels", "loaded_with"]

_CSRC = Path(__file__).with_name("csrc")


class KernelBuildWarning(RuntimeWarning):
    """The fused C++ kernels could not be built or loaded; plain PyTorch is used instead."""


def compiler() -> str | None:
    """The C++ compiler ``cpp_extension`` would call (``$CXX`` or ``c++``), or None if it is not on PATH."""
    return shutil.which(os.environ.get("CXX", "c++"))


def _capability() -> str:
    try:
        return str(torch.backends.cpu.get_cpu_capability()).lower()
    except (AttributeError, RuntimeError):
        return "default"


def library_name() -> str:
    """The extension's name: the CPU capability is part of it, so a cache shared between different CPUs
    never loads code that a CPU cannot run."""
    return f"sepconv_kernels_{_capability()}"


def _flags() -> list[str]:
    # -fno-trapping-math lets the compiler turn the activations' selects into vector blends (3-20x on
    # the backward); AVX2 + FMA where the CPU has them (what torch itself dispatches to).
    flags = ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
    if _capability() in ("avx2", "avx512"):
        flags += ["-mavx2", "-mfma", "-mf16c"]
    return flags


def _cpp_extension() -> ModuleType:
    # Importing it logs a warning about CUDA on CPU-only machines, which is noise here.
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        logger.setLevel(level)
    return cpp_extension


def _is_cached(cpp_extension: ModuleType, name: str) -> bool:
    # Only decides whether to announce a compile; the private helper is where load() will build.
    try:
        folder = Path(cpp_extension._get_build_directory(name, verbose=False))
    except (AttributeError, OSError, TypeError):
        return True
    return any(folder.glob(f"{name}*.so"))


def _warn(message: str) -> None:
    warnings.warn(
        f"sepconv: {message}; plain PyTorch is used instead (slower, same results)",
        KernelBuildWarning,
        stacklevel=4,
    )


@functools.cache
def load_kernels() -> bool:
    """Compile (first time) and load ``csrc/*.cpp`` into ``torch.ops.sepconv``; True when usable.

    Called lazily by the first fused call, so ``import sepconv`` never compiles. Cached per process.
    """
    if os.environ.get("SEPCONV_KERNELS", "").lower() in ("0", "off", "false", "no"):
        return False
    if compiler() is None:
        _warn(
            f"no C++ compiler found ({os.environ.get('CXX', 'c++')}), so the fused training kernels are off"
        )
        return False
    sources = sorted(_CSRC.glob("*.cpp"))
    if not sources:
        # A broken install (a wheel built without its package data): say so instead of torch's bare
        # "At least one source is required" assertion, and train on plain PyTorch.
        _warn(f"the kernels' C++ sources are missing from {_CSRC}, so the fused training kernels are off")
        return False
    cpp_extension = _cpp_extension()
    name = library_name()
    if not _is_cached(cpp_extension, name):
        print(
            "sepconv: compiling the training kernels (once per machine, about a minute)",
            file=sys.stderr,
            flush=True,
        )
    try:
        cpp_extension.load(
            name=name,
            sources=[str(path) for path in sources],
            extra_cflags=_flags(),
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
            verbose=False,
        )
    except (OSError, RuntimeError, ImportError, subprocess.CalledProcessError) as error:
        text = str(error).strip()
        _warn(
            f"building the training kernels failed ({text.splitlines()[0] if text else type(error).__name__})"
        )
        return False
    return True


def loaded_with(register: Callable[[], None]) -> bool:
    """:func:`load_kernels`, then ``register`` (a module's Python-side autograd and fake registrations
    for its operators) once per process; True when the kernels are usable."""
    if not load_kernels():
        return False
    _register_once(register)
    return True


@functools.cache
def _register_once(register: Callable[[], None]) -> None:
    register()
