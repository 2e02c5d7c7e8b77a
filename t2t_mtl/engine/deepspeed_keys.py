"""Which top-level keys of a DeepSpeed config DeepSpeed never reads, and which it reads unchecked with a value of
another type than its default's.

DeepSpeed checks the keys inside most of its sections (`zero_optimization.stag` is refused) but reads the top level
by name and ignores the rest, so a misspelt section (`zero_optimisation`, `bfloat`) has no effect and no message.
There is no list of those names to check against; `parse_keys` parses the config with DeepSpeed's own parser
(`DeepSpeedConfig`) on a dict that records every key it looks up, and the default it looks it up with. Its
top-level scalars (`gradient_clipping`, `prescale_gradients`, ...) are read as given, so a value of the wrong type
(`gradient_clipping: "1.0"`) fails only inside `deepspeed.initialize` or a training step; a key looked up with a
true/false default must be true or false, and one with a number default a number.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Set, Tuple

__all__ = ["ParsedKeys", "parse_keys", "unread_keys"]

#: the kind of value a top-level key looked up with defaults of one kind takes: (what it is called, test)
_SCALAR_KINDS: Tuple[Tuple[str, Callable[[Any], bool]], ...] = (
    ("true or false", lambda value: isinstance(value, bool)),
    ("a number", lambda value: isinstance(value, (int, float)) and not isinstance(value, bool)),
)


class _LookedUpKeys:
    """The `keys()` view of a `_RecordingDict`: membership tests are recorded as look-ups."""

    def __init__(self, owner: "_RecordingDict") -> None:
        self.owner = owner

    def __contains__(self, key: object) -> bool:
        return key in self.owner

    def __iter__(self) -> Iterator[Any]:
        return iter(dict.keys(self.owner))

    def __len__(self) -> int:
        return len(self.owner)


class _RecordingDict(dict):
    """A dict that records the keys looked up in it (`get`, `[]`, `in`, `in keys()`) and the defaults `get` was given;
    its copies share the record."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        super().__init__(data)
        self.looked_up: Set[Any] = set()
        self.defaults: Dict[Any, List[Any]] = {}

    def get(self, key: Any, default: Any = None) -> Any:
        self.looked_up.add(key)
        self.defaults.setdefault(key, []).append(default)
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        self.looked_up.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.looked_up.add(key)
        return super().__contains__(key)

    def keys(self) -> _LookedUpKeys:  # type: ignore[override]
        return _LookedUpKeys(self)


class ParsedKeys(NamedTuple):
    """What one parse of a DeepSpeed config by `DeepSpeedConfig` tells (`parse_keys`): `unread`, (key, the closest
    key DeepSpeed reads or None) for each top-level key it never looked up; `mistyped`, (key, the kind of value it
    takes) for each top-level scalar of another type than the defaults it was looked up with; `error`, the parser's
    refusal (pydantic's ValidationError, DeepSpeedConfigError, or a raw error on a value it reads unchecked), None
    where it accepted the config. A refused parse reports the scalars it read before failing, and no unread key."""

    unread: List[Tuple[str, Optional[str]]]
    mistyped: List[Tuple[str, str]]
    error: Optional[Exception]


def unread_keys(ds_config: Mapping[str, Any]) -> List[Tuple[str, Optional[str]]]:
    """`ParsedKeys.unread` of `ds_config` (which gives the micro-batch size and gradient accumulation); [] when the
    parser refuses the config or a scalar is mistyped: the run's checks report that (`check_deepspeed_accepts`)."""
    parsed = parse_keys(ds_config)
    return [] if parsed.error is not None or parsed.mistyped else parsed.unread


def parse_keys(ds_config: Mapping[str, Any]) -> ParsedKeys:
    """`ParsedKeys` of `ds_config` from one parse by DeepSpeed's `DeepSpeedConfig`."""
    from deepspeed.runtime.config import DeepSpeedConfig

    # without train_batch_size, which DeepSpeed derives from the other two batch keys for the world size it sees
    # (here perhaps none yet: a config for several ranks would otherwise be refused)
    recorded = _RecordingDict({key: value for key, value in ds_config.items() if key != "train_batch_size"})
    try:
        DeepSpeedConfig(recorded)
    except Exception as error:  # noqa: BLE001 (any refusal: the caller names it)
        return ParsedKeys([], _mistyped(recorded), error)
    read = sorted(str(key) for key in recorded.looked_up)
    out = []
    for key in ds_config:
        if key not in recorded.looked_up:
            from task_registry.errors import close_matches

            close = close_matches(str(key), read, n=1, cutoff=0.6, substrings=False)
            out.append((str(key), close[0] if close else None))
    return ParsedKeys(out, _mistyped(recorded), None)


def _mistyped(recorded: _RecordingDict) -> List[Tuple[str, str]]:
    """(key, kind) for each top-level key of `recorded` looked up with defaults all of one `_SCALAR_KINDS` kind whose
    value is not of that kind."""
    out = []
    for key, defaults in recorded.defaults.items():
        if not dict.__contains__(recorded, key):
            continue
        for kind, fits in _SCALAR_KINDS:
            if all(fits(default) for default in defaults) and not fits(dict.__getitem__(recorded, key)):
                out.append((str(key), kind))
    return out
