"""Count the host synchronisations a CUDA run would make, on the CPU: `HostSyncCounter` and a report per training step.

On CUDA the host waits for the device whenever it reads a device tensor's value (`.item()`, `.tolist()`, `float(t)`,
`bool(t)` / `if t:`, `.cpu()`, `.numpy()`, formatting), runs an op whose output size depends on the values
(`nonzero`, boolean-mask indexing, `unique`, `bincount`, `repeat_interleave` without `output_size`, `masked_select`),
or copies host values to the device without `non_blocking=True` (`.to(device)`, `torch.tensor(data, device=...)`:
PyTorch synchronises the stream after such a copy; "upload" here). On a CPU every tensor is a host tensor, so the
counter tells "would live on the device" apart by origin, as a taint: the parameters, buffers and optimizer state of
the modules it is given (`mark`), what `.to(device)` / `.cuda()` moves (a `torch.device` argument; the string "cpu"
is a host transfer), what a factory makes with a `torch.device` `device=` (the code's `device=x.device`), and
everything computed from those. Each sync is recorded with where it was made (`Sync.site`, `Sync.package`).

Usage: python benchmarks/host_syncs.py [--configs plain,pcgrad,...] [--steps 4]
(tiny 1+1-layer models on three procedural tasks; prints each config's syncs of one steady-state step by site).
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

REPO = Path(__file__).resolve().parents[1]
_DEVICE = "_t2t_on_device"  # the attribute that marks a tensor a CUDA run keeps on the device

READS = {"item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__", "__format__",
         "__repr__", "__str__", "__array__"}  # the value comes to the host
SIZED_BY_VALUES = {"nonzero", "argwhere", "unique", "unique_consecutive", "bincount", "masked_select",
                   "nonzero_static"}  # the output's size needs the values (nonzero_static excepted below)
_FACTORIES = {"zeros", "ones", "empty", "full", "arange", "tensor", "as_tensor", "rand", "randn", "randint",
              "linspace", "eye", "zeros_like", "ones_like", "empty_like", "full_like", "randperm"}


@dataclass(frozen=True)
class Sync:
    """One host synchronisation: the op (`item`, `bool-mask index`, ...), where it was made ("path:line function",
    the innermost frame of this repository's code, then " via " a library's frame that made it) and the package
    of this repository that made it ("t2t_mtl", "t2t_kernels"; None: a library's, e.g. transformers')."""

    op: str
    site: str
    package: Optional[str]


def _is_device_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and getattr(value, _DEVICE, False)


def _mark_tensor(value: Any) -> None:
    if isinstance(value, torch.Tensor):
        try:
            setattr(value, _DEVICE, True)
        except (AttributeError, RuntimeError):  # (a tensor subclass without a __dict__)
            pass


def _caller_site() -> Tuple[str, Optional[str]]:
    """(`Sync.site`, `Sync.package`) of the call being made; torch's own Python wrappers (torch.functional's
    unique, ...) count as their caller."""
    here = str(Path(__file__).resolve())
    frames = [(f, str(Path(f.filename).resolve())) for f in traceback.extract_stack() if not f.filename.startswith("<")]
    frames = [(f, path) for f, path in frames if path != here and "/site-packages/torch/" not in path]
    ours = next(((f, path) for f, path in reversed(frames)  # (a virtual environment inside the clone is not ours)
                 if path.startswith(str(REPO)) and "/tests/" not in path and "/site-packages/" not in path), None)
    if ours is None:
        return "?", None
    site = f"{Path(ours[1]).relative_to(REPO)}:{ours[0].lineno} {ours[0].name}"
    inner = frames[-1] if frames else None
    if inner is not None and inner[0] is not ours[0]:
        return site + f" via {inner[1].split('site-packages/')[-1]}:{inner[0].lineno}", None
    return site, site.split("/")[0]


def _sync_op(name: str, args: tuple, kwargs: Dict[str, Any]) -> Optional[str]:
    """The kind of sync a call to `name` with these arguments is on a device tensor (None: no sync)."""
    if name in READS:
        return name
    if name in ("to", "copy_") and _host_target(name, args, kwargs):
        return f"{name}(host)"
    if name in SIZED_BY_VALUES and name != "nonzero_static":
        return name
    if name == "repeat_interleave" and isinstance(args[1] if len(args) > 1 else kwargs.get("repeats"), torch.Tensor) \
            and kwargs.get("output_size") is None:
        return "repeat_interleave"
    if name == "where" and len(args) == 1 and not kwargs:
        return "where(cond)"
    if name in ("__getitem__", "__setitem__", "index_put_", "index_put"):
        index = args[1] if len(args) > 1 else kwargs.get("indices")
        flat, _ = tree_flatten(index)
        if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool and i.dim() > 0 for i in flat):
            return "bool-mask index"
    return None


def _blocking_upload(name: str, args: tuple, kwargs: Dict[str, Any]) -> Optional[str]:
    """"upload" for a copy of host values to the device that waits for it: `.to(device)` without `non_blocking=True`
    (PyTorch synchronises the stream after such a copy), or `torch.tensor(data, device=...)` of host data."""
    if name == "to" and _moves_to_device(name, args, kwargs) and not kwargs.get("non_blocking"):
        return "upload"
    if name in ("tensor", "as_tensor") and isinstance(kwargs.get("device"), torch.device):
        return "upload"
    return None


def _host_target(name: str, args: tuple, kwargs: Dict[str, Any]) -> bool:
    """Whether `.to(...)` names the host ("cpu" as a string) / `copy_` writes into a host tensor."""
    if name == "copy_":
        return not _is_device_tensor(args[0]) and _is_device_tensor(args[1] if len(args) > 1 else kwargs.get("src"))
    target = kwargs.get("device", args[1] if len(args) > 1 else None)
    if not (isinstance(target, str) and target.startswith("cpu")):
        return False
    here = str(Path(__file__).resolve())
    caller = next(f.filename for f in reversed(traceback.extract_stack())
                  if str(Path(f.filename).resolve()) != here)  # (the frame that called `.to`)
    return "/deepspeed/" not in caller  # DeepSpeed's CPU accelerator names the device "cpu" (on CUDA: "cuda:N")


def _moves_to_device(name: str, args: tuple, kwargs: Dict[str, Any]) -> bool:
    """Whether the call's output is made on, or moved to, the device (a `torch.device`, not the string "cpu")."""
    if name == "cuda":
        return True
    if name == "to":
        return any(isinstance(a, torch.device) for a in (*args[1:], kwargs.get("device")))
    if name in _FACTORIES:
        return isinstance(kwargs.get("device"), torch.device)
    return False


class HostSyncCounter(TorchFunctionMode):
    """A `TorchFunctionMode` that records the host synchronisations (`Sync`) made on device tensors while it is
    entered and `counting` is True; `mark(...)` names the tensors that start on the device (modules' parameters and
    buffers, an optimizer's state)."""

    def __init__(self) -> None:
        super().__init__()
        self.counting = True
        self.syncs: List[Sync] = []

    @staticmethod
    def mark(*objects: Any) -> None:
        """Mark the tensors of `objects` as device tensors: a module's parameters, buffers and their gradients, an
        optimizer's parameters and state (any object: the tensors its attributes hold, two levels deep), a
        tensor, or a list / dict of them."""
        for obj in objects:
            for value in _tensors_of(obj, depth=3, seen=set()):
                _mark_tensor(value)
                if value.grad is not None:
                    _mark_tensor(value.grad)

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: Optional[dict] = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        inputs, _ = tree_flatten((args, kwargs))
        on_device = any(_is_device_tensor(value) for value in inputs)
        op = _sync_op(name, args, kwargs) if on_device else _blocking_upload(name, args, kwargs)
        if op is not None and self.counting:
            self.syncs.append(Sync(op, *_caller_site()))
        out = func(*args, **kwargs)
        to_host = name in ("cpu", "numpy") or (name in ("to", "copy_") and _host_target(name, args, kwargs))
        if name in ("to", "cpu") and out is args[0] and (to_host or _moves_to_device(name, args, kwargs)):
            out = out.view_as(out)  # (on a GPU the copy is a new tensor: marked or not, apart from its source)
        if to_host:
            return out
        if on_device or _moves_to_device(name, args, kwargs):
            for value in tree_flatten(out)[0]:
                _mark_tensor(value)
        return out

    def by_site(self) -> Dict[str, int]:
        """{"op at site": count}, most frequent first."""
        counts = collections.Counter(f"{s.op} at {s.site}" for s in self.syncs)
        return dict(counts.most_common())


def _tensors_of(obj: Any, depth: int, seen: set) -> Iterable[torch.Tensor]:
    if id(obj) in seen or depth < 0:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, torch.nn.Module):
        yield from obj.parameters()
        yield from obj.buffers()
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors_of(value, depth - 1, seen)
    elif isinstance(obj, (list, tuple, set)):
        for value in obj:
            yield from _tensors_of(value, depth - 1, seen)
    elif isinstance(obj, torch.optim.Optimizer):
        for group in obj.param_groups:
            yield from _tensors_of(group["params"], depth - 1, seen)
        for state in obj.state.values():
            yield from _tensors_of(state, depth - 1, seen)
        yield from _tensors_of(vars(obj), depth - 1, seen)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        yield from _tensors_of(vars(obj), depth - 1, seen)


# ------------------------------------------------------------------------------------------- training steps
MOE = {"num_experts": 4, "top_k": 2, "every": 1, "aux_loss_coef": 0.01, "z_loss_coef": 0.001}
CONFIGS: Dict[str, Dict[str, Any]] = {  # sections laid over the tests' tiny config (tests/engine_helpers.py)
    "plain": {},
    "pcgrad": {"gradient_surgery": {"method": "pcgrad"}, "training": {"grad_accum": 3}},
    "gradvac": {"gradient_surgery": {"method": "gradvac"}, "training": {"grad_accum": 3}},
    "uncertainty_weighting": {"weighting": {"method": "uncertainty"}},
    "bandit_sampler": {"sampling": {"strategy": "bandit_softmax", "metric": "loss"}},
    "dynamic_temperature": {"sampling": {"strategy": "dynamic_temperature"}},
    "moe_token": {"model": {"moe": {**MOE, "routing": "token"}}},
    "moe_task": {"model": {"moe": {**MOE, "routing": "task"}}},
    "moe_hybrid": {"model": {"moe": {**MOE, "routing": "hybrid"}}},
    "packing": {"data": {"batching": "pack", "bucket_batches": 2}},
}


def count_training_syncs(cfg: Dict[str, Any]) -> List[List[Sync]]:
    """Train `cfg` (a config dict: `t2t_mtl.engine.trainer.train`) and return the syncs of each step (index k:
    step k + 1, from the end of step k's logging through step k + 1's), counting from DeepSpeed's start."""
    from t2t_mtl.engine import logging as train_logging
    from t2t_mtl.engine import trainer

    counter = HostSyncCounter()
    bounds: List[int] = []
    start_engine, log_step = trainer.initialize_deepspeed, train_logging.TrainLogger.step
    entered: List[HostSyncCounter] = []

    def initialize_deepspeed(*args: Any, **kwargs: Any) -> Any:
        import gc

        engine = start_engine(*args, **kwargs)
        counter.mark(*[obj for obj in gc.get_objects() if isinstance(obj, torch.nn.Module)], engine.optimizer)
        counter.__enter__()
        entered.append(counter)
        return engine

    def step(self: Any, *args: Any, **kwargs: Any) -> Any:
        record = log_step(self, *args, **kwargs)
        bounds.append(len(counter.syncs))
        return record

    trainer.initialize_deepspeed, train_logging.TrainLogger.step = initialize_deepspeed, step
    try:
        trainer.train(cfg, evaluate_held_in=False)
    finally:
        trainer.initialize_deepspeed, train_logging.TrainLogger.step = start_engine, log_step
        if entered:
            counter.__exit__(None, None, None)
    starts = [0, *bounds[:-1]]
    return [counter.syncs[a:b] for a, b in zip(starts, bounds)]


# ------------------------------------------------------------------------------------------- evaluation batches
def count_eval_syncs(tokenizer: Any, moe: Optional[Dict[str, Any]]) -> Dict[str, List[Sync]]:
    """The syncs of one rank-classification batch and one greedy-generation batch (8 examples, 8 new tokens) of a
    tiny 1+1-layer model (an MoE one with `moe`), task ids passed where the model takes them."""
    from t2t_mtl.evaluation.generation import generate_texts
    from t2t_mtl.evaluation.rank_classification import score_choices
    from t2t_mtl.model import accepts_task_ids, build_model

    torch.manual_seed(0)
    dims = {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 1, "num_decoder_layers": 1, "num_heads": 2}
    model = build_model({"dims": dims, **({"moe": moe} if moe else {})}, vocab_size=len(tokenizer),
                        task_names=["a", "b"])
    inputs = [f"reverse the words: {' '.join(['one', 'two', 'three'][:1 + i % 3])}" for i in range(8)]
    choices = [["yes", "no"], ["one two", "two one", "three"]] * 4
    task_ids = [i % 2 for i in range(8)] if accepts_task_ids(model) else None
    out: Dict[str, List[Sync]] = {}
    for name, run in (("rank classification", lambda: score_choices(model, tokenizer, inputs, choices, batch_size=8,
                                                                     task_ids=task_ids)),
                      ("generation", lambda: generate_texts(model, tokenizer, inputs, max_new_tokens=8, batch_size=8,
                                                            task_ids=task_ids))):
        counter = HostSyncCounter()
        counter.mark(model)
        with counter:
            run()
        out[name] = counter.syncs
    return out


def _tiny_config(name: str, root: Path, tokenizer: Path, steps: int, log_every: int) -> Dict[str, Any]:
    from engine_helpers import tiny_config

    sections = {key: dict(value) for key, value in CONFIGS[name].items()}
    sections["training"] = {"steps": steps, "log_every": log_every, **sections.get("training", {})}
    return tiny_config(root / name / "run", tokenizer, root / "cache", **sections)


def main(argv: Optional[List[str]] = None) -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"of {', '.join(CONFIGS)}")
    parser.add_argument("--steps", type=int, default=4, help="steps trained")
    parser.add_argument("--log-every", type=int, default=None, help="training.log_every (default: --steps)")
    parser.add_argument("--eval", action="store_true", help="count one evaluation batch of each kind instead")
    parser.add_argument("--out", default=None, help="keep the runs in this folder (default: a temporary one)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "tests"))
    from engine_helpers import train_tiny_tokenizer

    log_every = args.log_every or args.steps
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        tokenizer = train_tiny_tokenizer(root / "tok")
        if args.eval:
            from t2t_mtl.tokenizer import load_tokenizer

            for name in ("plain", "moe_token", "moe_task", "moe_hybrid"):
                moe = CONFIGS[name].get("model", {}).get("moe")
                for kind, syncs in count_eval_syncs(load_tokenizer(tokenizer), moe).items():
                    print(f"== {name}, one {kind} batch: {len(syncs)} syncs")
                    for site, n in collections.Counter(f"{s.op} at {s.site}" for s in syncs).most_common():
                        print(f"    {n:4d}  {site}")
            return
        for name in args.configs.split(","):
            per_step = count_training_syncs(_tiny_config(name, root, tokenizer, args.steps, log_every))
            logged = [k for k in range(1, args.steps + 1) if k % log_every == 0 or k == args.steps]
            print(f"== {name}: syncs per step {[len(s) for s in per_step]} (logging steps {logged})")
            quiet = [k for k in range(2, args.steps + 1) if k not in logged]
            shown = ([(f"steady-state step {quiet[0]}", per_step[quiet[0] - 1])] if quiet else []) + \
                [(f"logging step {logged[-1]}", per_step[logged[-1] - 1])]
            for label, syncs in shown:
                print(f"  {label}:")
                for site, n in collections.Counter(f"{s.op} at {s.site}" for s in syncs).most_common():
                    print(f"    {n:4d}  {site}")


if __name__ == "__main__":
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    sys.path.insert(0, str(REPO))
    main()
