"""What `t2t-mtl eval` of a run takes from the run's own config: the `EvalSettings` it scores with (each option not
given being the run's own evaluation setting, `t2t_mtl.evaluation.run_settings`, which `EvalSettings.from_run` is
with no option given), and the line that says which of the evaluation's settings came from the run rather than from
a flag."""
from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING, Any, Mapping, Union

if TYPE_CHECKING:
    from t2t_mtl.evaluation.eval_settings import EvalSettings

#: `--max-examples all`: every row of the split, whatever the run's `evaluation.max_examples`
ALL_EXAMPLES = "all"

#: EvalSettings field read from the run (`run_settings.RUN_KEYS`): the eval option's argparse dest, None for none
OPTION_DESTS = {"split": "split", "max_examples": "max_examples", "scoring": "scoring",
                "length_normalize": "length_norm", "num_beams": "num_beams", "max_new_tokens": "max_new_tokens",
                "batch_size": "batch_size", "max_input_length": "max_input_length", "num_shots": "shots",
                "shots_split": "shots_split", "original_task_only": "original_task", "seed": None}


def max_examples_option(text: str) -> Union[int, str]:
    """`--max-examples`' value: a number of examples, or `all` (every row, whatever the run's own cap)."""
    if text == ALL_EXAMPLES:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of examples or {ALL_EXAMPLES!r}, got {text!r}") from None


def eval_settings(args: argparse.Namespace, meta: Mapping[str, Any]) -> EvalSettings:
    """The settings `t2t-mtl eval` scores with (but `--template`'s): each option of `args` given, else what the
    checkpoint's run (`meta`) evaluated with, else EvalSettings' default (a model folder without a run config);
    `--max-examples all` is every row. ValueError for `--shots-split` without demonstrations."""
    from t2t_mtl.evaluation.run_settings import run_setting, settings_of_run

    if args.shots_split is not None and not (run_setting(meta, "num_shots") if args.shots is None else args.shots):
        raise ValueError("--shots-split names the split of k-shot demonstrations; without --shots K (or the run's "
                         "evaluation.num_shots) it is ignored")
    given = {field: getattr(args, dest) for field, dest in OPTION_DESTS.items() if dest is not None}
    every_row = given["max_examples"] == ALL_EXAMPLES
    if every_row:
        given["max_examples"] = None  # (the run's cap, replaced below)
    settings = settings_of_run(meta, **given, keep_predictions=args.keep_predictions)
    return dataclasses.replace(settings, max_examples=None) if every_row else settings


def settings_from_run(args: argparse.Namespace, meta: Mapping[str, Any], settings: Any) -> list[str]:
    """'FIELD VALUE (the run's KEY)' for each setting of `settings` (an EvalSettings) that the run's config gave: its
    option not given and its value the run's; empty for a model folder."""
    from t2t_mtl.evaluation.run_settings import RUN_KEYS, run_config_value

    taken = []
    for name, dest in OPTION_DESTS.items():
        if dest is not None and getattr(args, dest) is not None:
            continue
        key = next((key for key in RUN_KEYS[name] if run_config_value(meta, key) is not None), None)
        if key is not None and run_config_value(meta, key) == getattr(settings, name):
            taken.append(f"{name} {getattr(settings, name)!r} (the run's {key})")
    return taken
