"""What `t2t-mtl eval` of a run takes from the run's own config: the `EvalSettings` it scores with (each option not
given being the run's own evaluation setting; `EvalSettings.from_run` is this with no option given), and the line that
says which of the evaluation's settings came from the run rather than from a flag."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

from t2t_mtl.cli.common import decoding_settings, run_evaluation_setting

if TYPE_CHECKING:
    from t2t_mtl.evaluation.runner import EvalSettings

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


def run_seed(meta: Mapping[str, Any]) -> int:
    """The seed a run's own evaluation rendered its templates (their choice/random filters) and drew its k-shot
    demonstrations with: its `training.seed`, as the trainer evaluates (0 for a model folder without a run config)."""
    seed = ((meta.get("config") or {}).get("training") or {}).get("seed")
    return 0 if seed is None else seed


def run_shots(args: argparse.Namespace, meta: Mapping[str, Any]) -> tuple[int, Optional[str]]:
    """(demonstrations per input, their split) of `--shots` / `--shots-split`, each not given being the run's own
    `evaluation.num_shots` / `shots_split` (a split only with demonstrations); ValueError for `--shots-split` where
    there are none."""
    shots = run_evaluation_setting(meta, "num_shots") if args.shots is None else args.shots
    if not shots:
        if args.shots_split is not None:
            raise ValueError("--shots-split names the split of k-shot demonstrations; without --shots K (or the run's "
                             "evaluation.num_shots) it is ignored")
        return 0, None
    return shots, run_evaluation_setting(meta, "shots_split") if args.shots_split is None else args.shots_split


def eval_settings(args: argparse.Namespace, meta: Mapping[str, Any]) -> EvalSettings:
    """The settings `t2t-mtl eval` scores with (but `--template`'s): each option of `args` given, else what the
    checkpoint's run (`meta`) evaluated with, else EvalSettings' default (a model folder without a run config).
    ValueError for `--shots-split` without demonstrations."""
    from t2t_mtl.evaluation.runner import EvalSettings

    shots, shots_split = run_shots(args, meta)
    split, max_examples = run_split_and_cap(args, meta)
    return EvalSettings(split=split, max_examples=max_examples,
                        scoring=args.scoring or run_evaluation_setting(meta, "scoring"),
                        **decoding_settings(args, meta), keep_predictions=args.keep_predictions,
                        seed=run_seed(meta), num_shots=shots, shots_split=shots_split,
                        original_task_only=(run_evaluation_setting(meta, "original_task_only")
                                            if args.original_task is None else args.original_task))


def no_options() -> argparse.Namespace:
    """`eval`'s setting options, none given: `eval_settings` then takes every setting from the run."""
    return argparse.Namespace(**{dest: None for _, dest, _ in RUN_SETTINGS if dest is not None},
                              keep_predictions=False)


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
