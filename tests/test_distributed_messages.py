"""What `engine.distributed` says and waits by: how a message names failed ranks, where DeepSpeed's start-up lines
go, and the process groups' timeouts."""
from __future__ import annotations

import datetime

import pytest
import torch.distributed

from t2t_mtl.config_errors import ConfigError
from t2t_mtl.engine import distributed
from t2t_mtl.engine.distributed import (failed_ranks_wording, group_timeout, join_gloo_group, report_deepspeed_output,
                                        wait_timeout)


def test_failed_ranks_are_named_one_or_several():
    assert failed_ranks_wording([2], 3) == ("rank 2 of 3", "its")
    assert failed_ranks_wording([1, 3], 4) == ("ranks 1, 3 of 4", "their")


def test_only_deepspeeds_op_loaded_line_is_kept_off_stderr(capsys):
    report_deepspeed_output("DeepSpeed deepspeed.ops.comm.deepspeed_shm_comm_op built successfully\n"
                            "DeepSpeed could not find the op, falling back\n")
    assert capsys.readouterr().err == "DeepSpeed could not find the op, falling back\n"


def test_the_group_timeout_is_deepspeed_timeout_minutes_ten_unless_set(monkeypatch):
    monkeypatch.delenv("DEEPSPEED_TIMEOUT", raising=False)
    assert group_timeout() == datetime.timedelta(minutes=10)
    monkeypatch.setenv("DEEPSPEED_TIMEOUT", "3")
    assert group_timeout() == datetime.timedelta(minutes=3)


def test_the_waiting_groups_timeout_is_t2t_mtl_wait_timeout_minutes_a_day_unless_set(monkeypatch):
    # was: 24 hours, fixed: ranks waiting for a rank 0 hung on a stalled shared filesystem held their GPUs a day
    monkeypatch.delenv("T2T_MTL_WAIT_TIMEOUT", raising=False)
    assert wait_timeout() == datetime.timedelta(hours=24)
    monkeypatch.setenv("T2T_MTL_WAIT_TIMEOUT", "90")
    assert wait_timeout() == datetime.timedelta(minutes=90)
    made = []
    monkeypatch.setattr("torch.distributed.new_group", lambda **kwargs: made.append(kwargs))
    monkeypatch.setattr(distributed, "_waiting_group", None)
    distributed._open_waiting_group(wait_timeout())  # (as init_distributed and join_gloo_group open it)
    assert made == [{"backend": "gloo", "timeout": datetime.timedelta(minutes=90)}]


@pytest.mark.parametrize("value, minutes", [("1", 1), ("525600", 365 * 24 * 60), (" 30\n", 30)])
def test_a_wait_timeout_of_one_minute_to_a_year_is_taken_as_written(monkeypatch, value, minutes):
    # the refusal's own bounds ('at least 1', 'at most 525600') are accepted; a value read from a file keeps its
    # newline, which int() reads past
    monkeypatch.setenv("T2T_MTL_WAIT_TIMEOUT", value)
    assert wait_timeout() == datetime.timedelta(minutes=minutes)


# (², a digit int() does not read; past a year, 10**13 minutes was timedelta's raw OverflowError)
@pytest.mark.parametrize("value", ["0", "-5", "1.5", "2h", "", "²", "525601", "10000000000000"])
def test_a_wait_timeout_that_is_no_whole_number_of_minutes_up_to_a_year_is_refused_before_joining(monkeypatch, value):
    monkeypatch.setenv("T2T_MTL_WAIT_TIMEOUT", value)
    monkeypatch.setenv("WORLD_SIZE", "2")  # (a rank of two: it would wait in the rendezvous for the other)
    # (and no group joined yet: an earlier test's one-process train leaves its group for the next run)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    with pytest.raises(ConfigError) as caught:
        join_gloo_group()
    assert str(caught.value) == (f"environment variable T2T_MTL_WAIT_TIMEOUT must be a whole number of minutes, at "
                                 f"least 1 (how long ranks wait for rank 0's preparation; unset: 1440, a day), at "
                                 f"most 525600 (a year), got {value!r}")


def test_a_rank_telling_the_others_it_stopped_joins_despite_its_own_bad_wait_timeout_and_keeps_it(monkeypatch):
    # (the variable read as the join reads it, inside the block; the forked test: test_eval_runner's)
    import os

    for value, inside in (("2h", None), ("90", "90")):
        monkeypatch.setenv("T2T_MTL_WAIT_TIMEOUT", value)
        with distributed._default_wait_timeout():
            assert os.environ.get("T2T_MTL_WAIT_TIMEOUT") == inside
            wait_timeout()  # (not refused)
        assert os.environ["T2T_MTL_WAIT_TIMEOUT"] == value


def test_trains_join_refuses_a_bad_wait_timeout_before_joining_as_evals_does(monkeypatch):
    # init_distributed (train's join) reads the variable too: a constant there left a training job's waiting group at
    # a day whatever T2T_MTL_WAIT_TIMEOUT said, and the eval test above passed
    import deepspeed

    joined = []
    monkeypatch.setattr(deepspeed, "init_distributed", lambda **kwargs: joined.append(kwargs))
    for name, value in dict(RANK="1", WORLD_SIZE="2", LOCAL_RANK="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="1",
                            DS_ACCELERATOR="cpu", T2T_MTL_WAIT_TIMEOUT="0").items():  # (no GPU of rank 1 chosen)
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    with pytest.raises(ConfigError, match="^environment variable T2T_MTL_WAIT_TIMEOUT must be a whole number"):
        distributed.init_distributed()
    assert joined == []


def test_a_rank_stopped_by_its_own_bad_wait_timeout_joins_to_tell_the_others_and_keeps_its_value(monkeypatch):
    # report_failed_start's join reads the variable as a join does (wait_timeout): refused again, the rank never
    # flagged itself and the others waited in the rendezvous; a join failing otherwise leaves the value put back
    import os

    told = []
    monkeypatch.setattr(distributed, "launched_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed, "failed_ranks", lambda failed, env, phase: told.append((failed, env, phase)))
    monkeypatch.setenv("T2T_MTL_WAIT_TIMEOUT", "2h")

    def join():
        wait_timeout()
        return "joined"

    distributed.report_failed_start(join)
    assert told == [(True, "joined", distributed.START_PHASE)] and os.environ["T2T_MTL_WAIT_TIMEOUT"] == "2h"

    def refused_join():
        raise RuntimeError("the rendezvous is gone")

    distributed.report_failed_start(refused_join)
    assert len(told) == 1 and os.environ["T2T_MTL_WAIT_TIMEOUT"] == "2h"


@pytest.mark.parametrize("value", ["ten", "0", "-5", "1.5", "", "²", "525601", "10000000000000"])
def test_a_deepspeed_timeout_that_is_no_whole_number_of_minutes_up_to_a_year_is_refused_naming_it(
        monkeypatch, capsys, value):
    # was: DeepSpeed's raw "ValueError: invalid literal for int() with base 10: 'ten'" traceback as it was imported
    # (train, its --print-config, eval, export), and the same from group_timeout; 0 or -5 a group that timed out at once
    from t2t_mtl.cli import main

    monkeypatch.setenv("DEEPSPEED_TIMEOUT", value)
    message = (f"environment variable DEEPSPEED_TIMEOUT must be a whole number of minutes, at least 1 (DeepSpeed's "
               f"timeout of the process group's rendezvous and collectives; unset: 10), at most 525600 (a year), got "
               f"{value!r}")
    with pytest.raises(ConfigError) as caught:
        group_timeout()
    assert str(caught.value) == message
    assert main(["train", "--print-config"]) == 2
    assert capsys.readouterr() == ("", f"error: {message}\n")
