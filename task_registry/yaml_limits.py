"""Bounds on what a YAML document may build, for the project's loaders of files others write (config files, YAML
task files, promptsource template files, a run's config.yaml).

PyYAML's safe loaders run no code, but two documents of a few hundred bytes still stop a reader: values nested
thousands of levels deep (PyYAML composes them by recursion: a raw RecursionError) and aliases of aliases (the
"billion laughs": `&a [x, x, ...]`, `&b [*a, *a, ...]`, ... is built cheaply by reference, but anything that walks
or prints it, such as an error message quoting the value, walks 10**9 values), or an alias inside its own anchor
(a value that contains itself). `BoundedComposition` refuses all three as a `yaml.composer.ComposerError` at the
line of the value, which the loaders' callers already report with the file. The limits are far above any file the
project reads: its configs and task files nest under ten levels and hold a few hundred values.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional

import yaml
from yaml.composer import ComposerError

#: the deepest nesting of mappings and lists a document may have
MAX_DEPTH = 64
#: the most values (mappings, lists and scalars) a document may hold, counting an alias's values at every use
MAX_EXPANDED_VALUES = 1_000_000


class BoundedComposition:
    """Mixin for a PyYAML loader class (put it before the loader: `class L(BoundedComposition, yaml.SafeLoader)`):
    a document nested more than `MAX_DEPTH` levels, one holding more than `MAX_EXPANDED_VALUES` values with its
    aliases expanded, or one with a value containing itself through an alias raises `ComposerError` before any
    value is constructed."""

    def compose_node(self, parent: Optional[yaml.Node], index: Any) -> yaml.Node:
        """PyYAML's (pure-Python) composition, stopped at `MAX_DEPTH` before Python's recursion limit is reached
        (libyaml's C composer, which does not call this, stops at its own depth of 1000)."""
        depth = getattr(self, "_nesting_depth", 0)
        if depth >= MAX_DEPTH:
            raise _too_deep(self.peek_event().start_mark)  # type: ignore[attr-defined]
        self._nesting_depth = depth + 1
        try:
            return super().compose_node(parent, index)  # type: ignore[misc]
        finally:
            self._nesting_depth = depth

    def get_single_node(self) -> Optional[yaml.Node]:
        """The document's node graph, checked for depth, size with aliases expanded, and self-containing values."""
        node = super().get_single_node()  # type: ignore[misc]
        if node is not None:
            check_node_graph(node)
        return node


def _too_deep(mark: Any) -> ComposerError:
    return ComposerError(None, None, f"values are nested more than {MAX_DEPTH} levels deep: no config, task or "
                                     f"template file needs that; flatten the value", mark)


def _children(node: yaml.Node) -> Iterator[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield key
            yield value
    elif isinstance(node, yaml.SequenceNode):
        yield from node.value


def check_node_graph(root: yaml.Node) -> None:
    """Raise `ComposerError` at the offending value where `root`'s graph (aliases are shared nodes) nests deeper
    than `MAX_DEPTH`, holds more than `MAX_EXPANDED_VALUES` values with every alias expanded, or has a value that
    contains itself. Linear in the number of distinct nodes (each one's expanded size is counted once)."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # the values being walked: the current one's ancestors
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        if finished:
            open_nodes.discard(id(node))
            sizes[id(node)] = size = 1 + sum(sizes[id(child)] for child in _children(node))
            if size > MAX_EXPANDED_VALUES:
                raise ComposerError(None, None, f"this value holds more than {MAX_EXPANDED_VALUES:,} values once its "
                                                f"aliases (*name) are expanded, as a 'billion laughs' document does: "
                                                f"write the values out, or alias fewer aliases", node.start_mark)
            continue
        if id(node) in sizes:
            continue
        if id(node) in open_nodes:
            raise ComposerError(None, None, "this value contains itself through an alias (*name), so it never "
                                            "ends: write the value out", node.start_mark)
        if len(open_nodes) >= MAX_DEPTH:
            raise _too_deep(node.start_mark)
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


class BoundedSafeLoader(BoundedComposition, yaml.SafeLoader):
    """`yaml.safe_load`'s loader within this module's bounds."""
