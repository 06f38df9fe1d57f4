"""Helpers shared by the subcommands: argument parsing of sizes and JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any

from sepconv.cli.main import UsageError

__all__ = ["parse_int_list", "print_json"]


def parse_int_list(name: str, text: str) -> tuple[int, ...]:
    """Parse '224' or '1,3,224,224' (also 'x'-separated) into positive ints, naming ``name`` on error."""
    parts = [part for part in text.replace("x", ",").split(",") if part.strip()]
    try:
        values = tuple(int(part) for part in parts)
    except ValueError:
        raise UsageError(f"{name} must be positive integers separated by commas, got {text!r}") from None
    if not values or any(value < 1 for value in values):
        raise UsageError(f"{name} must be positive integers separated by commas, got {text!r}")
    return values


def print_json(document: Any) -> None:
    """Print one JSON document on stdout (and nothing else there)."""
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")
