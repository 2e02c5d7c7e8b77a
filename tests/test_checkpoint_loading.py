"""Reading a checkpoint back (`t2t_mtl.engine.checkpoint_loading`): a missing, cut-short or damaged file is refused
naming it, DeepSpeed's load errors are quoted with what to do, and every old rank's state is read in rank order."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from t2t_mtl.engine.checkpoint import CORRUPT_HINT, CheckpointError, read_meta
from t2t_mtl.engine.checkpoint_loading import load_checkpoint, load_rank_states
from t2t_mtl.engine.distributed import DistEnv

from test_checkpoint_saving import ENV, save


class FailingEngine:
    """engine.load_checkpoint raising like DeepSpeed does on a damaged file or a changed model."""

    def __init__(self, error: Exception):
        self.error = error

    def load_checkpoint(self, *args, **kwargs):
        raise self.error


class LoadingEngine:
    """engine.load_checkpoint succeeding, as DeepSpeed's does on an intact ds/ folder."""

    def load_checkpoint(self, load_dir, tag, **kwargs):
        return str(Path(load_dir) / tag), {}


def test_a_missing_rank_file_is_refused_not_resharded(tmp_path):
    # was: a checkpoint of this world size without this rank's file loaded as if written by another world size:
    # the data positions and RNG states were silently dropped (each task restarted at its next epoch)
    ckpt = save(tmp_path, 4)
    trainer_state, rank_state, _ = load_checkpoint(LoadingEngine(), ckpt, ENV)
    assert trainer_state == {"step": 4} and rank_state == {"r": 0}
    (ckpt / "rank_00000.pt").unlink()
    with pytest.raises(CheckpointError, match="rank_00000.pt is missing.*incomplete or corrupt"):
        load_checkpoint(LoadingEngine(), ckpt, ENV)
    other = DistEnv(rank=1, world_size=2, local_rank=1, device=torch.device("cpu"), backend="gloo")
    assert load_checkpoint(LoadingEngine(), ckpt, other)[1] is None  # another world size: resharded


def test_incomplete_or_corrupt_checkpoint_is_refused_naming_the_file(tmp_path):
    # was: raw FileNotFoundError / unpickling ValueError / DeepSpeed AssertionError tracebacks on --resume
    ckpt = save(tmp_path, 4)
    with pytest.raises(CheckpointError, match="size mismatch.*model.dims"):
        load_checkpoint(FailingEngine(RuntimeError("Error(s):\n\tsize mismatch for shared.weight")), ckpt, ENV)
    with pytest.raises(CheckpointError, match="ds.*incomplete or corrupt"):
        load_checkpoint(FailingEngine(AssertionError()), ckpt, ENV)
    (ckpt / "trainer_state.pt").write_text("garbage")
    with pytest.raises(CheckpointError, match="trainer_state.pt cannot be read"):
        load_checkpoint(FailingEngine(AssertionError()), ckpt, ENV)
    (ckpt / "trainer_state.pt").unlink()
    with pytest.raises(CheckpointError, match="trainer_state.pt is missing"):
        load_checkpoint(FailingEngine(AssertionError()), ckpt, ENV)
    for f in (ckpt / "ds").iterdir():
        f.unlink()
    with pytest.raises(CheckpointError, match="DeepSpeed state.*missing or empty"):
        load_checkpoint(FailingEngine(AssertionError()), ckpt, ENV)
    (ckpt / "meta.json").write_text("{")
    with pytest.raises(CheckpointError, match="meta.json cannot be read"):
        read_meta(ckpt)


def test_a_universal_folder_deepspeed_cannot_load_is_to_be_converted_again(tmp_path):
    # was: a file missing from a ds_universal folder an earlier resume converted (its headers alone are checked) said
    # "the checkpoint is incomplete or corrupt: resume from an earlier one", though its own files were intact
    ckpt = save(tmp_path, 4)
    (ckpt / "ds_universal" / "zero").mkdir(parents=True)
    missing = ValueError("exp_avg not found in optimizer state fragment")
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(FailingEngine(missing), ckpt, ENV, universal=True)
    assert str(refused.value) == (
        f"DeepSpeed could not load {ckpt / 'ds_universal'} (ValueError: exp_avg not found in optimizer state "
        f"fragment); remove {ckpt / 'ds_universal'} (converted from the checkpoint's own files) for the resume to "
        f"convert it again; if that conversion fails to load too, {CORRUPT_HINT}")
    with pytest.raises(CheckpointError, match="size mismatch.*model.dims"):  # a changed model is not mended so
        load_checkpoint(FailingEngine(RuntimeError("size mismatch for shared.weight")), ckpt, ENV, universal=True)


def test_the_rank_states_of_every_rank_are_loaded_in_rank_order(tmp_path):
    for rank in range(3):
        torch.save({"r": rank}, tmp_path / f"rank_0000{rank}.pt")
    assert load_rank_states(tmp_path, 3) == [{"r": 0}, {"r": 1}, {"r": 2}]
    (tmp_path / "rank_00002.pt").unlink()
    with pytest.raises(CheckpointError, match="rank_00002.pt is missing"):
        load_rank_states(tmp_path, 3)


def test_the_rank_states_are_each_unpickled_once(tmp_path, monkeypatch):
    # was: each file loaded twice, memory-mapped by check_loadable, then in full
    for rank in range(2):
        torch.save({"rng": torch.arange(8, dtype=torch.uint8) + rank}, tmp_path / f"rank_0000{rank}.pt")
    loads, load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda path, *args, **kwargs: loads.append(path) or load(path, *args, **kwargs))
    states = load_rank_states(tmp_path, 2)
    assert [state["rng"].tolist() for state in states] == [list(range(8)), list(range(1, 9))]
    assert loads == [tmp_path / "rank_00000.pt", tmp_path / "rank_00001.pt"]


def test_an_old_ranks_state_damaged_inside_is_refused_naming_it(tmp_path):
    # was: a resume under another world size loaded every old rank's file after DeepSpeed's load unchecked, and zeros
    # inside one (a copy that stopped, a disk that lost a block) gave other RNG states without a word
    for rank in range(2):
        torch.save({"rng": torch.arange(64, dtype=torch.uint8) + rank}, tmp_path / f"rank_0000{rank}.pt")
    damaged = tmp_path / "rank_00001.pt"
    damaged.write_bytes(damaged.read_bytes().replace(bytes(range(1, 65)), bytes(64)))
    assert torch.load(damaged)["rng"].sum() == 0  # (torch loads it)
    with pytest.raises(CheckpointError) as refused:
        load_rank_states(tmp_path, 2)
    assert str(refused.value) == (f"{damaged} is damaged (record rank_00001/data/0 does not match the CRC-32 torch "
                                  f"recorded for it at save: its data changed after it was written); {CORRUPT_HINT}")


def test_the_checkpoints_own_deepspeed_state_deepspeed_cannot_load_is_not_to_be_removed(tmp_path):
    # a universal folder is converted from the checkpoint's own files, so removing it mends it; the checkpoint's own
    # ds/ folder is what it holds: a failure to load it says the checkpoint is damaged, and never to remove it
    ckpt = save(tmp_path, 4)
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(FailingEngine(ValueError("exp_avg not found in optimizer state fragment")), ckpt, ENV)
    assert str(refused.value) == (f"DeepSpeed could not load {ckpt / 'ds'} (ValueError: exp_avg not found in optimizer "
                                  f"state fragment); {CORRUPT_HINT}")


def _saved_on_a_gpu(state: dict, path: Path) -> None:
    """torch.save `state` to `path` as a GPU run's rank 0 writes it: its tensors' storages tagged cuda:0 (the
    location torch.load puts them back on unless told otherwise)."""
    import io
    import zipfile

    buffer = io.BytesIO()
    torch.save(state, buffer)
    with zipfile.ZipFile(buffer) as saved, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for info in saved.infolist():
            data = saved.read(info)
            if info.filename.endswith("/data.pkl"):  # (the location: a pickled string after each storage key)
                cpu, cuda = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"  # (BINUNICODE: its length, then it)
                assert data.count(cpu) == len([v for v in state.values() if isinstance(v, torch.Tensor)])
                data = data.replace(cpu, cuda)
            out.writestr(info.filename, data)


def test_a_gpu_runs_checkpoint_files_load_onto_the_cpu(tmp_path):
    # kills a mutant of _load_file that the tests let live (map_location "cpu" dropped): a GPU run's trainer and
    # rank states were put back on cuda:0, which a machine without a GPU refuses ("Attempting to deserialize object
    # on a CUDA device") and every rank of a GPU job filled on the first GPU
    ckpt = save(tmp_path, 4)
    _saved_on_a_gpu({"step": 4, "loss_sums": torch.tensor([1.5, 2.0])}, ckpt / "trainer_state.pt")
    _saved_on_a_gpu({"r": 0, "rng": torch.arange(4, dtype=torch.uint8)}, ckpt / "rank_00000.pt")
    trainer_state, rank_state, _ = load_checkpoint(LoadingEngine(), ckpt, ENV)
    assert trainer_state["loss_sums"].device == torch.device("cpu")
    assert trainer_state["loss_sums"].tolist() == [1.5, 2.0]
    assert rank_state["rng"].device == torch.device("cpu") and rank_state["rng"].tolist() == [0, 1, 2, 3]
    [state] = load_rank_states(ckpt, 1)
    assert state["rng"].device == torch.device("cpu") and state["rng"].tolist() == [0, 1, 2, 3]
