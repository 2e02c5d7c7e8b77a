"""The real-data zero-shot run (T0 protocol): train on the held-in real tasks, score the held-out ones.

Trains (through `t2t_mtl.engine.trainer.train`) on the built-in `real_train` mixture from ../shared/data
with the T0 held-out clusters held out (nli: RTE, CB, WNLI; commonsense: COPA; word_sense: WiC;
coreference: WSC), then evaluates those tasks zero-shot with EVERY promptsource template for them
(../shared/promptsource-templates: super_glue/rte + glue/rte on RTE, super_glue/cb, glue/wnli,
super_glue/copa, super_glue/wic, super_glue/wsc.fixed) and the 14 BIG-bench tasks (../shared/bigbench), by
rank classification. Prints per-template and median accuracy beside the majority-class baseline and
writes report.json / report.md / plots under --out.

    python benchmarks/zeroshot_real.py --steps 300                 # small T5 from scratch (CPU)
    python benchmarks/zeroshot_real.py --model google/t5-v1_1-base  # same protocol, pretrained (network)
    python benchmarks/zeroshot_real.py --checkpoint runs/zeroshot_real  # evaluate an existing run
    python benchmarks/zeroshot_real.py --checkpoint runs/zeroshot_real --shots 2  # the same, 2-shot
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import task_registry
from task_registry.bigbench import import_bigbench
from task_registry.promptsource import import_promptsource
from t2t_mtl.evaluation import EvalSettings, evaluate_tasks, load_checkpoint, summarize, write_report

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
T0_HELD_OUT_CLUSTERS = ["nli", "commonsense", "word_sense", "coreference"]

# task name -> (hub path, config, [(promptsource dataset, subset)], preprocessing field copies)
HELD_OUT = {
    "rte": ("glue", "rte", [("super_glue", "rte"), ("glue", "rte")],
            {"premise": "sentence1", "hypothesis": "sentence2"}, "nli"),
    "cb": ("super_glue", "cb", [("super_glue", "cb")], None, "nli"),
    "wnli": ("glue", "wnli", [("glue", "wnli")], None, "nli"),
    "copa": ("super_glue", "copa", [("super_glue", "copa")], None, "commonsense"),
    "wic": ("super_glue", "wic", [("super_glue", "wic")], None, "word_sense"),
    "wsc": ("super_glue", "wsc.fixed", [("super_glue", "wsc.fixed")], None, "coreference"),
}


def held_out_tasks(promptsource_root: Path) -> list[task_registry.Task]:
    """The T0 held-out tasks, each with every promptsource template written for its dataset."""
    tasks = []
    for name, (path, config, collections, copies, cluster) in HELD_OUT.items():
        templates = []
        for dataset, subset in collections:
            for t in import_promptsource(promptsource_root, dataset=dataset, subset=subset):
                label = f"{dataset}/{t.name}" if len(collections) > 1 else t.name
                templates.append(task_registry.Template(label, t.jinja, answer_choices=t.answer_choices,
                                                        metadata=t.metadata, id=t.id))
        preprocessors = [task_registry.Map(copies)] if copies else []
        tasks.append(task_registry.Task(f"t0_{name}", task_registry.HFSource(path, config), templates,
                                        preprocessors=preprocessors, metrics=("accuracy",), cluster=cluster,
                                        held_out=True, splits=("validation",), task_type=cluster))
    return tasks


def run_config(args: argparse.Namespace) -> dict:
    """The training run's config: the held-in real tasks, the T0 clusters held out, in the precision `auto` picks
    on this machine (bf16 where it is native, fp32 on a CPU without AVX512-BF16/AMX, where bf16 is emulated)."""
    model = ({"name_or_path": args.model} if args.model else
             {"dims": {"d_model": 128, "d_kv": 32, "d_ff": 512, "num_layers": 3, "num_decoder_layers": 3,
                       "num_heads": 4, "dropout_rate": 0.0, "feed_forward_proj": "relu"}})
    return {
        "model": model,
        "tokenizer": {"path": args.model} if args.model else {"train": {"vocab_size": 4000,
                                                                         "max_examples_per_task": 2000}},
        "data": {"mixture": "real_train", "held_out_clusters": T0_HELD_OUT_CLUSTERS, "max_input_length": 256,
                 "max_target_length": 32, "validation_examples": 0},
        "sampling": {"strategy": "temperature", "alpha": 2.0},
        "training": {"steps": args.steps, "micro_batch_size": args.batch_size, "lr": args.lr, "warmup": 50,
                     "schedule": "linear", "log_every": 25, "output_dir": str(args.run_dir),
                     "precision": "auto", "plot": False, "tensorboard": False},
    }


def train_model(args: argparse.Namespace) -> Path:
    """Train on the held-in real tasks; returns the run dir."""
    from t2t_mtl.engine.trainer import train

    result = train(run_config(args), overrides=args.set or (), data_dir=str(args.data_dir))
    print(f"trained {result.step} steps in {result.wall_time_s:.0f} s, final loss {result.final_loss:.3f}, "
          f"{result.tokens_per_second:.0f} tokens/s; run dir {result.run_dir}")
    return Path(result.run_dir)


def print_tables(report) -> None:
    summary = summarize(report)
    print("| task | template | accuracy | majority |")
    print("|---|---|---|---|")
    for r in report.results:
        print(f"| {r.task} | {r.template} | {r.score:.1f} | {r.majority_baseline:.1f} |" if r.score is not None
              else f"| {r.task} | {r.template} | — (no rows) | — |")
    print()
    print("| task | templates | median accuracy | mean | majority baseline | chance | examples |")
    print("|---|---|---|---|---|---|---|")
    for s in summary["tasks"].values():
        print(f"| {s.task} | {s.num_scored_templates} | {s.median:.1f} | {s.mean:.1f} | {s.majority_baseline:.1f} | "
              f"{s.chance_baseline:.1f} | {s.num_examples} |")
    print(f"\nmacro average of task medians {summary['macro_average']:.1f}; "
          f"majority-baseline macro average "
          f"{statistics.fmean(s.majority_baseline for s in summary['tasks'].values()):.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="evaluate this run/checkpoint/HF folder")
    parser.add_argument("--model", default=None, help="hub name or folder of a pretrained T5 to fine-tune")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--set", action="append", help="extra config override a.b=c (repeatable)")
    parser.add_argument("--run-dir", type=Path, default=Path("runs/zeroshot_real"))
    parser.add_argument("--data-dir", type=Path, default=SHARED / "data")
    parser.add_argument("--promptsource", type=Path, default=SHARED / "promptsource-templates")
    parser.add_argument("--bigbench", type=Path, default=SHARED / "bigbench")
    parser.add_argument("--max-examples", type=int, default=None, help="rows per held-out task (default all)")
    parser.add_argument("--bigbench-max-examples", type=int, default=200, help="rows per BIG-bench task")
    parser.add_argument("--eval-batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("runs/zeroshot_real_report"))
    parser.add_argument("--skip-bigbench", action="store_true")
    parser.add_argument("--shots", type=int, default=0,
                        help="k-shot instead of zero-shot: K demonstrations per input (train split, else the same "
                             "split without the example's own row)")
    args = parser.parse_args()

    task_registry.set_data_dir(args.data_dir)
    checkpoint = args.checkpoint or train_model(args)
    model, tokenizer, _ = load_checkpoint(checkpoint)
    started = time.perf_counter()
    report = evaluate_tasks(model, tokenizer, held_out_tasks(args.promptsource),
                            EvalSettings(max_examples=args.max_examples, batch_size=args.eval_batch_size,
                                         num_shots=args.shots),
                            name=f"{checkpoint} (T0 held-out)")
    if not args.skip_bigbench:
        bigbench = evaluate_tasks(model, tokenizer, import_bigbench(args.bigbench),
                                  EvalSettings(max_examples=args.bigbench_max_examples,
                                               batch_size=args.eval_batch_size, num_shots=args.shots),
                                  name=str(checkpoint))
        report.results.extend(bigbench.results)
    print(f"evaluated {sum(r.num_examples for r in report.results)} template-examples in "
          f"{time.perf_counter() - started:.0f} s")
    write_report(report, args.out)
    print_tables(report)
    print(f"\nreport written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
