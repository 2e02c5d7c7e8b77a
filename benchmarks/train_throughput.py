"""Training throughput on CPU: our trainer vs a plain hand-written transformers loop, and length bucketing vs
naive padding.

1. Machinery overhead: `t2t_mtl.engine.trainer.train` (DeepSpeed engine, sampler, per-task losses, weighting,
   logging) against a plain loop (`model(**batch, labels=...)`, `loss.backward()`, clip, `AdamW.step()`) over
   the very same batches (pre-built by our batch builder, so the plain loop pays nothing for data), same model,
   seed and precision. Target: ours >= 0.95x the plain loop's tokens/s.
2. Batching: tokens/s (real, non-padding tokens) of our trainer with `data.batching` = bucket vs pad_to_max
   (every batch padded to max_input_length/max_target_length) on the procedural mixture, whose inputs range
   from a few tokens to ~60. Target: bucket >= 1.3x. Also `pack` (several examples of a task per row of
   max_input_length / max_target_length tokens; `--pack-rows` rows a micro-batch, default batch / 4, so a step
   holds about as many examples as a bucketed one), reported against bucket.

Timing excludes the first `--warmup` steps (start-up, first allocations); the trainer logs every `--warmup`
steps, as a real run would. Each figure is the best of `--repeats` runs, interleaved across configurations.
Usage: python benchmarks/train_throughput.py [--steps 60] [--warmup 10] [--repeats 2] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Tuple

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from t2t_mtl.config import config_from_dict  # noqa: E402
from t2t_mtl.data import BatchBuilder, Seq2SeqCollator, build_task_streams, count_tokens  # noqa: E402
from t2t_mtl.engine.logging import read_metrics  # noqa: E402
from t2t_mtl.engine.trainer import seed_everything, train  # noqa: E402
from t2t_mtl.engine.run_mixture import training_rates  # noqa: E402
from t2t_mtl.model import build_model  # noqa: E402
from t2t_mtl.sampling import TaskStreams, build_sampler  # noqa: E402


def base_config(root: Path, tok: Path, args, **data) -> dict:
    return {
        "model": {"dims": {"d_model": 128, "d_kv": 32, "d_ff": 512, "num_layers": 3, "num_decoder_layers": 3,
                           "num_heads": 4, "dropout_rate": 0.0, "feed_forward_proj": "relu"}},
        "tokenizer": {"path": str(tok)},
        "data": {"mixture": "procedural", "held_out_clusters": ["comparison"], "max_input_length": 64,
                 "max_target_length": 24, "validation_examples": 0, "max_examples_per_task": 2000,
                 "cache_dir": str(root / "cache"), **data},
        "sampling": {"strategy": "uniform"},
        "training": {"steps": args.steps, "micro_batch_size": args.batch, "lr": 1e-3, "schedule": "constant",
                     "precision": args.precision, "log_every": args.warmup, "progress_bar": False, "tensorboard": False,
                     "plot": False, "output_dir": str(root / "run"), "num_threads": args.threads},
    }


def packed_config(root: Path, tok: Path, args) -> dict:
    cfg = base_config(root, tok, args, batching="pack")
    cfg["training"]["micro_batch_size"] = args.pack_rows or max(1, args.batch // 4)
    return cfg


def procedural_tokenizer(tok: Path) -> Path:
    """A 400-token tokenizer trained on the procedural mixture's held-in tasks, in `tok` (kept when there)."""
    if not (tok / "tokenizer_config.json").exists():
        import task_registry
        from t2t_mtl.tokenizer import train_tokenizer

        task_registry.load_builtin_tasks()
        texts = []
        for name in task_registry.training_rates("procedural", held_out_clusters=["comparison"]):
            for row in task_registry.get_task(name).to_dataset("train", max_examples=500):
                texts += [row["inputs"], row["targets"]]
        train_tokenizer(texts, tok, vocab_size=400)
    return tok


def logged_throughput(run_dir: Path, warmup: int) -> Tuple[float, float]:
    """(real tokens per wall second, per CPU second of rank 0) of a finished run over the steps after `warmup`,
    from its JSONL records, logged every `warmup` steps (everything between records is included)."""
    records = [r for r in read_metrics(Path(run_dir) / "logs") if r["step"] >= warmup]
    tokens = wall = cpu = 0.0
    for prev, rec in zip(records, records[1:]):
        dt = rec["time"] - prev["time"]
        wall += dt
        cpu += rec["process_time"] - prev["process_time"]
        tokens += rec["tokens_per_s"] * dt
    return tokens / wall, tokens / cpu


def ours(cfg: dict, warmup: int) -> Tuple[float, float]:
    """(real tokens per wall second, per CPU second) of `train(cfg)` over the steps after `warmup`."""
    shutil.rmtree(cfg["training"]["output_dir"], ignore_errors=True)
    train(cfg, evaluate_held_in=False)
    return logged_throughput(Path(cfg["training"]["output_dir"]), warmup)


def plain_loop(cfg_dict: dict, warmup: int) -> Tuple[float, float]:
    """The same batches through a hand-written transformers loop."""
    cfg = config_from_dict(cfg_dict)
    from t2t_mtl.tokenizer import load_tokenizer

    tok = load_tokenizer(cfg.tokenizer.path)
    names = list(training_rates(cfg))
    streams = build_task_streams(names, tok, split="train", max_input_length=cfg.data.max_input_length,
                                 max_target_length=cfg.data.max_target_length, cache_dir=Path(cfg.data.cache_dir),
                                 max_examples=cfg.data.max_examples_per_task, seed=cfg.training.seed)
    sizes = {n: len(s) for n, s in streams.items()}
    builder = BatchBuilder(streams, build_sampler(dict(cfg.sampling), sizes, seed=cfg.training.seed),
                           TaskStreams(sizes, seed=cfg.training.seed),
                           Seq2SeqCollator(tok.pad_token_id, max_input_length=cfg.data.max_input_length,
                                           max_target_length=cfg.data.max_target_length),
                           micro_batch_size=cfg.training.micro_batch_size,
                           bucket_batches=cfg.data.bucket_batches if cfg.data.batching == "bucket" else 1,
                           seed=cfg.training.seed)
    batches = [builder.next_batch() for _ in range(cfg.training.steps)]
    seed_everything(cfg.training.seed)
    model = build_model(cfg.model, vocab_size=len(tok))
    bf16 = cfg.training.precision == "bf16"
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.training.lr)
    model.train()
    tokens, start, cpu_start = 0, None, None
    for i, batch in enumerate(batches):
        if i == warmup:
            start, cpu_start = time.perf_counter(), time.process_time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         labels=batch["labels"]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.training.clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= warmup:
            tokens += count_tokens(batch)
    return tokens / (time.perf_counter() - start), tokens / (time.process_time() - cpu_start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--pack-rows", type=int, default=None, help="rows of a packed micro-batch (batch / 4)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="t2t-throughput-"))
    tok = procedural_tokenizer(root / "tok")

    print(f"CPU, {args.threads} threads, batch {args.batch}, {args.steps} steps ({args.warmup} warm-up), "
          f"precision {args.precision}, best of {args.repeats}")
    same_batches = base_config(root, tok, args, batching="pad_to_longest")
    runs = {"plain transformers loop": lambda: plain_loop(same_batches, args.warmup),
            "t2t-mtl trainer": lambda: ours(same_batches, args.warmup),
            "t2t-mtl bucket": lambda: ours(base_config(root, tok, args, batching="bucket"), args.warmup),
            "t2t-mtl pad_to_max": lambda: ours(base_config(root, tok, args, batching="pad_to_max"), args.warmup),
            "t2t-mtl pack": lambda: ours(packed_config(root, tok, args), args.warmup)}
    measured = {name: [] for name in runs}
    for _ in range(args.repeats):  # interleaved, so a burst of load on a shared machine hits every config
        for name, fn in runs.items():
            measured[name].append(fn())
    results = {name: (max(r[0] for r in rs), max(r[1] for r in rs)) for name, rs in measured.items()}
    for name, (wall, cpu) in results.items():
        print(f"  {name:<26} {wall:>9.0f} tokens/s wall  {cpu:>9.0f} tokens/CPU-s", flush=True)

    def ratio(a: str, b: str) -> str:
        return f"{results[a][0] / results[b][0]:.3f}x wall, {results[a][1] / results[b][1]:.3f}x CPU"

    print(f"trainer / plain loop (same batches, pad_to_longest): {ratio('t2t-mtl trainer', 'plain transformers loop')}"
          f" (target >= 0.95)")
    print(f"bucket / pad_to_max: {ratio('t2t-mtl bucket', 't2t-mtl pad_to_max')} (target >= 1.3)")
    print(f"pad_to_longest / pad_to_max: {ratio('t2t-mtl trainer', 't2t-mtl pad_to_max')}")
    print(f"pack ({args.pack_rows or args.batch // 4} rows) / bucket: {ratio('t2t-mtl pack', 't2t-mtl bucket')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
