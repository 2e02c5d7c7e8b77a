"""`t2t-mtl export RUN_OR_CKPT --out DIR [--task NAME]`: a plain Hugging Face model folder."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from t2t_mtl.cli.common import path_argument
from t2t_mtl.cli.progress_bars import READS_NO_DATASETS
from t2t_mtl.model_folder import MODEL_CONFIG_FILE
from t2t_mtl.output_paths import non_empty_dir_refusal
from t2t_mtl.transformers_progress_bars import hidden_transformers_progress_bars


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="write a Hugging Face model folder from a run or checkpoint (ZeRO shards gathered)",
        description="Gather the fp32 weights of a run's latest checkpoint (or of the given checkpoint dir) and "
                    "write model + tokenizer with save_pretrained; T5ForConditionalGeneration.from_pretrained "
                    "loads the folder without t2t-mtl (MoE models: t2t_mtl.model.moe.load_t5_or_moe).")
    parser.add_argument("path", type=path_argument, metavar="RUN_OR_CKPT",
                        help="run directory or checkpoints/step-* folder (with --task also an exported folder)")
    parser.add_argument("--out", type=path_argument, required=True,
                        help="output folder (created); a folder that holds files is refused unless --overwrite")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty --out folder, replacing its files of the same names")
    parser.add_argument("--task", default=None,
                        help="(task-routed MoE models, per-task LoRA) export only the sub-network that serves "
                             "this task: its experts alone (a plain T5 whose feed-forward layers hold the top_k "
                             "experts of the task's route side by side, the other feed-forward layers zero-padded "
                             "to the same width; with --keep-moe an MoE model of one task, id 0), its adapter "
                             "folded into the weights (a plain T5 without LoRA). A registered task the model was "
                             "not trained on (held out) gets the experts of model.moe.unseen_task_routing and the "
                             "mean adapter")
    parser.add_argument("--keep-moe", action="store_true",
                        help="(with --task, task-routed MoE models) write the task's experts as an MoE model, "
                             "loaded with t2t-mtl and task ids, instead of the plain T5: no zero padding where "
                             "top_k > 1 and some feed-forward layers are dense")
    parser.set_defaults(func=run, **{READS_NO_DATASETS: True})


def run(args: argparse.Namespace) -> int:
    from t2t_mtl.engine.export import OccupiedOutError, export_model, export_task_subnetwork

    try:
        with hidden_transformers_progress_bars():  # ('Loading weights', 'Writing model shards': export draws none)
            if args.task is not None:
                out = export_task_subnetwork(args.path, args.task, args.out, overwrite=args.overwrite,
                                             keep_moe=args.keep_moe)
            elif args.keep_moe:
                print("error: --keep-moe keeps the experts of one task's sub-network: give --task NAME",
                      file=sys.stderr)
                return 2
            else:
                out = export_model(args.path, args.out, overwrite=args.overwrite)
    except OccupiedOutError:  # (worded for Python's out_dir and overwrite=True): refused in this command's words
        print(f"error: {non_empty_dir_refusal(args.out, '--out')}", file=sys.stderr)
        return 2
    except ValueError as err:  # ExportError, CheckpointError, MoEConfigError and the loaders' (tokenizer, model)
        print(f"error: {err}", file=sys.stderr)
        return 2
    what = f"the sub-network of task {args.task!r} of {args.path}" if args.task is not None else args.path
    print(f"exported {what} to {out}")
    moe = _moe_section(out)
    if moe:
        ids = ("(its layers route each token by the token alone: no task ids)" if moe.get("routing") == "token" else
               "and pass task_ids (the index in t2t_mtl_meta.json's tasks)")
        print(f"{out} holds mixture-of-experts layers: load it with t2t_mtl.load_trained_model or "
              f"t2t_mtl.model.moe.load_t5_or_moe {ids}; T5ForConditionalGeneration / "
              f"AutoModelForSeq2SeqLM.from_pretrained would load it without its experts, those feed-forward layers "
              f"freshly initialised")
    if args.task is not None:
        _print_task_form(out, args.task, moe)
    return 0


def _print_task_form(folder: Path, task: str, moe: Optional[dict]) -> None:
    """Say whether the `export --task` folder of an MoE model is a plain T5 (its experts side by side, with what
    zero padding that took) or an MoE model (its config's `moe` section, `_moe_section`: `--keep-moe`, or token
    routing under per-task LoRA adapters, `dense_blocker`), and the task token its inputs take (a model with task
    embeddings)."""
    from t2t_mtl.analysis.task_embeddings import find_task_tokens, task_token
    from t2t_mtl.engine.export import META_FILE
    from t2t_mtl.model.dense_task import dense_blocker
    from t2t_mtl.model.moe_config import MoEConfig
    from t2t_mtl.tokenizer import load_tokenizer

    meta = json.loads((folder / META_FILE).read_text())
    if moe:
        why = dense_blocker(MoEConfig.from_dict(moe))
        print(f"it stays an MoE model: {why} (only under task routing is a task's sub-network a plain T5)" if why
              else f"it stays an MoE model of the experts of task {task!r}, as --keep-moe asks (without it, export "
              f"writes the plain T5 that computes the same)")
    elif "dense_from_experts" in meta:
        _print_dense_form(folder, task, meta)
    if task in find_task_tokens(load_tokenizer(str(folder))):
        print(f"its inputs take the task token {task_token(task)} in front, as in training (eval and predict put "
              f"it there: the folder's meta names its task)")


def _print_dense_form(folder: Path, task: str, meta: dict) -> None:
    """Say that `folder` is the plain T5 of task `task`'s route (its `meta`'s `dense_from_experts`) and what its
    zero padding costs (`zero_padding`)."""
    top_k = len(next(iter(meta["dense_from_experts"].values()))["experts"])
    held = ("one expert in each MoE layer, which became that layer's feed-forward layer (its gate folded into wo)"
            if top_k == 1 else f"{top_k} experts in each MoE layer, which became that layer's feed-forward layer "
            f"side by side (their wi stacked, each one's wo times its gate)")
    print(f"{folder} is a plain T5: top-{top_k} task routing gives task {task!r} {held}; "
          f"T5ForConditionalGeneration / AutoModelForSeq2SeqLM.from_pretrained load it without t2t-mtl, giving the "
          f"MoE model's outputs for the task to every input")
    padding = meta.get("zero_padding")
    if padding:
        print(f"T5 has one d_ff for every layer, so its {len(padding['layers'])} dense feed-forward layers "
              f"({', '.join(padding['layers'])}) are zero-padded from d_ff {padding['d_ff']} to "
              f"{padding['padded_d_ff']}: {padding['zero_weights']:,} zero weights, "
              f"{padding['zero_weights'] / padding['weights']:.1%} of the folder's {padding['weights']:,}, each one "
              f"more multiply-add per token and no change to any output; --keep-moe writes the MoE model without "
              f"them")


def _moe_section(folder: Path) -> Optional[dict]:
    """The exported folder's config.json `moe` section (a TaskAwareT5, which plain T5 classes load without its
    experts); None for a plain T5."""
    return json.loads((folder / MODEL_CONFIG_FILE).read_text()).get("moe") or None
