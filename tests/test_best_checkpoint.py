"""`training.keep_best`: checkpoint selection on held-in validation — the selected step follows the rule, its
checkpoint is linked as `best` and survives pruning and resumes, and the after-training evaluations score it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from t2t_mtl.config import ConfigError, config_from_dict
from t2t_mtl.engine.best import BestValidation
from t2t_mtl.engine.checkpoint import best_checkpoint
from t2t_mtl.engine.export import load_trained_model
from t2t_mtl.engine.logging import read_held_out
from t2t_mtl.engine.signal_checks import check_signal_config
from t2t_mtl.engine.trainer import train
from t2t_mtl.engine.validation import evaluation_plan
from t2t_mtl.evaluation import evaluate_tasks
from t2t_mtl.evaluation.aggregate import summarize
from t2t_mtl.sampling.static import UniformSampler

from engine_helpers import step_records, tiny_config, train_tiny_tokenizer

TASKS = ["a", "b", "c"]
UNIFORM = UniformSampler({"parity": 1}, seed=0)  # (a sampler that learns from no validation)


@pytest.mark.parametrize("metric,pick", [("val_score", np.argmax), ("val_loss", np.argmin)])
def test_the_best_step_is_the_first_optimum_of_the_task_mean(metric, pick):
    rng = np.random.default_rng(0)
    for _ in range(50):
        values = rng.integers(0, 4, size=(int(rng.integers(1, 9)), len(TASKS))) / 4.0  # ties are common
        best = BestValidation(metric)
        improved = [best.update(10 * (i + 1), best.task_mean({metric: dict(zip(TASKS, row)), "other": {}}))
                    for i, row in enumerate(values)]
        expected = int(pick(values.mean(1)))  # numpy returns the first optimum
        assert best.step == 10 * (expected + 1) and best.value == pytest.approx(values.mean(1)[expected])
        assert improved[expected] and sum(improved[expected + 1:]) == 0
        assert best.stale == len(values) - 1 - expected  # validations since the best (early stopping's count)
        restored = BestValidation(metric)
        restored.load_state_dict(best.state_dict())
        assert restored == best
    never = BestValidation(metric)  # a non-finite mean (e.g. a diverged first validation) is never the best
    assert not never.update(1, float("nan")) and never.stale == 1 and never.update(2, 0.5) and never.step == 2
    assert never.stale == 0 and not never.update(3, float("inf")) and never.stale == 1
    other = BestValidation("val_loss")
    other.load_state_dict(BestValidation("val_score", 1.0, 4).state_dict())  # another metric: not comparable
    assert other.step is None and other.value is None


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


def _config(tmp_path, tok, name, metric, steps=12, **training):
    return tiny_config(tmp_path / name, tok, tmp_path / "cache", data={"held_out_clusters": ["comparison"]},
                       training={"steps": steps, "validate_every": 2, "validate_examples": 8, "keep_best": metric,
                                 "keep_checkpoints": 1, "lr": 3e-2, **training},
                       evaluation={"held_out": True, "max_examples": 2, "batch_size": 8})


def _task_means(run_dir, metric):
    return {step: float(np.mean(list(rec[metric].values())))
            for step, rec in step_records(run_dir).items() if metric in rec}


@pytest.mark.parametrize("metric", ["val_score", "val_loss"])
def test_the_best_checkpoint_is_linked_kept_and_evaluated(tmp_path, tok, metric):
    cfg = _config(tmp_path, tok, "run", metric)
    result = train(cfg, evaluate_held_in=False)
    run = tmp_path / "run"
    means = _task_means(run, metric)
    assert sorted(means) == [2, 4, 6, 8, 10, 12]
    steps, values = list(means), np.array(list(means.values()))
    expected = steps[int(np.argmax(values) if metric == "val_score" else np.argmin(values))]
    assert result.best_checkpoint == best_checkpoint(run) == run / "checkpoints" / f"step-{expected:08d}"
    assert (run / "checkpoints" / "best").resolve() == result.best_checkpoint.resolve()
    # keep_checkpoints 1 keeps the final checkpoint, and the best one besides
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == sorted(
        {f"step-{expected:08d}", "step-00000012"})
    assert result.evaluated_step == expected
    # the after-training zero-shot evaluation scored the best checkpoint's weights (loaded afresh here)
    model, tokenizer, meta = load_trained_model(result.best_checkpoint)
    assert meta["step"] == expected
    names, settings = evaluation_plan(config_from_dict(cfg))
    summary = summarize(evaluate_tasks(model, tokenizer, names, settings, progress=False))
    assert result.held_out_scores == {task: s.median for task, s in summary["tasks"].items()}
    assert [r["step"] for r in read_held_out(run / "logs")] == [expected]
    if metric == "val_score":  # a tiny model's exact match ties at 0 everywhere: the first validation stays best
        assert expected == 2 and result.step == 12
        final, _, _ = load_trained_model(run / "checkpoints" / "step-00000012")
        assert not all(torch.equal(p, q) for p, q in zip(model.parameters(), final.parameters()))


def test_a_resumed_run_keeps_the_best_so_far(tmp_path, tok):
    whole = train(_config(tmp_path, tok, "whole", "val_score"), evaluate_held_in=False)
    first = _config(tmp_path, tok, "split", "val_score", steps=6)
    train(first, evaluate_held_in=False)
    second = _config(tmp_path, tok, "split", "val_score")
    resumed = train(second, resume="auto", evaluate_held_in=False)
    assert resumed.best_checkpoint.name == whole.best_checkpoint.name == "step-00000002"
    assert resumed.evaluated_step == whole.evaluated_step == 2
    assert resumed.held_out_scores == whole.held_out_scores
    state = torch.load(tmp_path / "split" / "checkpoints" / "step-00000012" / "trainer_state.pt", weights_only=False)
    assert state["best_validation"] == {"metric": "val_score", "value": 0.0, "step": 2, "stale": 5}  # 4..12


@pytest.mark.parametrize("training,match", [
    ({"keep_best": "val_score"}, "keep_best.*validate_every"),
    ({"keep_best": "val_acc", "validate_every": 2}, "val_score"),
])
def test_bad_keep_best_configs_are_refused_naming_the_key(training, match):
    with pytest.raises(ConfigError, match=match):
        cfg = config_from_dict({"model": {"dims": {"d_model": 8}}, "data": {"tasks": ["parity"]},
                                "training": training})
        check_signal_config(cfg, UNIFORM)


def test_the_best_link_follows_the_restored_selection_after_resuming_from_an_earlier_checkpoint(tmp_path, tok):
    first = train(_config(tmp_path, tok, "run", "val_loss", checkpoint_every=2, keep_checkpoints=10),
                  evaluate_held_in=False)
    assert first.best_checkpoint.name == "step-00000012"  # the held-in loss falls at every validation here
    again = _config(tmp_path, tok, "run", "val_loss", steps=5, checkpoint_every=2, keep_checkpoints=10)
    resumed = train(again, resume=str(tmp_path / "run" / "checkpoints" / "step-00000004"), evaluate_held_in=False)
    # the restored selection is step 4 (no validation at step 5): the link no longer names the old run's step 12
    assert resumed.best_checkpoint.name == "step-00000004" == (tmp_path / "run" / "checkpoints" / "best").resolve().name
    assert resumed.evaluated_step == 4


def test_a_kill_before_the_final_save_relinked_best_is_repaired_by_the_resume(tmp_path, tok):
    # was: a kill after the final save named its checkpoint `latest` but before `best` followed left the link on the
    # previous best for good (the resumed run has nothing left to train, so it saves nothing that re-points it)
    cfg = _config(tmp_path, tok, "run", "val_loss", steps=4, checkpoint_every=2, keep_checkpoints=10)
    train(cfg, evaluate_held_in=False)
    run = tmp_path / "run"
    means = _task_means(run, "val_loss")
    assert sorted(means) == [2, 4] and means[4] < means[2]  # the held-in loss falls: the final step is the best
    link = run / "checkpoints" / "best"
    link.unlink()
    link.symlink_to("step-00000002")  # the link as the kill left it: on the best before the final save
    resumed = train(cfg, resume="auto", evaluate_held_in=False)
    assert resumed.step == 4 and resumed.best_checkpoint == run / "checkpoints" / "step-00000004"
    assert link.resolve() == (run / "checkpoints" / "step-00000004").resolve()


def test_with_periodic_evaluations_the_final_weights_are_scored_too(tmp_path, tok):
    cfg = _config(tmp_path, tok, "run", "val_score", steps=6)
    cfg["evaluation"]["every"] = 2
    result = train(cfg, evaluate_held_in=False)
    assert result.evaluated_step == 2  # the best; the final weights (step 6) are scored during training
    records = read_held_out(tmp_path / "run" / "logs")
    assert [r["step"] for r in records] == [2, 4, 6]
    assert records[0]["tasks"] == result.held_out_scores  # the after-training evaluation of the best (step 2)


def _stop_step(series, patience, every, last):
    """Independent rule: the first validation step (before `last`) by which `patience` validations in a row
    brought no strictly better task mean (val_score: higher) than the best so far."""
    best, since = None, 0
    for step, value in sorted(series.items()):
        if best is None or value > best:
            best, since = value, 0
        else:
            since += 1
        if since >= patience and step < last:
            return step
    return None


def test_early_stopping_stops_after_patience_validations_without_a_new_best(tmp_path, tok):
    full = train(_config(tmp_path, tok, "full", "val_score", steps=16), evaluate_held_in=False)
    series = _task_means(tmp_path / "full", "val_score")
    stop = _stop_step(series, 2, 2, 16)
    assert stop is not None and not full.stopped_early  # the tiny model's exact match soon stops improving
    cfg = _config(tmp_path, tok, "early", "val_score", steps=16, early_stopping=2)
    early = train(cfg, evaluate_held_in=False)
    assert early.stopped_early and early.step == stop
    assert _task_means(tmp_path / "early", "val_score") == {s: v for s, v in series.items() if s <= stop}
    seen = {s: v for s, v in series.items() if s <= stop}
    best = min(s for s, v in seen.items() if v == max(seen.values()))  # the first optimum before stopping
    assert early.best_checkpoint.name == f"step-{best:08d}" and early.evaluated_step == best
    assert (tmp_path / "early" / "checkpoints" / f"step-{stop:08d}").is_dir()  # the last step is checkpointed
    again = train(cfg, resume="auto", evaluate_held_in=False)  # a stopped run stays stopped
    assert again.stopped_early and again.step == stop
    assert max(step_records(tmp_path / "early")) == stop


def test_early_stopping_needs_keep_best():
    cfg = config_from_dict({"model": {"dims": {"d_model": 8}}, "data": {"tasks": ["parity"]},
                            "training": {"early_stopping": 3, "validate_every": 2}})
    with pytest.raises(ConfigError, match="training.early_stopping .* training.keep_best"):
        check_signal_config(cfg, UNIFORM)


def test_early_stopping_counts_only_validations_that_ran_for_its_metric(tmp_path, tok):
    """A run resumed with keep_best + early_stopping added (or its metric changed) starts counting then,
    not from the steps it trained before."""
    first = _config(tmp_path, tok, "r", "val_score", steps=8)
    first["training"].pop("keep_best")
    train(first, evaluate_held_in=False)
    resumed = train(_config(tmp_path, tok, "r", "val_score", steps=20, early_stopping=2), resume="auto",
                    evaluate_held_in=False)
    assert resumed.step >= 8 + 2 * 2  # at least two validations after the resume before stopping
    validations = sorted(s for s in _task_means(tmp_path / "r", "val_score") if s > 8)
    if resumed.stopped_early:  # the stop comes exactly at the second validation without a new best
        series = {s: v for s, v in _task_means(tmp_path / "r", "val_score").items() if s > 8}
        assert resumed.step == _stop_step(series, 2, 2, 20)
    assert validations[-1] == resumed.step


def test_the_best_checkpoint_is_evaluated_unless_missing_or_of_another_world_size_under_zero(tmp_path, monkeypatch,
                                                                                          capsys):
    from types import SimpleNamespace

    from t2t_mtl.engine import final_evaluation
    from t2t_mtl.engine.distributed import DistEnv

    loaded = []
    monkeypatch.setattr(final_evaluation.checkpoint_loading, "load_checkpoint",
                        lambda engine, ckpt, env: loaded.append(ckpt))
    monkeypatch.setattr(final_evaluation.ckpt_io, "read_meta", lambda ckpt: {"world_size": 2, "zero_stage": 0})
    best, best_val = tmp_path / "checkpoints" / "step-00000004", BestValidation("val_loss", value=0.5, step=4)
    main, other_rank = (DistEnv(rank, 1, 0, torch.device("cpu"), "gloo") for rank in (0, 1))

    def load(ckpt, zero_stage, env=main):
        engine = SimpleNamespace(zero_optimization_stage=lambda: zero_stage)
        return final_evaluation.load_best_for_evaluation(engine, ckpt, best_val, env, final_step=10)

    best_of = "evaluating the final model: the best checkpoint (step 4, mean val_loss 0.5000)"
    assert load(None, 1) == 10 and loaded == []
    assert capsys.readouterr().out == (f"{best_of} is not in this run directory's checkpoints/ (the run was resumed "
                                       f"from another directory)\n")
    assert load(best, 1) == 10 and loaded == []  # ZeRO on another world size: universal loading only at start-up
    assert capsys.readouterr().out == (f"{best_of} was written with another world size; evaluate it with t2t-mtl eval "
                                       f"--checkpoint {best}\n")
    assert load(best, 1, other_rank) == 10 and capsys.readouterr().out == ""  # (rank 0 alone says it)
    (best / "ds").mkdir(parents=True)  # (what the load reads, tried first: `check_own_files`)
    for read in (best / "trainer_state.pt", best / "ds" / "mp_rank_00_model_states.pt"):
        torch.save({}, read)
    assert load(best, 0) == 4 and loaded == [best]  # stage 0: whole weights, loaded on any world size
    assert capsys.readouterr().out == (f"evaluating the best checkpoint {best} (step 4, mean val_loss 0.5000), not "
                                       f"the final step's model (training.keep_best)\n")
