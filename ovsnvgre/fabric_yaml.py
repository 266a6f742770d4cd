"""The fabric file's YAML, parsed into mappings that remember their line numbers.

A module of its own so that only a run that parses a file imports YAML: a fabric
read back from the cache does not.
"""

from __future__ import annotations

from typing import Any

import yaml

from ovsnvgre.fabric import LineMap

# libyaml's parser is ~10x faster than the pure-Python one on fabrics of
# thousands of VMs, and gives the same marks (line numbers).
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class DocumentError(Exception):
    """What is wrong with the document, and the line (1-based) where known."""

    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class _LineLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineMap:
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


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse(text: str) -> Any:
    """The document in ``text``, its mappings LineMaps; raises DocumentError."""
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise DocumentError(line, f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise DocumentError(None, f"YAML syntax error: {exc}") from None
