"""The fabric file's YAML, parsed into mappings that remember their line numbers.

PyYAML is imported on the first parse, not with this module: a fabric read back
from the cache needs no YAML, and importing it costs a converged run ~20 ms.
"""

from __future__ import annotations

import functools
from typing import Any


class LineMap(dict):
    """A YAML mapping that remembers the line of each key (1-based) and what was written.

    ``texts``: for each key whose value is a plain (unquoted) scalar that YAML 1.1
    read as something else than a string (``52:54:00:12:34:56`` as an integer,
    ``on`` as true, ``~`` as null), that value's text as written in the file.
    ``readings``: the keys written as such scalars are kept as their text (a key is
    always a name), and ``readings`` holds what YAML 1.1 made of each of them.
    """

    line: int = 0
    key_lines: dict[str, int]
    texts: dict[str, str]
    readings: dict[str, Any]

    @classmethod
    def empty(cls, line: int = 0) -> LineMap:
        """A mapping with no keys, placed at ``line``."""
        mapping = cls()
        mapping.line = line
        mapping.key_lines, mapping.texts, mapping.readings = {}, {}, {}
        return mapping


class LineList(list):
    """A YAML sequence; ``texts[i]`` is item i's text as written when YAML 1.1 read
    that plain scalar as something else than a string, else None."""

    texts: list[str | None]


class DocumentError(Exception):
    """What is wrong with the document, and the line (1-based) where known."""

    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def _written(node: Any, value: Any) -> str | None:
    """The text of a plain scalar that YAML 1.1 read as something else than a string."""
    if isinstance(value, str) or node.id != "scalar" or node.style:
        return None
    return str(node.value)


def _construct_mapping(loader: Any, node: Any) -> LineMap:
    loader.flatten_mapping(node)
    result = LineMap.empty(node.start_mark.line + 1)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        text = _written(key_node, key)
        if text is not None:
            result.readings[text] = key
            key = text
        elif not isinstance(key, str):
            raise DocumentError(line, f"key {key!r} must be a string")
        if key in result:
            raise DocumentError(line, f"duplicate key {key!r} "
                                f"(first on line {result.key_lines[key]})")
        value = result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
        text = _written(value_node, value)
        if text is not None:
            result.texts[key] = text
    return result


def _construct_sequence(loader: Any, node: Any) -> LineList:
    result = LineList()
    result.texts = []
    for item_node in node.value:
        item = loader.construct_object(item_node, deep=True)
        result.append(item)
        result.texts.append(_written(item_node, item))
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
    loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
    # A lone `=` resolves to YAML 1.1's "value" tag, which SafeLoader cannot build:
    # it is the text "=" (and then refused by whatever field holds it).
    loader.add_constructor("tag:yaml.org,2002:value", loader.construct_yaml_str)
    return loader


def parse(text: str) -> Any:
    """The document in ``text``, its mappings LineMaps and its lists LineLists, scalars
    as PyYAML's safe loader reads them (YAML 1.1).  Raises DocumentError."""
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
