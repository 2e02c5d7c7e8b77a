"""Cost of gradient surgery in a real data-parallel training step: the trainer under torchrun (2 ranks, gloo,
CPU) with `gradient_surgery: pcgrad` against the same run without it, at ZeRO-2 and ZeRO-3.

At ZeRO 0-2 the surgery hook captures each micro-batch's gradient in a scratch of the whole model and reduces
it over the ranks itself (one extra all-reduce of P numbers per micro-batch on gloo, a reduce-scatter on
NCCL); at ZeRO-3 it reads DeepSpeed's own reduced gradient pieces (no scratch, no extra collective). Both add
a T×T Gram (all-reduced), the host solve and the combine. Figures: real tokens per wall second over the steps
after `--warmup` (from the trainer's JSONL records), best of `--repeats` runs, and the overhead against the
same ZeRO stage without surgery. Also the hook's own buffers per rank (from its layout: min(T, grad_accum)
task rows).

Usage: python benchmarks/surgery_step.py [--steps 40] [--warmup 10] [--repeats 2] [--grad-accum 4]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from train_throughput import logged_throughput, procedural_tokenizer  # noqa: E402  (beside this script)


def config(root: Path, tok: Path, args: argparse.Namespace, stage: int, surgery: bool, name: str) -> Path:
    cfg = {
        "model": {"dims": {"d_model": 256, "d_kv": 32, "d_ff": 1024, "num_layers": 4, "num_decoder_layers": 4,
                           "num_heads": 8, "dropout_rate": 0.0}},
        "tokenizer": {"path": str(tok)},
        "data": {"mixture": "procedural", "held_out_clusters": ["comparison"], "max_input_length": 64,
                 "max_target_length": 24, "validation_examples": 0, "max_examples_per_task": 500,
                 "cache_dir": str(root / "cache")},
        "sampling": {"strategy": "uniform"},
        "training": {"steps": args.steps, "micro_batch_size": args.batch, "grad_accum": args.grad_accum,
                     "lr": 1e-3, "schedule": "constant", "precision": "fp32", "log_every": args.warmup,
                     "progress_bar": False, "tensorboard": False, "plot": False, "num_threads": 1,
                     "output_dir": str(root / name)},
        "deepspeed": {"zero_stage": stage},
    }
    if surgery:
        cfg["gradient_surgery"] = {"method": "pcgrad", "seed": 0}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def tokens_per_second(root: Path, path: Path, name: str, warmup: int) -> float:
    shutil.rmtree(root / name, ignore_errors=True)
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "t2t_mtl",
           "train", str(path)]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
    return logged_throughput(root / name, warmup)[0]


def hook_buffers(params: int, rows: int, world: int) -> tuple[int, int]:
    """fp32 numbers the hook holds per rank with `rows` task rows: (ZeRO 0-2 capture: a scratch of the whole
    gradient + the reduce-scatter piece + the rows' slices, ZeRO-3: DeepSpeed's accumulated pieces + the rows'
    pieces)."""
    per_rank = -(-params // world)
    return per_rank * world + (rows + 1) * per_rank, (rows + 1) * per_rank


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8, help="micro-batch per rank")
    parser.add_argument("--grad-accum", type=int, default=4, help="micro-batches (tasks) per optimizer step")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="t2t-surgery-"))
    tok = procedural_tokenizer(root / "tok")
    import task_registry

    task_registry.load_builtin_tasks()
    tasks = list(task_registry.training_rates("procedural", held_out_clusters=["comparison"]))

    runs = {(stage, surgery): config(root, tok, args, stage, surgery, f"z{stage}{'_pcgrad' if surgery else ''}")
            for stage in (2, 3) for surgery in (False, True)}
    best = {key: 0.0 for key in runs}
    for _ in range(args.repeats):  # interleaved, so a slow spell of the machine hits every configuration
        for (stage, surgery), path in runs.items():
            best[stage, surgery] = max(best[stage, surgery],
                                       tokens_per_second(root, path, path.stem, args.warmup))
    from t2t_mtl.engine.export import load_trained_model
    from t2t_mtl.model import count_parameters

    params = count_parameters(load_trained_model(root / "z2")[0])
    print(f"2 ranks (torchrun, gloo, CPU, 1 thread each), T5 {params / 1e6:.2f}M parameters, micro-batch "
          f"{args.batch} per rank, grad_accum {args.grad_accum}, {args.steps} steps ({args.warmup} warm-up), "
          f"best of {args.repeats}; {len(tasks)} tasks, at most {args.grad_accum} per step (rows of the surgery "
          f"buffer)\n")
    print("| ZeRO | tokens/s plain | tokens/s PCGrad | surgery overhead | hook buffers per rank (fp32 numbers) |")
    print("|---|---|---|---|---|")
    capture, pieces = hook_buffers(params, min(len(tasks), args.grad_accum), 2)
    for stage in (2, 3):
        plain, pcgrad = best[stage, False], best[stage, True]
        buffers = capture if stage < 3 else pieces
        print(f"| {stage} | {plain:.0f} | {pcgrad:.0f} | {100 * (plain / pcgrad - 1):+.1f}% | "
              f"{buffers / 1e6:.2f}M ({buffers / params:.2f} P) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
