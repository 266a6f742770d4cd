"""The fabric file's YAML, parsed into mappings that remember their line numbers.

libyaml's parser (through PyYAML) reads the file.  Its events are built into
LineMaps and LineLists here, in one pass: PyYAML's composer and constructor made
a node, two marks and several Python calls of every scalar, ~2.5 s of 2.8 s at
20,000 VMs (bench/README.md, "validate at 100,000 VMs").  Plain scalars are
resolved with PyYAML's own YAML 1.1 table and built by its own constructors, so
the values are the ones SafeLoader gives.  A document with a tag, an anchor or
alias, a merge key or a second document is built by PyYAML's constructor instead,
as before.  Either way the garbage collector is paused while the objects are
made: its full passes over a growing heap of millions of them cost more than the
parse itself.

PyYAML is imported on the first parse, not with this module: a fabric read back
from the cache needs no YAML, and importing it costs a converged run ~20 ms.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import types
from collections.abc import Iterator, Mapping
from typing import Any


class LineMap(dict):
    """A YAML mapping that remembers the line of each key (1-based) and what was written.

    ``texts``: for each key whose value is a plain (unquoted) scalar that YAML 1.1
    read as something else than a string (``52:54:00:12:34:56`` as an integer,
    ``on`` as true, ``~`` as null), that value's text as written in the file.
    ``readings``: the keys written as such scalars are kept as their text (a key is
    always a name), and ``readings`` holds what YAML 1.1 made of each of them.
    """

    # Slots, and one shared empty texts and readings until a key needs its own: a
    # mapping per VM is 2 objects for the garbage collector to count, not 5.
    __slots__ = ("line", "key_lines", "texts", "readings")
    line: int
    key_lines: dict[str, int]
    texts: Mapping[str, str]
    readings: Mapping[str, Any]

    @classmethod
    def empty(cls, line: int = 0) -> LineMap:
        """A mapping with no keys, placed at ``line``."""
        mapping = cls()
        mapping.line, mapping.key_lines, mapping.texts, mapping.readings = line, {}, _NONE, _NONE
        return mapping

    def text(self, key: str, text: str) -> None:
        """Record that the plain scalar under ``key`` was written ``text``."""
        if self.texts is _NONE:
            self.texts = {}
        self.texts[key] = text  # type: ignore[index]

    def reading(self, text: str, value: Any) -> None:
        """Record that YAML 1.1 reads the key written ``text`` as ``value``."""
        if self.readings is _NONE:
            self.readings = {}
        self.readings[text] = value  # type: ignore[index]


_NONE: Mapping[str, Any] = types.MappingProxyType({})


class LineList(list):
    """A YAML sequence; ``texts[i]`` is item i's text as written when YAML 1.1 read
    that plain scalar as something else than a string, else None."""

    __slots__ = ("texts",)
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
            result.reading(text, key)
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
            result.text(key, text)
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


class _Fallback(Exception):
    """The document holds something only PyYAML's constructor builds as before."""


# What PyYAML's SafeConstructor makes of a plain scalar that YAML 1.1 resolves to
# these tags; any other resolved tag (merge, yaml) goes to the constructor.
_BUILT = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
          "tag:yaml.org,2002:null", "tag:yaml.org,2002:timestamp")
_VALUE = "tag:yaml.org,2002:value"  # a lone `=`: the text "=", as _loader says


@functools.cache
def _resolvers() -> dict[str, tuple[tuple[str, Any], ...]]:
    """The loader's YAML 1.1 implicit resolvers by first character ("" for the empty
    scalar), in the order Resolver.resolve tries them."""
    return {first: tuple(found) for first, found in _loader().yaml_implicit_resolvers.items()}


@functools.cache
def _candidates() -> dict[str, Any]:
    """By first character, one pattern that matches where any of its resolvers' does:
    the resolvers' own patterns as alternatives (or, should their flags differ, one
    that matches anything).  A plain scalar it does not match is a string; one it
    matches goes through Resolver's order, in _Builder._resolve."""
    import re

    candidates = {}
    for first, found in _resolvers().items():
        flags = {pattern.flags for _, pattern in found}
        candidates[first] = re.compile("|".join(f"(?:{pattern.pattern})" for _, pattern in found),
                                       flags.pop()) if len(flags) == 1 else re.compile("")
    return candidates


class _Builder:
    """LineMaps and LineLists straight from libyaml's events, as _construct_mapping and
    _construct_sequence build them from PyYAML's nodes (same values, texts, readings,
    lines and errors).  Raises _Fallback where the document needs PyYAML's constructor."""

    def __init__(self, text: str) -> None:
        import yaml

        self._resolvers = _resolvers()
        if None in self._resolvers:  # a resolver for any first character: not SafeLoader's
            raise _Fallback
        # A plain scalar that no resolver's pattern matches is a string: the usual
        # name (whose first character starts no resolver), an address.
        self._candidates = _candidates()
        self._loader = _loader()(text)
        self._next = self._loader.get_event
        self._scalar_event = yaml.ScalarEvent
        self._node_type = yaml.ScalarNode
        self._kinds = {yaml.MappingStartEvent: self._mapping,
                       yaml.SequenceStartEvent: self._sequence}
        self._ends = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
        self._stream_end = yaml.StreamEndEvent
        self._error: DocumentError | None = None

    def document(self) -> Any:
        """The stream's single document (None when it has none).  Raises
        DocumentError, yaml.YAMLError or _Fallback."""
        self._next()  # stream start
        if isinstance(self._next(), self._stream_end):  # no document at all
            return None
        root = self._node(self._next())
        self._next()  # document end
        # Another document: PyYAML's composer refuses the stream, with its marks.
        if not isinstance(self._next(), self._stream_end):
            raise _Fallback
        if self._error is not None:  # after the whole stream, as when composing first
            raise self._error
        return root

    def _fail(self, line: int, message: str) -> None:
        if self._error is None:  # the first one in document order, as construction meets it
            self._error = DocumentError(line, message)

    def _scalar(self, event: Any) -> tuple[Any, str | None]:
        """(value, text as written when YAML 1.1 made it something else than a string)."""
        if event.tag is not None or event.anchor is not None:
            raise _Fallback
        text = event.value
        tag = None if event.style else self._resolve(text)  # quoted or block: a string
        if tag is None or tag == _VALUE:
            return text, None
        if tag not in _BUILT:
            raise _Fallback
        node = self._node_type(tag, text, event.start_mark, event.end_mark)
        return self._loader.yaml_constructors[tag](self._loader, node), text

    def _resolve(self, text: str) -> str | None:
        """The tag YAML 1.1 gives the plain scalar ``text`` (Resolver.resolve), None for a
        string."""
        for tag, pattern in self._resolvers.get(text[:1], ()):
            if pattern.match(text):
                return tag
        return None

    def _key(self, event: Any, mapping: LineMap) -> str:
        """A key's text; what YAML 1.1 made of it goes to the mapping's readings."""
        key, text = self._scalar(event)
        if text is None:
            return key
        mapping.reading(text, key)
        return text

    def _node(self, event: Any) -> Any:
        if type(event) is self._scalar_event:
            return self._scalar(event)[0]
        build = self._kinds.get(type(event))
        if build is None or event.tag is not None or event.anchor is not None:
            raise _Fallback  # an alias, a tagged or anchored collection
        return build(event)

    def _mapping(self, start: Any) -> LineMap:
        result = LineMap.empty(start.start_mark.line + 1)
        key_lines = result.key_lines
        get, scalar_event, ends, candidates = self._next, self._scalar_event, self._ends, \
            self._candidates
        while True:
            event = get()
            if type(event) is scalar_event:
                line = event.start_mark.line + 1
                key = event.value
                # The usual key, a plain name YAML 1.1 cannot read as anything else, is
                # taken as written: no call, no pattern.
                if event.tag is not None or event.anchor is not None or (
                        not event.style and key[:1] in candidates
                        and candidates[key[:1]].match(key)):
                    key = self._key(event, result)
            elif isinstance(event, ends):
                return result
            else:
                line = event.start_mark.line + 1
                self._fail(line, f"key {self._node(event)!r} must be a string")
                key = None
            event = get()
            text = None
            if type(event) is not scalar_event:
                value = self._node(event)
            elif event.tag is None and event.anchor is None and (
                    event.style or (value := event.value)[:1] not in candidates
                    or not candidates[value[:1]].match(value)):
                value = event.value  # a quoted scalar, or a plain one YAML 1.1 keeps a string
            else:
                value, text = self._scalar(event)
            if key is None:
                continue
            if key in result:
                self._fail(line, f"duplicate key {key!r} (first on line {key_lines[key]})")
                continue
            result[key] = value
            key_lines[key] = line
            if text is not None:
                result.text(key, text)

    def _sequence(self, start: Any) -> LineList:
        result = LineList()
        result.texts = texts = []
        get, scalar_event, ends = self._next, self._scalar_event, self._ends
        while True:
            event = get()
            if type(event) is scalar_event:
                value, text = self._scalar(event)
            elif isinstance(event, ends):
                return result
            else:
                value, text = self._node(event), None
            result.append(value)
            texts.append(text)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No garbage collection inside: for building the millions of objects of a large
    fabric, none of which makes a cycle that needs it meanwhile."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def parse(text: str) -> Any:
    """The document in ``text``, its mappings LineMaps and its lists LineLists, scalars
    as PyYAML's safe loader reads them (YAML 1.1).  Raises DocumentError."""
    return _read(text, events=True)


def _read(text: str, events: bool) -> Any:
    """parse(), built from libyaml's events (``events``) or by PyYAML's constructor."""
    import yaml

    try:
        with gc_paused():
            if events:
                try:
                    return _Builder(text).document()
                except _Fallback:
                    pass
            return yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise DocumentError(line, f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise DocumentError(None, f"YAML syntax error: {exc}") from None
