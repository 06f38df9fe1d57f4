"""Generate the API reference pages: one page per package and module of sepconv, every public name once.

A name is public when it is in a module's ``__all__`` or, for a module without ``__all__``, when it is
defined there and does not start with an underscore. A name a package re-exports (``sepconv.layers``
re-exports ``SeparableConv2d`` from ``sepconv.layers.separable``) is documented once, under the name
users import (``sepconv.layers.SeparableConv2d``); the defining module's page and the top package's
shortcut (``sepconv.SeparableConv2d``) link to it. A constant or type alias is documented with its
``#:`` doc comment, found where it is assigned; what another library defines (``torch.nn.ChannelShuffle``)
is linked, not copied. The command line (``sepconv.cli``) has its own reference, generated from its
parsers.

Each class or function that a tutorial uses ends with a mini-gallery of those tutorials (as
torchvision's reference does): sphinx-gallery records the names each tutorial uses, in the
``backreferences_dir`` of ``docs/conf.py``, before these pages are written.

The pages are written at ``builder-inited`` into ``reference/api/`` (not kept in git), so the reference
cannot drift from the code: a new module or name appears in the next build. Each package's page holds
its modules' pages in a hidden toctree, so the site's menu nests them.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import importlib.util
import inspect
import json
import os
import pkgutil
import re
import sys
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT_PACKAGE = "sepconv"
SKIPPED_PACKAGES = ("sepconv.cli",)  # documented by the CLI reference
MAX_VALUE_CHARS = 60  # a longer constant shows its type, not its value


@dataclass
class ModulePage:
    """What one module's page documents: its own public names and the re-exports it links to."""

    name: str
    is_package: bool
    documented: list[str] = field(default_factory=list)
    elsewhere: dict[str, str] = field(default_factory=dict)  # name -> where it is documented
    aliases: dict[str, list[str]] = field(default_factory=dict)  # documented name -> every other path


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


def is_type_alias(value: Any) -> bool:
    """Whether ``value`` is a type written as a value (``IntPair = int | tuple[int, int]``)."""
    if inspect.isclass(value):
        return False  # a Protocol's metaclass lives in typing too
    return isinstance(value, types.UnionType | types.GenericAlias) or type(value).__module__ == "typing"


def kind_of(value: Any) -> str:
    """How the reference documents ``value``: ``"class"``, ``"function"`` or ``"data"``.

    A type alias is data even when it can be called (``Callable[[int], int]`` can).
    """
    if is_type_alias(value):
        return "data"
    if inspect.isclass(value):
        return "class"
    return "function" if callable(value) else "data"


@functools.cache
def _module_tree(module_name: str) -> ast.Module | None:
    """The parsed source of a module (read from its file: no second import, whatever pytest did)."""
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return ast.parse(Path(spec.origin).read_text(encoding="utf-8"))


def _assigned_names(module_name: str) -> set[str]:
    """The names a module's own top-level statements assign (not those it imports)."""
    tree = _module_tree(module_name)
    names = set()
    for node in tree.body if tree else []:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(target.id for target in targets if isinstance(target, ast.Name))
    return names


def _imported_from(module_name: str, name: str) -> str | None:
    """The module ``module_name`` takes ``name`` from: ``from X import name``, or a lazy re-export."""
    tree = _module_tree(module_name)
    package = (
        module_name if hasattr(sys.modules.get(module_name), "__path__") else module_name.rpartition(".")[0]
    )
    for node in ast.walk(tree) if tree else []:
        if isinstance(node, ast.ImportFrom) and any(
            (alias.asname or alias.name) == name for alias in node.names
        ):
            return importlib.util.resolve_name("." * node.level + (node.module or ""), package)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lazy_exports":
            for table in (arg for arg in node.args if isinstance(arg, ast.Dict)):
                for key, source in zip(table.keys, table.values):
                    if (
                        isinstance(key, ast.Constant)
                        and key.value == name
                        and isinstance(source, ast.Constant)
                    ):
                        return str(source.value) if source.value else f"{module_name}.{name}"
    return None


def defining_module(module_name: str, name: str) -> str:
    """The module whose own code assigns the data ``module_name.name`` (a re-export's source)."""
    seen = set()
    while module_name not in seen:
        seen.add(module_name)
        if name in _assigned_names(module_name):
            return module_name
        source = _imported_from(module_name, name)
        if source is None:
            break
        module_name = source
    return module_name


@functools.cache
def _attribute_docs(module_name: str) -> dict[str, list[str]]:
    """The module-level names that have a doc comment (``#:``) or a docstring after their assignment."""
    from sphinx.pycode import ModuleAnalyzer

    try:
        docs = ModuleAnalyzer.for_module(module_name).find_attr_docs()
    except Exception:  # a module the analyzer cannot read simply has no attribute docs
        return {}
    return {name: list(lines) for (scope, name), lines in docs.items() if scope == ""}


def data_description(module_name: str, name: str) -> list[str]:
    """The doc comment of the data ``module_name.name`` where it is defined (empty when it has none)."""
    lines = _attribute_docs(defining_module(module_name, name)).get(name, [])
    return [line for line in lines if line.strip()] and lines


def _home(module_name: str, name: str, value: Any) -> str:
    """Where ``value`` comes from: its defining module and qualified name, for data its definition."""
    if kind_of(value) == "data":
        return f"{defining_module(module_name, name)}.{name}"
    return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', '')}"


def _public_path(value: Any) -> str:
    """The shortest module path another library's object imports from (``torch.nn.ChannelShuffle``)."""
    module, name = getattr(value, "__module__", ""), getattr(value, "__qualname__", "")
    parts = module.split(".")
    for length in range(1, len(parts) + 1):
        prefix = ".".join(parts[:length])
        if getattr(sys.modules.get(prefix), name, None) is value:
            return f"{prefix}.{name}"
    return f"{module}.{name}"


def _is_ours(home: str) -> bool:
    return home == ROOT_PACKAGE or home.startswith(ROOT_PACKAGE + ".")


def plan_pages() -> list[ModulePage]:
    """Decide, for every public module, which names its page documents and which it links to.

    A name is documented where users import it: in the package that re-exports it (``sepconv.layers``
    for ``SeparableConv2d``), the top package ``sepconv`` coming last, since its re-exports are
    shortcuts. What another library defines (``torch.nn.ChannelShuffle``) is linked to, not copied.
    """
    modules = {name: importlib.import_module(name) for name in public_modules()}
    pages = {
        name: ModulePage(name, is_package=hasattr(module, "__path__")) for name, module in modules.items()
    }
    # Each (module, name) pair, in the order they claim the name: packages first (the top package
    # last), then the module that defines the name, then the modules that import it; shallowest first.
    entries = []
    for name, module in modules.items():
        for attr in public_names(module):
            home = _home(name, attr, getattr(module, attr))
            defined_here = home.startswith(name + ".") and "." not in home[len(name) + 1 :]
            key = (not pages[name].is_package, name == ROOT_PACKAGE, not defined_here, name.count("."), name)
            entries.append((key, name, attr, home))
    claimed: dict[str, str] = {}  # defining home of an object -> the documented name
    for _, name, attr, home in sorted(entries):
        page = pages[name]
        if not _is_ours(home):
            page.elsewhere[attr] = _public_path(getattr(modules[name], attr))
        elif home in claimed:
            page.elsewhere[attr] = claimed[home]
        else:
            claimed[home] = f"{name}.{attr}"
            page.documented.append(attr)
    for page in pages.values():  # each page lists its names in the module's own order
        order = {attr: index for index, attr in enumerate(public_names(modules[page.name]))}
        page.documented.sort(key=order.__getitem__)
        page.elsewhere = dict(sorted(page.elsewhere.items(), key=lambda item: order[item[0]]))
    documented_at = {target: pages[target.rsplit(".", 1)[0]] for target in claimed.values()}
    for home, target in claimed.items():
        others = [home] if home != target else []
        others += [
            f"{page.name}.{attr}"
            for page in pages.values()
            for attr, where in page.elsewhere.items()
            if where == target
        ]
        documented_at[target].aliases[target.rsplit(".", 1)[1]] = sorted(set(others))
    return [pages[name] for name in sorted(pages)]


def _short_type(value: Any) -> str:
    """A type alias as people write it: ``Callable[[Tensor], Any]``, without module paths."""
    return re.sub(r"\b(?:[a-z_][a-z0-9_]*\.)+(?=[A-Za-z_])", "", repr(value))


def _data_entry(page: ModulePage, attr: str, value: Any) -> list[str]:
    # the name alone: the page's automodule made page.name the current module, which Sphinx prefixes
    # (a full name here was registered as sepconv.x.sepconv.x.NAME, so no link to it resolved)
    lines = [f".. py:data:: {attr}"]
    if is_type_alias(value):
        lines += [f"   :value: {_short_type(value)}"]
    elif isinstance(value, bool | int | float | str) or (
        isinstance(value, tuple) and len(repr(value)) <= MAX_VALUE_CHARS
    ):
        if len(repr(value)) <= MAX_VALUE_CHARS:
            lines += [f"   :value: {value!r}"]
    else:
        lines += [f"   :type: {type(value).__name__}"]
    lines += [""]
    description = data_description(page.name, attr)
    lines += [f"   {line}".rstrip() for line in description] or [
        f"   See the description of :py:mod:`{page.name}`."
    ]
    if isinstance(value, Mapping) and value and all(isinstance(key, str) for key in value):
        lines += ["", "   Keys: " + ", ".join(f"``{key}``" for key in value) + "."]
    return [*lines, ""]


def _resolve(dotted: str) -> Any:
    """The object a dotted name reaches (``sepconv.viz.ChannelDiagram``), or None."""
    module_name, _, attr = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr, None)
    except ImportError:
        return None


def _examples(backrefs: dict[str, Any], attr: str, value: Any, names: list[str]) -> list[str]:
    """A mini-gallery of the tutorials that use ``value`` (named ``attr``); nothing when none does.

    sphinx-gallery records a use under the shortest path it found the object at, which need not be one
    of the ``names`` this reference knows it by: every recorded path that reaches ``value`` counts.
    """
    found = [name for name in names if backrefs.get(name)]
    found += [
        key
        for key in backrefs
        if key not in found and key.rpartition(".")[2] == attr and _resolve(key) is value
    ]
    if not found:
        return []
    return [
        f"   .. rubric:: Examples using ``{attr}``",
        "",
        f"   .. minigallery:: {' '.join(found)}",
        "",
    ]


def _rst(
    page: ModulePage, children: list[str], documented_objects: set[str], backrefs: dict[str, Any]
) -> str:
    module = importlib.import_module(page.name)
    title = f"``{page.name}``"
    lines = [title, "=" * len(title), "", f".. automodule:: {page.name}", "   :no-members:"]
    if page.name in documented_objects:
        lines += ["   :no-index:"]  # a function of the same name (sepconv.viz.diagram) owns the name
    lines += [""]
    if children:
        lines += [".. rubric:: Modules", "", ".. autosummary::", "   :nosignatures:", ""]
        lines += [f"   {child.rsplit('.', 1)[1]}" for child in children]
        lines += ["", ".. toctree::", "   :hidden:", ""]  # the site's menu nests modules in packages
        lines += [f"   {child}" for child in children]
        lines += [""]
    callables = [attr for attr in page.documented if kind_of(getattr(module, attr)) != "data"]
    data = [attr for attr in page.documented if kind_of(getattr(module, attr)) == "data"]
    if callables:
        lines += [".. rubric:: Summary", "", ".. autosummary::", "   :nosignatures:", ""]
        lines += [f"   {attr}" for attr in callables]
        lines += [""]
    if page.elsewhere:
        lines += [".. rubric:: Also importable from here", ""]
        for attr, target in page.elsewhere.items():
            if _is_ours(target):
                lines += [f"- ``{attr}``: see :py:obj:`{target}`"]
            else:
                lines += [f"- ``{attr}``: ``{target}``, re-exported from {target.split('.')[0]}"]
        lines += [""]
    for attr in callables:
        value = getattr(module, attr)
        full = f"{page.name}.{attr}"
        names = [full, *page.aliases.get(attr, [])]
        if kind_of(value) == "class":
            lines += [f".. autoclass:: {full}", "   :members:"]
            # a class that only derives from object shows no "Bases: object": it tells the reader nothing
            lines += ["   :show-inheritance:", ""] if value.__bases__ != (object,) else [""]
        else:
            lines += [f".. autofunction:: {full}", ""]
        lines += _examples(backrefs, attr, value, names)
    if data:
        lines += [".. rubric:: Constants and types", ""]
        for attr in data:
            lines += _data_entry(page, attr, getattr(module, attr))
    return "\n".join(lines)


def write_pages(
    out: Path, only: list[str] | None = None, backrefs: dict[str, Any] | None = None
) -> list[str]:
    """Write one ``.rst`` page per public module into ``out`` (replacing what was there); their names.

    ``only`` limits the pages written to those modules (the others' names are still planned, so that
    each name is documented where a full build documents it). ``backrefs``: sphinx-gallery's map from a
    name to the tutorials that use it; each documented name that one uses gets a mini-gallery.
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
        text = _rst(page, children, documented_objects, backrefs or {})
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")  # unchanged pages keep their time: no rebuild
        wanted.add(path.name)
    for stale in out.glob("*.rst"):
        if stale.name not in wanted:
            stale.unlink()
    return [page.name for page in pages]


def _gallery_backrefs(app: Any) -> dict[str, Any]:
    """What sphinx-gallery found the tutorials using (it has run: this handler comes after it)."""
    conf = getattr(app.config, "sphinx_gallery_conf", None) or {}
    folder = conf.get("backreferences_dir")
    path = Path(app.srcdir) / folder / "backreferences_all.json" if folder else None
    if path is None or not path.is_file():
        return {}
    backrefs: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return backrefs


def _on_builder_inited(app: Any) -> None:
    # While writing pages, SEPCONV_DOCS_API=0 builds only the package's top page, and
    # SEPCONV_DOCS_API=REGEX only the pages of the modules it matches (sepconv.layers).
    selection = os.environ.get("SEPCONV_DOCS_API", "1")
    only = None
    if selection == "0":
        only = [ROOT_PACKAGE]
    elif selection != "1":
        matched = [name for name in public_modules() if re.search(selection, name)]
        # with the packages above them, so that every page written sits in the menu
        only = sorted(
            {".".join(name.split(".")[:depth]) for name in matched for depth in range(1, name.count(".") + 2)}
        )
    write_pages(Path(app.srcdir) / "reference" / "api", only=only, backrefs=_gallery_backrefs(app))


def _public_bases(app: Any, name: str, obj: Any, options: Any, bases: list[Any]) -> None:
    """Name another library's base class by its public path: ``torch.nn.Conv2d``, not just ``Conv2d``."""
    for index, base in enumerate(bases):
        if inspect.isclass(base) and not _is_ours(base.__module__) and base.__module__ != "builtins":
            bases[index] = f"``{_public_path(base)}``"


def _field_help(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    """Describe each field of a dataclass whose fields carry their help (``TrainConfig``'s, also its
    ``sepconv train`` flags' help) as a parameter, where the docstring does not describe it already."""
    if what != "class" or not dataclasses.is_dataclass(obj):
        return
    described = "\n".join(lines)
    fields = [
        (item.name, item.metadata["help"])
        for item in dataclasses.fields(obj)
        if item.metadata.get("help") and f":param {item.name}:" not in described
    ]
    if fields:
        lines.append("")
        for field_name, help_text in fields:
            # flags and addresses as code: smart quotes would make "--out" a dash, and a bare URL a link
            text = " ".join(help_text.split())
            text = re.sub(r"https?://[^\s)]+?(?=[.,;]?(?:\s|\)|$))|--[a-z][a-z0-9-]*", r"``\g<0>``", text)
            lines.append(
                f":param {field_name}: {text[0].upper()}{text[1:]}{'' if text.endswith('.') else '.'}"
            )


def setup(app: Any) -> dict[str, Any]:
    app.connect("autodoc-process-bases", _public_bases)
    # before napoleon and sphinx-autodoc-typehints (500), which add each parameter's type to these
    app.connect("autodoc-process-docstring", _field_help, priority=400)
    # After sphinx-gallery's own builder-inited handler (priority 500), which writes the backreferences.
    app.connect("builder-inited", _on_builder_inited, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
