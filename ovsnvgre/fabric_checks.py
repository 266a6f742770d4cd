"""Validation helpers of the fabric loader: every problem becomes one FabricError line.

The line names the file, the line the YAML gives (1-based), the entry path
(``vms.red-a.mac``) and what is wrong.  Pure.

A value is shown as the file writes it.  YAML 1.1 reads some unquoted words as
other types (``52:54:00:12:34:56`` as a base-60 integer, ``on`` as true, ``0755``
as octal 493, ``~`` as null, ``2024-01-01`` as a date); fabric_yaml keeps their
text, and each kind of field decides (the README's "Unquoted values" says the same):

- names (the fabric's, entries', ports, bridges, references to hosts and subnets):
  refused with the text as written and the advice to quote it, because another
  YAML reader of the same file would see the other type;
- MACs and addresses: the text as written, parsed as the field's kind: a
  MAC-shaped word is that MAC, whatever YAML 1.1 made of it;
- integers (vsid, mtu, vm_mtu): decimal, hexadecimal (0x) and binary (0b) are
  taken; octal-looking (``010000`` is 4096) and base-60 (``1:30`` is 90) are refused;
- true/false (bfd): YAML 1.1's yes/no/on/off are meant, and taken.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import socket
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ovsnvgre.errors import FabricError
from ovsnvgre.fabric_yaml import LineMap
from ovsnvgre.model import Choice

C = TypeVar("C", bound=Choice)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# What YAML 1.1 reads as an octal integer: a leading zero and more digits.
OCTAL_RE = re.compile(r"^[-+]?0[0-7_]+$")


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

    def mapping(self, value: Any, path: str, line: int | None, text: str | None = None
                ) -> LineMap:
        """``value`` if it is a mapping; raises FabricError otherwise."""
        if not isinstance(value, LineMap):
            raise self.fail(path, f"must be a mapping, not {text or describe(value)}", line)
        return value

    def keys(self, mapping: LineMap, path: str, allowed: set[str], required: set[str]) -> None:
        """Raises FabricError for the first unknown or missing key."""
        if allowed >= mapping.keys() >= required:  # the usual entry: one set comparison
            return
        for key in mapping:
            if key not in allowed:
                hint = (f"expected one of: {', '.join(sorted(allowed))}" if allowed
                        else f"{path} takes no keys")
                raise self.fail(join(path, key), f"unknown key ({hint})",
                                mapping.key_lines[key])
        for key in sorted(required - set(mapping)):
            raise self.fail(join(path, key), "is required", mapping.line)

    def entries(self, section: LineMap, kind: str, allowed: set[str], required: set[str],
                empty_ok: bool = False) -> Iterator[tuple[str, str, LineMap]]:
        """Each named entry of a section, checked: (name, its path, its mapping).

        ``empty_ok``: an entry written with no value (``contoso:``) is an empty mapping."""
        for name, value in section.items():
            path = f"{kind}.{name}"
            line = section.key_lines[name]
            if not NAME_RE.match(name):
                raise self.fail(path, "names may hold letters, digits, '.', '_' and '-', "
                                "starting with a letter or digit", line)
            if name in section.readings:
                raise self.fail(path, f"{read_as(section.readings[name], name, 'name')}; "
                                f'write it in quotes: "{name}"', line)
            if value is None and empty_ok:
                value = LineMap.empty(line)
            entry = self.mapping(value, path, line, section.texts.get(name))
            self.keys(entry, path, allowed, required)
            yield name, path, entry

    def string(self, mapping: LineMap, key: str, path: str, default: str | None = None,
               pattern: re.Pattern[str] = NAME_RE, max_len: int | None = None) -> str | None:
        """A non-empty string matching ``pattern`` (at most ``max_len`` characters)."""
        if key not in mapping:
            return default
        value = mapping[key]
        if isinstance(value, str) and value and (max_len is None or len(value) <= max_len) \
                and pattern.match(value):  # the usual name (a string has no text)
            return value
        where = join(path, key)
        line = mapping.key_lines[key]
        text = mapping.texts.get(key)
        if text:  # YAML 1.1 made this unquoted word something else
            self._name(text, where, line, pattern, max_len)
            raise self.fail(where, f'{read_as(value, text)}; write it in quotes: "{text}"',
                            line)
        if not isinstance(value, str) or not value:
            raise self.fail(where, f"must be a non-empty string, not {describe(value)}", line)
        self._name(value, where, line, pattern, max_len)
        return value

    def _name(self, value: str, where: str, line: int, pattern: re.Pattern[str],
              max_len: int | None) -> None:
        if max_len is not None and len(value) > max_len:
            raise self.fail(where, f"{value!r} is {len(value)} characters long; "
                            f"interface names have at most {max_len}", line)
        if not pattern.match(value):
            raise self.fail(where, f"{value!r} contains characters that are not allowed", line)

    def choice(self, mapping: LineMap, key: str, path: str, choices: type[C], default: C) -> C:
        """The enum member the file names under ``key``, or ``default`` when absent."""
        if key not in mapping:
            return default
        value = mapping[key]
        if not isinstance(value, str) or value not in choices.words():
            shown = mapping.texts.get(key, value)
            raise self.fail(join(path, key),
                            f"{shown!r} is not one of: {', '.join(choices.words())}",
                            mapping.key_lines[key])
        return choices(value)

    def whole(self, mapping: LineMap, key: str, path: str) -> int:
        """The integer under ``key``: not a boolean, not octal-looking, not base 60."""
        value = mapping[key]
        where, line = join(path, key), mapping.key_lines[key]
        text = mapping.texts.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"{text or describe(value)} is not an integer", line)
        if text and (":" in text or OCTAL_RE.match(text)):
            raise self.fail(where, f"{read_as(value, text)}; write the number in decimal, "
                            "without leading zeros", line)
        return value

    def integer(self, mapping: LineMap, key: str, path: str, low: int, high: int,
                default: int | None) -> int | None:
        """An integer in ``low``-``high`` (see ``whole``), or ``default`` when absent."""
        if key not in mapping:
            return default
        value = self.whole(mapping, key, path)
        if not low <= value <= high:
            raise self.fail(join(path, key), f"{value} is outside {low}-{high}",
                            mapping.key_lines[key])
        return value

    def boolean(self, mapping: LineMap, key: str, path: str, default: bool) -> bool:
        """true or false (or YAML 1.1's yes/no/on/off), or ``default`` when absent."""
        if key not in mapping:
            return default
        value = mapping[key]
        if not isinstance(value, bool):
            shown = mapping.texts.get(key) or describe(value)
            raise self.fail(join(path, key), f"{shown} is not true or false",
                            mapping.key_lines[key])
        return value

    def parsed(self, mapping: LineMap, key: str, path: str, parse: Callable[[str], Any],
               what: str) -> Any:
        """``parse(value)`` of a string value; ``what`` says what it should have been.

        An unquoted word that YAML 1.1 read as another type is parsed as written."""
        value = mapping.texts.get(key) or mapping[key]
        return self.parse(value, join(path, key), mapping.key_lines[key], parse, what)

    def parse(self, value: Any, where: str, line: int | None, parse: Callable[[str], Any],
              what: str) -> Any:
        """``parse(value)`` for entry ``where``; FabricError when it is not ``what``."""
        if not isinstance(value, str):
            raise self.fail(where, f"{describe(value)} is not {what}", line)
        try:
            return parse(value)
        except ValueError:
            raise self.fail(where, f"{value!r} is not {what}", line) from None


def ipv4_interface(text: str) -> ipaddress.IPv4Interface | None:
    """IPv4Interface(text), a third of the time; None when ``text`` is not an IPv4
    address, a slash and a prefix, for ipaddress to decide.

    IPv4Interface(text) parses the address twice in Python (its network parses the
    text again): half of validating a VM.  inet_pton(3) takes the very dotted quads
    ipaddress takes (four decimal octets up to 255, no leading zeros: ipaddress
    copies glibc's rule), tests/test_fabric.py holds them to each other; the prefix
    (a length or a mask) is ipaddress's to read.  For the CA and PA fields."""
    address, _, prefix = text.partition("/")
    try:
        packed = socket.inet_pton(socket.AF_INET, address)
        return ipaddress.IPv4Interface((int.from_bytes(packed, "big"), prefix))
    except (OSError, ValueError):  # not a dotted quad (a NUL is a ValueError), a bad prefix
        return None


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


def read_as(value: Any, text: str, what: str = "") -> str:
    """What YAML 1.1 made of the unquoted ``text``, as a message says it:
    ``YAML 1.1 reads the unquoted 0755 as the integer 493 (octal)``."""
    if isinstance(value, bool):
        reading = f"boolean {str(value).lower()}"
    elif value is None:
        reading = "null (no value)"
    elif isinstance(value, int):
        digits = text.lstrip("+-").lower()
        base = ("base 60" if ":" in text else "hexadecimal" if digits.startswith("0x")
                else "binary" if digits.startswith("0b")
                else "octal" if OCTAL_RE.match(text) else "")
        reading = f"the integer {value}" + (f" ({base})" if base else "")
    elif isinstance(value, float):
        reading = f"the number {value!r}" + (" (base 60)" if ":" in text else "")
    elif isinstance(value, (datetime.date, datetime.datetime)):
        reading = f"the timestamp {value.isoformat()}"
    else:
        reading = describe(value)
    return f"YAML 1.1 reads the unquoted {what + ' ' if what else ''}{text} as {reading}"
