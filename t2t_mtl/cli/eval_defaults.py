"""What `t2t-mtl eval` of a run takes from the run's own config: the defaults of `--split` and `--max-examples`
(its `evaluation.split` / `max_examples`, as the other settings already were), and the line that says which of the
evaluation's settings came from the run rather than from a flag."""
from __future__ import annotations

import argparse
from typing import Any, Mapping, Optional, Union

from t2t_mtl.cli.common import run_evaluation_setting

#: `--max-examples all`: every row of the split, whatever the run's `evaluation.max_examples`
ALL_EXAMPLES = "all"

#: (EvalSettings field, the eval option's argparse dest or None for none, the run config keys it is read from in order)
RUN_SETTINGS = (
    ("split", "split", ("evaluation.split",)),
    ("max_examples", "max_examples", ("evaluation.max_examples",)),
    ("scoring", "scoring", ("evaluation.scoring",)),
    ("length_normalize", "length_norm", ("evaluation.length_normalize",)),
    ("num_beams", "num_beams", ("evaluation.num_beams",)),
    ("max_new_tokens", "max_new_tokens", ("evaluation.max_new_tokens", "data.max_target_length")),
    ("batch_size", "batch_size", ("evaluation.batch_size",)),
    ("max_input_length", "max_input_length", ("evaluation.max_input_length", "data.max_input_length")),
    ("num_shots", "shots", ("evaluation.num_shots",)),
    ("shots_split", "shots_split", ("evaluation.shots_split",)),
    ("original_task_only", "original_task", ("evaluation.original_task_only",)),
    ("seed", None, ("training.seed",)),
)


def max_examples_option(text: str) -> Union[int, str]:
    """`--max-examples`' value: a number of examples, or `all` (every row, whatever the run's own cap)."""
    if text == ALL_EXAMPLES:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of examples or {ALL_EXAMPLES!r}, got {text!r}") from None


def _run_value(meta: Mapping[str, Any], key: str) -> Any:
    """The run config's value at the dotted `key` (None where it sets none, or for a model folder)."""
    section, name = key.split(".")
    return (((meta.get("config") or {}).get(section)) or {}).get(name)


def run_split_and_cap(args: argparse.Namespace, meta: Mapping[str, Any]) -> tuple[Optional[str], Optional[int]]:
    """(split, max_examples) of `--split` / `--max-examples`, each not given being the run's own `evaluation.split` /
    `evaluation.max_examples` (None: the task's default split, every row); `--max-examples all` is every row."""
    split = run_evaluation_setting(meta, "split") if args.split is None else args.split
    cap = run_evaluation_setting(meta, "max_examples") if args.max_examples is None else args.max_examples
    return split, None if cap == ALL_EXAMPLES else cap


def settings_from_run(args: argparse.Namespace, meta: Mapping[str, Any], settings: Any) -> list[str]:
    """'FIELD VALUE (the run's KEY)' for each setting of `settings` (an EvalSettings) that the run's config gave: its
    option not given and its value the run's; empty for a model folder."""
    taken = []
    for name, dest, keys in RUN_SETTINGS:
        if dest is not None and getattr(args, dest) is not None:
            continue
        key = next((key for key in keys if _run_value(meta, key) is not None), None)
        if key is not None and _run_value(meta, key) == getattr(settings, name):
            taken.append(f"{name} {getattr(settings, name)!r} (the run's {key})")
    return taken
