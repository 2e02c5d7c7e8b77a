"""The phases the project's own collectives carry (`engine.rank_phases`): ranks that meet in a collective from
different places stop at once on every rank, naming where each was, instead of waiting for the group's timeout."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch

from engine_helpers import TASKS, forked_ranks, free_port, tiny_config, train_tiny_tokenizer
from t2t_mtl.engine.rank_phases import (PHASE_BYTES, RanksAtDifferentPhasesError, decoded, encoded, flags_at_phase,
                                        mismatch_message)


def test_a_phase_and_flag_come_back_as_given():
    assert decoded(encoded("the run's tokenizer trained", True)) == ("the run's tokenizer trained", True)
    assert decoded(encoded("é" * (PHASE_BYTES // 2), False)) == ("é" * (PHASE_BYTES // 2), False)  # 2 bytes each


@pytest.mark.parametrize("phase", ["", "x" * (PHASE_BYTES + 1), "é" * (PHASE_BYTES // 2 + 1)])
def test_a_phase_that_does_not_fit_is_refused_naming_it(phase):
    with pytest.raises(ValueError, match=f"phase must be 1 to {PHASE_BYTES} bytes of UTF-8, not '{phase}'"):
        encoded(phase, False)


def test_the_mismatch_names_each_phase_with_its_ranks_in_the_order_first_reached():
    assert mismatch_message(["b", "a", "b", "b"]) == (
        "the ranks met in a collective from different places (ranks 0, 2, 3 at 'b', rank 1 at 'a'): a bug in "
        "t2t-mtl, which would have left them waiting for each other until the process group's timeout; please "
        "report it with this message")


def _join(rank: int, port: int):
    from t2t_mtl.engine.distributed import join_gloo_group

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    return join_gloo_group()


def _ended(out: str) -> list:
    return [Path(f"{out}.{rank}").read_text() if Path(f"{out}.{rank}").exists() else "hung" for rank in (0, 1)]


def _apart_worker(rank: int, port: int, out: str) -> None:
    """Rank 0 waits at training_streams' barrier, rank 1 in the data's `failed_ranks` (where the start-up hang of
    05bcc23 left them: a barrier of the waiting group and an all-reduce of the default group). Writes what the rank
    ended with to out.<rank>, and how long it waited to out.<rank>.s."""
    from t2t_mtl.engine.distributed import barrier, failed_ranks, leave_process_group
    from t2t_mtl.engine.rank_phases import RanksAtDifferentPhasesError

    env = _join(rank, port)
    started = time.monotonic()
    try:
        if rank == 0:
            barrier("rank 0's training data tokenized")
        else:
            failed_ranks(False, env, "training data read")
        result = "through"
    except RanksAtDifferentPhasesError as err:
        result = str(err)
    Path(f"{out}.{rank}.s").write_text(str(time.monotonic() - started))
    Path(f"{out}.{rank}").write_text(result)
    leave_process_group()


@pytest.mark.slow
def test_ranks_at_a_barrier_and_a_failure_check_both_stop_at_once_naming_where_each_was(tmp_path):
    # was: each waited in its own group, rank 1 until the default group's timeout (DEEPSPEED_TIMEOUT, 10 minutes),
    # rank 0 until rank 1's exit closed the connection, with no message saying where either was
    out = str(tmp_path / "out")
    port = free_port()
    codes = forked_ranks(_apart_worker, [(rank, port, out) for rank in (0, 1)], timeout=60)
    ended = _ended(out)
    assert codes == [0, 0], ended
    assert ended == ["the ranks met in a collective from different places (rank 0 at 'rank 0's training data "
                     "tokenized', rank 1 at 'training data read'): a bug in t2t-mtl, which would have left them "
                     "waiting for each other until the process group's timeout; please report it with this "
                     "message"] * 2
    assert all(float(Path(f"{out}.{rank}.s").read_text()) < 10 for rank in (0, 1))  # (the other rank's start aside)


def _lost_worker(rank: int, port: int, out: str) -> None:
    """Rank 0 leaves the group at once (as a rank stopping on its own error does); rank 1 waits at a barrier and
    writes what it ended with (its error, that error's cause) to out.1 as JSON."""
    from t2t_mtl.engine.distributed import barrier, leave_process_group

    _join(rank, port)
    if rank == 0:
        leave_process_group()
        return
    try:
        barrier("the run's tokenizer trained")
        result = ["through", ""]
    except RuntimeError as err:
        result = [f"{type(err).__name__}: {err}", str(err.__cause__)]
    Path(f"{out}.{rank}").write_text(json.dumps(result))
    leave_process_group()


@pytest.mark.slow
def test_a_rank_waiting_for_one_gone_names_where_it_waited(tmp_path):
    # was: gloo's RuntimeError alone ('Connection closed by peer ... GLHF!'), which says nothing of where it waited
    out = str(tmp_path / "out")
    port = free_port()
    assert forked_ranks(_lost_worker, [(rank, port, out) for rank in (0, 1)], timeout=60) == [0, 0]
    ended, cause = json.loads(Path(f"{out}.1").read_text())
    # gloo's own words vary by run ('Connection closed by peer', '... reset by peer'): the message carries them whole
    assert cause and ended == (f"CollectiveBrokenError: rank 1 of 2 was at 'the run's tokenizer trained' when the "
                               f"other ranks were lost ({cause}): another rank stopped (see its error) or waits in "
                               f"another collective"), ended


def _tokenizer_worker(rank: int, port: int, config: dict, out: str) -> None:
    """Rank `rank` of two preparing the configured tokenizer of a run resumed into a new folder, rank 1 having looked
    for the run's copy without waiting for rank 0 (as before 05bcc23): writes what it ended with to out.<rank>."""
    from t2t_mtl.config import config_from_dict
    from t2t_mtl.engine import run_tokenizer
    from t2t_mtl.engine.distributed import failed_ranks, leave_process_group
    from t2t_mtl.engine.rank_phases import RanksAtDifferentPhasesError

    if rank == 1:
        barrier, skipped = run_tokenizer.barrier, []

        def skipping_the_look(phase):
            if phase == "the run's tokenizer looked for" and not skipped:
                skipped.append(phase)
                return
            barrier(phase)
        run_tokenizer.barrier = skipping_the_look
    env = _join(rank, port)
    cfg = config_from_dict(config)
    run_dir = Path(cfg.training.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        run_tokenizer.prepare_tokenizer(cfg, run_dir, TASKS, env, fresh=False)
        failed_ranks(False, env, "training data read")
        result = "through"
    except RanksAtDifferentPhasesError as err:
        result = str(err)
    Path(f"{out}.{rank}").write_text(result)
    leave_process_group()


@pytest.mark.slow
def test_a_rank_that_skips_the_tokenizers_barrier_stops_both_naming_the_tokenizers_phases(tmp_path):
    # was: rank 0's barrier paired with rank 1's next one, and the ranks went on a barrier apart until they waited
    # in collectives of different groups (05bcc23's hang, 10 minutes without a word)
    tok = train_tiny_tokenizer(tmp_path / "tok")
    config = tiny_config(tmp_path / "resumed", tok, tmp_path / "cache")
    out = str(tmp_path / "out")
    port = free_port()
    codes = forked_ranks(_tokenizer_worker, [(rank, port, config, out) for rank in (0, 1)], timeout=120)
    ended = _ended(out)
    assert codes == [0, 0], ended
    assert ended == ["the ranks met in a collective from different places (rank 0 at 'the run's tokenizer looked "
                     "for', rank 1 at 'the configured tokenizer copied'): a bug in t2t-mtl, which would have left "
                     "them waiting for each other until the process group's timeout; please report it with this "
                     "message"] * 2


def _gathered(monkeypatch, rows: list) -> None:
    """torch.distributed as flags_at_phase meets it in a group of len(rows) ranks whose gather gives `rows` (each
    rank's (phase, flag)); this process is rank 0. No group is made: its collective alone is stood in for."""
    import torch.distributed as dist

    def all_gather(parts, row, group=None):
        for part, (phase, flag) in zip(parts, rows):
            part.copy_(encoded(phase, flag))

    monkeypatch.setattr(dist, "get_world_size", lambda group=None: len(rows))
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 0)
    monkeypatch.setattr(dist, "all_gather", all_gather)


def test_every_ranks_flag_comes_back_in_rank_order_at_one_phase(monkeypatch):
    # failed_ranks names the ranks whose flag is set: a rank that read only its own flag went on past another's error
    _gathered(monkeypatch, [("training data read", False), ("training data read", True), ("training data read", True)])
    assert flags_at_phase("training data read", False, None, torch.device("cpu")) == [False, True, True]


def test_a_rank_at_another_phase_stops_the_gather_naming_each_ranks_phase(monkeypatch):
    _gathered(monkeypatch, [("a", False), ("a", False), ("b", True)])
    with pytest.raises(RanksAtDifferentPhasesError, match=r"^the ranks met in a collective from different places "
                                                          r"\(ranks 0, 1 at 'a', rank 2 at 'b'\)"):
        flags_at_phase("a", False, None, torch.device("cpu"))


# where each collective of the project takes its phase: (function, index of the phase among its arguments)
_PHASE_ARGUMENT = {"barrier": 0, "failed_ranks": 2, "_agree": 4}


def _call_site_phases() -> dict:
    """{phase: 'file:line'} of every phase written as a string at a call of `_PHASE_ARGUMENT`'s functions in t2t_mtl,
    and START_PHASE's."""
    import ast

    from t2t_mtl.engine.distributed import START_PHASE

    root = Path(__file__).resolve().parents[1]
    phases = {START_PHASE: "distributed.START_PHASE"}
    for path in sorted((root / "t2t_mtl").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _PHASE_ARGUMENT:
                at = _PHASE_ARGUMENT[node.func.id]
                if len(node.args) > at and isinstance(node.args[at], ast.Constant):
                    phases[node.args[at].value] = f"{path.relative_to(root)}:{node.lineno}"
    return phases


def test_every_phase_a_call_site_gives_fits_a_gather():
    # a phase past PHASE_BYTES raises ValueError in a run of several ranks alone (one process never encodes it), so a
    # long label written at a call site that no multi-rank test passes would first fail on a user's cluster
    phases = _call_site_phases()
    assert len(phases) >= 12 and "the run's tokenizer trained" in phases and "a checkpoint published" in phases
    for phase, where in phases.items():
        assert isinstance(phase, str) and 1 <= len(phase.encode()) <= PHASE_BYTES, where
