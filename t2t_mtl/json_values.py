"""Values for strict JSON (RFC 8259 has no NaN or Infinity, which jq and other languages' parsers refuse)."""
from __future__ import annotations

import math
from typing import Any, Mapping


def nonfinite_to_null(value: Any) -> Any:
    """`value` with every NaN/infinite float, at any depth of mappings, lists and tuples, replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: nonfinite_to_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [nonfinite_to_null(v) for v in value]
    return value
