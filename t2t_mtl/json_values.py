"""Values for strict JSON (RFC 8259 has no NaN or Infinity, which jq and other languages' parsers refuse)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator, Mapping


def nonfinite_to_null(value: Any) -> Any:
    """`value` with every NaN/infinite float, at any depth of mappings, lists and tuples, replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: nonfinite_to_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [nonfinite_to_null(v) for v in value]
    return value


class JsonLineError(json.JSONDecodeError):
    """A line of a JSONL file that does not parse; `path`, `lineno` and the parser's `error` name it."""

    def __init__(self, path: Path, lineno: int, error: json.JSONDecodeError):
        super().__init__(f"{path}:{lineno}: {error.msg}", error.doc, error.pos)
        self.path, self.lineno, self.error = path, lineno, error


def jsonl_records(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, record) for every non-blank line of the JSONL file `path`. An unterminated last line that does
    not parse (a record a crash cut short mid-write) is left out; any other line that does not parse raises
    JsonLineError."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if lineno == len(lines) and not text.endswith("\n"):
                return
            raise JsonLineError(path, lineno, error) from None
        yield lineno, record
