"""The training logs (`engine.logging`) piece by piece, without a run: the scalars a zero-shot record gives the
sinks, a record's skipped-step count, the training clock's pauses, the JSONL readers and rewriters, and the library
loggers shown as train output."""
from __future__ import annotations

import logging
import time

import pytest

from t2t_mtl.engine.logging import (TrainLogger, drop_records_after, held_out_scalars, read_held_out, read_metrics,
                                    show_logger)


def test_a_zero_shot_records_scalars_leave_out_unscored_tasks_and_a_missing_macro_average():
    record = {"tasks": {"a": 50.0, "b": None}, "macro_average": None}
    assert held_out_scalars(record) == {"held_out/a": 50.0}
    assert held_out_scalars({**record, "macro_average": 40.0}) == {"held_out/a": 50.0, "held_out/macro_average": 40.0}


def test_a_record_carries_the_runs_skipped_step_count(tmp_path):
    logger = TrainLogger(tmp_path, total_steps=2, start_step=0, log_every=1, enabled=False)
    assert logger.step(1, 1.0, task_loss={}, lr=0.1, skipped_total=3)["skipped_steps"] == 3


def test_nested_pauses_leave_their_outer_pause_out_of_the_windows_and_the_runs_tokens_per_s(tmp_path, monkeypatch):
    now = {"t": 100.0}
    monkeypatch.setattr(time, "perf_counter", lambda: now["t"])
    logger = TrainLogger(tmp_path, total_steps=1, start_step=0, log_every=1, enabled=False)
    logger.add(40, {"a": 1})
    now["t"] += 1.0  # training
    with logger.paused():  # e.g. a checkpoint save that validates inside
        now["t"] += 10.0
        with logger.paused():
            now["t"] += 5.0
        now["t"] += 5.0
    now["t"] += 1.0  # training
    record = logger.step(1, 1.0, task_loss={}, lr=0.1, skipped_total=0)
    assert record["tokens_per_s"] == pytest.approx(20.0)  # 40 tokens in 2 s of training
    # what the run's result reports (trainer: run_tokens over the time since run_start)
    assert logger.run_tokens / (time.perf_counter() - logger.run_start) == pytest.approx(20.0)


def test_the_readers_keep_the_last_record_of_a_step(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 3.0}\n'
                                            '{"step": 1, "loss": 2.0}\n')
    assert read_metrics(tmp_path) == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 3.0}]
    (tmp_path / "held_out.jsonl").write_text('{"step": 4, "macro_average": 1.0}\n{"step": 4, "macro_average": 2.0}\n')
    assert read_held_out(tmp_path) == [{"step": 4, "macro_average": 2.0}]


def test_dropping_the_records_after_a_step_keeps_the_lines_without_a_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"note": "no step"}\n{"step": 3}\n{"step": "4"}\n[5]\n{"step": 4}\nnot json\n')
    drop_records_after(path, 3)
    assert path.read_text() == '{"note": "no step"}\n{"step": 3}\n{"step": "4"}\n[5]\nnot json\n'


def test_a_shown_logger_prints_as_train_output_alone_and_is_restored(tmp_path, capsys, caplog):
    log = logging.getLogger("t2t_mtl.tests.shown")
    log.setLevel(logging.ERROR)
    train_logger = TrainLogger(tmp_path, total_steps=1, start_step=0, log_every=1, enabled=True, progress_bar=False)
    with caplog.at_level(logging.DEBUG):  # (a handler on the root logger, as a caller's logging config has)
        restore = show_logger(log.name, train_logger)
        log.info("rates changed")
        log.debug("below the level")
        restore()
        log.info("after")
    train_logger.close()
    assert capsys.readouterr().out == "rates changed\n"
    assert caplog.messages == []  # not passed on to the caller's handlers too
    assert (log.level, log.propagate, log.handlers) == (logging.ERROR, True, [])


def test_a_restored_logger_passes_on_no_record_below_its_own_level_again():
    # was: restore assigned the level back, which leaves logging's cache of the levels enabled while shown: after
    # train() the sampler's INFO rates tables went on reaching a caller's handlers set at WARNING
    class Messages:
        def message(self, text):
            pass

    log = logging.getLogger("t2t_mtl.tests.restored")
    log.setLevel(logging.WARNING)
    restore = show_logger(log.name, Messages())
    log.info("rates changed")  # (enabled while shown: cached so)
    restore()
    assert log.level == logging.WARNING and not log.isEnabledFor(logging.INFO)


def test_a_window_saved_during_a_pause_leaves_the_pause_out_of_its_seconds(tmp_path, monkeypatch):
    # (a checkpoint saves the window while the save pauses the training clock)
    now = {"t": 100.0}
    monkeypatch.setattr(time, "perf_counter", lambda: now["t"])
    logger = TrainLogger(tmp_path, total_steps=4, start_step=0, log_every=4, enabled=False)
    now["t"] += 3.0  # training
    with logger.paused():
        now["t"] += 50.0
        assert logger.state_dict()["window_seconds"] == pytest.approx(3.0)


def test_a_resume_with_nothing_left_to_train_draws_no_bar_without_its_total(tmp_path, capsys):
    # was: a checkpoint at step 70 resumed with training.steps 50 drew "train: 70step [...]" (tqdm drops a total the
    # count has passed) under "nothing left to train"; a resume with steps left draws "30/50"
    for start, drawn in ((30, "30/50"), (50, None), (70, None)):
        logger = TrainLogger(tmp_path / str(start), total_steps=50, start_step=start, log_every=1, enabled=True)
        logger.close()
        err = capsys.readouterr().err
        assert (drawn in err) if drawn else ("train" not in err), (start, err)


def test_the_training_rows_are_described_by_rank_0_alone(tmp_path, caplog):
    # every rank read the rows rank 0 had tokenized and logged the same warnings of them (truncated rows, text the
    # tokenizer lacks): `deepspeed --num_gpus 2 --module t2t_mtl train` printed each of them twice
    import torch
    from engine_helpers import TASKS, tiny_config, train_tiny_tokenizer

    from t2t_mtl.config import load_config
    from t2t_mtl.engine.distributed import DistEnv
    from t2t_mtl.engine.trainer import training_streams
    from t2t_mtl.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(train_tiny_tokenizer(tmp_path / "tok"))
    cfg = load_config(extra=tiny_config(tmp_path / "run", tmp_path / "tok", tmp_path / "cache",
                                        data={"max_input_length": 4, "max_target_length": 2}))
    warned = {}
    for rank in (0, 1):
        caplog.clear()
        with caplog.at_level("WARNING"):
            streams = training_streams(cfg, TASKS, tokenizer, tmp_path / "cache",
                                       DistEnv(rank, 2, rank, torch.device("cpu"), "gloo"))
        warned[rank] = [record.getMessage() for record in caplog.records]
        assert {name: stream.truncated for name, stream in streams.items()} == {name: 64 for name in TASKS}
    assert [message.split(": ")[0] for message in warned[0]] == [f"task {name}/train" for name in TASKS]
    assert warned[1] == []
    assert logging.getLogger("t2t_mtl.data").level == logging.NOTSET  # as it was
    # a damaged cache file is a rank's own: named on rank 1 too (its tokenizing again described by rank 0 already)
    damaged = sorted((tmp_path / "cache").rglob("train-*.arrow"))[0]
    damaged.write_bytes(b"cut short")
    caplog.clear()
    with caplog.at_level("WARNING"):
        training_streams(cfg, TASKS, tokenizer, tmp_path / "cache", DistEnv(1, 2, 1, torch.device("cpu"), "gloo"))
    assert [record.getMessage().split(" (")[0] for record in caplog.records] == [
        f"task {damaged.parent.name.replace('__', '/')}: the tokenized-data cache file {damaged} was damaged"]


def test_a_templates_skipped_rows_are_told_by_rank_0_alone(tmp_path, caplog):
    # every rank renders the rows rank 0 renders, and the registry's warning of the rows a template skips (an empty
    # target) was among those each rank repeated
    import json

    import torch
    from engine_helpers import tiny_config, train_tiny_tokenizer

    import task_registry
    from t2t_mtl.config import load_config
    from t2t_mtl.engine.distributed import DistEnv
    from t2t_mtl.engine.trainer import training_streams
    from t2t_mtl.tokenizer import load_tokenizer

    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"question": "a b", "answer": answer}) + "\n" for answer in ("a", "", "b", "a")))
    tokenizer = load_tokenizer(train_tiny_tokenizer(tmp_path / "tok"))
    cfg = load_config(extra=tiny_config(tmp_path / "run", tmp_path / "tok", tmp_path / "cache",
                                        data={"tasks": ["with_gaps"]}))
    warned = {}
    with task_registry.isolated_registry():
        task_registry.register_task(task_registry.Task(
            "with_gaps", task_registry.LocalFileSource(str(rows)),
            task_registry.Template("qa", "{{ question }} ||| {{ answer }}"), cluster="gaps"))
        for rank in (0, 1):
            caplog.clear()
            with caplog.at_level("WARNING"):
                training_streams(cfg, ["with_gaps"], tokenizer, tmp_path / "cache",
                                 DistEnv(rank, 2, rank, torch.device("cpu"), "gloo"))
            warned[rank] = [record.getMessage() for record in caplog.records]
    assert [message.split(": ")[0] for message in warned[0]] == ["task 'with_gaps' split 'train'"]
    assert "1 of 4 rows skipped" in warned[0][0]
    assert warned[1] == []
