"""The run's tokenizer on two ranks (`engine.run_tokenizer.prepare_tokenizer`): a resume into a new run folder,
where rank 0 writes the run's copy of the configured tokenizer while the other ranks look for one."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from engine_helpers import TASKS, forked_ranks, free_port, tiny_config, train_tiny_tokenizer


def _rank_1_looks_late(run_dir: Path, rank_0_waits: Path):
    """A `tokenizer_source` for rank 1 that returns once rank 0 has written the run's copy or waits for the others
    (at most 30 s): a rank late to look (a busy machine) sees the copy whenever rank 0 writes it before waiting."""
    from t2t_mtl.engine import run_tokenizer

    source = run_tokenizer.tokenizer_source

    def late(cfg):
        deadline = time.monotonic() + 30
        while not ((run_dir / "tokenizer").exists() or rank_0_waits.exists()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return source(cfg)
    return late


def _rank_0_says_it_waits(rank_0_waits: Path):
    """`barrier` for rank 0, leaving `rank_0_waits` (and `rank_0_waits`.<n> at its n-th barrier) before it waits for
    the other ranks."""
    from t2t_mtl.engine import run_tokenizer

    barrier = run_tokenizer.barrier
    calls = []

    def says_it_waits(phase):
        calls.append(None)
        rank_0_waits.touch()
        Path(f"{rank_0_waits}.{len(calls)}").touch()
        barrier(phase)
    return says_it_waits


def _rank_1_goes_on_late(run_dir: Path, rank_0_waits: Path):
    """`barrier` for rank 1 that, once the ranks met, returns when rank 0 has written the run's copy or waits at its
    second barrier (at most 30 s): a rank that looks for the copy only after the first barrier sees it then."""
    from t2t_mtl.engine import run_tokenizer

    barrier = run_tokenizer.barrier

    def late(phase):
        barrier(phase)
        deadline = time.monotonic() + 30
        while not ((run_dir / "tokenizer").exists() or Path(f"{rank_0_waits}.2").exists()) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
    return late


def _prepare_worker(rank: int, port: int, config: dict, out: str) -> None:
    """Rank `rank` of two preparing the tokenizer of a run resumed into a new folder, then the next collective the
    trainer runs (the data's `failed_ranks`); writes the tokenizer's size to out.<rank>."""
    from t2t_mtl.config import config_from_dict
    from t2t_mtl.engine import run_tokenizer
    from t2t_mtl.engine.distributed import failed_ranks, join_gloo_group

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cfg = config_from_dict(config)
    run_dir = Path(cfg.training.output_dir)
    rank_0_waits = Path(f"{out}.rank-0-waits")
    if rank == 0:
        run_tokenizer.barrier = _rank_0_says_it_waits(rank_0_waits)
    else:
        run_tokenizer.tokenizer_source = _rank_1_looks_late(run_dir, rank_0_waits)
        run_tokenizer.barrier = _rank_1_goes_on_late(run_dir, rank_0_waits)
    env = join_gloo_group()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        tokenizer = run_tokenizer.prepare_tokenizer(cfg, run_dir, TASKS, env, fresh=False)
        failed_ranks(False, env, "training data read")
        result = f"{len(tokenizer)} tokens"
    except Exception as err:  # noqa: BLE001 (what each rank ended with is the result)
        result = f"{type(err).__name__}: {err}"
    Path(f"{out}.{rank}").write_text(result)


@pytest.mark.slow
def test_ranks_resumed_into_a_new_folder_take_the_configured_tokenizer_together_however_late_one_looks(tmp_path):
    """Each rank looked for the new folder's copy on its own: one that looked after rank 0 had written it loaded it
    and went on without the barrier rank 0 waited at, so the ranks' collectives no longer matched and both waited
    for ever (the two-rank packing resume into a new folder timed out under load)."""
    from t2t_mtl.tokenizer import load_tokenizer

    tok = train_tiny_tokenizer(tmp_path / "tok")
    config = tiny_config(tmp_path / "resumed", tok, tmp_path / "cache")
    port = free_port()
    forked_ranks(_prepare_worker, [(rank, port, config, str(tmp_path / "result")) for rank in (0, 1)], timeout=120)
    assert [(tmp_path / f"result.{rank}").read_text() if (tmp_path / f"result.{rank}").exists() else "hung"
            for rank in (0, 1)] == [f"{len(load_tokenizer(tok))} tokens"] * 2
    assert load_tokenizer(tmp_path / "resumed" / "tokenizer").get_vocab() == load_tokenizer(tok).get_vocab()
