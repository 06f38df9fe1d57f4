"""Generate the API reference pages: one page per package and module of sepconv, every public name once.

A name is public when it is in a module's ``__all__`` or, for a module without ``__all__``, when it is
defined there and does not start with an underscore. A name a package re-exports (``sepconv.layers``
re-exports ``SeparableConv2d`` from ``sepconv.layers.separable``) is documented once, under the name
users import (``sepconv.layers.SeparableConv2d``); the defining module's page links to it. The
command line (``sepconv.cli``) has its own reference, generated from its parsers.

The pages are written at ``builder-inited`` into ``reference/api/`` (not kept in git), so the reference
cannot drift from the code: a new module or name appears in the next build.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT_PACKAGE = "sepconv"
SKIPPED_PACKAGES = ("sepconv.cli",)  # documented by the CLI reference


@dataclass
class ModulePage:
    """What one module's page documents: its own public names and the re-exports it links to."""

    name: str
    is_package: bool
    documented: list[str] = field(default_factory=list)
    elsewhere: dict[str, str] = field(default_factory=dict)  # name -> where it is documented


def public_modules() -> list[str]:
    """Every importable, non-underscore module of sepconv outside the command line, sorted."""
    package = importlib.import_module(ROOT_PACKAGE)
    names = [ROOT_PACKAGE]
    for info in pkgutil.walk_packages(package.__path__, prefix=f"{ROOT_PACKAGE}."):
        parts = info.name.split(".")
        if any(part.startswith("_") for part in parts):
            continue
        if any(info.name == skip or info.name.startswith(skip + ".") for skip in SKIPPED_PACKAGES):
            continue
        names.append(info.name)
    return sorted(names)


def public_names(module: ModuleType) -> list[str]:
    """The module's public names: ``__all__``, else its own non-underscore functions, classes and data."""
    declared = getattr(module, "__all__", None)
    if declared is not None:
        return [name for name in declared if not inspect.ismodule(getattr(module, name))]
    names = []
    for name, value in vars(module).items():
        if name.startswith("_") or inspect.ismodule(value):
            continue
        if getattr(value, "__module__", module.__name__) != module.__name__:
            continue  # imported from elsewhere
        if not (inspect.isclass(value) or inspect.isfunction(value)):
            continue  # constants are described in the module's docstring
        names.append(name)
    return names


def _home(value: Any) -> str:
    return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', '')}"


def plan_pages() -> list[ModulePage]:
    """Decide, for every public module, which names its page documents and which it links to."""
    modules = {name: importlib.import_module(name) for name in public_modules()}
    pages = {
        name: ModulePage(name, is_package=hasattr(module, "__path__")) for name, module in modules.items()
    }
    claimed: dict[str, str] = {}  # defining home of an object -> the documented name
    # Packages first, shallowest first: the name users import is the one a package re-exports.
    order = sorted(modules, key=lambda name: (not pages[name].is_package, name.count("."), name))
    for name in order:
        module, page = modules[name], pages[name]
        for attr in public_names(module):
            value = getattr(module, attr)
            home = _home(value) if (inspect.isclass(value) or inspect.isfunction(value)) else f"{name}.{attr}"
            if home in claimed:
                page.elsewhere[attr] = claimed[home]
            else:
                claimed[home] = f"{name}.{attr}"
                page.documented.append(attr)
    return [pages[name] for name in sorted(pages)]


def _attribute_docs(module_name: str) -> set[str]:
    """The module-level names that have a doc comment (``#:``) or a docstring after their assignment."""
    from sphinx.pycode import ModuleAnalyzer

    try:
        docs = ModuleAnalyzer.for_module(module_name).find_attr_docs()
    except Exception:  # a module the analyzer cannot read simply has no attribute docs
        return set()
    return {name for scope, name in docs if scope == ""}


def _rst(page: ModulePage, children: list[str], documented_objects: set[str]) -> str:
    module = importlib.import_module(page.name)
    title = f"``{page.name}``"
    lines = [title, "=" * len(title), "", f".. automodule:: {page.name}", "   :no-members:"]
    if page.name in documented_objects:
        lines += ["   :no-index:"]  # a function of the same name (sepconv.viz.diagram) owns the name
    lines += [""]
    if children:
        lines += [".. rubric:: Modules", "", ".. autosummary::", "   :nosignatures:", ""]
        lines += [f"   {child.rsplit('.', 1)[1]}" for child in children]
        lines += [""]
    if page.documented:
        lines += [".. rubric:: Summary", "", ".. autosummary::", "   :nosignatures:", ""]
        lines += [f"   {attr}" for attr in page.documented if callable(getattr(module, attr))]
        lines += [""]
    if page.elsewhere:
        lines += [".. rubric:: Also here", ""]
        lines += [f"- ``{attr}``: see :py:obj:`{target}`" for attr, target in page.elsewhere.items()]
        lines += [""]
    for attr in page.documented:
        value = getattr(module, attr)
        full = f"{page.name}.{attr}"
        if inspect.isclass(value):
            lines += [f".. autoclass:: {full}", "   :members:", "   :show-inheritance:", ""]
        elif inspect.isfunction(value) or callable(value):
            lines += [f".. autofunction:: {full}", ""]
        else:
            home = next(
                (
                    source
                    for source in (page.name, getattr(value, "__module__", None))
                    if source and attr in _attribute_docs(source)
                ),
                None,
            )
            if home == page.name:
                lines += [f".. autodata:: {full}", "   :no-value:", ""]
            else:
                # The value's own docstring would be its type's (dict's); say what it is instead.
                lines += [f".. py:data:: {full}", f"   :type: {type(value).__name__}", ""]
                lines += [f"   See the description of :py:mod:`{page.name}`.", ""]
    return "\n".join(lines)


def write_pages(out: Path, only: list[str] | None = None) -> list[str]:
    """Write one ``.rst`` page per public module into ``out`` (replacing what was there); their names.

    ``only`` limits the pages written to those modules (the others' names are still planned, so that
    each name is documented where a full build documents it).
    """
    pages = plan_pages()
    if only is not None:
        pages = [page for page in pages if page.name in only]
    out.mkdir(parents=True, exist_ok=True)
    wanted = set()
    documented_objects = {f"{page.name}.{attr}" for page in pages for attr in page.documented}
    for page in pages:
        children = [
            other.name
            for other in pages
            if other.name.rsplit(".", 1)[0] == page.name and other.name != page.name
        ]
        path = out / f"{page.name}.rst"
        text = _rst(page, children, documented_objects)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")  # unchanged pages keep their time: no rebuild
        wanted.add(path.name)
    for stale in out.glob("*.rst"):
        if stale.name not in wanted:
            stale.unlink()
    return [page.name for page in pages]


def _on_builder_inited(app: Any) -> None:
    # SEPCONV_DOCS_API=0 (a quick build while writing pages): only the package's top page
    quick = os.environ.get("SEPCONV_DOCS_API", "1") == "0"
    write_pages(Path(app.srcdir) / "reference" / "api", only=[ROOT_PACKAGE] if quick else None)


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", _on_builder_inited)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
