"""A checkpoint a GPU run wrote — its torch files hold tensors saved on cuda:N — read on a machine without one:
export and resume read its tensors onto the CPU (as every rank should on a GPU machine too, rather than onto
cuda:0). The GPU files are made here by saving the CPU run's files again as torch saves them from cuda:0 (their
storages' location)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.serialization

from t2t_mtl.cli import main as cli_main
from t2t_mtl.engine.checkpoint import latest_checkpoint
from t2t_mtl.engine.export import export_model
from t2t_mtl.engine.trainer import train

from engine_helpers import tiny_config, train_tiny_tokenizer


def saved_on_gpu(run: Path, to: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of `run` whose latest checkpoint's torch files are saved again as from cuda:0 (every storage's location
    tag), which torch refuses to load onto a machine without CUDA unless told where to map them."""
    shutil.copytree(run, to)
    files = sorted(latest_checkpoint(to).rglob("*.pt"))
    assert len(files) >= 3  # (DeepSpeed's model state, the trainer state, rank 0's own state)
    with monkeypatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        for path in files:
            torch.save(torch.load(path, weights_only=False), path)
    with pytest.raises(RuntimeError, match="Attempting to deserialize object on a CUDA device"):
        torch.load(files[0], weights_only=False)
    return to


@pytest.mark.parametrize("stage", [0, 1])
def test_a_checkpoint_written_on_a_gpu_exports_and_resumes_on_a_cpu(tmp_path, monkeypatch, stage):
    # was: reading its files unmapped (check_loadable, the trainer and rank states), torch tried to put their tensors
    # on cuda:0, so export / eval / predict / merge and a resume refused the checkpoint as damaged ('cannot be read
    # (RuntimeError: Attempting to deserialize object on a CUDA device ...); the checkpoint is incomplete or corrupt')
    tok = train_tiny_tokenizer(tmp_path / "tok")
    config = tiny_config(tmp_path / "cpu", tok, tmp_path / "cache", training={"steps": 2},
                         deepspeed={"zero_stage": stage})
    train(config, evaluate_held_in=False)
    gpu = saved_on_gpu(tmp_path / "cpu", tmp_path / "gpu", monkeypatch)
    expected = export_model(tmp_path / "cpu", tmp_path / "from_cpu")
    exported = export_model(gpu, tmp_path / "from_gpu")
    weights = [(Path(folder) / "model.safetensors").read_bytes() for folder in (expected, exported)]
    assert weights[0] == weights[1]
    assert cli_main(["predict", "--checkpoint", str(gpu), "parity: 101"]) == 0  # (eval and merge read as it does)
    resumed = train({**config, "training": {**config["training"], "steps": 3, "output_dir": str(gpu)}},
                    resume="auto", evaluate_held_in=False)
    assert resumed.step == 3
