"""The steady-state Python cost of training: the input pipeline alone, and the steps of tiny runs.

1. `pipeline`: examples per second (wall, and per CPU second) of `BatchBuilder.next_batch()` alone (sampler draw,
   row reads from the tokenized cache, length bucketing, collation) over the quickstart's 12 tasks, batch 32,
   bucketed, in mixed mode (one task per example, the quickstart's) and homogeneous mode (one task per micro-batch).
2. `steps`: steps per second of `t2t_mtl.engine.trainer.train` on the quickstart's data with a tiny T5 (d_model 32,
   1+1 layers, batch 16: the model's compute is small, so the Python around it shows), in mixed and homogeneous
   mode, fp32, one torch thread; the median of the steps' wall times after the first `--warmup` steps (timed between
   the starts of consecutive steps), and the process's CPU seconds per step over the same steps. `--model
   quickstart` takes the quickstart's own T5 (d_model 128, 3+3 layers, batch 32) instead.

Each figure is the median of `--repeats` runs, interleaved across the configurations (a burst of load on a shared
machine hits all of them). The runs' metrics.jsonl stay in `--workdir` (`runs/<config>-<repeat>`): runs of the same
config log the same numbers, time fields aside, which compares two checkouts' runs.

    python benchmarks/input_pipeline.py [pipeline] [steps] [--steps 200] [--repeats 3] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

import t2t_mtl.engine.trainer as trainer  # noqa: E402
from t2t_mtl.config import load_config  # noqa: E402

TINY_DIMS = {"d_model": 32, "d_kv": 16, "d_ff": 64, "num_layers": 1, "num_decoder_layers": 1, "num_heads": 2}
MODES = ("mixed", "homogeneous")


def run_overrides(out: Path, steps: int, mode: str, model: str) -> List[str]:
    """The quickstart cut to `steps` training steps (no validation, evaluation or checkpoint between), fp32, one
    thread, in sampling `mode`, with the tiny T5 unless `model` is "quickstart"."""
    over = [f"training.steps={steps}", "training.warmup=0", "data.validation_examples=0", "evaluation.held_out=false",
            "training.checkpoint_every=0", "training.progress_bar=false", "training.tensorboard=false",
            "training.plot=false", "training.num_threads=1", "training.precision=fp32", f"training.output_dir={out}",
            f"sampling.mode={mode}"]
    if model == "tiny":
        over += [f"model.dims.{key}={value}" for key, value in TINY_DIMS.items()]
        over += ["training.micro_batch_size=16"]
    return over


def timed_run(out: Path, steps: int, mode: str, model: str, warmup: int) -> Tuple[float, float]:
    """(median wall seconds of a step, CPU seconds per step) of one training run after its first `warmup` steps."""
    shutil.rmtree(out, ignore_errors=True)
    starts: List[Tuple[float, float]] = []
    step_totals = trainer.StepTotals

    class Timed(step_totals):  # made once a step, before its first micro-batch
        def __init__(self, *args, **kwargs):
            starts.append((time.perf_counter(), time.process_time()))
            super().__init__(*args, **kwargs)

    trainer.StepTotals = Timed
    try:
        trainer.train(load_config("quickstart", run_overrides(out, steps, mode, model)), evaluate_held_in=False)
    finally:
        trainer.StepTotals = step_totals
    kept = starts[warmup:]
    walls = [b[0] - a[0] for a, b in zip(kept, kept[1:])]
    return statistics.median(walls), (kept[-1][1] - kept[0][1]) / (len(kept) - 1)


def pipeline_rate(tokenizer_dir: Path, run_dir: Path, mode: str, batches: int) -> Tuple[float, float]:
    """(examples per wall second, per CPU second) of `next_batch()` over the quickstart's tasks and its batching,
    tokenizer `tokenizer_dir` (the tokenized tasks where a run in `run_dir` keeps them)."""
    from t2t_mtl.data import BatchBuilder, build_task_streams
    from t2t_mtl.engine.run_mixture import training_rates
    from t2t_mtl.engine.run_sampling import run_sampling_config
    from t2t_mtl.sampling import TaskStreams, build_sampler
    from t2t_mtl.tokenizer import load_tokenizer

    cfg = load_config("quickstart", [f"sampling.mode={mode}", f"tokenizer.path={tokenizer_dir}"])
    tok = load_tokenizer(tokenizer_dir)
    rates = training_rates(cfg)
    names = list(rates)
    cache_dir, _ = trainer.tokenized_cache_dir(cfg, run_dir)
    streams = build_task_streams(
        names, tok, split="train", max_input_length=cfg.data.max_input_length,
        max_target_length=cfg.data.max_target_length, cache_dir=cache_dir,
        max_examples=cfg.data.max_examples_per_task, seed=cfg.training.seed)
    sizes = {n: len(s) for n, s in streams.items()}
    sampler = build_sampler(run_sampling_config(cfg, rates), sizes, seed=cfg.training.seed)
    builder = BatchBuilder(streams, sampler, TaskStreams(sizes, seed=cfg.training.seed),
                           trainer.build_collator(cfg, tok.pad_token_id),
                           micro_batch_size=cfg.training.micro_batch_size, mode=mode,
                           bucket_batches=cfg.data.bucket_batches, seed=cfg.training.seed)
    for _ in range(cfg.data.bucket_batches):  # a first draw: every stream read once
        builder.next_batch()
    start, cpu_start, examples = time.perf_counter(), time.process_time(), 0
    for _ in range(batches):
        examples += len(builder.next_batch()["task_ids"])
    return examples / (time.perf_counter() - start), examples / (time.process_time() - cpu_start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="*", help="pipeline and/or steps (default: both)")
    parser.add_argument("--steps", type=int, default=200, help="training steps a run")
    parser.add_argument("--warmup", type=int, default=20, help="first steps of a run left out of its figures")
    parser.add_argument("--batches", type=int, default=400, help="micro-batches the pipeline builds a repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", choices=["tiny", "quickstart"], default="tiny")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    what = args.what or ["pipeline", "steps"]
    if set(what) - {"pipeline", "steps"}:
        parser.error(f"measures pipeline and/or steps, not {' '.join(sorted(set(what) - {'pipeline', 'steps'}))}")
    torch.set_num_threads(1)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="t2t-input-pipeline-"))
    tokenizer_dir = root / "tokenizer"
    if not (tokenizer_dir / "tokenizer_config.json").exists():  # the quickstart's, trained by a one-step run
        out = root / "runs" / "tokenizer"
        trainer.train(load_config("quickstart", run_overrides(out, 1, "mixed", "tiny")), evaluate_held_in=False)
        shutil.copytree(out / "tokenizer", tokenizer_dir)
    print(f"CPU, 1 torch thread, medians of {args.repeats} interleaved repeats; runs in {root}", flush=True)
    if "pipeline" in what:
        rates: Dict[str, List[Tuple[float, float]]] = {mode: [] for mode in MODES}
        for _ in range(args.repeats):
            for mode in MODES:
                rates[mode].append(pipeline_rate(tokenizer_dir, root / "runs" / "pipeline", mode, args.batches))
        for mode in MODES:
            wall, cpu = (statistics.median(r[k] for r in rates[mode]) for k in (0, 1))
            print(f"  pipeline, {mode:<12} {wall:>9.0f} examples/s, {cpu:>9.0f} examples/CPU-s  "
                  f"(runs: {', '.join(f'{r[0]:.0f}' for r in rates[mode])})", flush=True)
    if "steps" in what:
        figures: Dict[str, List[Tuple[float, float]]] = {mode: [] for mode in MODES}
        for repeat in range(args.repeats):
            for mode in MODES:
                out = root / "runs" / f"{args.model}-{mode}-{repeat}"
                figures[mode].append(timed_run(out, args.steps, mode, args.model, args.warmup))
        for mode in MODES:
            wall = statistics.median(f[0] for f in figures[mode])
            cpu = statistics.median(f[1] for f in figures[mode])
            print(f"  {args.model} run, {mode:<12} {1 / wall:>7.1f} steps/s ({1000 * wall:.1f} ms a step, "
                  f"{1000 * cpu:.1f} CPU-ms a step; runs: {', '.join(f'{1000 * f[0]:.1f}' for f in figures[mode])} ms)",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
