"""Lazy re-exports for package ``__init__`` files (PEP 562), so importing a package imports nothing heavy.

A package that re-exports names from torch-backed submodules would import torch with itself, and
``sepconv --help`` (which only needs the command line's text) would wait seconds for it. With
:func:`lazy_exports`, ``sepconv.deploy.export_onnx`` imports its submodule on first use instead::

    __getattr__, __dir__ = lazy_exports(__name__, {"export_onnx": "sepconv.deploy.onnx_export"})

Static type checkers do not run ``__getattr__``: the package also imports the names under
``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, names: Mapping[str, str | None]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, which re-exports ``names`` lazily.

    ``names`` maps each re-exported name to the module that defines it; ``None`` means the name is a
    submodule of ``package`` itself (``"layers": None`` re-exports ``package.layers``). A name is
    imported on first use and then stored in the package, so later lookups are plain attributes.
    """

    def module_getattr(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        source = names[name]
        if source is None:
            value = importlib.import_module(f"{package}.{name}")
        else:
            value = getattr(importlib.import_module(source), name)
        setattr(sys.modules[package], name, value)
        return value

    def module_dir() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return module_getattr, module_dir
