"""Validation helpers of the fabric loader: every problem becomes one FabricError line.

The line names the file, the line the YAML gives (1-based), the entry path
(``vms.red-a.mac``) and what is wrong.  Pure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ovsnvgre.errors import FabricError
from ovsnvgre.fabric_yaml import LineMap
from ovsnvgre.model import Choice

C = TypeVar("C", bound=Choice)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Checker:
    """Turns problems into FabricErrors that carry file, line and entry path."""

    def __init__(self, source: str) -> None:
        """``source``: the file name every message starts with."""
        self.source = source

    def fail(self, path: str, message: str, line: int | None = None) -> FabricError:
        """The error (to raise) for ``message`` at entry ``path`` and ``line``."""
        where = f"{self.source}:{line}" if line else self.source
        entry = f" {path}:" if path else ""
        return FabricError(f"{where}:{entry} {message}")

    def mapping(self, value: Any, path: str, line: int | None) -> LineMap:
        """``value`` if it is a mapping; raises FabricError otherwise."""
        if not isinstance(value, LineMap):
            raise self.fail(path, f"must be a mapping, not {describe(value)}", line)
        return value

    def keys(self, mapping: LineMap, path: str, allowed: set[str], required: set[str]) -> None:
        """Raises FabricError for the first unknown or missing key."""
        for key in mapping:
            if key not in allowed:
                hint = ", ".join(sorted(allowed))
                raise self.fail(join(path, key), f"unknown key (expected one of: {hint})",
                                mapping.key_lines[key])
        for key in sorted(required - set(mapping)):
            raise self.fail(join(path, key), "is required", mapping.line)

    def entries(self, section: LineMap, kind: str, allowed: set[str], required: set[str]
                ) -> Iterator[tuple[str, str, LineMap]]:
        """Each named entry of a section, checked: (name, its path, its mapping)."""
        for name, value in section.items():
            path = f"{kind}.{name}"
            line = section.key_lines[name]
            if not NAME_RE.match(name):
                raise self.fail(path, "names may hold letters, digits, '.', '_' and '-', "
                                "starting with a letter or digit", line)
            entry = self.mapping(value, path, line)
            self.keys(entry, path, allowed, required)
            yield name, path, entry

    def string(self, mapping: LineMap, key: str, path: str, default: str | None = None,
               pattern: re.Pattern[str] = NAME_RE, max_len: int | None = None) -> str | None:
        """A non-empty string matching ``pattern`` (at most ``max_len`` characters)."""
        if key not in mapping:
            return default
        value = mapping[key]
        where = join(path, key)
        line = mapping.key_lines[key]
        if not isinstance(value, str) or not value:
            raise self.fail(where, f"must be a non-empty string, not {describe(value)}", line)
        if max_len is not None and len(value) > max_len:
            raise self.fail(where, f"{value!r} is {len(value)} characters long; "
                            f"interface names have at most {max_len}", line)
        if not pattern.match(value):
            raise self.fail(where, f"{value!r} contains characters that are not allowed", line)
        return value

    def choice(self, mapping: LineMap, key: str, path: str, choices: type[C], default: C) -> C:
        """The enum member the file names under ``key``, or ``default`` when absent."""
        if key not in mapping:
            return default
        value = mapping[key]
        if not isinstance(value, str) or value not in choices.words():
            raise self.fail(join(path, key),
                            f"{value!r} is not one of: {', '.join(choices.words())}",
                            mapping.key_lines[key])
        return choices(value)

    def integer(self, mapping: LineMap, key: str, path: str, low: int, high: int,
                default: int | None) -> int | None:
        """An integer in ``low``-``high`` (not a boolean), or ``default`` when absent."""
        if key not in mapping:
            return default
        value = mapping[key]
        where, line = join(path, key), mapping.key_lines[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"{describe(value)} is not an integer", line)
        if not low <= value <= high:
            raise self.fail(where, f"{value} is outside {low}-{high}", line)
        return value

    def boolean(self, mapping: LineMap, key: str, path: str, default: bool) -> bool:
        """true or false, or ``default`` when absent."""
        if key not in mapping:
            return default
        value = mapping[key]
        if not isinstance(value, bool):
            raise self.fail(join(path, key), f"{describe(value)} is not true or false",
                            mapping.key_lines[key])
        return value

    def parsed(self, mapping: LineMap, key: str, path: str, parse: Callable[[str], Any],
               what: str) -> Any:
        """``parse(value)`` of a string value; ``what`` says what it should have been."""
        value = mapping[key]
        line = mapping.key_lines[key]
        if not isinstance(value, str):
            raise self.fail(join(path, key), f"{describe(value)} is not {what}", line)
        try:
            return parse(value)
        except ValueError:
            raise self.fail(join(path, key), f"{value!r} is not {what}", line) from None


def join(path: str, key: str) -> str:
    """The entry path of ``key`` under ``path`` (``vms.red-a`` + ``mac``)."""
    return f"{path}.{key}" if path else key


def describe(value: Any) -> str:
    """A YAML value as an error message shows it: ``boolean true``, ``a list``, ``int 3``."""
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, LineMap):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"
