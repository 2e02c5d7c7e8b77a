"""Interruptions and resumes around the run-level features: a SIGTERM-deferred zero-shot evaluation, the open
logging window, validation KPIs not yet taken by the weighting, a refused resume, the best link without
keep_best, task embeddings on a pretrained model, the rows and templates a resumed run goes on with, and runs that
must not mix in one folder."""
from __future__ import annotations

import builtins
import io
import json
import os
import random
import re
import shutil
import signal
from pathlib import Path

import pytest
import torch

from t2t_mtl.config import ConfigError
from t2t_mtl.engine import trainer as trainer_mod
from t2t_mtl.engine.checkpoint import CheckpointError, best_checkpoint
from t2t_mtl.engine.export import export_model, load_trained_model
from t2t_mtl.engine.logging import read_held_out
from t2t_mtl.engine.run_tokenizer import check_resumed_tokenizer
from t2t_mtl.engine.trainer import train
from t2t_mtl.gradients import GradientMethodError
from t2t_mtl.sampling import SamplingError
from t2t_mtl.tokenizer import load_tokenizer

from engine_helpers import step_records, tiny_config, train_tiny_tokenizer, write_yaml_task

HELD_OUT = {"data": {"held_out_clusters": ["comparison"]},
            "evaluation": {"held_out": True, "max_examples": 2, "batch_size": 8}}


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


def _sigterm_during_step(monkeypatch, step: int, grad_accum: int = 1) -> None:
    """Deliver SIGTERM during optimizer step `step` (its first forward); the trainer saves after the step."""
    real, calls = trainer_mod.forward_losses, {"n": 0}

    def forward(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == (step - 1) * grad_accum + 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_mod, "forward_losses", forward)


def test_a_sigterm_defers_the_step_evaluation_and_the_log_window_to_the_resumed_run(tmp_path, tok, monkeypatch):
    sections = {**HELD_OUT, "evaluation": {**HELD_OUT["evaluation"], "every": 4},
                "training": {"steps": 8, "log_every": 3}}
    whole = train(tiny_config(tmp_path / "whole", tok, tmp_path / "cache", **sections), evaluate_held_in=False)
    cfg = tiny_config(tmp_path / "cut", tok, tmp_path / "cache", **sections)
    with monkeypatch.context() as patch:
        _sigterm_during_step(patch, 4)
        assert train(cfg, evaluate_held_in=False).interrupted
    assert read_held_out(tmp_path / "cut" / "logs") == []  # saved first, not evaluated
    resumed = train(cfg, resume="auto", evaluate_held_in=False)
    cut, uncut = read_held_out(tmp_path / "cut" / "logs"), read_held_out(tmp_path / "whole" / "logs")
    assert [r["step"] for r in cut] == [r["step"] for r in uncut] == [4, 8]
    assert [r["tasks"] for r in cut] == [r["tasks"] for r in uncut]
    assert resumed.held_out_scores == whole.held_out_scores
    # the record after the resume averages the same steps (4-6) as the uninterrupted one
    records, reference = step_records(tmp_path / "cut"), step_records(tmp_path / "whole")
    assert sorted(records) == sorted(reference) == [3, 6, 8]
    for s in (6, 8):
        assert records[s]["loss"] == pytest.approx(reference[s]["loss"], rel=1e-6)
        assert records[s]["task_examples"] == reference[s]["task_examples"]


def test_a_zero_shot_evaluation_during_training_leaves_the_rngs_a_resume_restores(tmp_path, tok, monkeypatch):
    # was: the first evaluation in a process loads its metric (evaluate -> sklearn -> rich, whose import draws
    # random.getrandbits(24)); a run resumed in a new process drew it again at its first evaluation, after the
    # restored RNGs, so its Python RNG left the uninterrupted run's from then on
    import t2t_mtl.engine.validation as validation_mod

    pytest.importorskip("rich.style")  # its own draw now: only this process's simulated first imports count below
    real, first_in_process = validation_mod.zero_shot_evaluation, {"done": False}

    def evaluation(*args, **kwargs):
        if not first_in_process["done"]:
            first_in_process["done"] = True
            random.getrandbits(24)  # what importing rich.style does
        return real(*args, **kwargs)

    monkeypatch.setattr(validation_mod, "zero_shot_evaluation", evaluation)
    sections = {**HELD_OUT, "evaluation": {**HELD_OUT["evaluation"], "every": 4}, "training": {"steps": 10}}
    train(tiny_config(tmp_path / "whole", tok, tmp_path / "cache", **sections), evaluate_held_in=False)
    cfg = tiny_config(tmp_path / "cut", tok, tmp_path / "cache", **sections)
    first_in_process["done"] = False
    with monkeypatch.context() as patch:
        _sigterm_during_step(patch, 5)
        assert train(cfg, evaluate_held_in=False).interrupted
    first_in_process["done"] = False  # the resumed run is a new process
    train(cfg, resume="auto", evaluate_held_in=False)
    whole, cut = (torch.load(tmp_path / run / "checkpoints" / "step-00000010" / "rank_00000.pt",
                             weights_only=False)["rng"] for run in ("whole", "cut"))
    assert cut["python"] == whole["python"]
    assert torch.equal(cut["torch"], whole["torch"])
    assert str(cut["numpy"]) == str(whole["numpy"])


def test_the_first_record_after_a_resume_counts_the_window_time_before_it(tmp_path, monkeypatch):
    # was: the checkpoint kept the window's tokens but not its time, so the resumed run's first record divided
    # the tokens of the whole window by the time since the resume (here 2x the throughput)
    import time as time_mod

    from t2t_mtl.engine.logging import TrainLogger

    now = {"t": 100.0}
    monkeypatch.setattr(time_mod, "perf_counter", lambda: now["t"])
    logger = TrainLogger(tmp_path, total_steps=4, start_step=0, log_every=4, enabled=False)
    for step in (1, 2):
        now["t"] += 1.0
        logger.add(50, {"a": 1})
        assert logger.step(step, 1.0, task_loss={}, lr=0.1, skipped_total=0) is None
    window = logger.state_dict()
    now["t"] += 1000.0  # the run is down, then resumes
    resumed = TrainLogger(tmp_path, total_steps=4, start_step=2, log_every=4, enabled=False)
    resumed.load_state_dict(window)
    for step in (3, 4):
        now["t"] += 1.0
        resumed.add(50, {"a": 1})
        record = resumed.step(step, 1.0, task_loss={}, lr=0.1, skipped_total=0)
    assert record["tokens_per_s"] == pytest.approx(50.0)  # 200 tokens in the window's 4 seconds of training
    resumed.load_state_dict({k: v for k, v in window.items() if k != "window_seconds"})  # older checkpoints


def test_a_resume_at_a_validation_step_keeps_the_kpis_dtp_has_not_taken_yet(tmp_path, tok, monkeypatch):
    # was: the validation results the next weighting call takes (dtp's KPIs) were not in the checkpoint, so a run
    # interrupted at a validation step weighted its next step without them and its losses drifted from there
    sections = {"training": {"steps": 4, "validate_every": 2}, "weighting": {"method": "dtp"}}
    train(tiny_config(tmp_path / "whole", tok, tmp_path / "cache", **sections), evaluate_held_in=False)
    cfg = tiny_config(tmp_path / "cut", tok, tmp_path / "cache", **sections)
    with monkeypatch.context() as patch:
        _sigterm_during_step(patch, 2)
        assert train(cfg, evaluate_held_in=False).step == 2
    train(cfg, resume="auto", evaluate_held_in=False)
    records, reference = step_records(tmp_path / "cut"), step_records(tmp_path / "whole")
    for s in (3, 4):
        assert records[s]["weighted_loss"] == pytest.approx(reference[s]["weighted_loss"], rel=1e-6), s
        assert records[s]["loss"] == pytest.approx(reference[s]["loss"], rel=1e-6), s


def test_a_refused_resume_leaves_the_run_as_it_was(tmp_path, tok):
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": 2})
    train(cfg, evaluate_held_in=False)
    written = (tmp_path / "run" / "config.yaml").read_text()
    changed = tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": 4})
    changed["model"]["dims"] = {**changed["model"]["dims"], "d_model": 16}
    with pytest.raises(CheckpointError, match="do not fit this run's model"):
        train(changed, resume="auto", evaluate_held_in=False)
    assert (tmp_path / "run" / "config.yaml").read_text() == written
    model, _, meta = load_trained_model(tmp_path / "run")  # still loads: config and weights agree
    assert meta["step"] == 2 and model.config.d_model == 32


def test_resuming_another_run_into_a_folder_that_holds_a_run_is_refused(tmp_path, tok):
    for name in ("a", "b"):
        train(tiny_config(tmp_path / name, tok, tmp_path / "cache", training={"steps": 2}), evaluate_held_in=False)
    with pytest.raises(CheckpointError, match=r"b already holds a run .*: resume .*a/checkpoints/step-00000002 into "
                                              r"a new training.output_dir"):
        train(tiny_config(tmp_path / "b", tok, tmp_path / "cache", training={"steps": 4}),
              resume=str(tmp_path / "a"), evaluate_held_in=False)


def test_a_fresh_run_copies_the_configured_tokenizer_anew(tmp_path, tok):
    stale = tmp_path / "run" / "tokenizer"  # e.g. left by a run that crashed before its first checkpoint
    train_tiny_tokenizer(tmp_path / "other_tok")
    load_tokenizer(tmp_path / "other_tok").save_pretrained(stale)
    (stale / "marker").write_text("stale")
    train(tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": 1}), evaluate_held_in=False)
    assert not (stale / "marker").exists()
    assert load_tokenizer(stale).get_vocab() == load_tokenizer(tok).get_vocab()


def test_a_fresh_run_trains_its_tokenizer_anew(tmp_path, tok):
    # was: a tokenizer trained by a run that crashed before its first checkpoint was reused by the next fresh
    # run into the folder, whatever its tasks or tokenizer.train options (here a smaller vocab_size)
    stale = tmp_path / "run" / "tokenizer"
    load_tokenizer(tok).save_pretrained(stale)
    (stale / "marker").write_text("stale")
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": 1},
                      tokenizer={"path": None, "train": {"vocab_size": 60, "max_examples_per_task": 16}})
    train(cfg, evaluate_held_in=False)
    assert not (stale / "marker").exists() and len(load_tokenizer(stale)) < len(load_tokenizer(tok))
    train(tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": 2}, tokenizer=cfg["tokenizer"]),
          resume="auto", evaluate_held_in=False)  # a resumed run keeps its own


def test_a_fresh_run_starts_the_logs_over(tmp_path, tok):
    # was: metrics.jsonl and held_out.jsonl were appended to, so the records a run that died before its first
    # checkpoint wrote for later steps stayed in the next fresh run's logs and plots
    logs = tmp_path / "run" / "logs"
    logs.mkdir(parents=True)
    (logs / "metrics.jsonl").write_text('{"step": 5, "loss": 1.0}\n')
    (logs / "held_out.jsonl").write_text('{"step": 5, "macro_average": 50.0}\n')
    train(tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": 2}), evaluate_held_in=False)
    assert sorted(step_records(tmp_path / "run")) == [1, 2] and read_held_out(logs) == []
    train(tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": 3}), resume="auto",
          evaluate_held_in=False)
    assert sorted(step_records(tmp_path / "run")) == [1, 2, 3]  # a resumed run appends


def test_a_log_line_a_crash_cut_short_is_dropped_not_continued(tmp_path, tok):
    # was: a record a killed run (or a full disk) left half-written at the end of metrics.jsonl broke every
    # reader (read_metrics: JSONDecodeError), and the resumed run appended its first record to that same line,
    # so the file stayed unreadable (the loss plot at the end of training failed on it)
    run = tmp_path / "run"
    train(tiny_config(run, tok, tmp_path / "cache", training={"steps": 2}), evaluate_held_in=False)
    logs = run / "logs"
    with open(logs / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 3, "loss": 1.2')
    (logs / "held_out.jsonl").write_text('{"step": 2, "macro_average": 5')
    assert sorted(step_records(run)) == [1, 2] and read_held_out(logs) == []  # the cut record is left out
    train(tiny_config(run, tok, tmp_path / "cache", training={"steps": 4, "plot": True}), resume="auto",
          evaluate_held_in=False)
    assert sorted(step_records(run)) == [1, 2, 3, 4] and (logs / "loss_per_task.png").exists()
    assert all(json.loads(line) for line in (logs / "metrics.jsonl").read_text().splitlines())
    assert (logs / "held_out.jsonl").read_text() == ""


def test_a_resume_after_a_crash_drops_the_records_the_crashed_run_wrote_past_its_checkpoint(tmp_path, tok,
                                                                                             monkeypatch):
    # was: the resumed run appended its records of the steps after the checkpoint to the crashed run's records of
    # the same steps, so metrics.jsonl (and held_out.jsonl) held those steps twice, out of step order, for any
    # reader but read_metrics (jq, pandas); TensorBoard's event files already had them purged on a resume
    sections = {**HELD_OUT, "evaluation": {**HELD_OUT["evaluation"], "every": 3},
                "training": {"steps": 4, "checkpoint_every": 2}}
    train(tiny_config(tmp_path / "whole", tok, tmp_path / "cache", **sections), evaluate_held_in=False)
    cfg = tiny_config(tmp_path / "cut", tok, tmp_path / "cache", **sections)
    real, calls = trainer_mod.forward_losses, {"n": 0}

    def killed_in_step_4(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("killed")  # (a kill: what is on disk is what a SIGKILL would leave)
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(trainer_mod, "forward_losses", killed_in_step_4)
        with pytest.raises(KeyboardInterrupt):
            train(cfg, evaluate_held_in=False)
    logs, reference = tmp_path / "cut" / "logs", tmp_path / "whole" / "logs"
    assert [json.loads(line)["step"] for line in (logs / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert [r["step"] for r in read_held_out(logs)] == [3]  # past the checkpoint at step 2
    train(cfg, resume="auto", evaluate_held_in=False)
    lines = {name: [json.loads(line) for line in (logs / name).read_text().splitlines()]
             for name in ("metrics.jsonl", "held_out.jsonl")}
    assert [r["step"] for r in lines["metrics.jsonl"]] == [1, 2, 3, 4]
    assert [r["step"] for r in lines["held_out.jsonl"]] == [3, 4]
    for record, expected in zip(lines["metrics.jsonl"], step_records(tmp_path / "whole").values()):
        assert record["loss"] == pytest.approx(expected["loss"], rel=1e-6)
    assert [r["tasks"] for r in lines["held_out.jsonl"]] == [r["tasks"] for r in read_held_out(reference)]


def test_a_resume_that_trains_nothing_keeps_the_later_records(tmp_path):
    # (resuming an earlier checkpoint at or past training.steps: the later checkpoints, and their records, stay)
    from t2t_mtl.engine.logging import TrainLogger, read_metrics

    (tmp_path / "metrics.jsonl").write_text("".join(f'{{"step": {s}, "loss": 1.0}}\n' for s in range(1, 7)))
    TrainLogger(tmp_path, total_steps=4, start_step=4, log_every=1, enabled=True, progress_bar=False).close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5, 6]
    TrainLogger(tmp_path, total_steps=8, start_step=4, log_every=1, enabled=True, progress_bar=False).close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4]


def test_a_finished_run_resumed_logs_its_unchanged_held_out_evaluation_once(tmp_path, tok):
    # was: the after-training evaluation, run again by the resume, was appended at the same step a second time
    # (two TensorBoard points; held_out.jsonl two lines); an evaluation that differs is still logged
    run = tmp_path / "run"
    cfg = tiny_config(run, tok, tmp_path / "cache", training={"steps": 2}, data={"held_out_clusters": ["comparison"]},
                      evaluation={"held_out": True, "max_examples": 2, "batch_size": 8})
    train(cfg, evaluate_held_in=False)
    train(cfg, resume="auto", evaluate_held_in=False)
    lines = (run / "logs" / "held_out.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2]
    train({**cfg, "evaluation": {**cfg["evaluation"], "max_examples": 3}}, resume="auto", evaluate_held_in=False)
    assert [json.loads(line)["step"] for line in (run / "logs" / "held_out.jsonl").read_text().splitlines()] == [2, 2]


def test_a_resume_that_trains_nothing_clears_what_a_killed_final_save_left(tmp_path, tok):
    # was: a kill in the final save's prune left `.tmp-pruned-step-N`, and one between the renames of a step saved
    # again left the checkpoint moved aside with `latest` naming a missing folder; a resume with nothing left to
    # train refused the run (the latter) or saved nothing and so kept the leftover for good (the former)
    run = tmp_path / "run"
    cfg = tiny_config(run, tok, tmp_path / "cache", training={"steps": 2})
    train(cfg, evaluate_held_in=False)
    root = run / "checkpoints"
    (root / ".tmp-pruned-step-00000001").mkdir()
    os.rename(root / "step-00000002", root / ".tmp-replaced-step-00000002")
    train(cfg, resume="auto", evaluate_held_in=False)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-00000002"]


def test_a_crash_while_a_resumed_run_writes_its_config_keeps_the_runs_config(tmp_path, tok, monkeypatch):
    # was: every start, resumes included, rewrote run_dir/config.yaml in place (write_text truncates first); a
    # crash (Ctrl-C, a kill) right after the truncation left it empty, and export / eval of the run's
    # checkpoints rebuilt the model from the default config until the next resume rewrote it
    run = tmp_path / "run"
    train(tiny_config(run, tok, tmp_path / "cache", training={"steps": 2}), evaluate_held_in=False)
    written = (run / "config.yaml").read_text()
    real_open = io.open

    def killed_after_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if "w" in mode and "config.yaml" in Path(str(file)).name:
            handle.close()
            raise KeyboardInterrupt("killed mid-write")
        return handle

    with monkeypatch.context() as patch:
        patch.setattr(io, "open", killed_after_open)
        patch.setattr(builtins, "open", killed_after_open)
        with pytest.raises(KeyboardInterrupt):
            train(tiny_config(run, tok, tmp_path / "cache", training={"steps": 4}), resume="auto",
                  evaluate_held_in=False)
    assert (run / "config.yaml").read_text() == written
    load_trained_model(run)


def test_a_run_whose_latest_checkpoint_is_broken_resumes_from_an_earlier_one(tmp_path, tok):
    # was: resuming checkpoints/step-N in place was refused because `latest` named the broken checkpoint, the
    # very remedy the refusal of --resume auto suggests
    sections = {"training": {"steps": 4, "checkpoint_every": 2}}
    train(tiny_config(tmp_path / "run", tok, tmp_path / "cache", **sections), evaluate_held_in=False)
    checkpoints = tmp_path / "run" / "checkpoints"
    (checkpoints / "step-00000004" / "meta.json").unlink()
    with pytest.raises(CheckpointError, match="missing or incomplete; resume from an earlier checkpoint"):
        train(tiny_config(tmp_path / "run", tok, tmp_path / "cache", **sections), resume="auto")
    resumed = train(tiny_config(tmp_path / "run", tok, tmp_path / "cache", **sections),
                    resume=str(checkpoints / "step-00000002"), evaluate_held_in=False)
    assert resumed.step == 4 and (checkpoints / "latest").read_text().strip() == "step-00000004"
    assert (checkpoints / "step-00000004" / "meta.json").exists()


def test_a_resume_in_place_from_an_earlier_checkpoint_keeps_its_own_checkpoints_and_names_the_later_ones(
        tmp_path, tok, capsys):
    # was: the later checkpoints of the run that went on past the resumed step counted among the newest
    # `keep_checkpoints`, so the resumed run's own were pruned first (here step 4, leaving it one of its two)
    run, checkpoints = tmp_path / "run", tmp_path / "run" / "checkpoints"
    first = {"steps": 6, "checkpoint_every": 2, "keep_checkpoints": 2}
    train(tiny_config(run, tok, tmp_path / "cache", training=first), evaluate_held_in=False)
    assert sorted(p.name for p in checkpoints.glob("step-*")) == ["step-00000004", "step-00000006"]
    capsys.readouterr()
    again = {"steps": 5, "checkpoint_every": 1, "keep_checkpoints": 2}
    train(tiny_config(run, tok, tmp_path / "cache", training=again), resume=str(checkpoints / "step-00000004"),
          evaluate_held_in=False)
    assert sorted(p.name for p in checkpoints.glob("step-*")) == ["step-00000004", "step-00000005", "step-00000006"]
    assert (checkpoints / "latest").read_text().strip() == "step-00000005"
    out = capsys.readouterr().out
    assert re.search(r"warning: .*checkpoints still holds step-00000006 of the run that went on past step 4", out)


def test_the_best_link_survives_a_resume_without_keep_best(tmp_path, tok):
    selection = {"validate_every": 2, "validate_examples": 4, "keep_best": "val_score", "keep_checkpoints": 1}
    train(tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": 6, **selection}),
          evaluate_held_in=False)
    best = best_checkpoint(tmp_path / "run")
    assert best is not None and best.name == "step-00000002"
    train(tiny_config(tmp_path / "run", tok, tmp_path / "cache",
                      training={"steps": 10, "checkpoint_every": 2, "keep_checkpoints": 1}),
          resume="auto", evaluate_held_in=False)
    assert best_checkpoint(tmp_path / "run") == best and (best / "meta.json").exists()


def test_a_crash_as_a_task_token_run_resumes_leaves_its_tokenizer_readable(tmp_path, tok, monkeypatch):
    # was: with model.task_embeddings every start, resumes included, rewrote the run's tokenizer in place
    # (save_pretrained over run_dir/tokenizer, which it had just read); a crash during that write left a tokenizer
    # the next --resume auto could not load, though nothing in it had changed
    def config(steps):
        return tiny_config(tmp_path / "run", tok, tmp_path / "cache", model={"task_embeddings": True},
                           training={"steps": steps})

    train(config(2), evaluate_held_in=False)
    vocab = load_tokenizer(tmp_path / "run" / "tokenizer").get_vocab()
    tokenizer_class = type(load_tokenizer(tok))
    real_save = tokenizer_class.save_pretrained

    def killed_mid_save(self, save_directory, *args, **kwargs):
        real_save(self, save_directory, *args, **kwargs)
        (Path(save_directory) / "tokenizer.json").write_text('{"version": "1.0", "trunc')
        raise KeyboardInterrupt("killed mid-save")

    with monkeypatch.context() as patch:
        patch.setattr(tokenizer_class, "save_pretrained", killed_mid_save)
        try:
            train(config(4), resume="auto", evaluate_held_in=False)
        except KeyboardInterrupt:
            pass
    assert load_tokenizer(tmp_path / "run" / "tokenizer").get_vocab() == vocab
    assert train(config(4), resume="auto", evaluate_held_in=False).step == 4


def test_task_embeddings_on_a_pretrained_model_resume(tmp_path, tok):
    base = train(tiny_config(tmp_path / "base", tok, tmp_path / "cache", training={"steps": 1}),
                 evaluate_held_in=False)
    pretrained = export_model(base.checkpoint, tmp_path / "base_hf")
    model = {"name_or_path": str(pretrained), "dims": None, "task_embeddings": True}  # (tiny_config sets dims)
    for steps, resume in ((2, None), (4, "auto")):  # was: the resume counted the run's task tokens as the base
        result = train(tiny_config(tmp_path / "te", tok, tmp_path / "cache", model=model,
                                   training={"steps": steps}), resume=resume, evaluate_held_in=False)
        assert result.step == steps


def test_an_unseen_task_refusal_contradicting_the_evaluation_is_found_before_training(tmp_path, tok):
    moe = {"num_experts": 2, "top_k": 1, "every": 1, "routing": "task", "unseen_task_routing": "error"}
    base = tiny_config(tmp_path / "run", tok, tmp_path / "cache", **HELD_OUT)
    cfg = {**base, "model": {**base["model"], "moe": moe}}
    with pytest.raises(ConfigError, match="evaluation scores tasks the model is not trained on .*unseen_task_routing"):
        train(cfg, evaluate_held_in=False)
    assert not (tmp_path / "run").exists()



def test_a_resume_with_another_gradient_surgery_segmentation_is_refused_before_training(tmp_path, tok):
    # was: the checkpoint's GradVac EMA targets (one set for the whole model) were loaded into a per-layer run; the
    # mismatch surfaced only in the first step's surgery, after config.yaml had been rewritten with the new
    # setting, so the run's own config (what `--resume` without a config reads) could not resume it any more
    def config(steps, per_layer):
        return tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": steps, "grad_accum": 3},
                           gradient_surgery={"method": "gradvac", "per_layer": per_layer})

    train(config(2, False), evaluate_held_in=False)
    written = (tmp_path / "run" / "config.yaml").read_text()
    with pytest.raises(GradientMethodError, match=r"gradient_surgery.per_layer .*1 segment.*this run has \d+"):
        train(config(4, True), resume="auto", evaluate_held_in=False)
    assert (tmp_path / "run" / "config.yaml").read_text() == written
    with pytest.raises(GradientMethodError, match="gradient_surgery.method 'gradvac'.*this run has 'pcgrad'"):
        train(tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": 4, "grad_accum": 3},
                          gradient_surgery={"method": "pcgrad"}), resume="auto", evaluate_held_in=False)
    assert train(config(4, False), resume="auto", evaluate_held_in=False).step == 4


def test_a_resume_over_changed_task_data_or_block_size_is_refused_naming_what_changed(tmp_path, tok, monkeypatch):
    # was: SamplingError "stream state has task_sizes=..., these streams ..." (after starting DeepSpeed) /
    # "sampler state has block_size 8192, this sampler 16: build it with the same config", naming neither the
    # config key nor what to do
    tasks = write_yaml_task(tmp_path / "tasks", "my_task", rows=32)

    def config(steps, **sampling):
        return tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": steps},
                           data={"tasks": ["my_task", "parity"], "tasks_dir": str(tasks)},
                           sampling={"strategy": "uniform", **sampling})

    train(config(2), evaluate_held_in=False)
    with pytest.raises(SamplingError, match="sampling.block_size 8192, this run has 16: resume with the same"):
        train(config(4, block_size=16), resume="auto", evaluate_held_in=False)
    write_yaml_task(tasks, "my_task", rows=20)

    def not_reached(*args, **kwargs):
        raise AssertionError("the model was built before the changed task data was refused")

    monkeypatch.setattr(trainer_mod, "build_model", not_reached)
    with pytest.raises(CheckpointError, match=r"task sizes \{'my_task': 32\}, this run's tasks have \{'my_task': 20\}"
                                              r".*resume with the same task data"):
        train(config(4), resume="auto", evaluate_held_in=False)


def test_a_resume_after_a_template_was_edited_under_its_name_warns_naming_it_and_trains_on(tmp_path, tok, capsys):
    # was: a YAML task's `jinja:` edited under the same template name resumed without a word, and the resumed steps
    # trained other prompts than the run they continue
    tasks = write_yaml_task(tmp_path / "tasks", "my_task", rows=16)

    def config(steps):
        return tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": steps},
                           data={"tasks": ["my_task", "parity"], "tasks_dir": str(tasks)})

    train(config(2), evaluate_held_in=False)
    capsys.readouterr()
    train(config(3), resume="auto", evaluate_held_in=False)
    assert "changed under the same name" not in capsys.readouterr().out
    task_file = tasks / "my_task.yaml"
    task_file.write_text(task_file.read_text().replace('jinja: "{{question}}', 'jinja: "Reverse: {{question}}'))
    assert train(config(4), resume="auto", evaluate_held_in=False).step == 4
    out = capsys.readouterr().out
    assert re.search(r"warning: the template\(s\) \['plain'\] of task 'my_task' changed under the same name since "
                     r"checkpoint \S*step-00000003 was written .*: the resumed steps train the new text", out), out
    assert out.count("changed under the same name") == 1
    # the resumed run tokenized the task anew, from the edited template's renderings
    assert len(list((tmp_path / "cache" / "my_task").glob("train-*.arrow"))) == 2


def test_a_resume_with_another_tokenizer_is_refused_naming_it(tmp_path, tok):
    # was: resumed in place, the run read its own copy and ignored the new tokenizer.path (config.yaml then named a
    # tokenizer the run did not use); resumed into a new folder, a tokenizer of the same size fed the weights other
    # ids without a word
    def config(out, tokenizer, steps):
        return tiny_config(tmp_path / out, tokenizer, tmp_path / "cache", training={"steps": steps})

    train(config("run", tok, 2), evaluate_held_in=False)
    swapped = _swapped_tokenizer(tok, tmp_path / "swapped")  # the same pieces, two of them at each other's ids
    written = (tmp_path / "run" / "config.yaml").read_text()
    message = (rf"trained with the tokenizer in {re.escape(str(tmp_path / 'run' / 'tokenizer'))} \((\d+) tokens\), "
               rf"this run's tokenizer\.path '{re.escape(str(swapped))}' gives another one \(\1 tokens, 2 of the "
               rf"checkpoint's at other ids or missing\): resume with tokenizer\.path set to")
    for out, resume in (("run", "auto"), ("new", str(tmp_path / "run"))):
        with pytest.raises(CheckpointError, match=message):
            train(config(out, swapped, 4), resume=resume, evaluate_held_in=False)
    assert (tmp_path / "run" / "config.yaml").read_text() == written
    assert train(config("run", tok, 3), resume="auto", evaluate_held_in=False).step == 3


def _swapped_tokenizer(tok: Path, out: Path) -> Path:
    """A copy of tokenizer `tok` with the pieces at ids 10 and 11 swapped (the same size, other ids)."""
    shutil.copytree(tok, out)
    (out / "spiece.model").unlink()
    data = json.loads((out / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    vocab[10], vocab[11] = vocab[11], vocab[10]
    (out / "tokenizer.json").write_text(json.dumps(data))
    return out


def test_a_resume_with_another_tokenizer_names_where_this_run_takes_its_own(tmp_path, tok):
    # the refusal names the key that chose this run's tokenizer: the pretrained model's own (model.name_or_path,
    # tokenizer.path unset), or the one the run trained (tokenizer.train, neither set)
    from t2t_mtl.config import config_from_dict

    ckpt = tmp_path / "run" / "checkpoints" / "step-00000002"
    ckpt.mkdir(parents=True)
    shutil.copytree(tok, tmp_path / "run" / "tokenizer")
    swapped = _swapped_tokenizer(tok, tmp_path / "swapped")
    base = tiny_config(tmp_path / "new", tok, tmp_path / "cache")
    pretrained = config_from_dict({**base, "tokenizer": {"path": None}, "model": {"name_or_path": str(swapped)}})
    with pytest.raises(CheckpointError, match=f"this run's model\\.name_or_path '{re.escape(str(swapped))}' gives "
                                              f"another one"):
        check_resumed_tokenizer(pretrained, load_tokenizer(tok), ckpt)
    trained = config_from_dict({**base, "tokenizer": {"path": None}})
    with pytest.raises(CheckpointError, match=r"this run trained \(tokenizer\.train\) another one \(\d+ tokens, 2 "):
        check_resumed_tokenizer(trained, load_tokenizer(swapped), ckpt)
    check_resumed_tokenizer(trained, load_tokenizer(tok), ckpt)


def test_a_zero_stage_0_checkpoint_of_another_world_size_loads_without_the_universal_conversion(tmp_path, tok,
                                                                                                 monkeypatch):
    # stage 0 keeps whole weights and optimizer states, which load under any world size: no universal format
    def config(steps):
        return tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": steps})

    train(config(2), evaluate_held_in=False)
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000002"
    meta = json.loads((ckpt / "meta.json").read_text())
    assert meta["zero_stage"] == 0
    (ckpt / "meta.json").write_text(json.dumps({**meta, "world_size": 2}))  # as if 2 ranks had written it
    state = torch.load(ckpt / "rank_00000.pt", weights_only=False)
    for rank in range(2):  # rank 1 drew nothing
        streams = {**state["task_streams"], "rank": rank, "world_size": 2}
        if rank:
            streams = {**streams, "epoch": {t: 0 for t in streams["epoch"]},
                       "position": {t: 0 for t in streams["position"]}, "seen": {t: 0 for t in streams["seen"]}}
        torch.save({**state, "task_streams": streams}, ckpt / f"rank_0000{rank}.pt")

    def not_reached(*args, **kwargs):
        raise AssertionError("a stage-0 checkpoint was converted to the universal format")

    monkeypatch.setattr(trainer_mod.universal_conversion, "ensure_universal", not_reached)
    assert train(config(3), resume="auto", evaluate_held_in=False).step == 3


@pytest.mark.parametrize("before, after", [(1, 2), (2, 1)])
def test_a_zero_1_checkpoint_resumes_at_zero_2_and_back_as_the_uninterrupted_run(tmp_path, tok, before, after):
    # was: refused under the same world size (allowed only under another one, through the universal format, which
    # now carries this change too); ZeRO-1 and -2 update alike, so the weights equal an uninterrupted run's
    def config(run, steps, stage):
        return tiny_config(tmp_path / run, tok, tmp_path / "cache", deepspeed={"zero_stage": stage},
                           training={"steps": steps})

    train(config("whole", 6, before), evaluate_held_in=False)
    train(config("cut", 3, before), evaluate_held_in=False)
    assert train(config("cut", 6, after), resume="auto", evaluate_held_in=False).step == 6
    whole, cut = (load_trained_model(tmp_path / run)[0].state_dict() for run in ("whole", "cut"))
    records = [step_records(tmp_path / run) for run in ("whole", "cut")]
    assert sorted(records[1]) == list(range(1, 7))
    for step in (4, 5, 6):  # the same examples and losses after the resume: the data order continued
        assert records[1][step]["task_examples"] == records[0][step]["task_examples"]
        assert records[1][step]["loss"] == pytest.approx(records[0][step]["loss"], rel=1e-6)
    for name, weight in whole.items():
        torch.testing.assert_close(cut[name], weight, rtol=0, atol=1e-6)


def _served_examples(monkeypatch) -> list:
    """Record what each training forward is given: a list per forward of (task, input ids, target ids) per example,
    padding left out."""
    real, served = trainer_mod.forward_losses, []

    def forward(engine, batch, task_ids_cpu, task_names, *args, **kwargs):
        served.append([(task_names[int(task)], tuple(ids[mask.bool()].tolist()),
                        tuple(labels[labels.ne(-100)].tolist()))
                       for task, ids, mask, labels in zip(task_ids_cpu, batch["input_ids"].cpu(),
                                                          batch["attention_mask"].cpu(), batch["labels"].cpu())])
        return real(engine, batch, task_ids_cpu, task_names, *args, **kwargs)

    monkeypatch.setattr(trainer_mod, "forward_losses", forward)
    return served


def test_a_resumed_run_trains_the_rows_and_templates_of_the_uninterrupted_run(tmp_path, tok, monkeypatch):
    # each row trains in one of its task's two templates, drawn per row (no data.all_templates): the resumed run goes
    # on with the (task, row, template) sequence of the run it continues, which trains both templates of a task
    import task_registry

    def config(run, steps):
        return tiny_config(tmp_path / run, tok, tmp_path / "cache", training={"steps": steps})

    served = _served_examples(monkeypatch)
    train(config("whole", 6), evaluate_held_in=False)
    whole = list(served)
    train(config("cut", 3), evaluate_held_in=False)
    del served[:]
    assert train(config("cut", 6), resume="auto", evaluate_held_in=False).step == 6
    tokenizer = load_tokenizer(tok)
    rendered = {}  # the reference: each row of a task rendered in each of its templates, tokenized on its own
    for task in {task for forward in whole for task, _, _ in forward}:
        for example in task_registry.get_task(task).to_dataset("train", max_examples=64, seed=0, every_template=True,
                                                               with_row_index=True):
            key = (task, tuple(tokenizer(example["inputs"]).input_ids), tuple(tokenizer(example["targets"]).input_ids))
            rendered[key] = (task, example["row"], example["template"])
    trained = [[rendered[example] for example in forward] for forward in whole]
    assert [[rendered[example] for example in forward] for forward in served] == trained[3:]  # (a forward a step)
    assert {template for forward in trained for _, _, template in forward} == {"t5_prefix", "instruction"}


def test_a_resume_into_a_model_of_other_shapes_is_refused_before_deepspeed_naming_the_settings(tmp_path, tok,
                                                                                               monkeypatch):
    # was: refused only by DeepSpeed's load, after starting the engine (and converting the checkpoint to the universal
    # format under another world size), with a hint naming every model setting that could be the cause
    dims = tiny_config(tmp_path, tok, tmp_path)["model"]["dims"]

    def config(steps, **model):
        return tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": steps},
                           model={"dims": dims, **model})

    moe = {"num_experts": 2, "top_k": 1, "every": 1}
    train(config(2, moe=moe), evaluate_held_in=False)

    def not_reached(*args, **kwargs):
        raise AssertionError("DeepSpeed was started before the model of other shapes was refused")

    monkeypatch.setattr(trainer_mod, "initialize_deepspeed", not_reached)
    more_experts = (r"written with model\.moe\.num_experts = 2, this run has 4: its weights do not fit this run's "
                    r"model \(decoder\.block\.0\.layer\.2\.DenseReluDense\.experts\.2\.wi\.weight: absent there, "
                    r"shape 64x32 here")
    with pytest.raises(CheckpointError, match=more_experts):
        train(config(4, moe={**moe, "num_experts": 4}), resume="auto", evaluate_held_in=False)
    with pytest.raises(CheckpointError, match=r"written with model\.dims\.d_ff = 64, this run has 32; model\.moe = "
                                              r"\{.*\}, this run has None: its weights do not fit"):
        train(config(4, dims={**dims, "d_ff": 32}), resume="auto", evaluate_held_in=False)


def test_another_zero_stage_or_precision_is_refused_before_converting_the_checkpoint_or_starting_deepspeed(
        tmp_path, tok, monkeypatch):
    # was: refused once DeepSpeed had started, and under another world size after converting the whole checkpoint
    # (optimizer states included) to the universal format inside it
    def config(steps, stage, precision="fp32"):
        return tiny_config(tmp_path / "run", tok, tmp_path / "cache", deepspeed={"zero_stage": stage},
                           training={"steps": steps, "precision": precision})

    train(config(2, 1), evaluate_held_in=False)

    def not_reached(*args, **kwargs):
        raise AssertionError("the checkpoint was converted or DeepSpeed started before the refusal")

    monkeypatch.setattr(trainer_mod, "initialize_deepspeed", not_reached)
    monkeypatch.setattr(trainer_mod.universal_conversion, "ensure_universal", not_reached)
    with pytest.raises(CheckpointError, match=r"deepspeed\.zero_stage = 1, this run has 0"):
        train(config(4, 0), resume="auto", evaluate_held_in=False)
    with pytest.raises(CheckpointError, match=r"training\.precision = 'fp32', this run has 'bf16'"):
        train(config(4, 1, "bf16"), resume="auto", evaluate_held_in=False)
    meta = tmp_path / "run" / "checkpoints" / "step-00000002" / "meta.json"  # as if 2 ranks had written it
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "world_size": 2}))
    with pytest.raises(CheckpointError, match=r"deepspeed\.zero_stage = 1, this run has 3"):
        train(config(4, 3), resume="auto", evaluate_held_in=False)


def test_a_resume_with_other_settings_than_the_runs_config_names_them_with_both_values(tmp_path, tok, capsys):
    # was: a resume with another lr, steps or evaluation (a config file or --set that differs from the run's
    # config.yaml) trained with them silently and saved them over config.yaml, losing what the first steps ran with
    dims = tiny_config(tmp_path, tok, tmp_path)["model"]["dims"]

    def config(steps, lr, **changed):
        return tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": steps, "lr": lr},
                           model={"dims": {**dims, **changed}}, evaluation={"tasks": ["parity"], "held_out": False})

    train(config(2, 0.01), evaluate_held_in=False)
    capsys.readouterr()
    cfg = config(3, 0.005, dropout_rate=0.25)
    cfg["evaluation"] = {"held_out": False}
    train(cfg, resume="auto", evaluate_held_in=False)
    out = capsys.readouterr().out
    saved = tmp_path / "run" / "config.yaml"
    assert (f"warning: resumed with settings other than {saved}'s, which apply from step 2: training.steps 2 → 3; "
            f"training.lr 0.01 → 0.005; evaluation.tasks [\"parity\"] → (unset) (the run's config.yaml now holds "
            f"these)\n") in out  # (its model settings named by their own warning)
    assert "model.dims.dropout_rate = 0.0 there, 0.25 here" in out
    assert "lr: 0.005" in saved.read_text()


def test_a_resume_into_another_run_folder_names_the_settings_that_differ_from_the_checkpoints_run(tmp_path, tok,
                                                                                                  capsys):
    # (mut44: the comparison with the new folder's config.yaml, which is not there yet, passed every test: no warning)
    def config(run, lr):
        return tiny_config(run, tok, tmp_path / "cache", training={"steps": 3, "lr": lr, "checkpoint_every": 2},
                           evaluation={"held_out": False})

    train(config(tmp_path / "a", 0.01), evaluate_held_in=False)
    capsys.readouterr()
    train(config(tmp_path / "b", 0.005), resume=str(tmp_path / "a" / "checkpoints" / "step-00000002"),
          evaluate_held_in=False)
    assert (f"warning: resumed with settings other than {tmp_path / 'a' / 'config.yaml'}'s, which apply from step 2: "
            f"training.lr 0.01 → 0.005 (the run's config.yaml now holds these)\n") in capsys.readouterr().out


def test_a_resume_with_model_settings_that_keep_the_shapes_warns_naming_them(tmp_path, tok, capsys):
    # was: a resume with another dropout or relative attention distance (the weights still fit) went on silently
    dims = tiny_config(tmp_path, tok, tmp_path)["model"]["dims"]

    def config(steps, **changed):
        return tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": steps},
                           model={"dims": {**dims, **changed}})

    train(config(2), evaluate_held_in=False)
    capsys.readouterr()
    train(config(3), resume="auto", evaluate_held_in=False)
    assert "model settings differ" not in capsys.readouterr().out
    train(config(4, dropout_rate=0.25), resume="auto", evaluate_held_in=False)
    out = capsys.readouterr().out
    assert re.search(r"warning: this run's model settings differ from checkpoint \S*step-00000003'?s: "
                     r"model\.dims\.dropout_rate = 0\.0 there, 0\.25 here; its weights fit", out), out


@pytest.mark.parametrize("evaluation, evaluated", [({"held_out": False}, []), ({"every": 0}, [6])])
def test_a_resume_without_evaluations_during_training_makes_none_the_sigterm_deferred(tmp_path, tok, monkeypatch,
                                                                                       evaluation, evaluated):
    # was: the evaluation a SIGTERM deferred to the resumed run was made whatever the resumed run's evaluation
    # section: with held_out off there was nothing to evaluate, and the run died on it (TypeError: 'NoneType'
    # object is not subscriptable, in log_held_out)
    sections = {**HELD_OUT, "evaluation": {**HELD_OUT["evaluation"], "every": 4}, "training": {"steps": 6}}
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", **sections)
    with monkeypatch.context() as patch:
        _sigterm_during_step(patch, 4)
        assert train(cfg, evaluate_held_in=False).interrupted
    cfg["evaluation"] = {**cfg["evaluation"], **evaluation}
    assert train(cfg, resume="auto", evaluate_held_in=False).step == 6
    # (every 0: only the evaluation after training)
    assert [record["step"] for record in read_held_out(tmp_path / "run" / "logs")] == evaluated
    assert not (tmp_path / "run" / "eval" / "step-00000004").exists()
