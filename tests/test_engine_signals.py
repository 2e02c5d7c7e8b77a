"""Adaptive-sampling signals wired through the training engine: training-forward entropies (uncertainty_ema),
periodic validation (bandits, worst_task, dtp weighting), CA-MTL candidate selection; config errors.

Each run is a tiny single-process training; the sampler / weighting state saved in the final checkpoint is
checked against the update formulas applied by hand to the signals the run logged in metrics.jsonl."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from engine_helpers import TASKS, tiny_config, train_tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("signals-tokenizer"))


def run_tiny(tmp_path: Path, tokenizer_dir: Path, **sections):
    """Train in-process; returns (TrainResult, metrics records, final trainer_state)."""
    from t2t_mtl.engine.checkpoint import latest_checkpoint
    from t2t_mtl.engine.trainer import train

    cfg = tiny_config(tmp_path / "run", tokenizer_dir, tmp_path / "cache", **sections)
    result = train(cfg)
    records = [json.loads(line) for line in (tmp_path / "run" / "logs" / "metrics.jsonl").read_text().splitlines()]
    state = torch.load(latest_checkpoint(tmp_path / "run") / "trainer_state.pt", weights_only=False)
    return result, records, state


def test_uncertainty_ema_learns_from_training_forward_entropies(tmp_path, tokenizer_dir):
    momentum = 0.5
    result, records, state = run_tiny(
        tmp_path, tokenizer_dir,
        sampling={"strategy": "uncertainty_ema", "lam": 1.0, "floor": 0.0, "momentum": momentum})
    assert result.step == 6 and len(records) == 6
    from t2t_mtl.engine.logging import training_scalars  # (what TensorBoard and W&B get of each record)

    for rec in records:  # was: in metrics.jsonl only
        scalars = training_scalars(rec)
        assert {tag: v for tag, v in scalars.items() if tag.startswith("entropy/")} == {
            f"entropy/{task}": value for task, value in rec["entropy"].items()} != {}
    # the EMA the sampler saved equals the EMA of the per-task entropies the engine fed it (logged per step)
    expected = {}
    for rec in records:
        for task, value in rec["entropy"].items():
            assert 0.0 < value <= 1.0  # normalised by log V
            expected[task] = value if task not in expected else momentum * expected[task] + (1 - momentum) * value
    ema = dict(zip(state["sampler"]["tasks"], state["sampler"]["extra"]["ema"]))
    for task, value in expected.items():
        assert ema[task] == pytest.approx(value, rel=1e-9)
    # lam 1, floor 0: p ∝ EMA (unseen tasks get the mean) — moved away from the uniform prior of equal sizes
    from t2t_mtl.sampling import build_sampler

    sampler = build_sampler({"strategy": "uncertainty_ema", "lam": 1.0, "floor": 0.0, "momentum": momentum},
                            {t: 64 for t in TASKS}, seed=0)
    prior = sampler.probabilities()
    sampler.load_state_dict(state["sampler"])
    filled = [ema[t] if ema[t] is not None else np.mean([v for v in ema.values() if v is not None]) for t in TASKS]
    p = sampler.probabilities()
    assert [p[t] for t in TASKS] == pytest.approx(list(np.array(filled) / sum(filled)), rel=1e-9)
    assert max(abs(p[t] - prior[t]) for t in TASKS) > 1e-3


def test_bandit_softmax_q_values_follow_validation_loss_improvements(tmp_path, tokenizer_dir):
    step_size = 0.5
    _, records, state = run_tiny(
        tmp_path, tokenizer_dir, sampling={"strategy": "bandit_softmax", "metric": "val_loss", "tau": 0.05,
                                           "step": step_size},
        training={"validate_every": 2, "validate_examples": 4})
    validations = [rec for rec in records if "val_loss" in rec]
    assert [rec["step"] for rec in validations] == [2, 4, 6]
    q, last = {t: 0.0 for t in TASKS}, {}
    for rec in validations:
        for task, loss in rec["val_loss"].items():
            if task in last:  # reward = improvement (lower loss is better)
                q[task] = (1 - step_size) * q[task] + step_size * (last[task] - loss)
            last[task] = loss
    saved = dict(zip(state["sampler"]["tasks"], state["sampler"]["extra"]["q"]))
    assert saved == pytest.approx(q, rel=1e-9, abs=1e-12)
    assert max(abs(v) for v in saved.values()) > 0  # the signal moved the Q-values off their prior


def test_validation_results_are_logged_on_steps_between_log_steps(tmp_path, tokenizer_dir):
    _, records, _ = run_tiny(tmp_path, tokenizer_dir, sampling={"strategy": "bandit_softmax"},
                             training={"validate_every": 3, "validate_examples": 4, "log_every": 2, "steps": 6})
    assert [rec["step"] for rec in records] == [2, 3, 4, 6]
    assert [rec["step"] for rec in records if "val_loss" in rec and "val_score" in rec] == [3, 6]


def test_bandit_thompson_beta_posteriors_count_validation_score_wins(tmp_path, tokenizer_dir):
    _, records, state = run_tiny(tmp_path, tokenizer_dir, sampling={"strategy": "bandit_thompson"},
                                 training={"validate_every": 2, "validate_examples": 4, "steps": 6})
    validations = [rec["val_score"] for rec in records if "val_score" in rec]
    assert len(validations) == 3 and all(0.0 <= v <= 1.0 for scores in validations for v in scores.values())
    alpha, beta = {t: 1.0 for t in TASKS}, {t: 1.0 for t in TASKS}
    for before, after in zip(validations, validations[1:]):
        for task in TASKS:
            win = float(after[task] - before[task] > 0)
            alpha[task] += win
            beta[task] += 1 - win
    extra = state["sampler"]["extra"]
    assert dict(zip(TASKS, extra["alpha"])) == alpha and dict(zip(TASKS, extra["beta"])) == beta
    assert sum(extra["alpha"]) + sum(extra["beta"]) == 2 * len(TASKS) + 2 * len(TASKS)  # moved off the prior


def test_worst_task_follows_validation_losses_and_dtp_gets_validation_kpis(tmp_path, tokenizer_dir):
    momentum = 0.5
    _, records, state = run_tiny(
        tmp_path, tokenizer_dir, sampling={"strategy": "worst_task", "tau": 0.0},
        weighting={"method": "dtp", "momentum": momentum}, training={"validate_every": 3, "validate_examples": 4})
    validations = [rec for rec in records if "val_loss" in rec]
    assert [rec["step"] for rec in validations] == [3, 6]
    extra = state["sampler"]["extra"]
    assert extra["initial_loss"] == pytest.approx([validations[0]["val_loss"][t] for t in TASKS])
    assert extra["loss"] == pytest.approx([validations[-1]["val_loss"][t] for t in TASKS])
    # tau 0: all mass on the task with the largest λ_t L_t = (L_t / l_t) / Σ 1/l_i
    ratio = np.array([validations[-1]["val_loss"][t] / validations[0]["val_loss"][t] for t in TASKS])
    from t2t_mtl.sampling import build_sampler

    sampler = build_sampler({"strategy": "worst_task", "tau": 0.0}, {t: 64 for t in TASKS}, seed=0)
    sampler.load_state_dict(state["sampler"])
    p = sampler.probabilities()
    assert [p[t] for t in TASKS] == pytest.approx(list((ratio == ratio.max()) / (ratio == ratio.max()).sum()))
    # dtp: KPI ← (1-m)·val_score + m·KPI, from its initial 0.5, once per validation (the step after it)
    kpi = {t: 0.5 for t in TASKS}
    for rec in validations[:-1]:  # the last validation is at the final step: no later weighting call
        for t in TASKS:
            kpi[t] = (1 - momentum) * rec["val_score"][t] + momentum * kpi[t]
    assert state["weighting"]["kpi"].tolist() == pytest.approx([kpi[t] for t in TASKS], rel=1e-9)
    # each record logs the weights the next call gives: λ_t = -(1 - k)^γ log k (γ 2 by default) of the KPIs with
    # that step's validation scores folded in (mut44: logging them without the scores passed every test)
    kpi = {t: 0.5 for t in TASKS}
    for rec in records:
        if "val_score" in rec:
            kpi = {t: (1 - momentum) * rec["val_score"][t] + momentum * kpi[t] for t in TASKS}
        clamped = {t: min(max(kpi[t], 1e-6), 1 - 1e-6) for t in TASKS}  # (eps 1e-6 by default)
        assert rec["task_weight"] == pytest.approx({t: -(1 - k) ** 2 * math.log(k) for t, k in clamped.items()},
                                                   rel=1e-9), rec["step"]


def test_camtl_run_trains_on_the_selected_candidates(tmp_path, tokenizer_dir):
    result, _, state = run_tiny(tmp_path, tokenizer_dir, sampling={"strategy": "uncertainty", "pool_per_task": 4})
    selected = dict(zip(state["sampler"]["tasks"], state["sampler"]["extra"]["selected"]))
    assert sum(selected.values()) == 6 * 4  # steps × micro-batch: b kept of b×M candidates every step
    assert {t: n for t, n in selected.items() if n} == result.examples_seen


class _RowsTask:
    """Stands in for a TokenizedTask: row i has input ids [3 + i] and label ids [3 + i, 1]."""

    def __init__(self, n: int):
        self.input_lengths = [1] * n
        self.target_lengths = [2] * n

    def rows(self, indices):
        return {"input_ids": [[3 + i] for i in indices], "labels": [[3 + i, 1] for i in indices]}


def test_selected_chunk_keeps_the_top_uncertainty_candidates():
    from t2t_mtl.data import BatchBuilder, Seq2SeqCollator
    from t2t_mtl.sampling import TaskStreams, build_sampler

    sizes = {"a": 10, "b": 10}
    answer_space = {"a": 2, "b": 1000}
    sampler = build_sampler({"strategy": "uncertainty", "pool_per_task": 5}, sizes, seed=0)
    streams = TaskStreams(sizes, seed=3)
    builder = BatchBuilder({t: _RowsTask(10) for t in sizes}, sampler, streams,
                           Seq2SeqCollator(0, max_input_length=8, max_target_length=8), micro_batch_size=4)
    reference = TaskStreams(sizes, seed=3)
    pool = [(t, i) for t in sizes for i in reference.next_indices(t, 5)]

    def score(batch):  # entropy = a function of the row's input id and task
        return torch.tensor([0.1 * (int(x[0]) - 2) * (1.0 if int(tid) == 0 else 3.0)
                             for x, tid in zip(batch["input_ids"], batch["task_ids"])])

    chunk = builder.next_selected_chunk(score, answer_space)
    entropy = {(t, i): 0.1 * (i + 1) * (1.0 if t == "a" else 3.0) for t, i in pool}
    s_hat = max(np.mean([entropy[p] for p in pool if p[0] == t]) for t in sizes)
    u = {p: entropy[p] / (s_hat * math.log(answer_space[p[0]])) for p in pool}
    assert sorted(chunk) == sorted(sorted(pool, key=lambda p: -u[p])[:4])
    assert sum(sampler.selected().values()) == 4


def test_selected_chunk_takes_the_candidates_of_the_second_task_from_their_own_positions():
    # the second task's candidates sit after the first's in the pool: its winners are its own rows, not the
    # first task's rows at the same within-task positions
    from t2t_mtl.data import BatchBuilder, Seq2SeqCollator
    from t2t_mtl.sampling import TaskStreams, build_sampler

    sizes = {"a": 10, "b": 10}
    sampler = build_sampler({"strategy": "uncertainty", "pool_per_task": 5}, sizes, seed=0)
    builder = BatchBuilder({t: _RowsTask(10) for t in sizes}, sampler, TaskStreams(sizes, seed=3),
                           Seq2SeqCollator(0, max_input_length=8, max_target_length=8), micro_batch_size=4)
    b_rows = TaskStreams(sizes, seed=3).next_indices("b", 5)

    def score(batch):  # task b's candidates are far more uncertain: U of b's = 3 / ln 2 times a's at equal rows
        return torch.tensor([0.1 * (int(x[0]) - 2) * (1.0 if int(tid) == 0 else 3.0)
                             for x, tid in zip(batch["input_ids"], batch["task_ids"])])

    chunk = builder.next_selected_chunk(score, {"a": 1000, "b": 2})
    assert sorted(chunk) == sorted(("b", i) for i in sorted(b_rows)[1:])  # its 4 highest rows: entropy 0.3 (i + 1)


def test_a_candidate_scorer_of_the_wrong_shape_is_refused():
    from t2t_mtl.data import BatchBuilder, Seq2SeqCollator
    from t2t_mtl.sampling import TaskStreams, build_sampler

    sizes = {"a": 10, "b": 10}
    sampler = build_sampler({"strategy": "uncertainty", "pool_per_task": 3}, sizes, seed=0)
    builder = BatchBuilder({t: _RowsTask(10) for t in sizes}, sampler, TaskStreams(sizes, seed=3),
                           Seq2SeqCollator(0, max_input_length=8, max_target_length=8), micro_batch_size=2)
    with pytest.raises(ValueError, match=r"returned shape \(6, 1\), expected \(6,\)"):
        builder.next_selected_chunk(lambda batch: torch.zeros(6, 1), {"a": 2, "b": 2})


#: the shipped strategies' params where they need some, and those that learn from validation / entropies
REQUIRED_PARAMS = {"annealed": {"epochs": 2}, "explicit": {"rates": {"a": 1, "b": 3}}}
LEARN_FROM_VALIDATION = {"bandit_softmax", "bandit_thompson", "worst_task"}
LEARN_FROM_ENTROPY = {"uncertainty_ema"}


def test_the_shipped_strategies_declare_the_signals_they_learn_from():
    # (the run's checks and the trainer read needs_validation / needs_entropy, once lists of these names)
    from t2t_mtl.sampling import build_sampler
    from t2t_mtl.sampling.registry import SHIPPED_STRATEGIES

    for strategy in SHIPPED_STRATEGIES:
        sampler = build_sampler({"strategy": strategy, **REQUIRED_PARAMS.get(strategy, {})}, {"a": 10, "b": 30},
                                seed=0, log=False)
        assert (sampler.needs_validation, sampler.needs_entropy) == (strategy in LEARN_FROM_VALIDATION,
                                                                     strategy in LEARN_FROM_ENTROPY), strategy
    for strategy in LEARN_FROM_VALIDATION:  # fed the training loss every step instead: no validation needed
        for metric, needed in (("loss", False), ("val_loss", True)):
            sampler = build_sampler({"strategy": strategy, "metric": metric}, {"a": 10, "b": 30}, seed=0, log=False)
            assert sampler.needs_validation is needed, (strategy, metric)


def test_of_the_shipped_weightings_dtp_alone_learns_from_validation():
    # (the run's checks read needs_validation, once the name 'dtp')
    from t2t_mtl.weighting.registry import METHODS, SHIPPED_METHODS

    assert {method for method in SHIPPED_METHODS if METHODS[method].needs_validation} == {"dtp"}


@pytest.mark.parametrize("sections, message", [
    ({"sampling": {"strategy": "bandit_softmax"}}, "validate_every"),
    ({"sampling": {"strategy": "worst_task"}}, "validate_every"),
    ({"weighting": {"method": "dtp"}}, "validate_every"),
    ({"evaluation": {"held_out": True, "max_exampels": 3}}, "max_exampels"),
    ({"evaluation": {"held_out": True}}, "held_out_clusters"),
    ({"sampling": {"strategy": "uncertainty", "pool_per_task": 2}, "gradient_surgery": {"method": "pcgrad"},
      "training": {"grad_accum": 3}}, "uncertainty.*gradient_surgery"),
    ({"sampling": {"strategy": "uncertainty", "pool_per_task": 1}}, "raise sampling.pool_per_task above 1"),
])
def test_signal_config_errors_name_the_key(tmp_path, tokenizer_dir, sections, message):
    from t2t_mtl.config import ConfigError
    from t2t_mtl.engine.trainer import train

    with pytest.raises(ConfigError, match=message):
        train(tiny_config(tmp_path / "run", tokenizer_dir, tmp_path / "cache", **sections))


def test_camtl_draws_a_batch_of_candidates_per_task_by_default(tmp_path, tokenizer_dir):
    # CA-MTL scores b candidates of every task and keeps b (b = the batch); the default was 1 per task, and the
    # pool size that the refusal then suggested (ceil(b / tasks) per task) kept every candidate: no selection
    from t2t_mtl.config import ConfigError, config_from_dict
    from t2t_mtl.engine.run_checks import check_run_config

    cfg = tiny_config(tmp_path / "run", tokenizer_dir, tmp_path / "cache", sampling={"strategy": "uncertainty"},
                      training={"micro_batch_size": 6})
    assert check_run_config(config_from_dict(cfg))[1]["pool_per_task"] == 6
    cfg["sampling"]["pool_per_task"] = 2  # 2 x 3 tasks = the batch: every candidate kept
    with pytest.raises(ConfigError, match="selects nothing: raise sampling.pool_per_task above 2"):
        check_run_config(config_from_dict(cfg))


def test_per_template_caps_count_the_templates_each_task_trains_with(tmp_path):
    # sampling.dataset_cap / template_cap were ignored in training: the trainer gave the sampler no template
    # counts, so no task was capped. It counts them as `mixture show` does (data.templates: the selected ones)
    from t2t_mtl.config import config_from_dict
    from t2t_mtl.engine.run_checks import check_run_config
    from t2t_mtl.sampling import build_sampler

    cfg = tiny_config(tmp_path / "run", tmp_path / "tok", tmp_path / "cache",
                      sampling={"strategy": "proportional", "dataset_cap": 100})
    sampling = check_run_config(config_from_dict(cfg))[1]
    assert sampling["templates"] == {t: 2 for t in TASKS}  # t5_prefix and instruction
    sizes = dict(zip(TASKS, [10_000, 40, 20]))  # per-template cap 100 // 2 = 50: rates 2*50, 2*40, 2*20
    probs = build_sampler(sampling, sizes, seed=0).probabilities()
    assert list(probs.values()) == pytest.approx([100 / 220, 80 / 220, 40 / 220])
    cfg["data"]["templates"] = ["t5_prefix"]
    assert check_run_config(config_from_dict(cfg))[1]["templates"] == {t: 1 for t in TASKS}


def test_all_templates_trains_each_row_in_each_template_and_caps_per_template(tmp_path, tokenizer_dir):
    # data.all_templates: T0's mixture, rows x templates examples; the sampler's T0 caps then see sizes that count a
    # row once per template (each template's seqio task has the task's rows)
    from t2t_mtl.config import config_from_dict
    from t2t_mtl.engine.checkpoint import latest_checkpoint, read_meta
    from t2t_mtl.engine.run_checks import check_run_config

    sampling = {"strategy": "proportional", "dataset_cap": 100}
    cfg = tiny_config(tmp_path / "check", tokenizer_dir, tmp_path / "cache", data={"all_templates": True},
                      sampling=sampling)
    checked = check_run_config(config_from_dict(cfg))[1]
    assert checked["templates"] == {t: 2 for t in TASKS} and checked["sizes_count_templates"] is True
    cfg["data"]["all_templates"] = False
    assert "sizes_count_templates" not in check_run_config(config_from_dict(cfg))[1]
    result, _, _ = run_tiny(tmp_path, tokenizer_dir, data={"all_templates": True}, sampling=sampling)
    assert result.step == 6
    # 64 rows (data.max_examples_per_task) in each of the 2 templates (t5_prefix, instruction; neither skips a row)
    assert read_meta(latest_checkpoint(tmp_path / "run"))["task_sizes"] == {t: 2 * 64 for t in TASKS}


@pytest.mark.parametrize("sampling", [{"strategy": "temperature", "alpha": 2.0},
                                      {"strategy": "uncertainty_ema", "alpha": 2.0, "floor": 0.0},
                                      {"strategy": "temperature", "alpha": 2.0, "cap": 60}])
def test_all_templates_rates_sum_a_rate_per_template_without_caps(tmp_path, sampling):
    # T0's mixture is one seqio task per (dataset, template): a task's rate is sum_t min(rows_t, cap) ** (1/T). Without
    # template_cap / dataset_cap the sampler saw one task of rows x templates examples, (k * rows) ** (1/T): tasks
    # with more templates were drawn k ** (1 - 1/T) times too rarely (and sampling.cap clipped the whole task)
    from engine_helpers import write_yaml_task

    from t2t_mtl.config import config_from_dict
    from t2t_mtl.engine.run_checks import check_run_config
    from t2t_mtl.sampling import build_sampler

    tasks_dir = write_yaml_task(tmp_path / "tasks", "one_template_task")  # 1 template; reverse_words has 2
    cfg = tiny_config(tmp_path / "run", tmp_path / "tok", tmp_path / "cache", sampling=sampling,
                      data={"tasks": ["reverse_words", "one_template_task"], "tasks_dir": str(tasks_dir),
                            "all_templates": True})
    rows = {"reverse_words": 100, "one_template_task": 100}
    templates = {"reverse_words": 2, "one_template_task": 1}
    sizes = {name: rows[name] * templates[name] for name in rows}  # what training counts: rows x templates
    cap = sampling.get("cap", math.inf)
    t0 = {name: templates[name] * min(rows[name], cap) ** (1 / 2.0) for name in rows}
    probs = build_sampler(check_run_config(config_from_dict(cfg))[1], sizes, seed=0).probabilities()
    assert probs == pytest.approx({name: rate / sum(t0.values()) for name, rate in t0.items()}, rel=1e-12)


def test_all_templates_rates_a_template_that_skips_rows_at_its_own_count(tmp_path, tokenizer_dir, monkeypatch):
    # was: each template was taken to hold the task's mean n / k examples; T0 rated each template's seqio task at its
    # own count, which a template that renders nothing for some rows makes smaller
    from engine_helpers import write_yaml_task

    import t2t_mtl.sampling as sampling_module
    from t2t_mtl.engine.checkpoint import latest_checkpoint, read_meta

    tasks_dir = write_yaml_task(tmp_path / "tasks", "skipping_task", rows=40)
    task_file = tasks_dir / "skipping_task.yaml"  # + a template that renders only the rows with a long answer
    task_file.write_text(task_file.read_text() + '  - name: long\n    jinja: "{{question}} ||| '
                                                 '{% if answer | length > 12 %}{{answer}}{% endif %}"\n')
    answers = [json.loads(line)["answer"] for line in (tasks_dir / "skipping_task.jsonl").read_text().splitlines()]
    long_rows = sum(len(answer) > 12 for answer in answers)
    assert len(answers) == 40 and 0 < long_rows < 40
    built = []

    def build_sampler(*args, **kwargs):
        built.append(real_build_sampler(*args, **kwargs))
        return built[-1]

    real_build_sampler = sampling_module.build_sampler
    monkeypatch.setattr(sampling_module, "build_sampler", build_sampler)
    result, _, _ = run_tiny(tmp_path, tokenizer_dir, sampling={"strategy": "temperature", "alpha": 2.0},
                            data={"tasks": ["reverse_words", "skipping_task"], "tasks_dir": str(tasks_dir),
                                  "all_templates": True})
    assert result.step == 6
    assert read_meta(latest_checkpoint(tmp_path / "run"))["task_sizes"] == {"reverse_words": 2 * 64,
                                                                           "skipping_task": 40 + long_rows}
    hand = {"reverse_words": 2 * 64 ** 0.5, "skipping_task": 40 ** 0.5 + long_rows ** 0.5}
    assert built[-1].probabilities() == pytest.approx({t: r / sum(hand.values()) for t, r in hand.items()},
                                                      rel=1e-12)


def test_configured_template_sizes_are_checked_against_the_task_sizes_not_placeholders(tmp_path):
    # sampling.template_sizes, which training fills in, given in the config: refused by the pre-data check, whose
    # placeholder sizes (1000 a task) they could not add up to; it is kept, and fits the real sizes
    from t2t_mtl.config import config_from_dict
    from t2t_mtl.engine.run_checks import check_run_config
    from t2t_mtl.engine.run_sampling import with_template_sizes
    from t2t_mtl.sampling import InvalidRateError, build_sampler

    given = {name: {"t5_prefix": 64, "instruction": 60} for name in TASKS}
    cfg = config_from_dict(tiny_config(tmp_path / "run", tmp_path / "tok", tmp_path / "cache",
                                       data={"all_templates": True},
                                       sampling={"strategy": "temperature", "alpha": 2.0, "template_sizes": given}))
    checked = with_template_sizes(cfg, check_run_config(cfg)[1], {name: {"t5_prefix": 1, "instruction": 1}
                                                                   for name in TASKS})
    assert checked["template_sizes"] == given
    assert build_sampler(checked, dict.fromkeys(TASKS, 124), seed=0).probabilities() == pytest.approx(
        dict.fromkeys(TASKS, 1 / 3))
    with pytest.raises(InvalidRateError, match="gives task 'reverse_words' 2 templates with 124 examples; it has 2 "
                                               "templates"):
        build_sampler(checked, dict.fromkeys(TASKS, 128), seed=0)


def test_a_task_the_curriculum_has_not_started_is_trained_on_not_skipped(tmp_path, tokenizer_dir):
    # was: before its start epoch a task's curriculum weight (underflowing in fp32) made a homogeneous step's loss
    # exactly 0, which the engine took for broken data: the step was skipped as "non-finite or zero loss" and
    # training.max_bad_steps such draws in a row aborted the run
    result, records, state = run_tiny(tmp_path, tokenizer_dir, training={"steps": 12, "max_bad_steps": 1},
                                      weighting={"method": "curriculum", "start_epochs": {"parity": 50},
                                                 "alpha": 0.05})
    assert "parity" in result.task_sequence and result.skipped_steps == 0 and result.step == 12
    parity = [rec for rec in records if "parity" in rec["task_loss"]]
    assert parity and all(rec["weighted_loss"] == 0.0 and rec["task_loss"]["parity"] > 0 for rec in parity)
    # the logged weights, λ_t(e) = (1/M) / (1 + exp((e'_t - e)/α)) at the epoch each step started at: parity's not
    # started, the others' 1/(2M) at epoch 0 (e'_t 0), then rising with the epoch towards 1/M (mut44: logging them
    # at epoch 0 throughout passed every test)
    assert all(rec["task_weight"]["parity"] == 0.0 for rec in records)
    for t in [t for t in TASKS if t != "parity"]:
        logged = [rec["task_weight"][t] for rec in records]
        assert logged[0] == pytest.approx(1 / (2 * len(TASKS)), rel=1e-12), t
        assert logged == sorted(set(logged)) and logged[-1] < 1 / len(TASKS), t


def test_uncertainty_weighting_follows_the_lr_schedule(tmp_path, tokenizer_dir):
    """The learned log σ² use the model's lr at each step: during warmup from lr 0 the first step leaves
    them unchanged (they had used the peak training.lr from step 1); later steps move them."""
    from t2t_mtl.weighting import build_weighting

    weighting = {"method": "uncertainty"}
    training = {"warmup": 4, "schedule": "constant", "lr": 1e-2}
    initial = build_weighting(weighting, TASKS, {t: 64 for t in TASKS}).state_dict()
    _, _, state = run_tiny(tmp_path / "one", tokenizer_dir, weighting=weighting,
                           training={**training, "steps": 1})
    for name, value in initial.items():
        assert torch.equal(state["weighting"][name].cpu(), value.cpu()), name
    _, _, state = run_tiny(tmp_path / "three", tokenizer_dir, weighting=weighting, training={**training, "steps": 3})
    assert any(not torch.equal(state["weighting"][name].cpu(), value.cpu()) for name, value in initial.items())


@pytest.mark.parametrize("sampling", [{"strategy": "worst_task"}, {"strategy": "bandit_softmax", "metric": "val_loss"}])
def test_a_non_finite_validation_loss_skips_that_tasks_sampler_update_with_a_warning(tmp_path, tokenizer_dir,
                                                                                     monkeypatch, capsys, sampling):
    # was: the sampler refused the NaN (SamplingError) and the run ended with a traceback at that validation
    from t2t_mtl.engine.validation import PeriodicValidator

    real = PeriodicValidator.__call__
    calls = []

    def diverged_at_first(self, engine):
        val_loss, val_score = real(self, engine)
        calls.append(dict(val_loss))
        if len(calls) == 1:
            val_loss = {**val_loss, "parity": float("nan")}
        return val_loss, val_score

    monkeypatch.setattr(PeriodicValidator, "__call__", diverged_at_first)
    result, records, state = run_tiny(tmp_path, tokenizer_dir, sampling=sampling,
                                      training={"validate_every": 3, "validate_examples": 4})
    assert result.step == 6 and not result.interrupted
    assert "step 3: validation loss of task(s) 'parity' is not finite (nan)" in capsys.readouterr().out
    validations = [rec for rec in records if "val_loss" in rec]
    assert validations[0]["val_loss"]["parity"] is None  # logged as null (strict JSON)
    if sampling["strategy"] == "worst_task":  # parity's first loss is the one of step 6, the others' of step 3
        extra = dict(zip(state["sampler"]["tasks"], state["sampler"]["extra"]["initial_loss"]))
        assert extra == pytest.approx({t: calls[1 if t == "parity" else 0][t] for t in TASKS})


class _Messages:
    """Stands in for a TrainLogger: keeps its messages."""

    def __init__(self):
        self.lines = []

    def message(self, text):
        self.lines.append(text)


def test_non_finite_validation_figures_of_either_kind_are_left_out_with_a_warning_each():
    from t2t_mtl.engine.signals import finite_validation

    logger = _Messages()
    results = {"val_loss": {"a": 1.0, "b": float("inf"), "c": float("nan")},
               "val_score": {"a": float("-inf"), "b": 0.5}}
    assert finite_validation(results, 7, logger) == {"val_loss": {"a": 1.0}, "val_score": {"b": 0.5}}
    skip = "the sampler skips their update this time"
    assert logger.lines == [f"warning: step 7: validation loss of task(s) 'b', 'c' is not finite (inf, nan): {skip}",
                            f"warning: step 7: validation score of task(s) 'a' is not finite (-inf): {skip}"]
    assert finite_validation({"val_loss": {"a": 2.0}}, 8, logger) == {"val_loss": {"a": 2.0}} and len(logger.lines) == 2


def test_task_means_leave_out_tasks_without_a_count_or_a_finite_mean():
    from t2t_mtl.engine.signals import task_means

    sums_and_counts = torch.tensor([3.0, 5.0, float("nan"), 1.0, 4.0, 0.0, 2.0, 0.5])  # sums of a b c d | counts
    assert task_means(sums_and_counts, ["a", "b", "c", "d"]) == {"a": 0.75, "d": 2.0}


def test_camtl_scores_each_candidate_with_its_task_token_in_front_over_the_whole_vocabulary():
    # (TE⊕ENC: the candidates are scored as they are trained, with their task token first)
    from t2t_mtl.engine.distributed import DistEnv
    from t2t_mtl.engine.signals import select_candidate_chunk
    from t2t_mtl.model import build_model

    model = build_model({"dims": {"d_model": 16, "d_kv": 4, "d_ff": 32, "num_layers": 1, "num_heads": 2}},
                        vocab_size=40).eval()
    seen = []

    def engine(**kwargs):
        seen.append(kwargs["input_ids"])
        return model(**kwargs)

    class Builder:
        task_names = ["a", "b"]

        def next_selected_chunk(self, score, sizes):
            self.sizes = sizes
            return score(batch)

    batch = {"input_ids": torch.tensor([[5, 6, 1], [7, 1, 0]]), "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
             "labels": torch.tensor([[8, 1], [9, -100]])}

    def task_tokens(b):
        return {**b, "input_ids": torch.cat([torch.tensor([[38], [39]]), b["input_ids"]], dim=1),
                "attention_mask": torch.cat([torch.ones(2, 1, dtype=torch.long), b["attention_mask"]], dim=1)}

    builder = Builder()
    env = DistEnv(0, 1, 0, torch.device("cpu"), "gloo")
    got = select_candidate_chunk(builder, _Engine(model, engine), False, env, task_tokens=task_tokens)
    assert builder.sizes == {"a": 40, "b": 40}  # every task generates text: its answer space is the vocabulary
    assert [ids.tolist() for ids in seen] == [[[38, 5, 6, 1], [39, 7, 1, 0]]]
    fronted = task_tokens(batch)
    with torch.no_grad():
        logits = model(input_ids=fronted["input_ids"], attention_mask=fronted["attention_mask"],
                       labels=batch["labels"]).logits
    probs = logits.log_softmax(-1)
    entropy = -(probs.exp() * probs).sum(-1)  # nats per target token; mean over the real ones
    mask = batch["labels"] != -100
    assert got == pytest.approx(((entropy * mask).sum(1) / mask.sum(1)).tolist(), rel=1e-5)


class _Engine:
    """What select_candidate_chunk reads of a DeepSpeed engine: `module` and a call."""

    def __init__(self, module, call):
        self.module, self.call = module, call

    def __call__(self, **kwargs):
        return self.call(**kwargs)


def test_camtl_scoring_gives_padded_target_positions_no_expert_capacity():
    # (mutation testing left it unkilled: candidate_entropies routing the decoder's padded positions, where labels
    # are -100, through a capacity-limited MoE passed every test; they would take slots real tokens are dropped for)
    from t2t_mtl.engine.signals import candidate_entropies
    from t2t_mtl.model import build_model
    from t2t_mtl.model.moe import capacity_drops

    torch.manual_seed(0)
    dims = {"d_model": 16, "d_kv": 4, "d_ff": 32, "num_layers": 1, "num_decoder_layers": 1, "num_heads": 2,
            "dropout_rate": 0.0}
    moe = {"num_experts": 4, "top_k": 1, "every": 1, "layers": "decoder", "routing": "token", "backend": "reference",
           "capacity_factor": 0.5, "min_capacity": 1}
    model = build_model({"dims": dims, "moe": moe}, vocab_size=40).train()  # (CA-MTL scores in training mode)
    ids = torch.randint(2, 40, (3, 5), generator=torch.Generator().manual_seed(1))
    labels = torch.randint(2, 40, (3, 12), generator=torch.Generator().manual_seed(2))
    labels[0, 4:], labels[1, 2:], labels[2, 7:] = -100, -100, -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    with torch.no_grad(), capacity_drops(model) as drops:
        got = candidate_entropies(_Engine(model, model), batch, False, torch.device("cpu"))
        # the reference: the same forward told by decoder_attention_mask which target positions are real (causal
        # attention: a real position never reads the padding after it)
        logits = model(input_ids=ids, attention_mask=batch["attention_mask"], labels=labels,
                       decoder_attention_mask=labels.ne(-100).long()).logits
    assert drops.dropped > 0  # (capacity is what padding would take)
    probs = logits.log_softmax(-1)
    entropy = -(probs.exp() * probs).sum(-1)
    mask = labels != -100
    assert got.tolist() == pytest.approx(((entropy * mask).sum(1) / mask.sum(1)).tolist(), rel=1e-6)


def test_a_record_logs_the_samplers_probabilities_and_the_weightings_weights_after_its_step(tmp_path, tokenizer_dir):
    # was: neither was in metrics.jsonl nor TensorBoard (the rates table was printed at whole epochs alone), so an
    # adaptive sampler's or a learned weighting's course could not be followed
    from t2t_mtl.engine.logging import training_scalars
    from t2t_mtl.sampling import build_sampler

    sampling = {"strategy": "uncertainty_ema", "lam": 1.0, "floor": 0.0, "momentum": 0.5}
    result, records, state = run_tiny(tmp_path, tokenizer_dir, sampling=sampling,
                                      weighting={"method": "uncertainty"})
    last = records[-1]
    assert last["step"] == result.step == 6  # the final checkpoint holds the state after the last logged step
    sampler = build_sampler(sampling, {t: 64 for t in TASKS}, seed=0)
    sampler.load_state_dict(state["sampler"])
    assert last["task_probability"] == pytest.approx(sampler.probabilities(), rel=1e-12)
    log_variance = state["weighting"]["log_variance"].double()
    assert last["task_weight"] == pytest.approx(dict(zip(TASKS, torch.exp(-log_variance).tolist())), rel=1e-12)
    assert len({json.dumps(r["task_probability"]) for r in records}) > 1  # they change as the sampler learns
    assert len({json.dumps(r["task_weight"]) for r in records}) > 1
    for rec in records:
        scalars = training_scalars(rec)
        for key in ("task_probability", "task_weight"):
            assert {tag: v for tag, v in scalars.items() if tag.startswith(key + "/")} == {
                f"{key}/{task}": rec[key][task] for task in TASKS}


def test_task_entropies_are_added_without_reading_the_device():
    # was: each training forward's entropies were copied to a host accumulator (two .cpu() reads and a blocking copy
    # of the task ids, every micro-batch), on a GPU reads waiting for the forward queued just before; training keeps
    # the accumulator on the logits' device, which the meta device, holding no values, stands in for here
    from t2t_mtl.engine.losses import add_task_entropies

    labels = torch.tensor([[5, -100], [5, 6], [5, 6]])
    acc = torch.zeros(4, dtype=torch.float64, device="meta")
    add_task_entropies(acc, torch.zeros(3, 2, 4, device="meta"), labels.to("meta"), torch.tensor([0, 1, 0]))
    assert acc.device.type == "meta" and acc.shape == (4,)
    host = torch.zeros(4, dtype=torch.float64)  # the same forward on the host: per task, entropies / log V | counts
    add_task_entropies(host, torch.zeros(3, 2, 4), labels, torch.tensor([0, 1, 0]))
    assert host.tolist() == [2.0, 1.0, 2.0, 1.0]


@pytest.mark.parametrize("strategy", ["bandit_softmax", "bandit_thompson"])
def test_a_record_logs_the_bandits_learned_state_after_its_step(tmp_path, tokenizer_dir, strategy):
    # was: bandit_softmax's values Q and bandit_thompson's Beta parameters were in the checkpoints alone, so the
    # bandit's course could not be plotted. Recomputed from the logged per-step training losses it learns from
    from t2t_mtl.engine.logging import training_scalars

    step = 0.3
    sampling = {"strategy": strategy, "metric": "loss", **({"step": step} if strategy == "bandit_softmax" else {})}
    result, records, state = run_tiny(tmp_path, tokenizer_dir, sampling=sampling)
    assert len(records) == result.step == 6
    q, wins, losses, last = dict.fromkeys(TASKS, 0.0), dict.fromkeys(TASKS, 0), dict.fromkeys(TASKS, 0), {}
    for rec in records:
        for task, loss in rec["task_loss"].items():
            if task in last:  # (a task's first loss is its baseline)
                reward = last[task] - loss
                q[task] = (1 - step) * q[task] + step * reward
                wins[task], losses[task] = wins[task] + (reward > 0), losses[task] + (reward <= 0)
            last[task] = loss
        if strategy == "bandit_softmax":
            expected = {"bandit_q": q}
        else:
            expected = {"bandit_alpha": {t: 1.0 + wins[t] for t in TASKS},
                        "bandit_beta": {t: 1.0 + losses[t] for t in TASKS}}
        for key, values in expected.items():
            assert rec[key] == pytest.approx(values, rel=1e-12, abs=1e-15)
            assert {tag: v for tag, v in training_scalars(rec).items() if tag.startswith(key + "/")} == {
                f"{key}/{task}": rec[key][task] for task in TASKS}
    extra = state["sampler"]["extra"]  # (the last record's is the state the final checkpoint saved)
    saved = {"bandit_q": extra.get("q")} if strategy == "bandit_softmax" else {
        "bandit_alpha": extra.get("alpha"), "bandit_beta": extra.get("beta")}
    assert {key: dict(zip(TASKS, values)) for key, values in saved.items()} == {
        key: records[-1][key] for key in saved}
    assert len({json.dumps(rec[next(iter(saved))]) for rec in records}) > 1  # (they change as the bandit learns)
