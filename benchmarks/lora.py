"""LoRA (`model.lora`) against full training: step time, trained parameters, and memory of a T5 training step.

Each mode runs in a fresh process: a T5 built from `--dims` (default 512-wide, 6+6 layers, d_ff 2048) through
`t2t_mtl.model.build_model` (so the adapters are the ones training uses), AdamW over the parameters that train,
`--batch` random sequences of `--input-len` → `--target-len` tokens, one warm-up step, then `--steps` timed steps.
Figures: milliseconds per step; parameters trained; gradient + AdamW state of those parameters (fp32: 3 × 4 bytes
each, computed from the tensors that exist after the warm-up step); peak memory — on a GPU
`torch.cuda.max_memory_allocated`, on CPU the process's peak resident set (VmHWM) — minus what the process held
before the model was built, so weights, gradients, optimizer state and activations are all in it. At step 0 the
LoRA model computes exactly the full model's function (B starts at zero), so the first losses must agree
(checked). The per-task mode gives the batch rows 4 tasks in turn (each row gathers its task's adapter).

    python benchmarks/lora.py [--dims '{"d_model": 512, ...}'] [--batch 16] [--input-len 256] [--target-len 64]
        [--steps 3] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import time

from step_modes import device_name, memory_mb, random_batches, run_modes, step_arguments

DEFAULT_DIMS = {"d_model": 512, "d_kv": 64, "d_ff": 2048, "num_layers": 6, "num_decoder_layers": 6, "num_heads": 8,
                "dropout_rate": 0.0}
TASKS = [f"task{i}" for i in range(4)]  # per-task adapters: each batch row belongs to one of these
MODES = {"full": None,
         "LoRA r=8 on q, v": {"r": 8, "targets": ["q", "v"]},
         "LoRA r=8 on every linear": {"r": 8, "targets": ["q", "k", "v", "o", "wi", "wo"]},
         "per-task LoRA r=8 on q, v (4 tasks, mixed rows)": {"r": 8, "targets": ["q", "v"], "per_task": True}}


def run_mode(args: argparse.Namespace) -> dict:
    """One mode in this process: step time, trained parameters, state and peak memory, losses."""
    import torch

    from t2t_mtl.config import ModelConfig
    from t2t_mtl.model import accepts_task_ids, build_model
    from t2t_mtl.model.lora import trainable_parameter_count

    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    batches = random_batches(args, device)
    base = torch.cuda.memory_allocated() if device == "cuda" else memory_mb("VmRSS")
    torch.manual_seed(0)
    dims = {"dropout_rate": 0.0, **json.loads(args.dims)}  # no dropout unless asked
    model = build_model(ModelConfig(dims=dims, lora=MODES[args.mode]), vocab_size=args.vocab,
                        task_names=TASKS).to(device).train()
    routing = {"task_ids": torch.arange(args.batch, device=device) % len(TASKS)} if accepts_task_ids(model) else {}
    torch.manual_seed(2)  # the adapters' initialisation drew random numbers: dropout masks start alike in every mode
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-4)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step(x, y) -> float:
        loss = model(input_ids=x, attention_mask=torch.ones_like(x), labels=y, use_cache=False, **routing).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # keep the gradients allocated, as DeepSpeed's buffers are
        return float(loss)

    losses = [step(*batches[0])]  # warm-up: allocates the gradients and the optimizer state
    sync()
    state_bytes = sum(p.grad.numel() * p.grad.element_size() for p in trained) + sum(
        t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)
        and t.dim() > 0)
    start = time.perf_counter()
    losses += [step(*b) for b in batches[1:]]
    sync()
    ms = 1e3 * (time.perf_counter() - start) / args.steps
    peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20 if device == "cuda" else memory_mb("VmHWM") - base
    return {"ms": ms, "trained": trainable_parameter_count(model), "total": sum(p.numel() for p in model.parameters()),
            "state_mb": state_bytes / 2 ** 20, "peak_mb": peak, "losses": losses,
            "device": device_name(device)}


def main() -> None:
    args = step_arguments(__doc__, DEFAULT_DIMS, MODES).parse_args()
    results = run_modes(__file__, MODES, args, run_mode)
    full = results["full"]
    for mode, r in results.items():  # B = 0 at the start: the first forward is the full model's
        assert abs(r["losses"][0] - full["losses"][0]) <= 1e-4 * abs(full["losses"][0]), \
            f"{mode}: first loss {r['losses'][0]} differs from the full model's {full['losses'][0]}"
    print(f"# {full['device']}; dims {args.dims}; {full['total'] / 1e6:.1f}M parameters; batch {args.batch} × "
          f"{args.input_len} → {args.target_len} tokens; {args.steps} timed steps (AdamW)")
    print("| mode | trained parameters | step (ms) | gradients + AdamW state (MB) | peak memory (MB) | time vs full | "
          "peak vs full |")
    print("|---|---|---|---|---|---|---|")
    for mode, r in results.items():
        print(f"| {mode} | {r['trained'] / 1e6:.3f}M ({100 * r['trained'] / r['total']:.2f} %) | {r['ms']:.0f} | "
              f"{r['state_mb']:.1f} | {r['peak_mb']:.0f} | {r['ms'] / full['ms']:.2f}× | "
              f"{r['peak_mb'] / full['peak_mb']:.2f}× |")


if __name__ == "__main__":
    main()
