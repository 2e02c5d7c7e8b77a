"""What a user waits for before anything happens: CLI start-up and `t2t-mtl train`'s time to its first step.

Two measurements, each in fresh processes (the figures are wall seconds, medians of `--repeat` runs; on a machine
shared with other work they vary by tens of percent):

- `cli`: the wall time of commands that neither train nor evaluate (`--help`, `tasks list`, `tasks preview`,
  `mixture show`), and for each the top-level packages that take longest to import (`python -X importtime`,
  cumulative microseconds of the first import of each);
- `train`: `t2t-mtl train` of the packaged quickstart cut to one step (no evaluation), split into phases: imports,
  registry + config checks, dataset loading (`Source.load`), rendering (`Task.to_dataset` less its loading),
  the tokenizer (trained on the mixture, less the renderings it reads), tokenizing (`tokenize_dataset`), model
  build, DeepSpeed's start and the rest up to the first forward. A first start has datasets' cache empty (a fresh
  `HF_DATASETS_CACHE`); the second start runs the same config into a new run folder with that cache kept.

    python benchmarks/startup.py [cli] [train] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence

REPO = Path(__file__).resolve().parents[1]

#: the commands timed by `cli` (arguments of `python -m t2t_mtl`)
CLI_COMMANDS = (
    ["--help"],
    ["tasks", "list"],
    ["tasks", "preview", "parity", "-n", "3"],
    ["mixture", "show", "procedural", "--held-out-clusters", "comparison", "--sampler", "temperature", "--alpha", "2"],
)

#: quickstart cut to its start: one step, no held-in validation, no zero-shot evaluation, no checkpoint between
TRAIN_OVERRIDES = ("training.steps=1", "training.warmup=0", "data.validation_examples=0", "evaluation.held_out=false",
                   "training.checkpoint_every=0", "training.progress_bar=false")

#: runs `t2t_mtl.train` with timers around the functions of each phase and prints their seconds as JSON. A timer
#: counts its own time less that of the timers called inside it (rendering excludes loading, and so on).
_TRAIN_DRIVER = r'''
import json, sys, time
started = time.perf_counter()
import datasets, deepspeed, transformers  # noqa: F401 (imported by training anyway: counted as imports)
import t2t_mtl.engine.trainer as trainer
import task_registry
sources, task, tokenize = (sys.modules[f"task_registry.{m}"] for m in ("sources", "task", "tokenize"))
seconds = {"imports": time.perf_counter() - started}
stack = []

def timed(owner, name, phase):
    inner = getattr(owner, name)
    def wrapper(*args, **kwargs):
        begin = time.perf_counter()
        stack.append(0.0)
        try:
            return inner(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - begin
            nested = stack.pop()
            seconds[phase] = seconds.get(phase, 0.0) + elapsed - nested
            if stack:
                stack[-1] += elapsed
    setattr(owner, name, wrapper)

PHASES = [(trainer, "check_run_config", "registry + config checks"),
          (trainer, "training_template_selection", "registry + config checks"),
          (sources.GeneratorSource, "load", "dataset load"), (sources.HFSource, "load", "dataset load"),
          (sources.LocalFileSource, "load", "dataset load"), (task.Task, "to_dataset", "render"),
          (trainer, "prepare_tokenizer", "tokenizer"), (tokenize, "tokenize_dataset", "tokenize"),
          (trainer, "training_streams", "streams (fingerprints, checks)"), (trainer, "build_model", "model build"),
          (trainer, "initialize_deepspeed", "DeepSpeed init")]
for owner, name, phase in PHASES:
    timed(owner, name, phase)
forward = trainer.forward_losses
def first_forward(*args, **kwargs):
    seconds.setdefault("to first step", time.perf_counter() - started)
    return forward(*args, **kwargs)
trainer.forward_losses = first_forward
trainer.train(None, overrides=sys.argv[1:])
seconds["other"] = seconds["to first step"] - sum(v for k, v in seconds.items() if k != "to first step")
print("PHASES " + json.dumps(seconds))
'''


def _env(**extra: str) -> Dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), **extra}
    env.setdefault("DS_ACCELERATOR", "cpu")
    return env


def time_command(args: Sequence[str], repeat: int) -> float:
    """Median wall seconds of `python -m t2t_mtl ARGS` over `repeat` runs (output discarded)."""
    walls = []
    for _ in range(repeat):
        begin = time.perf_counter()
        subprocess.run([sys.executable, "-m", "t2t_mtl", *args], env=_env(), check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        walls.append(time.perf_counter() - begin)
    return statistics.median(walls)


def import_offenders(args: Sequence[str], top: int = 6) -> List[tuple]:
    """The `top` packages that take longest to import in `python -X importtime -m t2t_mtl ARGS`: (package, cumulative
    seconds of its first import, which holds those it imports: nested packages overlap), slowest first."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "t2t_mtl", *args], env=_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True)
    totals: Dict[str, float] = {}
    for line in done.stderr.splitlines():
        fields = line.split("|")
        if len(fields) != 3 or not fields[1].strip().isdigit():
            continue  # the header
        name = fields[2].strip()
        if "." not in name and name not in ("site", "encodings"):  # a package (not one of its modules)
            totals[name] = int(fields[1]) / 1e6
    return sorted(totals.items(), key=lambda kv: -kv[1])[:top]


def run_cli(repeat: int) -> None:
    print(f"{'command':<100} {'wall s':>7}  top imports (cumulative s)")
    for args in CLI_COMMANDS:
        wall = time_command(args, repeat)
        offenders = ", ".join(f"{name} {s:.2f}" for name, s in import_offenders(args))
        print(f"{'t2t-mtl ' + ' '.join(args):<100} {wall:7.2f}  {offenders}")


def train_phases(work: Path, run: str, hf_cache: Path) -> Dict[str, float]:
    """The phases of one quickstart start into `work/run`, with datasets' cache in `hf_cache`."""
    overrides = [*TRAIN_OVERRIDES, f"training.output_dir={work / run}"]
    done = subprocess.run([sys.executable, "-c", _TRAIN_DRIVER, *overrides], cwd=work, capture_output=True, text=True,
                          env=_env(HF_DATASETS_CACHE=str(hf_cache)))
    if done.returncode != 0:
        raise SystemExit(f"the training start failed:\n{done.stderr[-3000:]}")
    [line] = [x for x in done.stdout.splitlines() if x.startswith("PHASES ")]
    return json.loads(line[len("PHASES "):])


def run_train(repeat: int) -> None:
    firsts, seconds = [], []
    for attempt in range(repeat):
        with tempfile.TemporaryDirectory(prefix="t2t_startup_") as tmp:
            work = Path(tmp)
            firsts.append(train_phases(work, "first", work / "hf_cache"))
            seconds.append(train_phases(work, "second", work / "hf_cache"))
    phases = list(dict.fromkeys(k for r in firsts + seconds for k in r))
    print(f"{'quickstart, one step: wall s (median of ' + str(repeat) + ')':<44} {'first start':>12} "
          f"{'second start':>13}")
    for phase in phases:
        first = statistics.median(r.get(phase, 0.0) for r in firsts)
        second = statistics.median(r.get(phase, 0.0) for r in seconds)
        print(f"{phase:<44} {first:12.2f} {second:13.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="*", choices=["cli", "train"], default=["cli", "train"])
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (the median is printed)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; python {sys.version.split()[0]}")
    if "cli" in args.what:
        run_cli(args.repeat)
    if "train" in args.what:
        run_train(args.repeat)


if __name__ == "__main__":
    main()
