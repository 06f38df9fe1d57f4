"""Every name the API reference documents says what it is: a docstring on each public function, class
and public method, and a doc comment (``#:``) on each public constant and type alias.

The reference (``docs/_ext/sepconv_api.py``) shows a class's members only when they have a docstring,
so an undocumented method is not merely terse there: it is missing. The names checked are the ones the
generator plans to document, so the check and the site cannot disagree about what is public. A
property's first line must not read as ``type: description``, or napoleon shows its start as the type.
Each rule is also run on a planted undocumented name, so a check that matches nothing cannot pass
silently.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest
from tests.helpers.api_reference import generator, planned_pages


def _has_docstring(value: object) -> bool:
    return bool((getattr(value, "__doc__", None) or "").strip())


def public_members(cls: type) -> dict[str, object]:
    """The methods and properties a class defines itself (inherited ones are documented where defined)."""
    members = {}
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(member, staticmethod | classmethod):
            member = member.__func__
        elif isinstance(member, property):
            member = member.fget
        if inspect.isfunction(member):
            members[name] = member
    return members


def undocumented(module: ModuleType, names: list[str], documented_data: set[str]) -> list[str]:
    """The names among ``names`` of ``module`` (and members of its classes) without documentation.

    ``documented_data``: the constants and type aliases that have a doc comment where they are defined.
    """
    kind_of = generator().kind_of
    missing = []
    for name in names:
        value = getattr(module, name)
        qualified = f"{module.__name__}.{name}"
        if kind_of(value) == "data":
            if name not in documented_data:
                missing.append(qualified)
            continue
        if not _has_docstring(value):
            missing.append(qualified)
        if inspect.isclass(value):
            members = public_members(value)
            missing += [
                f"{qualified}.{attr}" for attr, member in members.items() if not _has_docstring(member)
            ]
    return missing


# What napoleon leaves alone when it splits a property's first line on a colon: ``code`` and roles.
_CODE_OR_ROLE = re.compile(r"``.+?``|:[a-z:]+:`[^`]+`|`[^`]+`")


def properties_read_as_typed(cls: type) -> list[str]:
    """The class's properties whose docstring's first line napoleon would split into type: description."""
    found = []
    for name, member in vars(cls).items():
        if isinstance(member, property) and _has_docstring(member):
            first_line = (member.__doc__ or "").strip().splitlines()[0]
            if ":" in _CODE_OR_ROLE.sub("", first_line):
                found.append(f"{cls.__qualname__}.{name}")
    return found


def test_every_public_module_has_a_docstring() -> None:
    modules = [importlib.import_module(name) for name in generator().public_modules()]
    assert [module.__name__ for module in modules if not _has_docstring(module)] == []


def test_every_documented_name_and_method_has_a_docstring() -> None:
    missing = []
    for page in planned_pages().values():
        module = sys.modules[page.name]
        documented_data = {name for name in page.documented if generator().data_description(page.name, name)}
        missing += undocumented(module, page.documented, documented_data)
    assert missing == []


def test_no_property_reads_as_type_and_description() -> None:
    found = []
    for page in planned_pages().values():
        module = sys.modules[page.name]
        for name in page.documented:
            if generator().kind_of(getattr(module, name)) == "class":
                found += properties_read_as_typed(getattr(module, name))
    assert found == []


PLANTED = '''
"""A module with one name of each kind, documented and not."""

from collections.abc import Callable

__all__ = ["LIMIT", "DOCUMENTED_LIMIT", "Handler", "bare", "described", "Thing", "Bare"]

LIMIT = 3  # a comment, not a doc comment

#: How many of them at most.
DOCUMENTED_LIMIT = 4

Handler = Callable[[int], int]  # a type alias is data, even though it can be called


def bare(x):
    return x


def described(x):
    """Return ``x``."""
    return x


class Thing:
    """A thing."""

    def method(self):
        return 1

    @property
    def size(self):
        return 2

    @property
    def weight(self):
        """Weight: in grams."""
        return 3

    @property
    def volume(self):
        """The volume in ``m:3`` (:class:`float`)."""
        return 4

    @staticmethod
    def make():
        """A new thing."""
        return Thing()

    def _private(self):
        return 3


class Bare:
    def described(self):
        """Described."""
'''


@pytest.fixture
def planted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    (tmp_path / "planted_api_module.py").write_text(textwrap.dedent(PLANTED), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "planted_api_module", raising=False)
    return importlib.import_module("planted_api_module")


def test_the_check_finds_planted_undocumented_names(planted: ModuleType) -> None:
    names = generator().public_names(planted)
    assert names == ["LIMIT", "DOCUMENTED_LIMIT", "Handler", "bare", "described", "Thing", "Bare"]
    documented_data = {name for name in names if generator().data_description(planted.__name__, name)}
    assert documented_data == {"DOCUMENTED_LIMIT"}
    assert undocumented(planted, names, documented_data) == [
        "planted_api_module.LIMIT",
        "planted_api_module.Handler",
        "planted_api_module.bare",
        "planted_api_module.Thing.method",
        "planted_api_module.Thing.size",
        "planted_api_module.Bare",
    ]
    assert properties_read_as_typed(planted.Thing) == ["Thing.weight"]
