"""Activation checkpointing (`model.activation_checkpointing`): step time and peak memory of a T5 training
step with every block checkpointed, every 2nd block, and none.

Each mode runs in a fresh process: a T5 built from `--dims` (default 512-wide, 6+6 layers, d_ff 2048), AdamW,
`--batch` random sequences of `--input-len` → `--target-len` tokens, one warm-up step, then `--steps` timed
steps. Peak memory: on a GPU `torch.cuda.max_memory_allocated` over the timed steps minus what was allocated
before them; on CPU the process's peak resident set (VmHWM) minus its resident set after the model, optimizer
state and a first step existed — in both, what the forward keeps for the backward plus transient buffers.
The losses of the three modes must agree (the recompute replays the forward with the same RNG state).

    python benchmarks/activation_checkpointing.py [--dims '{"d_model": 512, ...}'] [--batch 16]
        [--input-len 256] [--target-len 64] [--steps 3] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import time

from step_modes import device_name, memory_mb, random_batches, run_modes, step_arguments

DEFAULT_DIMS = {"d_model": 512, "d_kv": 64, "d_ff": 2048, "num_layers": 6, "num_decoder_layers": 6, "num_heads": 8,
                "dropout_rate": 0.1}
MODES = {"none": False, "every 2nd block": 2, "every block": True}


def run_mode(args: argparse.Namespace) -> dict:
    """One mode in this process: {"ms": step time, "peak_mb": activation peak, "losses": [...]}."""
    import torch

    from t2t_mtl.config import ModelConfig
    from t2t_mtl.model import build_model

    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = build_model(ModelConfig(dims=json.loads(args.dims), activation_checkpointing=MODES[args.mode]),
                        vocab_size=args.vocab).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = random_batches(args, device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step(x, y) -> float:
        loss = model(input_ids=x, attention_mask=torch.ones_like(x), labels=y, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    torch.manual_seed(2)
    losses = [step(*batches[0])]  # warm-up: allocates the gradients and the optimizer state
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = memory_mb("VmRSS")
    start = time.perf_counter()
    losses += [step(*b) for b in batches[1:]]
    sync()
    ms = 1e3 * (time.perf_counter() - start) / args.steps
    peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20 if device == "cuda" else memory_mb("VmHWM") - base
    return {"ms": ms, "peak_mb": peak, "losses": losses, "device": device_name(device)}


def main() -> None:
    args = step_arguments(__doc__, DEFAULT_DIMS, MODES).parse_args()
    results = run_modes(__file__, MODES, args, run_mode)
    plain = results["none"]
    for mode, r in results.items():
        for a, b in zip(r["losses"], plain["losses"]):
            assert abs(a - b) <= 1e-4 * abs(b), f"{mode}: loss {a} differs from the plain run's {b}"
    print(f"# {plain['device']}; dims {args.dims}; batch {args.batch} × {args.input_len} → {args.target_len} tokens; "
          f"{args.steps} timed steps (AdamW)")
    print("| checkpointing | step (ms) | peak activation memory (MB) | time vs none | memory vs none |")
    print("|---|---|---|---|---|")
    for mode, r in results.items():
        print(f"| {mode} | {r['ms']:.0f} | {r['peak_mb']:.0f} | {r['ms'] / plain['ms']:.2f}× | "
              f"{memory_ratio(r['peak_mb'], plain['peak_mb'])} |")


def memory_ratio(peak_mb: float, plain_peak_mb: float) -> str:
    """`peak_mb` over the plain run's as `0.32×`, or `—` where the plain run's peak read 0 (a model so small that
    its activations fit in heap pages the warm-up step had already made resident)."""
    return f"{peak_mb / plain_peak_mb:.2f}×" if plain_peak_mb > 0 else "—"


if __name__ == "__main__":
    main()
