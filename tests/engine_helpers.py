"""Shared helpers of the engine tests (tests/test_engine_*.py, test_checkpoint.py, test_data_pipeline.py):
a tiny run config on procedural tasks, a tokenizer trained once, subprocess launchers."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import yaml

REPO = Path(__file__).resolve().parents[1]
TASKS = ["reverse_words", "parity", "count_word"]
#: what rank 0 prints on a first Ctrl-C (no step: the loop names the one it saves at, once the ranks agree on it)
CTRL_C_NOTICE = ("interrupted: saving a checkpoint when the step in progress or the next one ends; interrupt again "
                 "(Ctrl-C; in a notebook, interrupt the kernel) to abort without saving")


def tiny_config(out_dir: Path, tokenizer_dir: Path, cache_dir: Path, **sections: Dict[str, Any]) -> Dict[str, Any]:
    """A 1+1-layer d_model-32 T5 on three procedural tasks, fp32, logging every step."""
    cfg = {
        "model": {"dims": {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 1, "num_decoder_layers": 1,
                           "num_heads": 2, "dropout_rate": 0.0}},
        "tokenizer": {"path": str(tokenizer_dir)},
        "data": {"tasks": list(TASKS), "max_examples_per_task": 64, "max_input_length": 32,
                 "max_target_length": 16, "validation_examples": 0, "batching": "pad_to_longest",
                 "cache_dir": str(cache_dir)},
        "sampling": {"strategy": "uniform"},
        "training": {"steps": 6, "micro_batch_size": 4, "lr": 1e-2, "precision": "fp32", "log_every": 1,
                     "progress_bar": False, "tensorboard": False, "plot": False, "output_dir": str(out_dir),
                     "schedule": "constant", "num_threads": 1},
    }
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(cfg.get(section), dict):
            cfg[section] = {**cfg[section], **values}
        else:
            cfg[section] = values
    return cfg


def train_tiny_tokenizer(out_dir: Path) -> Path:
    import task_registry
    from t2t_mtl.tokenizer import train_tokenizer

    task_registry.load_builtin_tasks()
    texts = []
    for name in TASKS:
        for row in task_registry.get_task(name).to_dataset("train", max_examples=64):
            texts += [row["inputs"], row["targets"], *row["answer_choices"]]
    train_tokenizer(texts, out_dir, vocab_size=128)
    return out_dir


def write_yaml_task(directory: Path, name: str, *, rows: int = 32, held_out: bool = False,
                    cluster: str = "yaml_tasks", eval_only: bool = False) -> Path:
    """A YAML task file `directory/<name>.yaml` over a local jsonl (beside it) of reverse_words' rendered train
    rows, so the tiny tokenizer covers its text. Returns the folder."""
    import json

    import task_registry

    task_registry.load_builtin_tasks()
    directory.mkdir(parents=True, exist_ok=True)
    dataset = task_registry.get_task("reverse_words").to_dataset("train", max_examples=rows)
    (directory / f"{name}.jsonl").write_text("".join(json.dumps({"question": r["inputs"], "answer": r["targets"]})
                                                     + "\n" for r in dataset))
    (directory / f"{name}.yaml").write_text(
        f"name: {name}\ncluster: {cluster}\nheld_out: {str(held_out).lower()}\n"
        f"eval_only: {str(eval_only).lower()}\n"
        f"source:\n  files: {{train: {name}.jsonl, validation: {name}.jsonl}}\n"
        f"templates:\n  - name: plain\n    jinja: \"{{{{question}}}} ||| {{{{answer}}}}\"\n")
    return directory


def write_config(cfg: Dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_ranks(target: Any, rank_args: List[tuple], timeout: float) -> List[Any]:
    """Run `target(*args)` for each of `rank_args` in a spawned process and wait up to `timeout` s for each; kill those
    still alive then (e.g. a rank waiting for one that died). Returns their exit codes (-9 for a killed one)."""
    import multiprocessing

    return _run_ranks(multiprocessing.get_context("spawn"), target, rank_args, timeout)


# What a rank of forked_ranks imports anyway: loaded once in the forkserver, so a rank starts without importing torch,
# DeepSpeed and transformers again (seconds of CPU each)
RANK_PRELOAD = ["torch", "deepspeed", "transformers", "t2t_mtl.engine.trainer", "t2t_mtl.cli", "t2t_mtl.evaluation"]


def _forked_rank(environ: Dict[str, str], target: Any, args: tuple) -> None:
    """A forked rank: `target(*args)` under the environment its parent had when starting it (a forkserver's
    children would otherwise inherit the server's, frozen when it started)."""
    os.environ.clear()
    os.environ.update(environ)
    target(*args)


def forked_ranks(target: Any, rank_args: List[tuple], timeout: float) -> List[Any]:
    """spawn_ranks for ranks whose outcome cannot depend on each process having its own hash seed (a rank that stops
    another, collectives on numbers) nor on how a process exits: the processes fork from a forkserver, a clean
    process (no process group, thread or test state of this one) that imported RANK_PRELOAD once, so they share its
    hash seed, and leave by os._exit after `target` returns, without the interpreter's teardown. Each runs under
    this process's current environment. Returns their exit codes (-9 for one killed after `timeout` s)."""
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(RANK_PRELOAD)  # (read when the server starts: the first call)
    return _run_ranks(context, _forked_rank, [(dict(os.environ), target, args) for args in rank_args], timeout)


def _run_ranks(context: Any, target: Any, rank_args: List[tuple], timeout: float) -> List[Any]:
    """Start a process of `context` for each of `rank_args` and wait up to `timeout` s for each; whatever happens
    meanwhile (a rank that fails to start, an interrupt while waiting), every process started is killed if still
    alive and reaped before this returns or raises, so no rank outlives the test."""
    processes = [context.Process(target=target, args=args) for args in rank_args]
    try:
        for p in processes:
            p.start()
        for p in processes:
            p.join(timeout=timeout)
    finally:
        for p in processes:
            if p.is_alive():
                p.kill()
                p.join()
    return [p.exitcode for p in processes]


def shut_down_worker(rank: int, world_size: int, port: int, out: str) -> None:
    """A spawned rank that joins a gloo group of `world_size`, calls shut_down_process_group and writes to
    `out`.<rank> whether the group is still initialized. (Here, not in its test's module: a spawned process imports
    the module of its target, and this one imports neither the trainer nor DeepSpeed, which the rank never uses.)"""
    import torch.distributed as dist

    from t2t_mtl.engine.distributed import shut_down_process_group

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    shut_down_process_group()
    Path(f"{out}.{rank}").write_text(str(dist.is_initialized()))


def subprocess_env() -> Dict[str, str]:
    env = dict(os.environ)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(REPO))
    return env


def cli_ranks(rank_commands: List[List[str]], rank_envs: List[Dict[str, str]], timeout: float = 150
              ) -> Tuple[List[int], List[str]]:
    """Run rank i's `rank_commands[i]` (with `subprocess_env()` and `rank_envs[i]`) at once, without a launcher that
    would stop the others, as two nodes under their own launchers; (return codes, stderrs) once all end (a rank still
    running at `timeout` is killed)."""
    procs = [subprocess.Popen(cmd, env={**subprocess_env(), **env}, cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for cmd, env in zip(rank_commands, rank_envs)]
    try:
        errs = [p.communicate(timeout=timeout)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [p.returncode for p in procs], errs


def train_command(config_path: Path, *extra: str) -> List[str]:
    return [sys.executable, "-m", "t2t_mtl", "train", str(config_path), *extra]


def torchrun_command(config_path: Path, nproc: int, *extra: str, nnodes: int = 1, node_rank: int = 0,
                     port: int = 0) -> List[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    if nnodes > 1:
        launcher += [f"--nnodes={nnodes}", f"--node_rank={node_rank}", "--rdzv_backend=c10d",
                     f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=t2t-test"]
    else:
        launcher += ["--standalone"]
    return launcher + ["-m", "t2t_mtl", "train", str(config_path), *extra]


def run_checked(cmd: List[str], timeout: float = 240) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, \
        f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def step_losses(run_dir: Path) -> Dict[int, float]:
    from t2t_mtl.engine.logging import read_metrics

    return {r["step"]: r["loss"] for r in read_metrics(Path(run_dir) / "logs")}


def step_records(run_dir: Path) -> Dict[int, Dict[str, Any]]:
    from t2t_mtl.engine.logging import read_metrics

    return {r["step"]: r for r in read_metrics(Path(run_dir) / "logs")}


def nan_filled_to_empty(to_empty: Any) -> Any:
    """Module.to_empty, then NaN in every parameter and buffer (-2³⁰ in an integer one): patched over
    `torch.nn.Module.to_empty`, a tensor that a load after `t2t_mtl.model.t5.unfilled` leaves unfilled stays so."""
    import torch

    def nan_filled(module: Any, *, device: Any, recurse: bool = True) -> Any:
        module = to_empty(module, device=device, recurse=recurse)
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                if tensor.is_floating_point():
                    tensor.fill_(float("nan"))
                else:
                    tensor.fill_(-(2 ** 30))
        return module
    return nan_filled


def pretrained_folder(tmp_path: Path, tok: Path, own_head: bool = False) -> Path:
    """The export of a 1-step `tiny_config` run trained in `tmp_path` (its LM head the embedding), or with `own_head`
    a copy of it with an LM head of its own, as T5 v1.1 / Flan-T5 folders hold: a model.name_or_path to train from."""
    import torch
    from transformers import T5ForConditionalGeneration

    from t2t_mtl.engine.export import export_model
    from t2t_mtl.engine.trainer import train
    from t2t_mtl.tokenizer import load_tokenizer

    base = train(tiny_config(tmp_path / "base", tok, tmp_path / "cache", training={"steps": 1}),
                 evaluate_held_in=False)
    folder = export_model(base.checkpoint, tmp_path / "base_hf")
    if not own_head:
        return folder
    model = T5ForConditionalGeneration.from_pretrained(folder)
    torch.manual_seed(1)
    model.set_output_embeddings(torch.nn.Linear(model.config.d_model, model.config.vocab_size, bias=False))
    model.save_pretrained(tmp_path / "own_head_hf")
    load_tokenizer(folder).save_pretrained(tmp_path / "own_head_hf")
    return tmp_path / "own_head_hf"
