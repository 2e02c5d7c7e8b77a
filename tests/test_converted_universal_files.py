"""A checkpoint's folder in DeepSpeed's universal format, converted by an earlier resume under another world size and
reused by the next, is checked before DeepSpeed starts (`universal_conversion.ensure_universal`): a file of it cut
short or with a record header overwritten is refused naming it, with what to do (remove the folder: the resume
converts the checkpoint again), where DeepSpeed's load failed on it inside and called the checkpoint corrupt. One
process: a ZeRO-1 checkpoint resumed at ZeRO-2 goes through the universal format."""
from __future__ import annotations

import errno
import os
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from t2t_mtl.engine import trainer as trainer_mod
from t2t_mtl.engine.checkpoint import CheckpointError
from t2t_mtl.engine.distributed import DistEnv
from t2t_mtl.engine.trainer import train
from t2t_mtl.engine.universal_conversion import ensure_universal

from engine_helpers import tiny_config, train_tiny_tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


def _largest_record(path: Path) -> zipfile.ZipInfo:
    """Torch zip file `path`'s largest data record."""
    return max((i for i in zipfile.ZipFile(path).infolist() if "/data/" in i.filename), key=lambda i: i.file_size)


@pytest.mark.parametrize("damage", ["header", "cut short"])
def test_a_damaged_file_of_a_universal_folder_converted_earlier_is_refused_before_deepspeed_starts(
        tmp_path, tok, monkeypatch, damage):
    # was: DeepSpeed's load failed on it ("DeepSpeed could not load ...: the checkpoint is incomplete or corrupt:
    # resume from an earlier one"), the checkpoint's own files intact
    train(tiny_config(tmp_path / "run", tok, tmp_path / "cache", deepspeed={"zero_stage": 1},
                      training={"steps": 2}), evaluate_held_in=False)
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000002"
    out = ensure_universal(ckpt, DistEnv(0, 1, 0, torch.device("cpu"), "gloo"))
    path = out / "zero" / "shared.weight" / "fp32.pt"
    raw = bytearray(path.read_bytes())
    if damage == "header":
        record = _largest_record(path)
        raw[record.header_offset:record.header_offset + 4] = bytes(4)
        error = f"record {record.filename} has no local header at offset {record.header_offset}"
    else:
        raw = raw[:len(raw) // 2]
        error = "its zip directory cannot be read: File is not a zip file"
    path.write_bytes(bytes(raw))
    started = []
    monkeypatch.setattr(trainer_mod, "initialize_deepspeed", lambda *args: started.append(True))
    with pytest.raises(CheckpointError) as refused:
        train(tiny_config(tmp_path / "resumed", tok, tmp_path / "cache", deepspeed={"zero_stage": 2},
                          training={"steps": 3}), resume=str(ckpt), evaluate_held_in=False)
    assert str(refused.value) == (f"{path} is damaged ({error}): remove {out} for the resume to convert checkpoint "
                                  f"{ckpt} again (its own files are checked then)")
    assert not started
    monkeypatch.undo()
    shutil.rmtree(out)  # (as the refusal says: converted again, the resume trains)
    assert train(tiny_config(tmp_path / "resumed", tok, tmp_path / "cache", deepspeed={"zero_stage": 2},
                             training={"steps": 3}), resume=str(ckpt), evaluate_held_in=False).step == 3


def test_a_checkpoint_folder_that_cannot_be_written_is_named_with_a_copy_to_resume_from_not_called_corrupt(
        tmp_path, tok, monkeypatch):
    # was: "DeepSpeed could not convert ... (PermissionError ...); the checkpoint is incomplete or corrupt: resume from
    # an earlier one ... or remove it", of an intact checkpoint in a folder the user cannot write (another user's)
    train(tiny_config(tmp_path / "run", tok, tmp_path / "cache", deepspeed={"zero_stage": 1},
                      training={"steps": 2}), evaluate_held_in=False)
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000002"
    mkdir = os.mkdir

    def read_only(path, *args, **kwargs):  # (root writes through chmod: the folder refuses as a read-only mount does)
        if Path(path).parent == ckpt:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", read_only)
    with pytest.raises(CheckpointError) as refused:
        ensure_universal(ckpt, DistEnv(0, 1, 0, torch.device("cpu"), "gloo"))
    assert str(refused.value) == (
        f"checkpoint {ckpt} cannot be written ([Errno 13] Permission denied: '{ckpt / '.tmp-ds_universal'}'): a "
        f"resume under another world size or ZeRO stage first converts it to DeepSpeed's universal format inside it "
        f"(ds_universal): copy the checkpoint's folder to one you can write and resume from the copy")
    assert not (ckpt / "ds_universal").exists()
