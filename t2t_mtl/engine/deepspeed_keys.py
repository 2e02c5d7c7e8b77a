"""Which top-level keys of a DeepSpeed config DeepSpeed never reads, which keys it reads unchecked with a value of
another type than its default's, and which value its parser failed on with a raw error.

DeepSpeed checks the keys inside most of its sections (`zero_optimization.stag` is refused) but reads the top level
by name and ignores the rest, so a misspelt section (`zero_optimisation`, `bfloat`) has no effect and no message.
There is no list of those names to check against; `parse_keys` parses the config with DeepSpeed's own parser
(`DeepSpeedConfig`) on a dict that records every key it looks up (its sections' too, by their dotted path), and the
default it looks it up with. Its top-level scalars (`gradient_clipping`, `prescale_gradients`, ...) and those of the
sections it reads with `get_scalar_param` (`activation_checkpointing`, `flops_profiler`, `checkpoint`, `aio`, ...)
are read as given, so a value of the wrong type (`gradient_clipping: "1.0"`) fails only inside `deepspeed.initialize`
or a training step, or is misread (`use_node_local_storage: "no"` as true, `profile_step: true` as 1); a key looked
up with a true/false default must be true or false, and one with a number default a number. Some other values fail
in the parser itself with a raw error naming no key (`checkpoint.tag_validation: 3`: "'int' object has no attribute
'upper'"); the key it read last is that value's where the parse without it does not fail so.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Tuple

__all__ = ["ParsedKeys", "parse_keys", "unread_keys", "value_at"]

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


class _Record:
    """The look-ups of one parse: the paths (tuples of keys from the top level) looked up, in the order of their
    latest look-up, and the defaults `get` was given at each."""

    def __init__(self) -> None:
        self.looked_up: Dict[Tuple[Any, ...], None] = {}
        self.defaults: Dict[Tuple[Any, ...], List[Any]] = {}

    def add(self, path: Tuple[Any, ...]) -> None:
        """Record a look-up of `path`, the latest."""
        self.looked_up.pop(path, None)
        self.looked_up[path] = None


class _RecordingDict(dict):
    """A dict that records the keys looked up in it (`get`, `[]`, `in`, `in keys()`) and the defaults `get` was given,
    by their path from the top level: its mappings are `_RecordingDict`s too, recording into the same `_Record`."""

    def __init__(self, data: Mapping[str, Any], record: Optional[_Record] = None, path: Tuple[Any, ...] = ()) -> None:
        self.record = _Record() if record is None else record
        self.path = path
        super().__init__({key: _RecordingDict(value, self.record, (*path, key)) if isinstance(value, Mapping) else value
                          for key, value in data.items()})

    def get(self, key: Any, default: Any = None) -> Any:
        self.record.add((*self.path, key))
        self.record.defaults.setdefault((*self.path, key), []).append(default)
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        self.record.add((*self.path, key))
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.record.add((*self.path, key))
        return super().__contains__(key)

    def keys(self) -> _LookedUpKeys:  # type: ignore[override]
        return _LookedUpKeys(self)


class ParsedKeys(NamedTuple):
    """What one parse of a DeepSpeed config by `DeepSpeedConfig` tells (`parse_keys`): `unread`, (key, the closest
    key DeepSpeed reads or None) for each top-level key it never looked up; `mistyped`, (dotted key, the kind of value
    it takes, the value) for each scalar, at the top level or in a section, of another type than the defaults it was
    looked up with; `error`, the parser's refusal (pydantic's ValidationError, DeepSpeedConfigError, or a raw error on
    a value it reads unchecked), None where it accepted the config; `culprit`, for a raw error, the dotted key of the
    value it failed on where that is known (the key it read last, whose removal makes that error go away), else None.
    A refused parse reports the scalars it read before failing, and no unread key."""

    unread: List[Tuple[str, Optional[str]]]
    mistyped: List[Tuple[str, str, Any]]
    error: Optional[Exception]
    culprit: Optional[str] = None


def unread_keys(ds_config: Mapping[str, Any]) -> List[Tuple[str, Optional[str]]]:
    """`ParsedKeys.unread` of `ds_config` (which gives the micro-batch size and gradient accumulation); [] when the
    parser refuses the config or a scalar is mistyped: the run's checks report that (`check_deepspeed_accepts`)."""
    parsed = parse_keys(ds_config)
    return [] if parsed.error is not None or parsed.mistyped else parsed.unread


def parse_keys(ds_config: Mapping[str, Any]) -> ParsedKeys:
    """`ParsedKeys` of `ds_config` from one parse by DeepSpeed's `DeepSpeedConfig` (two where a raw error's
    `culprit` is checked)."""
    # without train_batch_size, which DeepSpeed derives from the other two batch keys for the world size it sees
    # (here perhaps none yet: a config for several ranks would otherwise be refused)
    recorded = _RecordingDict({key: value for key, value in ds_config.items() if key != "train_batch_size"})
    error = _parse_error(recorded)
    if error is not None:
        return ParsedKeys([], _mistyped(ds_config, recorded.record), error, _culprit(recorded, error))
    top = {path[0] for path in recorded.record.looked_up if len(path) == 1}
    read = sorted(str(key) for key in top)
    out = []
    for key in ds_config:
        if key not in top:
            from task_registry.errors import close_matches

            close = close_matches(str(key), read, n=1, cutoff=0.6, substrings=False)
            out.append((str(key), close[0] if close else None))
    return ParsedKeys(out, _mistyped(ds_config, recorded.record), None)


def _parse_error(ds_config: Mapping[str, Any]) -> Optional[Exception]:
    """The error `DeepSpeedConfig` raises on `ds_config` (any: the caller names it), None where it accepts it."""
    from deepspeed.runtime.config import DeepSpeedConfig

    try:
        DeepSpeedConfig(ds_config)
    except Exception as error:  # noqa: BLE001
        return error
    return None


def _culprit(recorded: _RecordingDict, error: Exception) -> Optional[str]:
    """The dotted key of the value a raw parse `error` of `recorded` (not pydantic's ValidationError nor
    DeepSpeedConfigError, which say what they refuse) failed on: the key the parser read last, where the config gives
    it and the parse without it fails otherwise or not at all; None where that is not so (an error of a later check)."""
    from deepspeed.runtime.config import DeepSpeedConfigError
    from pydantic import ValidationError

    if isinstance(error, (ValidationError, DeepSpeedConfigError)) or not recorded.record.looked_up:
        return None
    path = list(recorded.record.looked_up)[-1]
    found, _ = value_at(recorded, path)
    if not found:
        return None
    without = _without(recorded, path)
    again = _parse_error(without)
    if again is not None and (type(again), str(again)) == (type(error), str(error)):
        return None
    return ".".join(map(str, path))


def _without(ds_config: Mapping[str, Any], path: Tuple[Any, ...]) -> Dict[str, Any]:
    """A plain copy of `ds_config` without the key at `path`."""
    out = {key: _without(value, ()) if isinstance(value, Mapping) else value for key, value in ds_config.items()}
    if len(path) == 1:
        out.pop(path[0], None)
    elif path:
        out[path[0]] = _without(out[path[0]], path[1:])
    return out


def _mistyped(ds_config: Mapping[str, Any], record: _Record) -> List[Tuple[str, str, Any]]:
    """(dotted key, kind, value) for each key of `ds_config` (at the top level or in a section) looked up with
    defaults all of one `_SCALAR_KINDS` kind whose value is not of that kind, in the order they were first read."""
    out = []
    for path, defaults in record.defaults.items():
        found, value = value_at(ds_config, path)
        if not found:
            continue
        for kind, fits in _SCALAR_KINDS:
            if all(fits(default) for default in defaults) and not fits(value):
                out.append((".".join(map(str, path)), kind, value))
    return out


def value_at(ds_config: Mapping[str, Any], path: Tuple[Any, ...]) -> Tuple[bool, Any]:
    """(True, the value at `path` in `ds_config`), or (False, None) where it gives none."""
    value: Any = ds_config
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return False, None
        value = value[key]
    return True, value
