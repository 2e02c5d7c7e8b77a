"""Which top-level keys of a DeepSpeed config DeepSpeed never reads.

DeepSpeed checks the keys inside most of its sections (`zero_optimization.stag` is refused) but reads the top level
by name and ignores the rest, so a misspelt section (`zero_optimisation`, `bfloat`) has no effect and no message.
There is no list of those names to check against; `unread_keys` parses the config with DeepSpeed's own parser
(`DeepSpeedConfig`) on a dict that records every key it looks up.
"""
from __future__ import annotations

from typing import Any, Iterator, List, Mapping, Optional, Set, Tuple

__all__ = ["unread_keys", "parsed_unread_keys"]


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
    """A dict that records the keys looked up in it (`get`, `[]`, `in`, `in keys()`); its copies share the record."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        super().__init__(data)
        self.looked_up: Set[Any] = set()

    def get(self, key: Any, default: Any = None) -> Any:
        self.looked_up.add(key)
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        self.looked_up.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.looked_up.add(key)
        return super().__contains__(key)

    def keys(self) -> _LookedUpKeys:  # type: ignore[override]
        return _LookedUpKeys(self)


def unread_keys(ds_config: Mapping[str, Any]) -> List[Tuple[str, Optional[str]]]:
    """(key, the closest key DeepSpeed reads or None) for each top-level key of `ds_config` (which gives the
    micro-batch size and gradient accumulation) that DeepSpeed's config parser never looks up. [] when the parser
    refuses the config: the run's checks report that (`check_deepspeed_accepts`)."""
    try:
        return parsed_unread_keys(ds_config)
    except Exception:  # noqa: BLE001 (any refusal: check_deepspeed_accepts names it)
        return []


def parsed_unread_keys(ds_config: Mapping[str, Any]) -> List[Tuple[str, Optional[str]]]:
    """`unread_keys` from one parse of `ds_config` by DeepSpeed's `DeepSpeedConfig`, whose refusal of the config
    (pydantic's ValidationError, DeepSpeedConfigError) is raised."""
    from deepspeed.runtime.config import DeepSpeedConfig

    # without train_batch_size, which DeepSpeed derives from the other two batch keys for the world size it sees
    # (here perhaps none yet: a config for several ranks would otherwise be refused)
    recorded = _RecordingDict({key: value for key, value in ds_config.items() if key != "train_batch_size"})
    DeepSpeedConfig(recorded)
    read = sorted(str(key) for key in recorded.looked_up)
    out = []
    for key in ds_config:
        if key not in recorded.looked_up:
            from task_registry.errors import close_matches

            close = close_matches(str(key), read, n=1, cutoff=0.6, substrings=False)
            out.append((str(key), close[0] if close else None))
    return out
