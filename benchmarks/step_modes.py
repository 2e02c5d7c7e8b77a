"""Shared scaffolding of the training-step benchmarks that compare model modes (activation_checkpointing.py,
lora.py): their common arguments, each mode run in a fresh process (so peak memory is its own), random token
batches and the process's memory figures."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping

REPO = Path(__file__).resolve().parents[1]


def step_arguments(doc: str, default_dims: Mapping[str, Any], modes: Iterable[str]) -> argparse.ArgumentParser:
    """--dims, --batch, --input-len, --target-len, --vocab, --steps, --threads, and the hidden per-mode --mode."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", default=json.dumps(dict(default_dims)))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--input-len", type=int, default=256)
    parser.add_argument("--target-len", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=32128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--mode", choices=list(modes), help=argparse.SUPPRESS)  # the per-mode child process
    return parser


def run_modes(script: str, modes: Iterable[str], args: argparse.Namespace,
              run_mode: Callable[[argparse.Namespace], Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """In a `--mode` child: print `run_mode(args)` as JSON and exit. Otherwise run `script` once per mode in a
    fresh process with the same arguments and return {mode: its result}."""
    if args.mode:
        print(json.dumps(run_mode(args)))
        sys.exit(0)
    results = {}
    for mode in modes:
        out = subprocess.run([sys.executable, script, *sys.argv[1:], "--mode", mode], check=True, cwd=REPO,
                             capture_output=True, text=True).stdout
        results[mode] = json.loads(out.strip().splitlines()[-1])
    return results


def random_batches(args: argparse.Namespace, device: str) -> List[tuple]:
    """`--steps` + 1 (input ids, labels) batches of random tokens, the same for every mode."""
    import torch

    gen = torch.Generator().manual_seed(1)
    return [(torch.randint(2, args.vocab, (args.batch, args.input_len), generator=gen).to(device),
             torch.randint(2, args.vocab, (args.batch, args.target_len), generator=gen).to(device))
            for _ in range(args.steps + 1)]


def memory_mb(field: str) -> float:
    """A /proc/self/status memory figure (VmRSS, VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
