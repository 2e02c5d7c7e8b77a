"""Keys written twice in one YAML mapping: plain YAML keeps the last one silently; the project's loaders refuse
them (config files, YAML task files, promptsource template files)."""
from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Dict

import yaml

MERGE_TAG = "tag:yaml.org,2002:merge"


def check_written_keys(loader: yaml.constructor.BaseConstructor, node: yaml.MappingNode) -> None:
    """Raise `yaml.constructor.ConstructorError`, at the key, for a key of `node` written twice or one that is not
    a name (a list or a mapping); keys that a `<<:` merge brings in may be overridden, as YAML specifies."""
    first_lines: Dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == MERGE_TAG:
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError(None, None, f"a key must be a name, got {key!r}",
                                                    key_node.start_mark)
        if key in first_lines:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (lines {first_lines[key]} and {line}; YAML would keep only the "
                            f"second: merge them into one)", key_node.start_mark)
        first_lines[key] = line
