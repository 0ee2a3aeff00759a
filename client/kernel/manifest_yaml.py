"""YAML as Convox reads a `convox.yml` (go-yaml v2), on PyYAML's safe loader: plain data
only, bounded, and with its errors naming a line and a column.

Where PyYAML reads YAML otherwise:
- a quoted `"<<"` key merges like a plain `<<`, as in Convox: it decodes each service a
  second time from its own re-encoding, which writes the key plain (its test manifests
  quote it);
- an anchor may be defined again, later aliases taking the newer one, as in go-yaml;
- in `<<: [*a, *b]` the earlier mapping wins, as in go-yaml and the YAML merge spec;
- explicit keys win over merged ones wherever they stand, as the spec says (go-yaml v2
  lets a merge key written after an explicit key override it).
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from client.kernel.entries import shown
from client.kernel.errors import InvalidArgument

#: The deepest nesting of collections, and of mappings merged into mappings, read.
MAX_DEPTH = 100
#: The most entries merge keys may copy into mappings, over the whole file: merging the
#: same mappings again and again must not turn a small file into a huge one.
MAX_MERGED = 100_000
#: The longest problem a YAML error reports (its text may quote the input).
MAX_PROBLEM = 200

_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_VALUE_TAG = "tag:yaml.org,2002:value"


def load(text: str, name: str) -> Any:
    """The data of one YAML document; InvalidArgument
    (`invalid manifest: NAME line L, column C: problem`) when it is not valid."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text)  # it checks the characters at once
        return loader.get_single_data()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = err.problem or err.context
    except ReaderError as err:  # a character YAML does not allow, e.g. a NUL
        line = text.count("\n", 0, err.position) + 1
        column = err.position - text.rfind("\n", 0, err.position)
        where = f" line {line}, column {column}"
        problem = f"unacceptable character #x{err.character:04x}: {err.reason}"
    except yaml.YAMLError as err:
        where, problem = "", str(err)
    except RecursionError:  # a last resort: MAX_DEPTH keeps real input far from it
        where, problem = "", "nested too deeply"
    finally:
        if loader is not None:
            loader.dispose()
    raise InvalidArgument(f"invalid manifest: {shown(name)}{where}: {_problem(problem)}")


def _problem(text: str | None) -> str:
    one = " ".join((text or "not valid YAML").split())
    return one if len(one) <= MAX_PROBLEM else one[: MAX_PROBLEM - 1] + "…"


def _is_merge(key: Node) -> bool:
    """A merge key: `<<` plain or quoted (or tagged `!!merge`)."""
    if not isinstance(key, ScalarNode):
        return False
    return key.tag == _MERGE_TAG or (key.value == "<<" and key.tag == _STR_TAG)


def _identity(key: Node) -> object:
    """What makes two keys one key of a mapping (their tag and text, for scalars)."""
    return (key.tag, key.value) if isinstance(key, ScalarNode) else id(key)


def _sources(value: Node) -> list[MappingNode]:
    """The mappings a merge key's value names: one mapping or a list of them."""
    if isinstance(value, MappingNode):
        return [value]
    if isinstance(value, SequenceNode) and all(
        isinstance(item, MappingNode) for item in value.value
    ):
        return list(value.value)
    raise ConstructorError(
        None, None, "a merge key needs a mapping or a list of mappings", value.start_mark
    )


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with go-yaml's anchors and merge keys, and bounds."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0
        self._merged = 0
        self._flattening: set[int] = set()

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if not self.check_event(AliasEvent):
            event = self.peek_event()
            if event.anchor is not None:
                self.anchors.pop(event.anchor, None)  # a later anchor replaces the earlier
            if self._depth >= MAX_DEPTH:
                raise ComposerError(
                    None, None, f"nested more than {MAX_DEPTH} levels deep", event.start_mark
                )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def flatten_mapping(self, node: MappingNode) -> None:
        """Replaces the merge keys of `node` by the entries they merge: the earlier source
        first, each key once, before the mapping's own entries (the later entry of a key
        wins when the mapping is built, so explicit keys override merged ones)."""
        sources: list[MappingNode] = []
        explicit: list[tuple[Node, Node]] = []
        for key, value in node.value:
            if _is_merge(key):
                sources.extend(_sources(value))
                continue
            if key.tag == _VALUE_TAG:
                key.tag = _STR_TAG  # as PyYAML does: `=` is an ordinary key
            explicit.append((key, value))
        if not sources:
            return
        if len(self._flattening) >= MAX_DEPTH:
            raise ConstructorError(
                None, None, f"merge keys nested more than {MAX_DEPTH} levels deep", node.start_mark
            )
        self._flattening.add(id(node))
        try:
            merged: dict[object, tuple[Node, Node]] = {}
            for source in sources:
                if id(source) in self._flattening:
                    raise ConstructorError(
                        None, None, "a merge key merges a mapping into itself", source.start_mark
                    )
                self.flatten_mapping(source)
                for pair in source.value:
                    merged.setdefault(_identity(pair[0]), pair)
        finally:
            self._flattening.discard(id(node))
        self._merged += len(merged)
        if self._merged > MAX_MERGED:
            raise ConstructorError(
                None, None, f"merge keys copy more than {MAX_MERGED} entries", node.start_mark
            )
        node.value = [*merged.values(), *explicit]
