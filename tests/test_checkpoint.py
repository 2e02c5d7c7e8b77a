"""Checkpoints: resolution of --resume, and kill -9 + `--resume auto` continuing the exact run (steps, task sequence,
data order, final weights); their atomic writes are tested in test_checkpoint_saving.py, their reads in
test_checkpoint_loading.py."""
from __future__ import annotations

import os
import signal
import subprocess
import time
import zlib

import numpy as np
import pytest
import torch

from t2t_mtl.engine import checkpoint as ck
from t2t_mtl.engine.distributed import DistEnv
from t2t_mtl.engine.export import load_trained_model
from t2t_mtl.engine.trainer import train

from engine_helpers import REPO, step_records, subprocess_env, tiny_config, train_command, train_tiny_tokenizer, \
    write_config


def test_bad_resume_path_is_refused_before_training(tmp_path, capsys):
    from t2t_mtl.cli import main as cli_main

    code = cli_main(["train", "--resume", str(tmp_path / "nowhere"), "--set", f"training.output_dir={tmp_path}/r",
                     "--set", f"data.cache_dir={tmp_path}/cache"])
    assert code == 2
    assert "not a checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()  # (without data.cache_dir a run tokenizes into datasets' cache folder)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


@pytest.mark.slow
def test_kill_9_then_resume_auto_continues_exactly(tmp_path, tok):
    steps = 40
    dims = {**tiny_config(tmp_path, tok, tmp_path)["model"]["dims"], "dropout_rate": 0.1}  # dropout draws: torch RNG
    sections = dict(training={"steps": steps, "checkpoint_every": 4, "schedule": "linear", "warmup": 3},
                    data={"batching": "bucket", "bucket_batches": 3}, model={"dims": dims})
    reference = train(tiny_config(tmp_path / "ref", tok, tmp_path / "cache", **sections), evaluate_held_in=False)

    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", **sections)
    cfg["training"]["num_threads"] = 1
    path = write_config(cfg, tmp_path / "run.yaml")
    proc = subprocess.Popen(train_command(path), env=subprocess_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    latest = tmp_path / "run" / "checkpoints" / "latest"
    deadline = time.time() + 180
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {err[-3000:]}"
    killed_at = int(latest.read_text().split("-")[1])
    assert killed_at < steps

    resumed = train(cfg, resume="auto", evaluate_held_in=False)
    assert resumed.step == steps
    assert len(resumed.task_sequence) == steps - killed_at
    assert resumed.task_sequence == reference.task_sequence[killed_at:]
    ref_records, run_records = step_records(tmp_path / "ref"), step_records(tmp_path / "run")
    assert sorted(run_records) == list(range(1, steps + 1))
    for s in range(1, steps + 1):  # same loss and same examples at every step: the data order continued
        assert run_records[s]["task_examples"] == ref_records[s]["task_examples"], s
        assert run_records[s]["loss"] == pytest.approx(ref_records[s]["loss"], rel=1e-5, abs=1e-6), s
    assert resumed.examples_seen == reference.examples_seen
    ref_model, _, _ = load_trained_model(tmp_path / "ref")
    run_model, _, _ = load_trained_model(tmp_path / "run")
    for (name, p), (_, q) in zip(ref_model.named_parameters(), run_model.named_parameters()):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6), name


def test_resharded_streams_deal_the_rows_the_old_ranks_held_untrained_first():
    # 8 rows on 2 ranks: rank 0 drew positions 0 and 2 of epoch 0, rank 1 positions 1 and 3, and each batch builder
    # still holds its second row. Rank 1 of 3 new ranks takes every third row of [2, 3, 4, 5, 6, 7] (positions)
    from t2t_mtl.engine.training_state import reshard_streams_state
    from t2t_mtl.sampling import TaskStreams

    old = [TaskStreams({"x": 8}, seed=0, rank=r, world_size=2) for r in range(2)]
    held = [stream.next_indices("x", 2)[1] for stream in old]
    states = [{"task_streams": stream.state_dict(), "batches": {"pending": {"x": [[("x", row)]]}, "leftover": {}}}
              for stream, row in zip(old, held)]
    env = DistEnv(rank=1, world_size=3, local_rank=1, device=torch.device("cpu"), backend="gloo")
    new = TaskStreams({"x": 8}, seed=0, rank=1, world_size=3)
    new.load_state_dict(reshard_streams_state(states, env))
    order = np.random.default_rng([0, zlib.crc32(b"x"), 0]).permutation(8).tolist()
    assert held == [order[2], order[3]]
    assert new.next_indices("x", 2) == [order[3], order[6]] and new.seen() == {"x": 4}


@pytest.mark.parametrize("saved, stage, universal, refused", [
    (1, 2, True, False), (2, 1, True, False),  # under another world size ZeRO-1 and -2 load into each other
    (1, 2, False, True),  # not without it (`loads_through_universal` sends a change of stage 1 <-> 2 through it)
    (1, 0, True, True), (0, 1, True, True), (2, 3, True, True),
])
def test_the_zero_stages_a_checkpoint_loads_into(tmp_path, saved, stage, universal, refused):
    from t2t_mtl.engine.deepspeed_engine import check_engine_settings

    meta = {"zero_stage": saved, "precision": "fp32"}
    ds_config = {"zero_optimization": {"stage": stage}}
    if refused:
        with pytest.raises(ck.CheckpointError, match=f"deepspeed.zero_stage = {saved}, this run has {stage}"):
            check_engine_settings(tmp_path, meta, ds_config, universal)
    else:
        check_engine_settings(tmp_path, meta, ds_config, universal)
    with pytest.raises(ck.CheckpointError, match="training.precision = 'fp32', this run has 'bf16'"):
        check_engine_settings(tmp_path, meta, {"zero_optimization": {"stage": saved}, "bf16": {"enabled": True}},
                              universal)


@pytest.mark.parametrize("saved, saved_world, stage, world, universal", [
    (2, 2, 2, 1, True), (1, 2, 1, 4, True), (3, 2, 3, 1, True),  # another world size
    (1, 1, 2, 1, True), (2, 2, 1, 2, True),  # ZeRO-1 <-> -2 under the same one
    (2, 1, 2, 1, False), (3, 1, 3, 1, False), (0, 2, 0, 1, False),  # the same stage and size; stage 0: whole states
    (1, 1, 3, 1, False), (0, 1, 1, 1, False),  # (refused by check_engine_settings)
])
def test_which_checkpoints_load_through_the_universal_format(saved, saved_world, stage, world, universal):
    from t2t_mtl.engine.deepspeed_engine import loads_through_universal

    meta = {"zero_stage": saved, "world_size": saved_world}
    assert loads_through_universal(meta, {"zero_optimization": {"stage": stage}}, world) is universal


@pytest.mark.parametrize("saved, auto_reason", [("bf16", None), ("fp16", "fp32 on this CPU, which has neither ...")])
def test_a_precision_auto_did_not_choose_is_refused_as_any_changed_precision(tmp_path, saved, auto_reason):
    # mutation testing: the auto message for a run whose precision was named (no auto_reason), or for a checkpoint
    # of fp16, which auto never chooses, passed every test: both keep check_compatible's message
    from t2t_mtl.engine.deepspeed_engine import check_engine_settings

    with pytest.raises(ck.CheckpointError) as refused:
        check_engine_settings(tmp_path, {"zero_stage": 0, "precision": saved}, {"zero_optimization": {"stage": 0}},
                              False, auto_reason)
    assert str(refused.value) == (f"checkpoint {tmp_path} was written with training.precision = {saved!r}, this run "
                                  f"has 'fp32': resume with the same precision, or set training.output_dir to a new "
                                  f"directory to start a new run")


@pytest.mark.parametrize("meta, why", [
    ({"name": "another program's", "step": 3}, "it lacks 'world_size', 'zero_stage', 'precision'"),
    ({"step": 3, "world_size": "two", "zero_stage": 0, "precision": "fp32"}, "its 'world_size' is no whole number"),
    ([3, 1], "it holds a list, not an object"),
])
def test_a_resume_from_a_folder_whose_meta_json_no_run_wrote_is_refused_naming_it(tmp_path, tok, meta, why):
    # was: a KeyError ('zero_stage') from deep in the start, which the CLI printed as "error: 'zero_stage'", or an
    # AttributeError ('list' object has no attribute 'get') with a traceback
    import json

    foreign = tmp_path / "other" / "checkpoint-3"
    (foreign / "ds").mkdir(parents=True)
    (foreign / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ck.CheckpointError) as refused:
        train(tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": 2}), resume=str(foreign),
              evaluate_held_in=False)
    assert str(refused.value) == (f"{foreign / 'meta.json'} is no t2t-mtl checkpoint's ({why}): resume from a "
                                  f"checkpoint a t2t-mtl run wrote (<run>/checkpoints/step-N) or the run's folder")
