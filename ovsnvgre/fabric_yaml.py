"""The fabric file's YAML, parsed into mappings that remember their line numbers.

PyYAML is imported on the first parse, not with this module: a fabric read back
from the cache needs no YAML, and importing it costs a converged run ~20 ms.
"""

from __future__ import annotations

import functools
from typing import Any


class LineMap(dict):
    """A YAML mapping that remembers the line of each key (1-based)."""

    line: int = 0
    key_lines: dict[str, int]

    @classmethod
    def empty(cls, line: int = 0) -> LineMap:
        """A mapping with no keys, placed at ``line``."""
        mapping = cls()
        mapping.key_lines = {}
        mapping.line = line
        return mapping


class DocumentError(Exception):
    """What is wrong with the document, and the line (1-based) where known."""

    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def _construct_mapping(loader: Any, node: Any) -> LineMap:
    loader.flatten_mapping(node)
    result = LineMap()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            raise DocumentError(line, f"key {key!r} must be a string")
        if key in result:
            raise DocumentError(line, f"duplicate key {key!r} "
                                f"(first on line {result.key_lines[key]})")
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


@functools.cache
def _loader() -> Any:
    """PyYAML's safe loader, its mappings made LineMaps."""
    import yaml

    # libyaml's parser is ~10x faster than the pure-Python one on fabrics of
    # thousands of VMs, and gives the same marks (line numbers).
    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = type("LineLoader", (base,), {})
    loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
    return loader


def parse(text: str) -> Any:
    """The document in ``text``, its mappings LineMaps, lists and scalars as PyYAML's
    safe loader reads them (YAML 1.1).  Raises DocumentError."""
    import yaml

    try:
        return yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise DocumentError(line, f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise DocumentError(None, f"YAML syntax error: {exc}") from None
