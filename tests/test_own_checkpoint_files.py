"""A resume's checkpoint files that one rank reads alone (`t2t_mtl.engine.own_checkpoint_files`): the files are the ones
DeepSpeed and the checkpoint name for that rank, and a rank that cannot use its own stops every rank before DeepSpeed
starts, each with a message naming the file or the rank and its files (two ranks, gloo, no launcher that would stop
the others); so does a conversion to the universal format that fails on rank 0, or rank 0's refusal of a damaged
universal folder converted by an earlier resume."""
from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path
from types import MethodType, SimpleNamespace
from typing import Any, Callable

import pytest
import torch

from engine_helpers import cli_ranks, forked_ranks, free_port, tiny_config, train_command, train_tiny_tokenizer, \
    write_config


@pytest.mark.parametrize("stage, precision", [(1, "fp32"), (2, "bf16"), (3, "fp32"), (3, "bf16")])
@pytest.mark.parametrize("rank", [0, 1])
def test_a_ranks_own_deepspeed_files_are_the_ones_deepspeed_names_for_it(tmp_path, stage, precision, rank):
    # DeepSpeed's engine names the files a rank loads alone (the reference): its module state at ZeRO-3, its
    # optimizer partition at ZeRO 1-3 (bf16_ in front for a bf16 run's); then the checkpoint's own rank file
    from deepspeed.runtime.engine import DeepSpeedEngine

    from t2t_mtl.engine.checkpoint import DS_TAG, rank_file
    from t2t_mtl.engine.own_checkpoint_files import own_files

    engine = SimpleNamespace(checkpoint_mp_rank=0, zero_optimization_partition_weights=lambda: stage == 3)
    engine._get_zero_ckpt_prefix = MethodType(DeepSpeedEngine._get_zero_ckpt_prefix, engine)
    optimizer = DeepSpeedEngine._get_rank_zero_ckpt_name(engine, str(tmp_path), DS_TAG, mp_rank=0, dp_rank=rank,
                                                         bf16_mode=precision == "bf16")
    module = [Path(DeepSpeedEngine._get_ckpt_name(engine, str(tmp_path), DS_TAG, pp_placeholder=rank))] * (stage == 3)
    meta = {"zero_stage": stage, "precision": precision, "world_size": 2}
    assert own_files(tmp_path, meta, rank, 2, universal=False) == [*module, Path(optimizer), rank_file(tmp_path, rank)]


def test_a_resume_reads_no_own_deepspeed_file_at_stage_0_nor_through_the_universal_format_nor_others_rank_files(
        tmp_path):
    from t2t_mtl.engine.checkpoint import rank_file
    from t2t_mtl.engine.own_checkpoint_files import own_files

    assert own_files(tmp_path, {"zero_stage": 0, "world_size": 2}, 1, 2, universal=False) == [rank_file(tmp_path, 1)]
    assert own_files(tmp_path, {"zero_stage": 3, "world_size": 2}, 1, 2, universal=True) == [rank_file(tmp_path, 1)]
    # (another world size: every rank reads every old rank's file, `load_rank_states`)
    assert own_files(tmp_path, {"zero_stage": 0, "world_size": 2}, 0, 1, universal=False) == []


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_the_files_every_rank_reads_are_the_trainer_state_and_the_module_state_below_zero3(tmp_path, stage):
    # DeepSpeed's engine names the module state every rank loads at ZeRO 0-2 (the reference); at ZeRO-3 each its own
    from deepspeed.runtime.engine import DeepSpeedEngine

    from t2t_mtl.engine.checkpoint import DS_TAG
    from t2t_mtl.engine.own_checkpoint_files import shared_files

    engine = SimpleNamespace(checkpoint_mp_rank=0, zero_optimization_partition_weights=lambda: False)
    module = [Path(DeepSpeedEngine._get_ckpt_name(engine, str(tmp_path), DS_TAG))] if stage < 3 else []
    trainer_state = tmp_path / "trainer_state.pt"
    assert shared_files(tmp_path, {"zero_stage": stage}, universal=False) == [trainer_state, *module]
    # (through the universal format no module state is read)
    assert shared_files(tmp_path, {"zero_stage": stage}, universal=True) == [trainer_state]


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_a_universal_resume_filling_frozen_weights_checks_the_module_states_it_reads_them_from(tmp_path, stage):
    # DeepSpeed's engine names the module states (the reference): at ZeRO-3 every old rank's, which `fill_frozen`
    # joins; at ZeRO 1-2 the one. Was: through the universal format only the trainer state was checked
    from deepspeed.runtime.engine import DeepSpeedEngine

    from t2t_mtl.engine.checkpoint import DS_TAG
    from t2t_mtl.engine.own_checkpoint_files import shared_files

    engine = SimpleNamespace(checkpoint_mp_rank=0, zero_optimization_partition_weights=lambda: stage == 3)
    ranks = [0, 1] if stage == 3 else [0]
    modules = [Path(DeepSpeedEngine._get_ckpt_name(engine, str(tmp_path), DS_TAG, pp_placeholder=rank))
               for rank in ranks]
    meta = {"zero_stage": stage, "world_size": 2}
    assert shared_files(tmp_path, meta, universal=True, fills_frozen=True) == [tmp_path / "trainer_state.pt", *modules]
    assert shared_files(tmp_path, meta, universal=True) == [tmp_path / "trainer_state.pt"]  # (nothing frozen)


def _ranks_env(rank: int, port: int) -> dict:
    return {"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "LOCAL_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}


def _rank_outcome(rank: int, port: int, out: str, step: Callable[..., str], *args: Any) -> None:
    """Rank `rank` of two (gloo on `port`): writes to `out`.<rank> what `step(rank, *args)` ended with, the word it
    returns or its error's type and message."""
    os.environ.update(_ranks_env(rank, port))
    try:
        result = step(rank, *args)
    except Exception as err:  # noqa: BLE001 (what each rank ended with is the result)
        result = f"{type(err).__name__}: {err}"
    Path(f"{out}.{rank}").write_text(result)


def _two_ranks(out: Path, step: Callable[..., str], *args: Any, timeout: float = 120) -> list:
    """What each of two ranks (forked, no launcher) ended `step(rank, *args)` with (`_rank_outcome`), "still waiting"
    for one that had not ended after `timeout` s."""
    port = free_port()
    forked_ranks(_rank_outcome, [(rank, port, str(out), step, *args) for rank in (0, 1)], timeout=timeout)
    return [Path(f"{out}.{rank}").read_text() if Path(f"{out}.{rank}").exists() else "still waiting"
            for rank in (0, 1)]


def _train(rank: int, config: dict) -> str:
    from t2t_mtl.engine import trainer

    trainer.train(config, resume="auto", evaluate_held_in=False)
    return "trained"


def _train_first_best(rank: int, config: dict) -> str:
    """`_train` of a run whose first validation stays its best, and whose rank 1 cannot read its rank file of that
    step's checkpoint (its node's view of it)."""
    from t2t_mtl.engine.best import BestValidation

    update, load = BestValidation.update, torch.load

    def first_only(self, step, value):
        return update(self, step, value) if self.step is None else False

    def unreadable(path, *args, **kwargs):
        if str(path).endswith(f"step-00000002{os.sep}rank_00001.pt"):
            raise OSError("rank 1 cannot read its rank file")
        return load(path, *args, **kwargs)

    BestValidation.update = first_only
    if rank == 1:
        torch.load = unreadable
    return _train(rank, config)


def _train_two_ranks(config: dict, out: Path, step: Callable[[int, dict], str] = _train) -> list:
    """What each of two ranks ended `step(rank, config)` with (`_two_ranks`): by default `train(config,
    resume="auto")`."""
    return _two_ranks(out, step, config, timeout=180)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(root, {ZeRO stage: config}): a one-step run of two ranks at ZeRO-2 and at ZeRO-3, checkpointed."""
    root = tmp_path_factory.mktemp("own_files")
    tok = train_tiny_tokenizer(root / "tok")
    configs = {}
    for stage in (2, 3):
        configs[stage] = tiny_config(root / f"zero{stage}", tok, root / "cache", training={"steps": 1},
                                     deepspeed={"zero_stage": stage})
        assert _train_two_ranks(configs[stage], root / f"zero{stage}_trained") == ["trained", "trained"]
    return root, configs


def _damaged_copy(runs, stage: int, name: str):
    """(config resuming a copy of the ZeRO-`stage` run for one more step, the copy's checkpoint)."""
    root, configs = runs
    shutil.copytree(root / f"zero{stage}", root / name)
    cfg = configs[stage]
    return ({**cfg, "training": {**cfg["training"], "steps": 2, "output_dir": str(root / name)}},
            root / name / "checkpoints" / "step-00000001")


def _largest_tensor_record(path: Path) -> zipfile.ZipInfo:
    """The zip directory's entry of torch file `path`'s largest tensor record (the data/ records hold the tensors)."""
    return max((i for i in zipfile.ZipFile(path).infolist() if "/data/" in i.filename), key=lambda i: i.file_size)


HINT = ("the checkpoint is incomplete or corrupt: resume from an earlier one (--resume <run>/checkpoints/step-N) or "
        "remove it")


def _others_message(ckpt: Path, files: str, shared: str) -> str:
    own = f"rank 1's own: {files}; " if files else ""
    return (f"CheckpointError: rank 1 of 2 could not use its files of checkpoint {ckpt} (see its error; {own}every "
            f"rank's: {shared}); every rank must read the same complete checkpoint, on a filesystem all nodes share: "
            f"{HINT}")


ZERO3_FILES = "ds/zero_pp_rank_1_mp_rank_00_model_states.pt, ds/zero_pp_rank_1_mp_rank_00_optim_states.pt, " \
              "rank_00001.pt"
ZERO2_FILES = "ds/zero_pp_rank_1_mp_rank_00_optim_states.pt, rank_00001.pt"
ZERO3_SHARED = "trainer_state.pt"
ZERO2_SHARED = "trainer_state.pt, ds/mp_rank_00_model_states.pt"


@pytest.mark.slow
def test_a_zero3_module_state_of_one_rank_lacking_a_tensor_stops_both_ranks_of_the_cli_naming_it(runs):
    """Rank 1's ZeRO-3 module state lacks a tensor of the model (checked before DeepSpeed starts, since the model is
    built unfilled). Was: rank 1 alone stopped; rank 0 went into DeepSpeed's start and, under no launcher that stops
    it (two-node torchrun, pdsh, srun without --kill-on-bad-exit), ended on a gloo traceback or waited."""
    cfg, ckpt = _damaged_copy(runs, 3, "zero3_lacking")
    states = ckpt / "ds" / "zero_pp_rank_1_mp_rank_00_model_states.pt"
    saved = torch.load(states, weights_only=False)
    del saved["module"]["decoder.final_layer_norm.weight"]
    torch.save(saved, states)
    path, port = write_config(cfg, Path(cfg["training"]["output_dir"] + ".yaml")), free_port()
    codes, errs = cli_ranks([train_command(path, "--resume", "auto")] * 2, [_ranks_env(rank, port) for rank in (0, 1)])
    assert codes == [2, 2], errs
    assert errs[1].strip().splitlines()[-1] == (
        f"error: {states} holds no decoder.final_layer_norm.weight of this run's model: resume with the model "
        f"settings the checkpoint was trained with, or from another checkpoint")
    assert errs[0].strip().splitlines()[-1] == \
        "error: " + _others_message(ckpt, ZERO3_FILES, ZERO3_SHARED).split(": ", 1)[1]
    assert "Traceback" not in errs[0] + errs[1]


@pytest.mark.slow
def test_a_zero2_optimizer_partition_of_one_rank_cut_short_stops_both_ranks_naming_it(runs):
    """Was: rank 1 stopped inside DeepSpeed's load naming the checkpoint's ds folder ('OSError: [Errno 22] Invalid
    argument'); rank 0 printed 'resumed from ...' and ended on a gloo 'Connection closed by peer' traceback."""
    cfg, ckpt = _damaged_copy(runs, 2, "zero2_cut")
    partition = ckpt / "ds" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    partition.write_bytes(partition.read_bytes()[:partition.stat().st_size // 2])
    results = _train_two_ranks(cfg, ckpt.parent.parent.with_suffix(".result"))
    assert results[0] == _others_message(ckpt, ZERO2_FILES, ZERO2_SHARED)
    assert results[1].startswith(f"CheckpointError: {partition} cannot be read (")
    assert results[1].endswith("); the checkpoint is incomplete or corrupt: resume from an earlier one (--resume "
                               "<run>/checkpoints/step-N) or remove it")


@pytest.mark.slow
def test_a_missing_rank_file_of_one_rank_stops_both_ranks_naming_it(runs):
    """Was: rank 1 stopped after DeepSpeed's load; rank 0 went on into the first step and ended there."""
    cfg, ckpt = _damaged_copy(runs, 2, "zero2_no_rank_file")
    (ckpt / "rank_00001.pt").unlink()
    results = _train_two_ranks(cfg, ckpt.parent.parent.with_suffix(".result"))
    assert results == [_others_message(ckpt, ZERO2_FILES, ZERO2_SHARED),
                       f"CheckpointError: {ckpt / 'rank_00001.pt'} is missing; the checkpoint is incomplete or "
                       f"corrupt: resume from an earlier one (--resume <run>/checkpoints/step-N) or remove it"]


@pytest.mark.slow
def test_a_conversion_to_the_universal_format_of_a_file_cut_short_is_refused_naming_it(runs):
    """One process resuming the two ranks' ZeRO-2 checkpoint (another world size: rank 0 converts it). Was: the
    converter's 'OSError: [Errno 22] Invalid argument' traceback, naming no file."""
    from t2t_mtl.engine.checkpoint import CheckpointError
    from t2t_mtl.engine.trainer import train

    cfg, ckpt = _damaged_copy(runs, 2, "zero2_cut_universal")
    partition = ckpt / "ds" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    partition.write_bytes(partition.read_bytes()[:partition.stat().st_size // 2])
    with pytest.raises(CheckpointError) as refused:
        train(cfg, resume="auto", evaluate_held_in=False)
    assert str(refused.value).startswith(f"{partition} cannot be read (")
    assert not (ckpt / "ds_universal").exists()


@pytest.mark.slow
def test_a_conversion_to_the_universal_format_failing_on_rank_0_stops_both_ranks(runs):
    """Two ranks resuming the ZeRO-2 checkpoint at ZeRO-1 (through the universal format, which rank 0 alone writes)
    whose rank 1 optimizer partition is missing. Was: rank 0 ended on DeepSpeed's "RuntimeError: shape '[64, 32]' is
    invalid for input of size 1920" traceback, rank 1, waiting for the conversion, on gloo's 'Connection closed by
    peer'."""
    cfg, ckpt = _damaged_copy(runs, 2, "zero2_universal_no_partition")
    partition = ckpt / "ds" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    partition.unlink()
    results = _train_two_ranks({**cfg, "deepspeed": {"zero_stage": 1}}, ckpt.parent.parent.with_suffix(".result"))
    assert results == [f"CheckpointError: {partition} is missing; {HINT}",
                       f"CheckpointError: rank 0 of 2 could not convert checkpoint {ckpt} to DeepSpeed's universal "
                       f"format (see its error, which names the file or folder at fault and what to do)"]


def _check_unreadable_trainer_state(rank: int, ckpt: str) -> str:
    """Rank `rank` of two checking checkpoint `ckpt`'s files for a universal resume, rank 1 unable to read its
    trainer state (its node's view of it)."""
    from t2t_mtl.engine.checkpoint import read_meta
    from t2t_mtl.engine.distributed import init_distributed
    from t2t_mtl.engine.own_checkpoint_files import check_own_files

    load = torch.load

    def unreadable(path, *args, **kwargs):
        if Path(path).name == "trainer_state.pt":
            raise OSError("rank 1 cannot read it")
        return load(path, *args, **kwargs)

    if rank == 1:
        torch.load = unreadable
    check_own_files(Path(ckpt), read_meta(Path(ckpt)), init_distributed(), universal=True)
    return "checked"


def test_a_rank_that_cannot_use_a_file_every_rank_reads_stops_the_other_naming_those_files(tmp_path):
    # was: "rank 1 of 2 could not use its own files of checkpoint ... (rank 1's: ; see its error)": a universal resume
    # under another world size gives a rank no own file, and the file it could not use was the trainer state
    import json

    ckpt = tmp_path / "step-00000001"
    ckpt.mkdir()
    torch.save({}, ckpt / "trainer_state.pt")
    (ckpt / "meta.json").write_text(json.dumps({"zero_stage": 2, "precision": "fp32", "world_size": 1}))
    assert _two_ranks(tmp_path / "result", _check_unreadable_trainer_state, str(ckpt)) == [
        _others_message(ckpt, "", "trainer_state.pt"),
        f"CheckpointError: {ckpt / 'trainer_state.pt'} cannot be read (OSError: rank 1 cannot read it); {HINT}"]


def _ensure_universal(rank: int, ckpt: str) -> str:
    """Rank `rank` of two making sure checkpoint `ckpt` has its universal folder (`ensure_universal`)."""
    from t2t_mtl.engine.distributed import init_distributed
    from t2t_mtl.engine.universal_conversion import ensure_universal

    ensure_universal(Path(ckpt), init_distributed())
    return "converted"


def test_a_damaged_universal_folder_of_an_earlier_resume_refused_on_rank_0_stops_the_other_saying_so(tmp_path):
    # was: rank 1 said "rank 0 of 2 could not convert checkpoint ... to DeepSpeed's universal format (see its error);
    # the checkpoint is incomplete or corrupt: resume from an earlier one", though rank 0 converted nothing and the
    # checkpoint's own files are intact: rank 0 had refused the folder converted earlier, to be removed
    ckpt = tmp_path / "step-00000001"
    path = ckpt / "ds_universal" / "zero" / "shared.weight" / "fp32.pt"
    path.parent.mkdir(parents=True)
    torch.save(torch.arange(64.0), path)
    raw = bytearray(path.read_bytes())
    at = _largest_tensor_record(path).header_offset
    raw[at:at + 4] = bytes(4)  # (its data record's local header)
    path.write_bytes(bytes(raw))
    results = _two_ranks(tmp_path / "result", _ensure_universal, str(ckpt))
    assert results[0].startswith(f"CheckpointError: {path} is damaged (record ")
    assert results[1] == (f"CheckpointError: rank 0 of 2 refused {ckpt / 'ds_universal'}, converted by an earlier "
                          f"resume (see its error: a damaged file of it); remove {ckpt / 'ds_universal'} for the "
                          f"resume to convert checkpoint {ckpt} again")


def test_an_error_of_deepspeeds_converter_is_a_checkpoint_error_quoting_it(tmp_path, monkeypatch):
    import deepspeed.checkpoint.ds_to_universal as converter

    from t2t_mtl.engine.checkpoint import CheckpointError, optimizer_partition_file
    from t2t_mtl.engine.distributed import DistEnv
    from t2t_mtl.engine.universal_conversion import ensure_universal

    def fails(args):
        raise RuntimeError("shape '[64, 32]' is invalid\nfor input of size 1920\nthird line")

    monkeypatch.setattr(converter, "main", fails)
    (tmp_path / "meta.json").write_text('{"world_size": 1, "precision": "fp32"}')
    optimizer_partition_file(tmp_path, 0, "fp32").parent.mkdir()
    torch.save({}, optimizer_partition_file(tmp_path, 0, "fp32"))
    with pytest.raises(CheckpointError) as refused:
        ensure_universal(tmp_path, DistEnv(0, 1, 0, torch.device("cpu"), "gloo"))
    assert str(refused.value) == (f"DeepSpeed could not convert {tmp_path / 'ds'} to its universal format "
                                  f"(RuntimeError: shape '[64, 32]' is invalid for input of size 1920); {HINT}")


@pytest.mark.slow
def test_a_ranks_file_of_the_best_checkpoint_it_cannot_read_stops_both_ranks_after_training(runs):
    """training.keep_best, the best at step 2 of 4, loaded after training for the evaluation. Was: rank 1 stopped in
    the load; rank 0 went on with the evaluation of the best checkpoint and returned its result."""
    root, configs = runs
    cfg = tiny_config(root / "best", Path(configs[2]["tokenizer"]["path"]), root / "cache",
                      deepspeed={"zero_stage": 2},
                      training={"steps": 4, "validate_every": 2, "validate_examples": 2, "keep_best": "val_loss"})
    ckpt = root / "best" / "checkpoints" / "step-00000002"
    results = _train_two_ranks(cfg, root / "best_result", _train_first_best)
    assert results == [_others_message(ckpt, ZERO2_FILES, ZERO2_SHARED),
                       f"CheckpointError: {ckpt / 'rank_00001.pt'} cannot be read (OSError: rank 1 cannot read its "
                       f"rank file); {HINT}"]


def _zeroed_inside(path: Path) -> str:
    """Zero the middle half of torch file `path`'s largest tensor record, as a copy or a disk that lost a block
    leaves it (the file still opens and loads); returns the record's name."""
    import struct

    info = _largest_tensor_record(path)
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + sum(struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30]))
    raw[start + info.file_size // 4:start + 3 * info.file_size // 4] = bytes(info.file_size // 2)
    path.write_bytes(bytes(raw))
    return info.filename


@pytest.mark.slow
def test_an_optimizer_partition_of_one_rank_damaged_inside_stops_both_ranks_naming_it(runs):
    """Zeros inside rank 1's ZeRO-2 optimizer partition (its file still loads). Was: both ranks resumed and trained
    on, rank 1 from the damaged optimizer state."""
    cfg, ckpt = _damaged_copy(runs, 2, "zero2_zeros")
    partition = ckpt / "ds" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    record = _zeroed_inside(partition)
    results = _train_two_ranks(cfg, ckpt.parent.parent.with_suffix(".result"))
    assert results == [_others_message(ckpt, ZERO2_FILES, ZERO2_SHARED),
                       f"CheckpointError: {partition} is damaged (record {record} does not match the CRC-32 torch "
                       f"recorded for it at save: its data changed after it was written); {HINT}"]


@pytest.mark.slow
def test_a_zero3_optimizer_partition_of_one_rank_with_a_zeroed_record_header_stops_both_ranks_naming_it(runs):
    """Rank 1's ZeRO-3 optimizer partition with a record's header zeroed (torch's memory-mapped load passes it). Was:
    rank 1 stopped inside DeepSpeed's load ('PytorchStreamReader failed reading file data/1: invalid header or archive
    is corrupted', naming the ds folder), rank 0 on gloo's 'Connection reset by peer' inside the load's collectives."""
    cfg, ckpt = _damaged_copy(runs, 3, "zero3_header")
    partition = ckpt / "ds" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    info = _largest_tensor_record(partition)
    raw = bytearray(partition.read_bytes())
    raw[info.header_offset:info.header_offset + 30] = bytes(30)
    partition.write_bytes(bytes(raw))
    results = _train_two_ranks(cfg, ckpt.parent.parent.with_suffix(".result"))
    assert results == [_others_message(ckpt, ZERO3_FILES, ZERO3_SHARED),
                       f"CheckpointError: {partition} is damaged (record {info.filename} has no local header at "
                       f"offset {info.header_offset}); {HINT}"]

@pytest.mark.slow
def test_a_module_state_every_rank_reads_damaged_inside_stops_each_rank_naming_it(runs):
    """Zeros inside the ZeRO-2 module state (mp_rank_00_model_states.pt, which every rank loads). Was: both ranks
    resumed from the damaged weights and trained on."""
    cfg, ckpt = _damaged_copy(runs, 2, "zero2_module_zeros")
    states = ckpt / "ds" / "mp_rank_00_model_states.pt"
    record = _zeroed_inside(states)
    results = _train_two_ranks(cfg, ckpt.parent.parent.with_suffix(".result"))
    assert results == [f"CheckpointError: {states} is damaged (record {record} does not match the CRC-32 torch "
                       f"recorded for it at save: its data changed after it was written); {HINT}"] * 2


@pytest.mark.parametrize("zero, checkpoint, index", [
    ({"stage": 3, "offload_optimizer": {"device": "nvme", "nvme_path": "/nvme"}}, {}, 5),
    ({"stage": "3", "offload_optimizer": {"device": "nvme", "nvme_path": "/nvme"}}, {"use_node_local_storage": True},
     1),
    ({"stage": 3, "offload_optimizer": {"device": "cpu"}, "offload_param": {"device": "nvme", "nvme_path": "/n"}},
     {}, None),
    ({"stage": 2, "offload_optimizer": {"device": "nvme", "nvme_path": "/nvme"}}, {}, None),
    ({"stage": 3}, {}, None),
])
def test_the_folder_of_a_ranks_optimizer_offloaded_to_nvme_is_the_one_deepspeeds_load_copies(tmp_path, zero,
                                                                                            checkpoint, index):
    # read in DeepSpeed 0.19.8's engine (no aio here to run it): where its ZeRO-3 optimizer swaps to NVMe, its load
    # copies <tag>/offloaded_tensors/rank + dp_index_to_str(the local rank under checkpoint.use_node_local_storage,
    # else the global rank); ZeRO-1/2 swap no optimizer
    from deepspeed.checkpoint.ds_to_universal import dp_index_to_str

    from t2t_mtl.engine.distributed import DistEnv
    from t2t_mtl.engine.own_checkpoint_files import nvme_offload_folder, nvme_offload_index

    env = DistEnv(rank=5, world_size=8, local_rank=1, device=torch.device("cpu"), backend="gloo")
    assert nvme_offload_index({"zero_optimization": zero, "checkpoint": checkpoint}, env) == index
    assert nvme_offload_folder(tmp_path, 5) == tmp_path / "ds" / "offloaded_tensors" / f"rank{dp_index_to_str(5)}"


def _check_offloaded(rank: int, ckpt: str) -> str:
    """Rank `rank` of two checking the ZeRO-3 checkpoint `ckpt`'s files with its optimizer offloaded to NVMe."""
    from t2t_mtl.engine.checkpoint import read_meta
    from t2t_mtl.engine.distributed import init_distributed
    from t2t_mtl.engine.own_checkpoint_files import check_own_files

    env = init_distributed()
    check_own_files(Path(ckpt), read_meta(Path(ckpt)), env, universal=False, nvme_index=env.rank)
    return "checked"


@pytest.mark.slow
def test_a_ranks_missing_folder_of_optimizer_state_offloaded_to_nvme_stops_both_ranks_naming_it(tmp_path):
    """Read in DeepSpeed's load (no aio here to run it): each rank copies its folder back after loading its module
    state, inside the load's ZeRO-3 collectives; a missing one raised FileNotFoundError on that rank alone."""
    import json

    from t2t_mtl.engine.checkpoint import optimizer_partition_file, rank_file
    from t2t_mtl.engine.resumed_model import module_state_file

    ckpt = tmp_path / "step-00000001"
    (ckpt / "ds" / "offloaded_tensors" / "rank00").mkdir(parents=True)  # (rank 1's is missing)
    for path in [ckpt / "trainer_state.pt", *(f(r) for r in (0, 1) for f in (
            lambda r: module_state_file(ckpt, 3, r), lambda r: optimizer_partition_file(ckpt, r, "fp32"),
            lambda r: rank_file(ckpt, r)))]:
        torch.save({}, path)
    (ckpt / "meta.json").write_text(json.dumps({"zero_stage": 3, "precision": "fp32", "world_size": 2}))
    assert _two_ranks(tmp_path / "result", _check_offloaded, str(ckpt)) == [
        _others_message(ckpt, ZERO3_FILES + ", its folder in ds/offloaded_tensors", ZERO3_SHARED),
        f"CheckpointError: {ckpt / 'ds' / 'offloaded_tensors' / 'rank01'} (the optimizer state rank 1 offloaded to "
        f"NVMe) is missing; {HINT}"]
