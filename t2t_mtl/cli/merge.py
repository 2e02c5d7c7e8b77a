"""`t2t-mtl merge BASE MODEL [MODEL ...] --out DIR`: one multitask model from fine-tuned models of a common base."""
from __future__ import annotations

import argparse
import math
import sys
from typing import Optional

from t2t_mtl.cli.common import path_argument
from t2t_mtl.cli.progress_bars import READS_NO_DATASETS
from t2t_mtl.transformers_progress_bars import hidden_transformers_progress_bars
from t2t_mtl.wording import counted


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "merge", help="merge fine-tuned models of one base into a multitask model (task arithmetic, TIES)",
        description="Task vectors τ_i = θ_i − θ_base of fine-tuned models (run dirs, checkpoints or exported "
                    "folders of the same base model), merged per parameter tensor and added to the base: "
                    "task_arithmetic θ_base + λ·Σ τ_i; mean θ_base + λ·mean τ_i; ties (trim each τ_i to its "
                    "--density largest magnitudes, elect signs, disjoint mean) θ_base + λ·τ_ties. Writes an HF "
                    "folder with the base's tokenizer and run config (eval and predict default to its settings).")
    parser.add_argument("base", type=path_argument, metavar="BASE", help="the model the others were fine-tuned from")
    parser.add_argument("models", type=path_argument, metavar="MODEL", nargs="+", help="fine-tuned models to merge")
    parser.add_argument("--out", type=path_argument, required=True, help="output folder")
    parser.add_argument("--method", choices=("task_arithmetic", "mean", "ties"), default="task_arithmetic",
                        help="how the task vectors are combined (default task_arithmetic)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="λ, the scale of the merged task vector (default 1.0)")
    parser.add_argument("--density", type=float, default=None,
                        help="(ties) fraction of each task vector's entries kept, by magnitude over the whole model "
                             "(default 0.2)")
    parser.set_defaults(func=run, **{READS_NO_DATASETS: True})


def option_error(args: argparse.Namespace) -> Optional[str]:
    """Why `--density` / `--scale` cannot be used as given (None: they can), named as the options."""
    if args.density is not None and args.method != "ties":
        return f"--density trims the task vectors of --method ties; with --method {args.method} it would be ignored"
    if args.density is not None and not 0 < args.density <= 1:
        return f"--density must lie in (0, 1] (the fraction of each task vector TIES keeps), got {args.density}"
    if not math.isfinite(args.scale):
        return f"--scale must be a finite number (negative scales subtract the task vectors), got {args.scale}"
    return None


def run(args: argparse.Namespace) -> int:
    from t2t_mtl.model.merging import merge_models

    error = option_error(args)
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        with hidden_transformers_progress_bars():  # ('Loading weights', 'Writing model shards': merge draws none)
            out = merge_models(args.base, args.models, args.out, method=args.method, scale=args.scale,
                               density=0.2 if args.density is None else args.density)
    except ValueError as err:  # MergeError and the loaders' errors (checkpoint, export, tokenizer) name the input
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"merged {counted(len(args.models), 'fine-tuned model')} of {args.base} by {args.method} (λ {args.scale}) "
          f"into {out}")
    return 0
