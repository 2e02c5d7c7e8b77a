"""What a resume changes: the settings of a resumed run that differ from those its run saved in `config.yaml` (the
ones a resume may change, as `training.lr`, `training.steps` or the `evaluation` section, apply from the resumed step
and the resumed run saves them over the file, so they are named when it starts)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Mapping, Optional

#: keys not named: the run folder (a resume into another folder is no change of training) and the model section,
#: whose changes a resume refuses or names itself (`resume_checks.model_change_warning`)
UNNAMED = ("training.output_dir", "model")


_UNSET = object()


def changed_settings(saved: Mapping[str, Any], now: Mapping[str, Any], prefix: str = "") -> List[str]:
    """`key old → new` for each setting of `now` (a config's `to_dict()`) that differs from `saved` (the run's
    config.yaml, read), as dotted keys down to where both sides stop being mappings, in `now`'s order (keys only
    `saved` has after); `UNNAMED` keys left out, and values that differ in Python alone (a tuple and the list
    config.yaml holds of it)."""
    changes = []
    for key in dict.fromkeys([*now, *saved]):
        dotted = f"{prefix}{key}"
        old, new = saved.get(key, _UNSET), now.get(key, _UNSET)
        if dotted in UNNAMED:
            continue
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            changes += changed_settings(old, new, dotted + ".")
        elif old != new and _shown(old) != _shown(new):  # (a tuple given in Python is the list YAML reads back)
            changes.append(f"{dotted} {_shown(old)} → {_shown(new)}")
    return changes


def _shown(value: Any) -> str:
    return "(unset)" if value is _UNSET else json.dumps(value, ensure_ascii=False)


def config_change_warning(saved_yaml: Path, now: Mapping[str, Any], step: int) -> Optional[str]:
    """A warning naming the settings in which a run resumed at `step` differs from the run's `saved_yaml`, or None
    (none differ, or the file cannot be read as a mapping)."""
    import yaml

    from task_registry.yaml_limits import BoundedSafeLoader

    try:  # (a run's config.yaml may come from someone else)
        saved = yaml.load(saved_yaml.read_text(encoding="utf-8"), Loader=BoundedSafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):  # (nothing to compare with: the run's own is replaced)
        return None
    changes = changed_settings(saved, now) if isinstance(saved, Mapping) else []
    if not changes:
        return None
    return (f"resumed with settings other than {saved_yaml}'s, which apply from step {step}: {'; '.join(changes)} "
            f"(the run's config.yaml now holds these)")
