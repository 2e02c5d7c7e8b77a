"""Task relatedness: the transfer rule and study, gradient affinity, and task embeddings (TE⊕ENC)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import task_registry
from t2t_mtl.analysis import transfer
from t2t_mtl.analysis.errors import (GradientLogError, RunResultError, StudyConfigError, StudyMismatchError,
                                     TaskEmbeddingError)
from t2t_mtl.analysis.gradient_affinity import (CosineSeries, cluster_tasks, cosines_from_gram,
                                                read_cosine_log, write_gradient_affinity)
from t2t_mtl.analysis.task_embeddings import (add_task_tokens, export_task_embeddings, find_task_tokens,
                                              TaskTokens, pca_2d, prefix_task_token, prepend_task_tokens,
                                              resize_for_task_tokens, task_embedding_matrix, task_token_table)
from t2t_mtl.analysis.transfer import RunSpec, ScoreStat, analyse, benefits, harms
from t2t_mtl.analysis.transfer_study import TransferStudy

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------ rule on fixed numbers
def test_score_stat_is_mean_and_sample_std():
    stat = ScoreStat.of([50.0, 52.0, 54.0])
    assert stat.mean == pytest.approx(52.0)
    assert stat.std == pytest.approx(2.0)  # sqrt(((−2)² + 0 + 2²) / (3 − 1))
    values = [61.3, 59.9, 64.2, 60.0]
    assert ScoreStat.of(values).std == pytest.approx(float(np.std(values, ddof=1)))
    assert ScoreStat.of([7.0]).std == 0.0
    assert ScoreStat.of([1.0, 3.0]).std == pytest.approx(2 ** 0.5)  # two seeds: sqrt((1 + 1) / (2 − 1))


def test_benefit_and_harm_rule_on_fixed_numbers():
    stl = ScoreStat.of([50.0, 52.0, 54.0])  # µ 52, σ 2
    better = ScoreStat.of([60.0, 61.0, 62.0])  # µ 61, σ 1
    worse = ScoreStat.of([40.0, 41.0, 42.0])  # µ 41, σ 1
    # k = 1.5: 61 − 1.5 = 59.5 > 52 + 3 = 55
    assert benefits(better, stl, k=1.5) and not harms(better, stl, k=1.5)
    # k = 3.5: 61 − 3.5 = 57.5 > 52 + 7 = 59 is false: not significant any more
    assert not benefits(better, stl, k=3.5)
    # harms: 41 + 1.5 = 42.5 < 52 − 3 = 49
    assert harms(worse, stl, k=1.5) and not benefits(worse, stl, k=1.5)
    # k = 4: 41 + 4 = 45 < 52 − 8 = 44 is false
    assert not harms(worse, stl, k=4.0)
    # boundary: strict inequality (56 − 1.5·2 = 53 vs 50 + 1.5·2 = 53)
    assert not benefits(ScoreStat(56.0, 2.0, (56.0,)), ScoreStat(50.0, 2.0, (50.0,)), k=1.5)
    assert transfer.effect(better, stl) == "benefit" and transfer.effect(worse, stl) == "harm"
    assert transfer.effect(ScoreStat.of([52.5, 53.0]), stl) == "none"


# --------------------------------------------------------------------- study with a synthetic trainer
SYNTH_TASKS = ["a", "b", "c", "d", "e"]
SYNTH_EFFECT = {("a", "b"): 10.0, ("d", "b"): 8.0, ("c", "a"): -10.0}  # (source, target): score change
SEED_OFFSET = {0: -0.5, 1: 0.0, 2: 0.5}


def _shift(train_tasks, task) -> float:
    digest = hashlib.sha1(("|".join(sorted(train_tasks)) + "#" + task).encode()).digest()
    return (digest[0] / 255.0 - 0.5) * 0.4  # in [-0.2, 0.2]


def synthetic_run(train_tasks, test_tasks, seed, steps, base_cfg, *, work_dir):
    """Score of t trained with S: 50 + Σ_{s∈S} effect(s→t) + a small setting shift + a seed offset."""
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    (Path(work_dir) / "trained.txt").write_text(",".join(train_tasks))
    return {t: 50.0 + sum(SYNTH_EFFECT.get((s, t), 0.0) for s in train_tasks if s != t)
            + _shift(train_tasks, t) + SEED_OFFSET[seed] for t in test_tasks}


def test_analyse_finds_the_planted_relations_and_oracle_sets():
    scores = {}
    for setting in transfer.first_phase_settings(SYNTH_TASKS):
        for seed in range(3):
            spec = RunSpec.of(setting, seed)
            scores[spec] = synthetic_run(spec.train_tasks, spec.train_tasks, seed, 1, None, work_dir=Path("/tmp/x"))
    result = analyse(SYNTH_TASKS, [0, 1, 2], scores, k=1.5, with_oracle=False)
    found = {(s, t): kind for t in SYNTH_TASKS for s, kind in result.relations[t].items() if kind != "none"}
    assert found == {("a", "b"): "benefit", ("d", "b"): "benefit", ("c", "a"): "harm"}
    assert result.oracle == {"a": [], "b": ["a", "d"], "c": [], "d": [], "e": []}
    assert result.pairs["b"]["a"].mean - result.stl["b"].mean == pytest.approx(
        10.0 + _shift(("a", "b"), "b") - _shift(("b",), "b"))
    # the Oracle set of b is new (3 tasks of 5); the others equal STL and are not retrained
    assert transfer.oracle_phase_settings(SYNTH_TASKS, result.oracle) == [frozenset({"a", "b", "d"})]
    # a huge k suppresses everything
    assert all(k == "none" for r in analyse(SYNTH_TASKS, [0, 1, 2], scores, k=100.0, with_oracle=False)
               .relations.values() for k in r.values())


def test_analyse_with_oracle_needs_every_oracle_run_and_scores_it(tmp_path):
    scores = {}
    for setting in transfer.first_phase_settings(SYNTH_TASKS):
        for seed in range(3):
            spec = RunSpec.of(setting, seed)
            scores[spec] = synthetic_run(spec.train_tasks, spec.train_tasks, seed, 1, None, work_dir=tmp_path)
    assert analyse(SYNTH_TASKS, [0, 1, 2], scores, with_oracle=False).oracle_scores == {}
    # b's Oracle set {a, b, d} is no first-phase setting: its runs are missing
    with pytest.raises(RunResultError, match=r"no result for run a\+b\+d-[0-9a-f]{8}-seed0"):
        analyse(SYNTH_TASKS, [0, 1, 2], scores, with_oracle=True)
    for seed in range(3):
        spec = RunSpec.of({"a", "b", "d"}, seed)
        scores[spec] = synthetic_run(spec.train_tasks, spec.train_tasks, seed, 1, None, work_dir=tmp_path)
    oracle = analyse(SYNTH_TASKS, [0, 1, 2], scores, with_oracle=True).oracle_scores
    assert sorted(oracle) == SYNTH_TASKS
    # 50 + effect(a→b) + effect(d→b) + the setting's shift; the seed offsets −0.5, 0, 0.5 average to 0
    assert oracle["b"].mean == pytest.approx(50.0 + 10.0 + 8.0 + _shift(("a", "b", "d"), "b"))
    assert oracle["e"].mean == pytest.approx(50.0 + _shift(("e",), "e"))  # an empty Oracle set is STL


def test_first_phase_settings_cover_stl_pairs_all_and_all_but_one():
    settings = transfer.first_phase_settings(["x", "y", "z", "w"])
    assert len(settings) == 4 + 6 + 1 + 4 and len(set(settings)) == len(settings)
    assert frozenset({"x", "y", "z", "w"}) in settings and frozenset({"y", "z", "w"}) in settings
    # with 3 tasks an all-but-one set is a pair: not duplicated
    assert len(transfer.first_phase_settings(["x", "y", "z"])) == 3 + 3 + 1


def _assert_outputs(out: Path, tasks):
    data = json.loads((out / "transfer.json").read_text())
    assert data["tasks"] == tasks
    for name in ("transfer_graph.png", "transfer_heatmap.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    return data, (out / "transfer.md").read_text()


def test_study_runs_resumes_and_writes_outputs(tmp_path):
    log = []
    study = TransferStudy(SYNTH_TASKS, 3, 5, tmp_path, k=1.5, run_fn=synthetic_run)
    outcome = study.run(log=log.append)
    assert outcome.complete and not outcome.missing
    assert len(outcome.ran) == 21 * 3 + 3  # first phase + the one new Oracle set over 3 seeds
    data, table = _assert_outputs(tmp_path, SYNTH_TASKS)
    assert sorted(map(tuple, data["benefits"])) == [("a", "b"), ("d", "b")]
    assert data["harms"] == [["c", "a"]]
    assert data["oracle"]["b"]["set"] == ["a", "d"]
    assert data["oracle"]["b"]["mean"] == pytest.approx(50.0 + 18.0 + _shift(("a", "b", "d"), "b"))
    assert data["effects_vs_stl"]["oracle"]["b"] == "benefit"
    assert data["all_but_one"]["b"]["a"]["mean"] == pytest.approx(58.0 + _shift(("b", "c", "d", "e"), "b"))
    assert "↑" in table and "↓" in table and "a → b" in table and "c → a" in table
    # resume: nothing is retrained, same analysis
    again = study.run(log=log.append)
    assert again.ran == [] and again.analysis.to_dict() == outcome.analysis.to_dict()
    # a deleted result is retrained alone
    (tmp_path / "runs" / f"{RunSpec.of(['c', 'e'], 1).key}.json").unlink()
    assert study.run(log=log.append).ran == [RunSpec.of(["c", "e"], 1)]


def test_the_all_but_one_table_is_written_for_three_tasks_or_more_only(tmp_path):
    tables = {}
    for tasks in (["a", "b"], ["a", "b", "c"]):
        TransferStudy(tasks, 1, 5, tmp_path / str(len(tasks)), run_fn=synthetic_run).run(log=lambda m: None)
        tables[len(tasks)] = (tmp_path / str(len(tasks)) / "transfer.md").read_text()
    assert "## Transfer" in tables[2] and "## All-but-one" not in tables[2]
    assert "| test task | STL | −a | −b | −c |" in tables[3]


def test_study_shards_split_the_runs_and_any_shard_finishes(tmp_path):
    shard0 = TransferStudy(SYNTH_TASKS, 3, 5, tmp_path, run_fn=synthetic_run).run(shard=(0, 2), log=lambda m: None)
    assert not shard0.complete and len(shard0.ran) == 32 and len(shard0.missing) == 31
    shard1 = TransferStudy(SYNTH_TASKS, 3, 5, tmp_path, run_fn=synthetic_run).run(shard=(1, 2), log=lambda m: None)
    # shard 1 completes phase one, then runs its share (1 of 3) of the Oracle runs; shard 0 is then needed
    assert len(shard1.ran) == 31 + 1 and not shard1.complete
    final = TransferStudy(SYNTH_TASKS, 3, 5, tmp_path, run_fn=synthetic_run).run(shard=(0, 2), log=lambda m: None)
    assert final.complete and len(final.ran) == 2
    _assert_outputs(tmp_path, SYNTH_TASKS)


@pytest.mark.slow
def test_study_with_two_worker_processes(tmp_path):
    study = TransferStudy(["a", "b", "c"], 2, 3, tmp_path, run_fn=synthetic_run)
    outcome = study.run(workers=2, log=lambda m: None)
    assert outcome.complete and len(outcome.ran) == 7 * 2
    assert len(list((tmp_path / "runs").glob("*.json"))) == 14
    serial = TransferStudy(["a", "b", "c"], 2, 3, tmp_path / "serial", run_fn=synthetic_run).run(log=lambda m: None)
    assert serial.analysis.to_dict() == outcome.analysis.to_dict()


def test_study_errors_are_clear(tmp_path):
    with pytest.raises(StudyConfigError, match="at least 2 tasks"):
        TransferStudy(["a"], 3, 5, tmp_path)
    with pytest.raises(StudyConfigError, match="more than once"):
        TransferStudy(["a", "b", "a"], 3, 5, tmp_path)
    with pytest.raises(StudyConfigError, match="shard 2/2"):
        TransferStudy(["a", "b"], 1, 5, tmp_path, run_fn=synthetic_run).run(shard=(2, 2))
    TransferStudy(["a", "b"], 1, 5, tmp_path, run_fn=synthetic_run).run(log=lambda m: None)
    with pytest.raises(StudyMismatchError, match="steps"):
        TransferStudy(["a", "b"], 1, 6, tmp_path, run_fn=synthetic_run).run(log=lambda m: None)
    with pytest.raises(StudyMismatchError, match=r"run_options\.eval_examples"):
        TransferStudy(["a", "b"], 1, 5, tmp_path, run_fn=synthetic_run,
                      run_options={"eval_examples": 3}).run(log=lambda m: None)
    bad = tmp_path / "runs" / f"{RunSpec.of(['a'], 0).key}.json"
    bad.write_text("{not json")
    with pytest.raises(RunResultError, match=bad.name):
        TransferStudy(["a", "b"], 1, 5, tmp_path, run_fn=synthetic_run).run(log=lambda m: None)

    def forgetful(train_tasks, test_tasks, seed, steps, base_cfg, *, work_dir):
        return {test_tasks[0]: 1.0}

    with pytest.raises(RunResultError, match="no score for"):
        TransferStudy(["a", "b"], 1, 5, tmp_path / "f", run_fn=forgetful).run(log=lambda m: None)


def _write_task_file(folder: Path, name: str, body: str, rows: str = "rows.jsonl") -> None:
    """A YAML task file `name` over the local file `rows` (one row); `body` holds its templates and any
    preprocessors."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / rows).write_text('{"q": "x", "a": "y"}\n')
    (folder / f"{name}.yaml").write_text(f"name: {name}\nsource:\n  files: {rows}\n{body}")


PLAIN = "templates:\n  - name: plain\n    jinja: \"{{q}} ||| {{a}}\"\n"
EDITS = {  # what of task yb's file is edited: (its templates and preprocessors, its data file)
    "template": (PLAIN.replace("{{q}} |||", "Q: {{q}} |||"), "rows.jsonl"),
    "answer choices": (PLAIN + "    answer_choices: \"y ||| n\"\n", "rows.jsonl"),
    "preprocessors": (PLAIN + "preprocessors:\n  - filter: \"a != 'n'\"\n", "rows.jsonl"),
    "source": (PLAIN, "other.jsonl"),
}


def test_a_study_refuses_a_task_whose_definition_changed_since_its_runs(tmp_path):
    """Editing a study task's file between invocations was silently served the runs of the old definition."""
    tasks_dir, out = tmp_path / "tasks", tmp_path / "study"

    def study() -> TransferStudy:  # "c" is no registered task (a run function's own name): it keeps working
        task_registry.load_task_dirs(str(tasks_dir))
        return TransferStudy(["ya", "yb", "c"], 1, 5, out, run_fn=synthetic_run)

    with task_registry.isolated_registry():
        for name in ("ya", "yb"):
            _write_task_file(tasks_dir, name, PLAIN)
        assert study().run(log=lambda m: None).complete
        for what, (body, rows) in EDITS.items():
            _write_task_file(tasks_dir, "yb", body, rows)
            with pytest.raises(StudyMismatchError) as error:
                study().run(log=lambda m: None)
            message = str(error.value)
            assert "['yb']" in message and "'ya'" not in message and "another --out" in message, what
        _write_task_file(tasks_dir, "yb", PLAIN)  # reverted: the study resumes, nothing retrained
        assert study().run(log=lambda m: None).ran == []
        # a study.json written before definitions were recorded resumes, and records them from then on
        record = json.loads((out / "study.json").read_text())
        assert sorted(record.pop("task_definitions")) == ["ya", "yb"]
        (out / "study.json").write_text(json.dumps(record))
        assert study().run(log=lambda m: None).ran == []
        _write_task_file(tasks_dir, "yb", *EDITS["template"])
        with pytest.raises(StudyMismatchError, match=r"\['yb'\]"):
            study().run(log=lambda m: None)


def test_every_key_a_study_run_replaces_is_refused_as_an_override(tmp_path):
    from t2t_mtl.analysis.engine_run import _run_config, base_config_dict, refuse_study_overrides

    # what _run_config sets for every run (whatever the base config says), listed by hand
    replaced = {"data.mixture": None, "data.tasks": ["a"], "data.validation_examples": 0, "training.seed": 3,
                "training.steps": 2, "training.output_dir": str(tmp_path), "training.progress_bar": False,
                "training.checkpoint_every": 0, "training.keep_checkpoints": 1, "training.plot": False,
                "training.tensorboard": False, "evaluation.held_out": False, "evaluation.tasks": None,
                "evaluation.bigbench": None}
    cfg = _run_config(base_config_dict(), ["a"], 3, 2, tmp_path, None).to_dict()
    for key, value in replaced.items():
        section, name = key.split(".")
        assert cfg[section][name] == value, key
        with pytest.raises(StudyConfigError, match=f"the study sets {section}"):
            refuse_study_overrides([f"{key}=1"])
    refuse_study_overrides(["training.learning_rate=0.1", "training.plotting=1"])  # not replaced: allowed


def test_a_study_run_leaves_out_the_base_configs_bigbench_evaluation(tmp_path, bigbench_dir):
    # was: a base config's evaluation.bigbench kept the section on in every run (the study scores its runs itself),
    # so each run scored the BIG-bench tasks after training for nothing
    from t2t_mtl.analysis.engine_run import _run_config, base_config_dict
    from t2t_mtl.engine.validation import evaluation_plan

    base = base_config_dict()
    base["evaluation"] = {**(base.get("evaluation") or {}), "bigbench": str(bigbench_dir / "navigate")}
    with task_registry.isolated_registry():  # (a run evaluating them would register them)
        assert evaluation_plan(_run_config(base, ["parity"], 0, 2, tmp_path, None)) == ([], None)


def test_each_study_run_keeps_the_train_held_out_tasks_it_trains(tmp_path):
    # a study shares one data.train_held_out over runs of different task subsets: a run without the task is not
    # refused as training none of it (train refuses that), and a run with it trains it
    from t2t_mtl.analysis.engine_run import _run_config, base_config_dict
    from t2t_mtl.engine.run_mixture import training_rates

    base = base_config_dict(None, ["data.held_out_clusters=[]", "data.train_held_out=[compare_numbers]"])
    alone = _run_config(base, ["parity"], 0, 2, tmp_path, None)
    assert alone.data.train_held_out == [] and list(training_rates(alone)) == ["parity"]
    both = _run_config(base, ["parity", "compare_numbers"], 0, 2, tmp_path, None)
    assert both.data.train_held_out == ["compare_numbers"]
    assert list(training_rates(both)) == ["parity", "compare_numbers"]


def test_a_study_run_on_the_study_tokenizer_is_not_warned_about_tokenizer_train(tmp_path):
    from t2t_mtl.analysis.engine_run import _run_config, base_config_dict
    from t2t_mtl.engine.idle_settings import config_warnings

    # was: every run of a study on the quickstart (tokenizer.train: vocab 400) warned "tokenizer.train is set, but
    # the run loads the tokenizer of tokenizer.path ... so it has no effect", though the study trained its
    # tokenizer with exactly those options and the user set no tokenizer.path
    base = base_config_dict(None, ["training.warmup=0"])
    assert base["tokenizer"]["train"]["vocab_size"] == 400
    cfg = _run_config(base, ["parity"], 0, 2, tmp_path / "run", str(tmp_path / "tokenizer"))
    assert cfg.tokenizer.path == str(tmp_path / "tokenizer")
    assert config_warnings(cfg) == []
    named = _run_config(base_config_dict(None, ["tokenizer.path=my_tok", "training.warmup=0"]), ["parity"], 0, 2,
                        tmp_path / "run", None)  # the user's own tokenizer.path beside tokenizer.train: still warned
    assert [w for w in config_warnings(named) if w.startswith("tokenizer.train is set")]


def test_transfer_cli_refuses_untrainable_tasks_and_bad_eval_examples_before_training(tmp_path, capsys):
    from t2t_mtl.cli import main

    out = tmp_path / "study"
    common = ["affinity", "transfer", "--steps", "2", "--out", str(out)]
    # the default base config (quickstart) holds out the comparison cluster: no run could train on it
    assert main([*common, "--tasks", "parity,compare_numbers"]) == 2
    err = capsys.readouterr().err
    assert "'compare_numbers'" in err and "'comparison'" in err and "data.held_out_clusters" in err
    # (flagged held_out itself: clearing the clusters would not make it trainable, so no such hint; mutation testing:
    # the hint given for every task passed the test)
    assert "data.held_out_clusters=[]" not in err, err
    assert main([*common, "--tasks", "parity,count_word", "--set", "data.held_out_clusters=[arithmetic]"]) == 2
    assert "pass --set 'data.held_out_clusters=[]'" in capsys.readouterr().err
    for override, option in (("training.steps=500", "use --steps"), ("data.tasks=[parity]", "use --tasks"),
                             ("evaluation.max_examples=5", "use --eval-examples")):  # were silently replaced
        assert main([*common, "--tasks", "parity,count_word", "--set", override]) == 2
        err = capsys.readouterr().err
        assert "the study sets" in err and "would be ignored" in err and option in err
    assert main([*common, "--tasks", "parity,count_word", "--eval-examples", "0"]) == 2
    assert "--eval-examples must be at least 1" in capsys.readouterr().err
    # were named as the study's parameters ("steps must be >= 1"), not as the options typed
    for option in ("--steps", "--seeds", "--workers"):
        assert main([*common, "--tasks", "parity,count_word", option, "0"]) == 2
        assert capsys.readouterr().err == f"error: {option} must be at least 1, got 0\n"
    for k in ("-1", "nan", "inf"):  # was: nan refused as "k must be >= 0" (not the option), inf accepted
        assert main([*common, "--tasks", "parity,count_word", "--k", k]) == 2
        assert capsys.readouterr().err == f"error: --k must be a finite number, at least 0, got {float(k)}\n"
    # --tasks-dir registers YAML tasks (and puts them in every run's data.tasks_dir); a held_out-flagged task
    # points at data.train_held_out (was: no --tasks-dir; "pass force=True")
    from engine_helpers import write_yaml_task

    with task_registry.isolated_registry():
        tasks_dir = write_yaml_task(tmp_path / "tasks", "yaml_held", held_out=True)
        assert main([*common, "--tasks", "parity,yaml_held", "--tasks-dir", str(tasks_dir)]) == 2
        assert "pass --set 'data.train_held_out=[yaml_held]'" in capsys.readouterr().err
        # an evaluation-only task is refused as such, not pointed at data.train_held_out (which cannot help)
        write_yaml_task(tmp_path / "tasks", "yaml_eval", held_out=True, eval_only=True)
        assert main([*common, "--tasks", "parity,yaml_eval", "--tasks-dir", str(tasks_dir)]) == 2
        err = capsys.readouterr().err
        assert "'yaml_eval'" in err and "evaluation-only" in err and "train_held_out" not in err
        # a task without a template the base config's data.templates names (was: refused only by its first run,
        # after the runs of the tasks before it had trained)
        write_yaml_task(tmp_path / "tasks", "yaml_plain")
        assert main([*common, "--tasks", "parity,yaml_plain", "--tasks-dir", str(tasks_dir), "--set",
                     "data.templates=[t5_prefix]"]) == 2
        err = capsys.readouterr().err
        assert "['yaml_plain']" in err and "'t5_prefix'" in err and "data.templates" in err
    assert not out.exists()  # nothing was trained or written
    from t2t_mtl.analysis.engine_run import base_config_dict

    assert base_config_dict(None, tasks_dir=str(tasks_dir))["data"]["tasks_dir"] == str(tasks_dir)


# ---------------------------------------------------------------------------------- gradient affinity
def test_cosines_from_gram_match_direct_cosines():
    g = torch.randn(4, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = torch.nn.functional.cosine_similarity(g[:, None, :], g[None, :, :], dim=-1).numpy()
    np.testing.assert_allclose(cosines_from_gram((g @ g.T).numpy()), expected, atol=1e-12)
    gram = np.array([[1.0, 0.0], [0.0, 0.0]])
    assert np.isnan(cosines_from_gram(gram)[0, 1])


def _grouped_series(steps=20):
    """Tasks p, q share a gradient direction, r, s share another (opposed to the first), t is random."""
    rng = np.random.default_rng(0)
    tasks = ["p", "q", "r", "s", "t"]
    cos = []
    for _ in range(steps):
        u = rng.normal(size=64)
        grads = np.stack([u + 0.3 * rng.normal(size=64), u + 0.3 * rng.normal(size=64),
                          -u + 0.3 * rng.normal(size=64), -u + 0.3 * rng.normal(size=64), rng.normal(size=64) * 3])
        cos.append(cosines_from_gram(grads @ grads.T))
    return CosineSeries(tasks, np.arange(steps) * 10, np.stack(cos))


def test_gradient_clustering_recovers_the_planted_groups():
    series = _grouped_series()
    mean = series.mean()
    assert mean[0, 1] > 0.8 and mean[0, 2] < -0.8 and abs(mean[0, 4]) < 0.3
    assert series.conflict_fraction()[0, 2] == 1.0 and series.conflict_fraction()[0, 1] == 0.0
    clustering = cluster_tasks(series.tasks, mean, n_clusters=3)
    assert sorted(map(sorted, clustering.clusters())) == [["p", "q"], ["r", "s"], ["t"]]
    # default cut at distance 1 (average cosine 0): the opposed groups never merge
    default = cluster_tasks(series.tasks, mean)
    assert ["r", "s"] in default.clusters() and default.labels[0] == default.labels[1] != default.labels[2]
    # independent reference: average linkage distance between {p,q} and {r,s} = mean of the 4 distances
    from scipy.cluster.hierarchy import linkage
    d = clustering.distance
    top = linkage(d[np.triu_indices(5, 1)], method="average")[-1, 2]
    assert top == pytest.approx(clustering.linkage[-1, 2])


def test_default_cut_never_merges_orthogonal_or_unmeasured_tasks():
    """was: fcluster kept merges at exactly the threshold, so with the default 1.0 tasks whose mean cosine is
    0 (orthogonal gradients, or pairs never measured together) were reported as one cluster."""
    assert cluster_tasks(["a", "b", "c"], np.eye(3)).clusters() == [["a"], ["b"], ["c"]]
    unmeasured = np.array([[1.0, np.nan, 0.5], [np.nan, 1.0, np.nan], [0.5, np.nan, 1.0]])
    clustering = cluster_tasks(["a", "b", "c"], unmeasured)
    assert sorted(clustering.clusters()) == [["a", "c"], ["b"]]
    assert clustering.cut_height() == 1.0


def test_gradient_affinity_outputs(tmp_path):
    series = _grouped_series(steps=6)
    series.cosines[2, 0, 3] = series.cosines[2, 3, 0] = np.nan  # a pair not measured at one step
    paths = write_gradient_affinity(series, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["clustering"]["labels"]["p"] == data["clustering"]["labels"]["q"]
    assert len(data["pairs"]["p|s"]["steps"]) == 5 and len(data["pairs"]["p|q"]["steps"]) == 6
    assert data["mean_cosine"][0][3] == pytest.approx(float(np.mean(np.delete(series.cosines[:, 0, 3], 2))))
    for key in ("over_training", "heatmap", "dendrogram"):
        assert paths[key].read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(GradientLogError):
        CosineSeries(["p", "q"], np.arange(0), np.zeros((0, 2, 2)))


def test_a_run_directory_that_is_a_file_or_missing_is_named_as_such(tmp_path):
    # was: "run directory .../metrics.jsonl does not exist" for a file that exists (the log itself, given as the run)
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(GradientLogError, match=r"run directory .*metrics.jsonl is a file: pass the folder of a run"):
        read_cosine_log(tmp_path / "metrics.jsonl")
    with pytest.raises(GradientLogError, match=r"run directory .*nowhere does not exist"):
        read_cosine_log(tmp_path / "nowhere")


def _cosine_log(run, records):
    (run / "logs").mkdir(parents=True)
    (run / "logs" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def test_gradients_on_logs_that_measured_no_pair_are_refused(tmp_path, capsys):
    """was: a log in which no two tasks' gradients met in a logged step (every cross-task cosine null: short runs,
    steps that drew one task) gave a full report — blank heatmap, every task 'clustered' alone — and exit 0; a
    one-task run failed with 'clustering needs at least 2 tasks' after creating an empty --out folder."""
    from t2t_mtl.cli import main

    none_measured = _cosine_log(tmp_path / "none", [
        {"step": s, "gradient_surgery": {"tasks": ["a", "b", "c"],
                                         "grad_cosine": [[1.0, None, None], [None, None, None], [None, None, 1.0]]}}
        for s in (10, 20)])
    one_task = _cosine_log(tmp_path / "one", [{"step": 10, "gradient_surgery": {"tasks": ["a"],
                                                                                "grad_cosine": [[1.0]]}}])
    for run, message in ((none_measured, "no two tasks' gradients were measured in one logged step (2 steps logged"),
                         (one_task, "logged gradient cosines of one task (a)")):
        assert main(["affinity", "gradients", str(run)]) == 2
        err = capsys.readouterr().err
        assert message in err and str(run) in err and "Traceback" not in err, err
        assert not (run / "affinity").exists()
        with pytest.raises(GradientLogError, match=r"\(|one task"):
            write_gradient_affinity(read_cosine_log(run), tmp_path / "api")
        assert not (tmp_path / "api").exists()


def test_gradients_print_the_pairs_by_mean_cosine_and_the_clusters(tmp_path, capsys):
    """was: only the four output paths on stdout, so the affinity itself had to be read out of the JSON or plots."""
    from t2t_mtl.cli import main

    tasks = ["a", "b", "c"]
    run = _cosine_log(tmp_path / "run", [
        {"step": 10, "gradient_surgery": {"tasks": tasks, "grad_cosine": [[1.0, 0.5, -0.2], [0.5, 1.0, 0.1],
                                                                           [-0.2, 0.1, 1.0]]}},
        {"step": 20, "gradient_surgery": {"tasks": tasks, "grad_cosine": [[1.0, 0.7, 0.2], [0.7, 1.0, None],
                                                                           [0.2, None, 1.0]]}}])
    assert main(["affinity", "gradients", str(run), "--clusters", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:6] == ["mean gradient cosine over 2 logged steps, most aligned pair first:",
                         "task pair  mean cosine  steps conflicting",
                         "a / b            +0.60             0 of 2",
                         "b / c            +0.10             0 of 1",
                         "a / c            +0.00             1 of 2",
                         "clusters (2, by average linkage on 1 - mean cosine): a, b | c"]
    assert lines[6:] == [f"{name}: {run / 'affinity' / file}" for name, file in (
        ("json", "gradient_affinity.json"), ("over_training", "gradient_cosine.png"),
        ("heatmap", "gradient_cosine_heatmap.png"), ("dendrogram", "gradient_clusters.png"))]


def test_gradients_name_the_tasks_never_measured_beside_another(tmp_path, capsys):
    """A task whose gradient never met another's in a logged step has no cosine at all: it was 'clustered' alone
    as if orthogonal to every task, silently. It is now named on stderr and in the JSON."""
    from t2t_mtl.cli import main

    run = _cosine_log(tmp_path / "run", [
        {"step": 10, "gradient_surgery": {"tasks": ["a", "b", "c"],
                                          "grad_cosine": [[1.0, 0.5, None], [0.5, 1.0, None], [None, None, 1.0]]}},
        {"step": 20, "gradient_surgery": {"tasks": ["a", "b", "c"],
                                          "grad_cosine": [[1.0, 0.7, None], [0.7, 1.0, None], [None, None, None]]}}])
    assert main(["affinity", "gradients", str(run)]) == 0
    err = capsys.readouterr().err
    assert "warning: task c was never measured beside another task in the 2 logged steps" in err, err
    data = json.loads((run / "affinity" / "gradient_affinity.json").read_text())
    assert data["tasks_never_measured"] == ["c"]
    assert data["mean_cosine"][0][1] == pytest.approx(0.6) and data["mean_cosine"][0][2] is None
    assert data["clustering"]["clusters"] == [["a", "b"], ["c"]]


def test_non_finite_cosines_count_as_unmeasured(tmp_path):
    """was: an infinite cosine (a log not written by the engine, whose logs hold null) was left out of the count of
    measured steps but not of the sum, so the pair's mean came out infinite (null in the JSON)."""
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    lines = [f'{{"step": {step}, "gradient_surgery": {{"tasks": ["a", "b"], "grad_cosine": [[1.0, {value}], '
             f'[{value}, 1.0]]}}}}' for step, value in ((1, "NaN"), (2, "Infinity"), (3, "0.25"), (4, "-Infinity"))]
    (run / "logs" / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    series = read_cosine_log(run)
    assert series.mean()[0, 1] == pytest.approx(0.25) and series.conflict_fraction()[0, 1] == 0.0
    assert len(series.pair_series(0, 1)[1]) == 1


def test_mean_and_conflict_fraction_count_only_the_steps_a_pair_was_measured_at():
    """By hand: (a, b) measured at 4 steps, 2 of them negative; (a, c) at 2 steps, 1 negative; (b, c) never."""
    nan = float("nan")
    ab, ac = [-0.5, 0.2, -0.1, 0.3], [-0.4, nan, nan, 0.6]
    cosines = np.full((4, 3, 3), nan)
    for n in range(4):
        np.fill_diagonal(cosines[n], 1.0)
        cosines[n, 0, 1] = cosines[n, 1, 0] = ab[n]
        cosines[n, 0, 2] = cosines[n, 2, 0] = ac[n]
    series = CosineSeries(["a", "b", "c"], np.arange(1, 5), cosines)
    mean, conflict = series.mean(), series.conflict_fraction()
    assert mean[0, 1] == pytest.approx(-0.025) and mean[0, 2] == pytest.approx(0.1) and np.isnan(mean[1, 2])
    assert conflict[0, 1] == 0.5 and conflict[2, 0] == 0.5 and np.isnan(conflict[1, 2])
    assert np.diag(mean).tolist() == [1.0] * 3 and np.diag(conflict).tolist() == [0.0] * 3


def test_the_last_cosine_of_a_pair_is_the_last_one_measured(tmp_path):
    """By hand: (a, b) measured at every step, last 0.3; (a, c) at steps 1 and 2 only, last 0.6; (b, c) never. Was:
    the last logged step's matrix, so (a, c), not drawn at the final step, had no last cosine (null) although it
    was measured twice — while its mean and conflict fraction counted the steps it was measured at."""
    nan = float("nan")
    ab, ac = [-0.5, 0.2, -0.1, 0.3], [-0.4, 0.6, nan, nan]
    cosines = np.full((4, 3, 3), nan)
    for n in range(4):
        cosines[n, 0, 0] = cosines[n, 1, 1] = 1.0
        cosines[n, 2, 2] = 1.0 if n < 2 else nan  # c drawn at the first two steps only
        cosines[n, 0, 1] = cosines[n, 1, 0] = ab[n]
        cosines[n, 0, 2] = cosines[n, 2, 0] = ac[n]
    series = CosineSeries(["a", "b", "c"], np.arange(1, 5), cosines)
    last = json.loads(write_gradient_affinity(series, tmp_path)["json"].read_text())["last_cosine"]
    assert last == [[1.0, 0.3, 0.6], [0.3, 1.0, None], [0.6, None, 1.0]]


def test_a_cosine_record_without_a_step_is_skipped_and_one_without_its_tasks_is_named(tmp_path):
    good = {"step": 1, "tasks": ["a", "b"], "grad_cosine": [[1.0, -0.5], [-0.5, 1.0]]}
    stepless = {"gradient_surgery": {"tasks": ["a", "b"], "grad_cosine": [[1.0, 0.9], [0.9, 1.0]]}}
    log = tmp_path / "metrics.jsonl"
    log.write_text(json.dumps(good) + "\n" + json.dumps(stepless) + "\n")
    series = read_cosine_log(tmp_path)
    assert series.steps.tolist() == [1] and series.cosines[0, 0, 1] == -0.5
    log.write_text(json.dumps(good) + "\n" + json.dumps({"step": 2, "grad_cosine": [[1.0]]}) + "\n")
    with pytest.raises(GradientLogError, match=r"metrics.jsonl:2: grad_cosine must be a \[T\]\[T\] matrix"):
        read_cosine_log(tmp_path)
    log.write_text(json.dumps({**good, "grad_cosine": [[1.0, 0.5]]}) + "\n")
    with pytest.raises(GradientLogError, match=r"metrics.jsonl:1: .*got tasks \['a', 'b'\] and 1 rows"):
        read_cosine_log(tmp_path)


def test_cosines_logged_by_gradient_surgery_are_read_back(tmp_path):
    """GradientSurgery.stats() logged through the engine's TrainLogger round-trips to the true cosines."""
    from t2t_mtl.engine.logging import TrainLogger
    from t2t_mtl.gradients.surgery import GradientSurgery

    torch.manual_seed(0)
    model = torch.nn.Linear(6, 1)
    tasks = ["up", "up2", "down"]
    targets = {"up": 1.0, "up2": 1.0, "down": -1.0}
    surgery = GradientSurgery({"method": "pcgrad"}, list(model.parameters()), tasks)
    logger = TrainLogger(tmp_path / "logs", total_steps=4, start_step=0, log_every=1, enabled=True,
                         progress_bar=False)
    expected = []
    for step in range(1, 5):
        x = torch.randn(8, 6)
        grads = []
        for task in tasks:
            with surgery.accumulate(task):
                torch.nn.functional.mse_loss(model(x).squeeze(1), torch.full((8,), targets[task])).backward()
            grads.append(surgery.row(task).clone())
        g = torch.stack(grads).double()
        expected.append(torch.nn.functional.cosine_similarity(g[:, None], g[None], dim=-1).numpy())
        surgery.weights()
        logger.step(step, 1.0, task_loss={}, lr=0.1, skipped_total=0,
                    extra={"gradient_surgery": surgery.stats()})
        surgery.zero_()
    logger.close()
    series = read_cosine_log(tmp_path)
    assert series.tasks == tasks and series.steps.tolist() == [1, 2, 3, 4]
    from t2t_mtl.engine.logging import training_scalars  # (what TensorBoard and W&B get; was: none of these)

    record = json.loads((tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()[-1])
    norms = torch.stack(grads).double().norm(dim=1).tolist()
    assert {tag: value for tag, value in training_scalars(record).items() if tag.startswith("grad_")} == pytest.approx({
        "grad_norm/up": norms[0], "grad_norm/up2": norms[1], "grad_norm/down": norms[2],
        "grad_cosine/up|up2": expected[-1][0, 1], "grad_cosine/up|down": expected[-1][0, 2],
        "grad_cosine/up2|down": expected[-1][1, 2]}, rel=1e-5)
    absent = {"tasks": tasks, "grad_norms": [None, 2.0, 3.0], "grad_cosine": [[None] * 3, [None, 1.0, -0.5],
                                                                           [None, -0.5, 1.0]], "weights": None}
    assert {tag: value for tag, value in training_scalars({**record, "gradient_surgery": absent}).items()
            if tag.startswith("grad_")} == {"grad_norm/up2": 2.0, "grad_norm/down": 3.0, "grad_cosine/up2|down": -0.5}
    np.testing.assert_allclose(series.cosines, np.stack(expected), atol=1e-5)
    assert series.mean()[0, 2] < 0 < series.mean()[0, 1]
    paths = write_gradient_affinity(series, tmp_path / "affinity")
    assert json.loads(paths["json"].read_text())["tasks"] == tasks
    from t2t_mtl.cli import main

    assert main(["affinity", "gradients", str(tmp_path), "--out", str(tmp_path / "cli"), "--clusters", "2"]) == 0
    clustering = json.loads((tmp_path / "cli" / "gradient_affinity.json").read_text())["clustering"]
    assert sorted(map(sorted, clustering["clusters"])) == [["down"], ["up", "up2"]]
    assert (clustering["n_clusters"], clustering["threshold"]) == (2, None)  # was: threshold 1.0, which cut nothing
    assert json.loads(paths["json"].read_text())["clustering"]["threshold"] == 1.0
    for count in ("0", "-1"):  # not one cluster (scipy's cut for 0), nor one per task (for -1)
        assert main(["affinity", "gradients", str(tmp_path), "--out", str(tmp_path / "bad"), "--clusters", count]) == 2
        assert not (tmp_path / "bad").exists()
    # was: --threshold accepted and silently ignored beside --clusters
    assert main(["affinity", "gradients", str(tmp_path), "--out", str(tmp_path / "bad"), "--clusters", "2",
                 "--threshold", "0.5"]) == 2
    assert not (tmp_path / "bad").exists()
    for threshold in ("nan", "0", "-1", "inf", "2.5"):  # were: every task its own cluster (inf, 2.5: one), no error
        assert main(["affinity", "gradients", str(tmp_path), "--out", str(tmp_path / "bad"), "--threshold",
                     threshold]) == 2
        assert not (tmp_path / "bad").exists()
    # the command's cut: 1.0 by default, up to 2 (mutation testing: another default, or 2 refused, passed the test)
    for threshold, cut in ((None, 1.0), ("2", 2.0)):
        out = tmp_path / f"cut-{threshold}"
        assert main(["affinity", "gradients", str(tmp_path), "--out", str(out),
                     *(["--threshold", threshold] if threshold else [])]) == 0
        assert json.loads((out / "gradient_affinity.json").read_text())["clustering"]["threshold"] == cut
    assert main(["affinity", "gradients", str(tmp_path / "missing")]) == 2
    with pytest.raises(GradientLogError, match="gradient_surgery"):
        (tmp_path / "plain" / "logs").mkdir(parents=True)
        (tmp_path / "plain" / "logs" / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
        read_cosine_log(tmp_path / "plain")


def test_a_cosine_record_a_crash_cut_short_is_left_out(tmp_path):
    # was: the last record of a killed run's metrics.jsonl, cut short mid-write, made read_cosine_log (and
    # `t2t-mtl affinity gradients`) refuse the whole log; a corrupt line before the end still does
    logs = tmp_path / "logs"
    logs.mkdir()
    record = {"step": 1, "gradient_surgery": {"tasks": ["a", "b"], "grad_cosine": [[1.0, 0.5], [0.5, 1.0]]}}
    whole = json.dumps(record) + "\n" + json.dumps({**record, "step": 2}) + "\n"
    (logs / "metrics.jsonl").write_text(whole + json.dumps({**record, "step": 3})[:40])
    assert read_cosine_log(tmp_path).steps.tolist() == [1, 2]
    (logs / "metrics.jsonl").write_text(json.dumps(record)[:40] + "\n" + whole)
    with pytest.raises(GradientLogError, match="metrics.jsonl:1 is not valid JSON"):
        read_cosine_log(tmp_path)


# ------------------------------------------------------------------------------------ task embeddings
@pytest.fixture
def t5_tokenizer(t5_tokenizer_dir):
    from transformers import T5Tokenizer

    return T5Tokenizer.from_pretrained(str(t5_tokenizer_dir))


def _tiny_t5(vocab_size):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config(vocab_size=vocab_size, d_model=16, d_ff=32, num_layers=1,
                                               num_heads=2, d_kv=8, decoder_start_token_id=0))


def test_task_tokens_are_added_once_and_resize_the_model(t5_tokenizer):
    tok = t5_tokenizer
    base = len(tok)
    ids = add_task_tokens(tok, ["sum", "reverse", "glue/sst2"])
    assert sorted(ids.values()) == [base, base + 1, base + 2]
    assert add_task_tokens(tok, ["sum", "reverse", "glue/sst2"]) == ids and len(tok) == base + 3
    assert find_task_tokens(tok) == ids
    assert tok("<task:sum> hi").input_ids[0] == ids["sum"]
    model = _tiny_t5(base)
    assert resize_for_task_tokens(model, tok) == base + 3
    assert model.get_input_embeddings().weight.shape[0] == base + 3 and model.config.vocab_size == base + 3
    big = _tiny_t5(base + 28)
    assert resize_for_task_tokens(big, tok) == base + 28  # never shrinks
    with pytest.raises(TaskEmbeddingError, match="whitespace"):
        add_task_tokens(tok, ["two words"])
    with pytest.raises(TaskEmbeddingError, match="more than once"):
        add_task_tokens(tok, ["x", "x"])


def test_prepend_task_tokens_to_a_batch():
    table = task_token_table(["a", "b", "c"], {"a": 100, "b": 101, "c": 102})
    batch = {"input_ids": torch.tensor([[5, 6, 1, 0], [7, 1, 0, 0]]),
             "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]),
             "labels": torch.tensor([[3, 1], [4, 1]]), "task_ids": torch.tensor([2, 0])}
    out = prepend_task_tokens(batch, table)
    assert out["input_ids"].tolist() == [[102, 5, 6, 1, 0], [100, 7, 1, 0, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]]
    assert out["labels"] is batch["labels"] and batch["input_ids"].shape == (2, 4)
    with pytest.raises(TaskEmbeddingError, match="outside"):
        prepend_task_tokens({**batch, "task_ids": torch.tensor([3, 0])}, table)
    with pytest.raises(TaskEmbeddingError, match="no task token"):
        task_token_table(["a", "z"], {"a": 1})


def test_text_prefix_and_id_prepend_agree(t5_tokenizer, tmp_path):
    from t2t_mtl.tokenizer import train_tokenizer

    trained = train_tokenizer([f"reverse the words {i} apple pear plum" for i in range(200)], tmp_path / "tok",
                              vocab_size=60)
    for tok in (t5_tokenizer, trained):
        ids = add_task_tokens(tok, ["sum", "reverse"])
        texts = ["reverse: apple pear", "sum 3 4"]
        enc = tok(texts, padding=True, return_tensors="pt")
        batch = {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask, "task_ids": torch.tensor([1, 0])}
        via_ids = prepend_task_tokens(batch, task_token_table(["sum", "reverse"], ids))
        via_text = tok([prefix_task_token(texts[0], "reverse"), prefix_task_token(texts[1], "sum")], padding=True,
                       return_tensors="pt")
        assert via_ids["input_ids"].tolist() == via_text.input_ids.tolist()
        assert via_ids["attention_mask"].tolist() == via_text.attention_mask.tolist()


def test_task_tokens_glue_for_the_engine(t5_tokenizer):
    tokens = TaskTokens(t5_tokenizer, ["reverse", "sum"])
    model = _tiny_t5(min(tokens.token_ids.values()))
    assert tokens.resize(model) == len(t5_tokenizer)
    batch = {"input_ids": torch.tensor([[9, 1]]), "attention_mask": torch.tensor([[1, 1]]),
             "task_ids": torch.tensor([1])}
    assert tokens(batch)["input_ids"].tolist() == [[tokens.token_ids["sum"], 9, 1]]
    assert tokens.prefix("a b", "reverse") == "<task:reverse> a b"
    with pytest.raises(TaskEmbeddingError, match="no task token"):
        tokens.prefix("a b", "unseen")


def test_pca_2d_matches_sklearn():
    from sklearn.decomposition import PCA

    x = np.random.default_rng(1).normal(size=(6, 10))
    coords, ratio = pca_2d(x)
    ref = PCA(n_components=2).fit(x)
    ref_coords = ref.transform(x)
    for c in range(2):  # PCA components are defined up to sign
        sign = np.sign(coords[:, c] @ ref_coords[:, c])
        np.testing.assert_allclose(coords[:, c], sign * ref_coords[:, c], atol=1e-10)
    np.testing.assert_allclose(ratio, ref.explained_variance_ratio_, atol=1e-10)
    two, _ = pca_2d(x[:2])
    assert two.shape == (2, 2) and np.allclose(two[:, 1], 0.0)


def test_task_embeddings_learned_and_exported(t5_tokenizer, tmp_path):
    tok = t5_tokenizer
    ids = add_task_tokens(tok, ["sum", "reverse", "glue/sst2"])
    model = _tiny_t5(min(ids.values()))
    resize_for_task_tokens(model, tok)
    names, before = task_embedding_matrix(model, find_task_tokens(tok))
    table = task_token_table(names, ids)
    batch = {"input_ids": torch.tensor([[21820, 296, 1], [21820, 296, 1]]),
             "attention_mask": torch.ones(2, 3, dtype=torch.long),
             "labels": torch.tensor([[4, 1], [5, 1]]), "task_ids": torch.tensor([0, 1])}
    optim = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = model(**{k: v for k, v in prepend_task_tokens(batch, table).items() if k != "task_ids"}).loss
    loss.backward()
    optim.step()
    _, after = task_embedding_matrix(model, find_task_tokens(tok))
    moved = (after - before).norm(dim=1)
    # the tokens in the batch learn through the encoder; the absent one only through the tied LM head's softmax
    assert moved[0] > 100 * moved[2] and moved[1] > 100 * moved[2]
    paths = export_task_embeddings(model, tok, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["tasks"] == names and len(data["pca_2d"]) == 3
    np.testing.assert_allclose(data["embeddings"], after.numpy(), atol=1e-6)
    assert paths["plot"].read_bytes()[:8] == PNG_MAGIC
    # the CLI reads an exported model folder (model + tokenizer with the task tokens)
    from t2t_mtl.cli import main

    model.save_pretrained(tmp_path / "hf")
    tok.save_pretrained(tmp_path / "hf")
    assert main(["affinity", "embeddings", str(tmp_path / "hf"), "--out", str(tmp_path / "cli")]) == 0
    exported = json.loads((tmp_path / "cli" / "task_embeddings.json").read_text())
    np.testing.assert_allclose(exported["embeddings"], after.numpy(), atol=1e-6)
    assert exported["tasks"] == names and (tmp_path / "cli" / "task_embeddings.png").is_file()


def test_a_model_without_task_embeddings_is_named_as_such(t5_tokenizer_dir, tmp_path):
    # was: "found 0 task token(s) ([]) in the tokenizer" for a run trained without model.task_embeddings
    from t2t_mtl.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(t5_tokenizer_dir)  # (its own: the session's t5_tokenizer gets task tokens elsewhere)
    model = _tiny_t5(len(tokenizer))
    with pytest.raises(TaskEmbeddingError) as raised:
        export_task_embeddings(model, tokenizer, tmp_path)
    assert str(raised.value) == ("the model has no task embeddings (its tokenizer holds no <task:NAME> token): train "
                                 "with `model.task_embeddings: true` on at least 2 tasks")
    add_task_tokens(tokenizer, ["sum"])
    with pytest.raises(TaskEmbeddingError) as raised:
        export_task_embeddings(model, tokenizer, tmp_path)
    assert str(raised.value) == ("the model has the task embedding of one task only ('sum'), nothing to compare it "
                                 "with: train with `model.task_embeddings: true` on at least 2 tasks")
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------ end to end on procedural tasks
E2E_TASKS = ["parity", "list_contains", "count_word"]  # rank classification ×2, generation
TINY_OVERRIDES = [
    "model.dims={d_model: 32, d_kv: 8, d_ff: 64, num_layers: 1, num_decoder_layers: 1, num_heads: 2, "
    "dropout_rate: 0.0}",
    "tokenizer.train={vocab_size: 200, max_examples_per_task: 100}",
    "data.max_examples_per_task=64", "data.max_input_length=48", "data.max_target_length=6",
    "training.micro_batch_size=8", "training.precision=fp32", "training.warmup=1", "training.lr=3.0e-3",
    "sampling.strategy=temperature",
]


def test_affinity_commands_refuse_an_out_that_is_a_file(tmp_path, capsys):
    """was: a raw NotADirectoryError / FileExistsError traceback (the embeddings after loading the model)."""
    from t2t_mtl.cli import main

    taken = tmp_path / "plot.png"
    taken.write_text("")
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    (run / "logs" / "metrics.jsonl").write_text(json.dumps(
        {"step": 1, "gradient_surgery": {"tasks": ["a", "b"], "grad_cosine": [[1.0, 0.5], [0.5, 1.0]]}}) + "\n")
    for command in (["transfer", "--tasks", "parity,count_word", "--steps", "1"], ["gradients", str(run)],
                    ["embeddings", str(run)]):
        assert main(["affinity", *command, "--out", str(taken)]) == 2, command
        err = capsys.readouterr().err
        assert f"--out {taken}" in err and "is not a folder" in err, (command, err)
    assert taken.is_file() and not (run / "affinity").exists()


def test_affinity_outputs_that_cannot_be_written_are_a_one_line_error(tmp_path, t5_tokenizer_dir, capsys,
                                                                      locked_folder):
    """was: the PermissionError's traceback and exit code 1 (the embeddings after loading the model), against the
    one exit-code rule (bad input: 2, one line naming it)."""
    from transformers import T5ForConditionalGeneration

    from t2t_mtl.cli import main
    from t2t_mtl.model import t5_config_from_dims
    from t2t_mtl.tokenizer import load_tokenizer

    run = _cosine_log(tmp_path / "run", [
        {"step": 1, "gradient_surgery": {"tasks": ["a", "b"], "grad_cosine": [[1.0, 0.5], [0.5, 1.0]]}}])
    tokenizer = load_tokenizer(t5_tokenizer_dir)  # (a copy of its own: task tokens are added to it)
    add_task_tokens(tokenizer, ["a", "b"])
    model = T5ForConditionalGeneration(t5_config_from_dims(
        {"d_model": 8, "d_kv": 4, "d_ff": 8, "num_layers": 1, "num_heads": 2}, len(tokenizer)))
    model.save_pretrained(tmp_path / "te")
    tokenizer.save_pretrained(tmp_path / "te")
    out = tmp_path / locked_folder / "affinity"
    for command, what in ((["gradients", str(run)], "the gradient affinity"),
                          (["embeddings", str(tmp_path / "te")], "the task embeddings"),
                          (["transfer", "--tasks", "parity,count_word", "--steps", "1"], "the study")):
        assert main(["affinity", *command, "--out", str(out)]) == 2, command
        err = capsys.readouterr().err
        assert f"error: --out {out}: {what} could not be written" in err and "Permission denied" in err, err
        assert "Traceback" not in err
    assert main(["affinity", "embeddings", str(tmp_path / "te"), "--out", str(tmp_path / "emb")]) == 0
    assert json.loads((tmp_path / "emb" / "task_embeddings.json").read_text())["tasks"] == ["a", "b"]


def test_transfer_cli_rejects_unknown_tasks_before_training(tmp_path, capsys):
    from t2t_mtl.cli import main

    assert main(["affinity", "transfer", "--tasks", "parity,parity_typo", "--steps", "2", "--out",
                 str(tmp_path / "s")]) == 2
    assert "parity_typo" in capsys.readouterr().err and not (tmp_path / "s").exists()


def test_transfer_cli_names_a_bad_data_dir_option_before_the_study_starts(tmp_path, capsys):
    # was: the study folder and tokenizer made, the first run trained until "config key 'data.data_dir' names a data
    # directory ..., which does not exist" (a key the command line never named)
    from t2t_mtl.cli import main

    missing = tmp_path / "no_data"
    assert main(["affinity", "transfer", "--tasks", "parity,count_word", "--steps", "1", "--data-dir", str(missing),
                 "--out", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err == (f"error: --data-dir {missing} does not exist: name the folder holding "
                                       f"<hub path>/<config or default>/<split>.jsonl\n")
    assert not (tmp_path / "s").exists()


def test_shards_started_together_share_one_study_tokenizer(tmp_path, monkeypatch):
    """Another shard moves its tokenizer into place while this one trains: this one keeps that tokenizer."""
    import shutil

    import t2t_mtl.tokenizer
    from t2t_mtl.analysis.engine_run import base_config_dict, study_tokenizer

    task_registry.load_builtin_tasks()
    cfg = base_config_dict(None, ["tokenizer.train.max_examples_per_task=20", "tokenizer.train.vocab_size=100"])
    real = t2t_mtl.tokenizer.train_tokenizer

    def train_while_another_shard_finishes(texts, out_dir, **kwargs):
        tokenizer = real(texts, out_dir, **kwargs)
        shutil.copytree(out_dir, tmp_path / "tokenizer")  # the other shard's (identical) tokenizer, first in place
        return tokenizer

    monkeypatch.setattr(t2t_mtl.tokenizer, "train_tokenizer", train_while_another_shard_finishes)
    assert study_tokenizer(cfg, ["parity", "count_word"], tmp_path) == str((tmp_path / "tokenizer").resolve())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer"]  # no staging folder left behind


def test_a_study_refuses_a_pretrained_models_own_tokenizer_that_training_refuses(tmp_path, t5_tokenizer_dir):
    # was: the study copied the model's own tokenizer into <study>/tokenizer unchecked, and each run then stopped in
    # train() on "tokenizer.path '<study>/tokenizer' has pad_token_id 0", a key the base config never set
    import re

    from transformers import T5Config

    from t2t_mtl.analysis.engine_run import base_config_dict, study_tokenizer
    from t2t_mtl.config import ConfigError, config_from_dict
    from t2t_mtl.engine.trainer import train
    from t2t_mtl.tokenizer import load_tokenizer

    model = tmp_path / "model"  # T5's vocabulary, but a config padding with id 3
    T5Config(vocab_size=32128, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2,
             pad_token_id=3).save_pretrained(model)
    load_tokenizer(t5_tokenizer_dir).save_pretrained(model)
    base = base_config_dict(None, ["data.mixture=null", "data.tasks=[parity, count_word]", "training.num_threads=1"])
    base["model"] = {**base["model"], "name_or_path": str(model), "dims": None}
    message = rf"^the model's own tokenizer has pad_token_id 0, but model\.name_or_path '{re.escape(str(model))}' has 3"
    task_registry.load_builtin_tasks()
    with pytest.raises(ConfigError, match=message):
        study_tokenizer(base, ["parity", "count_word"], tmp_path / "study")
    assert not (tmp_path / "study" / "tokenizer").exists()
    with pytest.raises(ConfigError, match=message):
        train(config_from_dict({**base, "training": {**base["training"], "output_dir": str(tmp_path / "run")}}))


def test_a_study_checks_a_configured_or_cached_tokenizer_before_its_first_run(tmp_path, t5_tokenizer_dir):
    # was: the base config's tokenizer.path and a <study>/tokenizer an earlier invocation cached went to the runs
    # unchecked, each run's train() refusing them ("run ... failed; ... rerun the same command to resume")
    import re

    from transformers import T5Config

    from t2t_mtl.analysis.engine_run import base_config_dict, study_tokenizer
    from t2t_mtl.analysis.transfer_study import prepare_run_setting
    from t2t_mtl.config import ConfigError
    from t2t_mtl.tokenizer import load_tokenizer

    model = tmp_path / "model"  # a config padding with id 3; T5's tokenizer pads with 0
    T5Config(vocab_size=32128, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2,
             pad_token_id=3).save_pretrained(model)
    load_tokenizer(t5_tokenizer_dir).save_pretrained(model)
    base = base_config_dict(None, ["data.mixture=null", "data.tasks=[parity, count_word]", "training.num_threads=1"])
    base["model"] = {**base["model"], "name_or_path": str(model), "dims": None}
    configured = {**base, "tokenizer": {**base["tokenizer"], "path": str(t5_tokenizer_dir)}}
    tasks = ["parity", "count_word"]
    task_registry.load_builtin_tasks()

    def never(*args, **kwargs):
        raise AssertionError("a run started")

    study = TransferStudy(tasks, 1, 1, tmp_path / "configured", base_cfg=configured, run_fn=never,
                          prepare_fn=prepare_run_setting)
    with pytest.raises(ConfigError, match=rf"^tokenizer\.path '{re.escape(str(t5_tokenizer_dir))}' has pad_token_id "
                                          rf"0, but model\.name_or_path '{re.escape(str(model))}' has 3"):
        study.run(log=lambda line: None)
    cached = (tmp_path / "cached" / "tokenizer").resolve()
    load_tokenizer(t5_tokenizer_dir).save_pretrained(cached)  # (as if an earlier invocation had prepared it)
    with pytest.raises(ConfigError, match=rf"^the study's tokenizer {re.escape(str(cached))}, prepared by an earlier "
                                          rf"invocation, fails a run's check: tokenizer\.path .* has pad_token_id 0, "
                                          rf".*; remove {re.escape(str(cached))} to prepare it again"):
        study_tokenizer(base, tasks, tmp_path / "cached")
    fine = {**configured, "model": base_config_dict()["model"]}  # (a model from dims takes the tokenizer's ids)
    assert study_tokenizer(fine, tasks, tmp_path / "fine") is None


def test_a_study_run_loads_its_checkpoint_for_scoring_without_transformers_bars(tmp_path, t5_tokenizer_dir, capsys,
                                                                              monkeypatch):
    # was: every run of a transfer study drew 'Loading weights: 100%|...|' when its checkpoint was loaded to be
    # scored, though the run's training and evaluation bars are off
    from types import SimpleNamespace

    from transformers.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    import t2t_mtl.analysis.engine_run as engine_run
    from t2t_mtl.evaluation.checkpoint import load_checkpoint
    from t2t_mtl.tokenizer import load_tokenizer
    from t2t_mtl.transformers_progress_bars import HUB_SWITCH
    from test_predict import _dense

    tokenizer = load_tokenizer(t5_tokenizer_dir)
    model = tmp_path / "model"  # (stands for the run's checkpoint: the scoring loads it as it would the run's)
    _dense(tokenizer).save_pretrained(model)
    tokenizer.save_pretrained(model)
    capsys.readouterr()
    monkeypatch.delenv(HUB_SWITCH, raising=False)
    monkeypatch.setattr(engine_run, "_single_process_env", lambda: None)
    monkeypatch.setattr("t2t_mtl.engine.trainer.train",
                        lambda cfg, resume: SimpleNamespace(interrupted=False, checkpoint=model, step=1))
    monkeypatch.setattr("t2t_mtl.evaluation.checkpoint.load_checkpoint", lambda path: load_checkpoint(model))
    (tmp_path / "run").mkdir()  # (the training would have made it)
    task_registry.load_builtin_tasks()
    shown = is_progress_bar_enabled()
    enable_progress_bar()
    try:
        scores = engine_run.train_and_score(["parity"], ["parity"], 0, 1, engine_run.base_config_dict(),
                                            tmp_path / "run", eval_examples=2)
        assert is_progress_bar_enabled()  # (shown again after)
    finally:
        (enable_progress_bar if shown else disable_progress_bar)()
    assert set(scores) == {"parity"}
    assert "Loading weights" not in capsys.readouterr().err


@pytest.mark.slow
def test_transfer_study_end_to_end_on_procedural_tasks(tmp_path):
    """`t2t-mtl affinity transfer` trains every setting with the engine, scores it, and writes all outputs."""
    from t2t_mtl.cli import main

    out = tmp_path / "study"
    args = ["affinity", "transfer", "--tasks", ",".join(E2E_TASKS), "--seeds", "2", "--steps", "3", "--out",
            str(out), "--eval-examples", "4", *[f"--set={o}" for o in TINY_OVERRIDES]]
    assert main(args) == 0
    data, table = _assert_outputs(out, E2E_TASKS)
    runs = sorted((out / "runs").glob("*.json"))
    oracle_sets = {frozenset([t, *data["oracle"][t]["set"]]) for t in E2E_TASKS}
    expected = {*transfer.first_phase_settings(E2E_TASKS), *oracle_sets}
    assert len(runs) == 2 * len(expected)
    for path in runs:
        result = json.loads(path.read_text())
        assert set(result["scores"]) == set(result["train_tasks"])
        assert all(0.0 <= v <= 100.0 for v in result["scores"].values())
        assert (out / "runs" / path.stem / "eval.json").is_file()
    # the table's numbers are the runs' scores: STL of parity = mean ± sample std over the two seeds
    stl = [json.loads((out / "runs" / f"{RunSpec.of(['parity'], s).key}.json").read_text())["scores"]["parity"]
           for s in (0, 1)]
    assert data["stl"]["parity"]["mean"] == pytest.approx(float(np.mean(stl)))
    assert data["stl"]["parity"]["std"] == pytest.approx(float(np.std(stl, ddof=1)))
    assert f"{np.mean(stl):.2f} ± {np.std(stl, ddof=1):.2f}" in table
    assert (out / "tokenizer" / "tokenizer_config.json").is_file()  # one tokenizer shared by every run
    assert not list(out.glob("runs/*/train/checkpoints"))  # deleted once scored (no --keep-checkpoints)
    # resuming with another k retrains nothing already stored; relations follow the rule on the stored µ, σ
    stamps = {p: p.stat().st_mtime_ns for p in runs}
    assert main(args + ["--k", "0.5", "--keep-checkpoints"]) == 0  # neither changes the study's identity
    data = json.loads((out / "transfer.json").read_text())
    assert data["k"] == 0.5
    for t in E2E_TASKS:
        for s in E2E_TASKS:
            if s != t:
                pair, stl = data["pairs"][t][s], data["stl"][t]
                up = pair["mean"] - 0.5 * pair["std"] > stl["mean"] + 0.5 * stl["std"]
                down = pair["mean"] + 0.5 * pair["std"] < stl["mean"] - 0.5 * stl["std"]
                assert data["relations"][t][s] == ("benefit" if up else "harm" if down else "none")
    assert {p: p.stat().st_mtime_ns for p in runs} == stamps


@pytest.mark.slow
def test_gradient_affinity_from_a_training_run_with_gradient_surgery(tmp_path):
    """Training with gradient surgery logs per-task gradient cosines; `affinity gradients` turns them into
    the cosine plot, heatmap, dendrogram and clustering."""
    from t2t_mtl.cli import main
    from t2t_mtl.engine.trainer import train
    from t2t_mtl.analysis.engine_run import base_config_dict

    cfg = base_config_dict(None, [*TINY_OVERRIDES, "data.validation_examples=0", "training.steps=2",
                                  "training.log_every=1", "training.grad_accum=6", "training.progress_bar=false",
                                  "training.tensorboard=false", "training.plot=false", "training.precision=fp32",
                                  "sampling.mode=homogeneous", "gradient_surgery={method: pcgrad}",
                                  f"training.output_dir={tmp_path / 'run'}"])
    cfg["data"].update(mixture=None, tasks=E2E_TASKS)
    train(cfg)
    series = read_cosine_log(tmp_path / "run")
    assert series.tasks == E2E_TASKS and len(series.steps) >= 1
    finite = series.cosines[np.isfinite(series.cosines)]
    assert finite.size and np.all(np.abs(finite) <= 1 + 1e-6)
    assert main(["affinity", "gradients", str(tmp_path / "run")]) == 0
    data = json.loads((tmp_path / "run" / "affinity" / "gradient_affinity.json").read_text())
    assert sorted(t for c in data["clustering"]["clusters"] for t in c) == sorted(E2E_TASKS)


def test_a_task_never_measured_stays_alone_under_any_cut(tmp_path):
    """was: a never-measured task was clustered as if orthogonal to every task (distance 1), so a --threshold above 1
    or a --clusters count merged it into a cluster although the CLI and README say it is clustered alone; it is now
    left out of the tree, one cluster of its own, and --clusters counts it as one."""
    nan = np.nan
    mean = np.array([[1.0, -0.6, 0.2, nan], [-0.6, 1.0, 0.1, nan], [0.2, 0.1, 1.0, nan], [nan, nan, nan, 1.0]])
    tasks = ["a", "b", "c", "z"]
    assert cluster_tasks(tasks, mean, threshold=1.5).clusters() == [["a", "b", "c"], ["z"]]
    assert cluster_tasks(tasks, mean, n_clusters=2).clusters() == [["a", "b", "c"], ["z"]]
    assert cluster_tasks(tasks, mean, n_clusters=3).clusters() == [["a", "c"], ["b"], ["z"]]
    clustering = cluster_tasks(tasks, mean, threshold=1.5)
    assert clustering.linked == ["a", "b", "c"] and clustering.linkage.shape == (2, 4)
    series = CosineSeries(tasks, np.array([1]), mean[None])
    data = json.loads(write_gradient_affinity(series, tmp_path, threshold=1.5)["json"].read_text())
    assert data["clustering"]["clusters"] == [["a", "b", "c"], ["z"]]
    assert data["clustering"]["linkage_tasks"] == ["a", "b", "c"]
    with pytest.raises(GradientLogError, match="at least 2 tasks measured beside another"):
        cluster_tasks(tasks, np.diag([1.0, 1.0, 1.0, 1.0]) + np.where(np.eye(4), 0, nan))


def test_the_graph_curves_opposite_arrows_of_different_kinds_apart():
    """was: only arrows of the same kind both ways were curved apart, so s benefits t with t harms s drew two straight
    arrows on one line, the later one hiding the other (its colour and head lost)."""
    from t2t_mtl.analysis.transfer_report import graph_edges

    stl = ScoreStat.of([50.0, 50.5, 49.5])
    up, down = ScoreStat.of([60.0, 60.5, 59.5]), ScoreStat.of([40.0, 40.5, 39.5])
    pairs = {"a": {"b": down, "c": stl}, "b": {"a": up, "c": up}, "c": {"a": stl, "b": stl}}
    scores = {RunSpec.of([t], seed): {t: stl.values[seed]} for t in "abc" for seed in range(3)}
    for t, inner in pairs.items():
        for s, stat in inner.items():
            for seed in range(3):
                scores.setdefault(RunSpec.of([s, t], seed), {})[t] = stat.values[seed]
    for seed in range(3):
        scores[RunSpec.of("abc", seed)] = {t: 50.0 for t in "abc"}
    analysis = analyse(["a", "b", "c"], [0, 1, 2], scores, with_oracle=False)
    assert analysis.relations["b"]["a"] == "benefit" and analysis.relations["a"]["b"] == "harm"
    edges = {(s, t): (kind, rad) for s, t, kind, rad in graph_edges(analysis)}
    assert set(edges) == {("a", "b"), ("b", "a"), ("c", "b")}
    assert edges[("a", "b")][0] == "benefit" and edges[("b", "a")][0] == "harm"
    assert edges[("a", "b")][1] != 0 and edges[("b", "a")][1] != 0 and edges[("c", "b")][1] == 0


def test_cluster_tasks_and_cosines_refuse_matrices_of_another_size():
    # three tasks over a 2×2 matrix were clustered, 'c' as a task never measured (labels [1, 2, 3])
    with pytest.raises(GradientLogError, match=r"mean_cosine must be \[T, T\] for the 3 tasks .* got shape \[2, 2\]"):
        cluster_tasks(["a", "b", "c"], np.eye(2))
    with pytest.raises(GradientLogError, match="tasks must be a list of task names, got the string 'ab'"):
        cluster_tasks("ab", np.eye(2))
    # were numpy's "operands could not be broadcast together"
    for gram in (np.ones(3), np.ones((2, 3))):
        with pytest.raises(GradientLogError, match=r"a Gram matrix is square, \[T, T\] for T tasks"):
            cosines_from_gram(gram)
    np.testing.assert_allclose(cosines_from_gram(np.array([[4.0, 2.0], [2.0, 4.0]])), [[1.0, 0.5], [0.5, 1.0]])


def test_transfer_cli_says_how_many_runs_are_missing_until_a_shard_completes_the_study(tmp_path, capsys,
                                                                                       monkeypatch):
    # (mutation testing left the command's two endings unchecked: no test ran `affinity transfer` to its end)
    from t2t_mtl.analysis import transfer_study
    from t2t_mtl.cli import main

    study_class = transfer_study.TransferStudy
    monkeypatch.setattr(transfer_study, "TransferStudy",  # (synthetic scores in place of training)
                        lambda *args, run_options, **kwargs: study_class(*args, run_fn=synthetic_run, **kwargs))
    out = tmp_path / "s"
    command = ["affinity", "transfer", "--tasks", "parity,count_word", "--seeds", "1", "--steps", "1",
               "--out", str(out)]
    assert main([*command, "--shard", "0/2"]) == 0
    # two tasks: each alone and the pair, one seed; shard 0 of 2 trains two of the three
    assert len(list((out / "runs").glob("*.json"))) == 2 and not (out / "transfer.json").exists()
    assert capsys.readouterr().out.endswith("\n1 run still missing (other shards or a later phase): rerun the same "
                                            "command (any shard, or without --shard) to finish\n")
    assert main([*command, "--shard", "1/2"]) == 0
    printed = capsys.readouterr().out
    ending = printed[printed.index("study complete"):].splitlines()
    assert ending == ["study complete: 1 run trained now; outputs:", f"  json: {out / 'transfer.json'}",
                      f"  table: {out / 'transfer.md'}", f"  graph: {out / 'transfer_graph.png'}",
                      f"  heatmap: {out / 'transfer_heatmap.png'}"]
    assert all((out / name).is_file() for name in ("transfer.json", "transfer.md", "transfer_graph.png",
                                                   "transfer_heatmap.png"))


def test_cosines_from_a_rounded_gram_of_parallel_gradients_stay_within_one():
    # was: a float32 Gram of parallel gradients gave a cosine of 1.0000003 (a distance 1 - cos below 0, a mean
    # cosine above 1 in the report), where the training log's cosines (GradientSurgery.stats) are clipped to [-1, 1]
    v = np.random.default_rng(3).normal(size=1000).astype(np.float32)
    for sign in (1, -1):
        grads = np.stack([v, np.float32(3 * sign) * v])
        cosine = cosines_from_gram(grads @ grads.T)
        assert cosine[0, 1] == cosine[1, 0] == sign and cosine[0, 0] == cosine[1, 1] == 1.0
    assert np.isnan(cosines_from_gram(np.array([[1.0, 0.0], [0.0, 0.0]]))[0, 1])  # (a zero gradient: still NaN)
