"""What `engine.distributed` says and waits by: how a message names failed ranks, where DeepSpeed's start-up lines
go, and the process group's timeout."""
from __future__ import annotations

import datetime

from t2t_mtl.engine.distributed import failed_ranks_wording, group_timeout, report_deepspeed_output


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
