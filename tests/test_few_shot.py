"""k-shot evaluation (`num_shots`): where demonstrations come from, how they are drawn (seeded, distinct,
renderable, never the example itself), how a prompt is cut to fit, and that evaluation scores exactly those
prompts; bad settings are refused naming the option."""
from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

import task_registry
from t2t_mtl.cli import main as cli_main
from t2t_mtl.config import ConfigError, config_from_dict
from t2t_mtl.engine.validation import evaluation_plan
from t2t_mtl.evaluation import EvalSettings, EvaluationError, evaluate_tasks, to_markdown
from t2t_mtl.evaluation import runner
from t2t_mtl.evaluation.few_shot import Demonstrations, demonstration_split, few_shot_prompt

TRAIN = [{"text": f"training review {i} {'fun' if i % 2 else 'dull'}", "label": i % 2} for i in range(12)]
VALIDATION = [{"text": f"held review {i} {'great' if i % 3 else 'slow'}", "label": int(i % 3 != 0)}
              for i in range(6)]


def _task(tmp_path, splits=("train", "validation"), validation=VALIDATION) -> task_registry.Task:
    files = {}
    for split, rows in (("train", TRAIN), ("validation", validation)):
        if split in splits:
            path = tmp_path / f"{split}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
            files[split] = str(path)
    templates = [
        task_registry.Template("choices", "Positive? {{ text }} ||| {{ answer_choices[label] }}",
                               answer_choices="no ||| yes"),
        task_registry.Template("free", "Label: {{ text }} ||| {{ ['negative', 'positive'][label] }}"),
        task_registry.Template("positives_only", "{% if label == 1 %}Good? {{ text }} ||| "
                               "{{ answer_choices[label] }}{% endif %}", answer_choices="no ||| yes"),
    ]
    return task_registry.Task("shots_toy", task_registry.LocalFileSource(files), templates, metrics=("accuracy",),
                              cluster="toy", splits=tuple(splits))


@pytest.fixture(scope="module")
def model(t5_tokenizer):
    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config(vocab_size=len(t5_tokenizer), d_model=16, d_ff=32, d_kv=8, num_heads=2,
                                               num_layers=1, pad_token_id=0, eos_token_id=1,
                                               decoder_start_token_id=0)).eval()


def _rendered(task, template, rows):
    out = {}
    for index, row in enumerate(rows):
        r = template.render(row, task=task.name, row_index=index)
        if not r.skipped:
            out[index] = f"{r.inputs}\n{r.targets}"
    return out


def test_demonstrations_come_from_train_else_another_split_else_the_same(tmp_path):
    both = _task(tmp_path)
    assert demonstration_split(both, "validation") == "train"
    assert demonstration_split(both, "train") == "validation"
    assert demonstration_split(both, "validation", "validation") == "validation"
    assert demonstration_split(_task(tmp_path, ("validation",)), "validation") == "validation"
    with pytest.raises(EvaluationError, match="task 'shots_toy' has no split 'dev' for demonstrations"):
        demonstration_split(both, "validation", "dev")


def test_draws_are_seeded_distinct_renderable_and_never_the_example_itself(tmp_path):
    task = _task(tmp_path)
    template = task.templates[2]
    rows = task.load_rows("train")
    renderable = _rendered(task, template, rows)  # the positives only
    assert 0 < len(renderable) < len(rows)
    same = Demonstrations(task, template, rows, same_split=True, seed=3)
    for index in range(len(rows)):
        drawn = same.draw(index, 3)
        assert drawn == Demonstrations(task, template, rows, same_split=True, seed=3).draw(index, 3)
        assert len(drawn) == 3 and len(set(drawn)) == 3
        assert set(drawn) <= set(renderable.values()) and renderable.get(index) not in drawn
    everything = same.draw(1, 50)  # more than there are: every renderable row but the example's own
    assert sorted(everything) == sorted(v for k, v in renderable.items() if k != 1)
    other = Demonstrations(task, template, rows, same_split=False, seed=3)
    assert sorted(other.draw(1, 50)) == sorted(renderable.values())
    assert Demonstrations(task, template, rows, same_split=False, seed=1).draw(0, 3) != \
        Demonstrations(task, template, rows, same_split=False, seed=2).draw(0, 3)  # the seed matters


def test_a_demonstration_renders_its_row_as_the_evaluation_renders_it_with_the_evaluation_seed(tmp_path):
    # an example of row i renders with random.Random("seed:i") (the `choice` filter draws from it); a demonstration
    # of row i rendered with a seed of its own (one leaving out the evaluation seed passed the suite) showed a template
    # with `choice` other wording than the evaluation, the same whatever the seed
    task = _task(tmp_path)
    template = task_registry.Template("drawn_word", "{{ ['Say', 'Tell', 'Guess', 'Judge', 'Rate', 'Pick'] | choice }}: "
                                      "{{ text }} ||| {{ answer_choices[label] }}", answer_choices="no ||| yes")
    for seed in (3, 4):
        expected = []
        for index, row in enumerate(TRAIN):
            out = template.render(row, task=task.name, row_index=index, rng=random.Random(f"{seed}:{index}"))
            expected.append(f"{out.inputs}\n{out.targets}")
        drawn = Demonstrations(task, template, TRAIN, same_split=False, seed=seed).draw(0, len(TRAIN))
        assert sorted(drawn) == sorted(expected)


def test_a_prompt_drops_leading_demonstrations_until_it_fits(t5_tokenizer):
    tokenizer = t5_tokenizer
    demos = [f"demonstration number {i} " + "word " * (3 * i) + f"\nanswer {i}" for i in range(5)]
    query = "the question itself"

    def length(text):
        return len(tokenizer(text)["input_ids"])

    for limit in (5, 12, 30, 60, 200):
        expected = query
        for start in range(len(demos) + 1):  # the longest suffix of demonstrations that fits
            candidate = "\n\n".join([*demos[start:], query])
            if start < len(demos) and length(candidate) <= limit:
                expected = candidate
                break
        got = few_shot_prompt(demos, query, tokenizer, limit)
        assert got == expected and got.endswith(query)
        assert length(got) <= limit or got == query
        wrapped = few_shot_prompt(demos, query, tokenizer, limit, wrap=lambda text: "task prefix " + text)
        assert wrapped.startswith("task prefix ") and wrapped.endswith(query)
        assert length(wrapped) <= limit or wrapped == "task prefix " + query  # the prefix is counted
    for start in range(len(demos)):  # a prompt of exactly the limit fits
        exact = "\n\n".join([*demos[start:], query])
        assert few_shot_prompt(demos, query, tokenizer, length(exact)) == exact


def test_k_shot_prompts_of_a_task_token_model_fit_with_the_token(tmp_path, t5_tokenizer_dir, monkeypatch):
    from t2t_mtl.analysis.task_embeddings import TaskTokens
    from t2t_mtl.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(t5_tokenizer_dir)  # a private copy: task tokens are added to it
    TaskTokens(tokenizer, ["shots_toy"])
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=len(tokenizer), d_model=16, d_ff=32, d_kv=8, num_heads=2,
                                                num_layers=1, pad_token_id=0, eos_token_id=1,
                                                decoder_start_token_id=0)).eval()
    seen = []
    real = runner.score_choices
    limits = []
    monkeypatch.setattr(runner, "score_choices", lambda m, t, inputs, *a, **k: (
        seen.extend(inputs), limits.append(k["max_input_length"]), real(m, t, inputs, *a, **k))[2])
    task = _task(tmp_path)
    for limit in range(10, 40):
        seen.clear()
        limits.clear()
        evaluate_tasks(model, tokenizer, [task], EvalSettings(num_shots=2, max_input_length=limit, batch_size=8,
                                                              templates={"shots_toy": ["choices"]}), progress=False)
        assert seen and all(text.startswith("<task:shots_toy>") for text in seen)
        # the task token comes on top of the limit, as in training (was: counted in it, one token less than trained)
        assert set(limits) == {limit + 1}
        for text in seen:  # with demonstrations, the whole prompt (task token included) fits
            assert "\n\n" not in text or len(tokenizer(text)["input_ids"]) <= limit + 1, (limit, text)


def test_k_shot_evaluation_scores_each_example_after_its_drawn_demonstrations(tmp_path, model, t5_tokenizer,
                                                                                 monkeypatch):
    tokenizer = t5_tokenizer
    task = _task(tmp_path)
    seen = []
    real_rank, real_generate = runner.score_choices, runner.generate_texts

    def rank(model_, tokenizer_, inputs, choices, **kwargs):
        seen.extend(inputs)
        return real_rank(model_, tokenizer_, inputs, choices, **kwargs)

    def generate(model_, tokenizer_, inputs, **kwargs):
        seen.extend(inputs)
        return real_generate(model_, tokenizer_, inputs, **kwargs)

    monkeypatch.setattr(runner, "score_choices", rank)
    monkeypatch.setattr(runner, "generate_texts", generate)
    settings = EvalSettings(num_shots=2, max_new_tokens=3, batch_size=4, seed=5)
    report = evaluate_tasks(model, tokenizer, [task], settings, progress=False)
    templates = task.templates
    train_rows, validation_rows = task.load_rows("train"), task.load_rows("validation")
    expected = []
    for template in templates:
        demos = Demonstrations(task, template, train_rows, same_split=False, seed=5)
        pool = set(_rendered(task, template, train_rows).values())
        for index, row in enumerate(validation_rows):
            r = template.render(row, task=task.name, row_index=index)
            if r.skipped:
                continue
            blocks = seen[len(expected)].split("\n\n")
            assert blocks[-1] == r.inputs and len(blocks) == 3 and set(blocks[:2]) <= pool
            expected.append("\n\n".join([*demos.draw(index, 2), r.inputs]))
    assert seen == expected
    assert [r.num_examples for r in report.results] == [6, 6, 4]
    assert report.settings["num_shots"] == 2 and "(2-shot)" in to_markdown(report).splitlines()[0]


def test_examples_given_fewer_demonstrations_than_asked_are_counted_and_reported(tmp_path, model, t5_tokenizer,
                                                                              caplog):
    # demonstrations dropped to fit the input limit were silent: a "(2-shot)" report could be scored on
    # zero-shot prompts
    tokenizer = t5_tokenizer
    task = _task(tmp_path)
    settings = dict(num_shots=2, batch_size=8, templates={"shots_toy": ["choices"]})
    roomy = evaluate_tasks(model, tokenizer, [task], EvalSettings(**settings), progress=False).results[0]
    assert roomy.num_fewer_shots == 0
    inputs = [f"Positive? {row['text']}" for row in VALIDATION]
    limit = max(len(ids) for ids in tokenizer(inputs)["input_ids"])  # each query fits, no demonstration does
    report = evaluate_tasks(model, tokenizer, [task], EvalSettings(**settings, max_input_length=limit), progress=False)
    cramped = report.results[0]
    assert (cramped.num_fewer_shots, cramped.num_examples, cramped.num_truncated) == (6, 6, 0)
    assert "6 of 6 inputs got fewer than 2 demonstrations" in caplog.text
    assert "- shots_toy / choices: 6 of 6" in to_markdown(report)
    assert json.loads(json.dumps(report.to_dict()))["results"][0]["num_fewer_shots"] == 6


def test_demonstrations_dropped_to_fit_are_counted_with_the_limit_that_would_hold_them_all(tmp_path, model,
                                                                                          t5_tokenizer, caplog,
                                                                                          monkeypatch):
    # inputs left with fewer demonstrations were reported as "too few rows, or they do not fit": neither how many
    # demonstrations the input limit cost nor the limit that would give every input all of its own
    validation = [{"text": f"held review {i}" + " quite" * (3 * i), "label": i % 2} for i in range(6)]
    tokenizer, task = t5_tokenizer, _task(tmp_path, validation=validation)
    template = task.templates[0]
    draws = Demonstrations(task, template, task.load_rows("train"), same_split=False, seed=0)
    queries = [template.render(row, task=task.name, row_index=i).inputs for i, row in enumerate(validation)]
    drawn = [draws.draw(i, 2) for i in range(len(validation))]

    def length(text):
        return len(tokenizer(text)["input_ids"])

    whole = [length("\n\n".join([*d, q])) for d, q in zip(drawn, queries)]
    limit = sorted(whole)[1]  # the two shortest prompts fit whole, others lose one or both demonstrations
    expected = []  # the longest suffix of its demonstrations that fits, then the query, by hand
    for d, q in zip(drawn, queries):
        kept = next(start for start in range(3) if start == 2 or length("\n\n".join([*d[start:], q])) <= limit)
        expected.append("\n\n".join([*d[kept:], q]))
    dropped = sum(2 - e.count("\n\n") for e in expected)
    assert all(e.endswith(q) for e, q in zip(expected, queries)) and dropped > sum(w > limit for w in whole) > 0
    seen = []
    for name in ("score_choices", "generate_texts"):
        real = getattr(runner, name)
        monkeypatch.setattr(runner, name, lambda m, t, inputs, *a, _real=real, **k: (seen.extend(inputs),
                                                                                    _real(m, t, inputs, *a, **k))[1])
    results = []
    for scoring in ("rank", "generate"):  # both scorings see the same inputs, each ending with its query
        seen.clear()
        settings = EvalSettings(num_shots=2, max_input_length=limit, scoring=scoring, max_new_tokens=2,
                                templates={"shots_toy": ["choices"]})
        report = evaluate_tasks(model, tokenizer, [task], settings, progress=False)
        assert sorted(seen) == sorted(expected)  # (scored longest first)
        results.append(report.results[0])
    for result in results:
        assert (result.num_fewer_shots, result.num_dropped_shots) == (sum(w > limit for w in whole), dropped)
        assert result.shots_fit_length == max(whole) and result.num_truncated == 0
    assert (f"inputs got fewer than 2 demonstrations ({dropped} demonstrations dropped from their front to fit "
            f"max_input_length={limit} tokens") in caplog.text
    assert (f"raise the limit to {max(whole)} tokens (t2t-mtl eval --max-input-length {max(whole)}; "
            f"evaluation.max_input_length in a config; EvalSettings(max_input_length={max(whole)}) from Python)") \
        in caplog.text
    assert (f"- shots_toy / choices: {results[0].num_fewer_shots} of 6; {dropped} demonstrations dropped to fit the "
            f"input limit, all fit at {max(whole)} tokens (`t2t-mtl eval --max-input-length {max(whole)}`")\
        in to_markdown(report)
    seen.clear()
    roomy = evaluate_tasks(model, tokenizer, [task], replace(settings, max_input_length=max(whole)),
                           progress=False).results[0]  # the limit named gives every input all of its own
    assert sorted(seen) == sorted("\n\n".join([*d, q]) for d, q in zip(drawn, queries))
    assert (roomy.num_fewer_shots, roomy.num_dropped_shots, roomy.shots_fit_length) == (0, 0, None)
    seen.clear()  # zero-shot: the rendered input, untouched by the k-shot fitting
    zero = evaluate_tasks(model, tokenizer, [task], replace(settings, num_shots=0, max_input_length=3),
                          progress=False).results[0]
    assert sorted(seen) == sorted(queries)
    assert (zero.num_fewer_shots, zero.num_dropped_shots, zero.shots_fit_length) == (0, 0, None)


def test_too_few_rows_to_draw_from_is_not_blamed_on_the_input_limit(tmp_path, model, t5_tokenizer, caplog):
    # was: "(the demonstration split has fewer renderable rows, or they do not fit max_input_length=512 tokens)" for
    # inputs that every limit leaves with fewer: the train split has 12 rows, 20 are asked for
    settings = EvalSettings(num_shots=20, batch_size=8, templates={"shots_toy": ["choices"]})
    report = evaluate_tasks(model, t5_tokenizer, [_task(tmp_path)], settings, progress=False)
    result = report.results[0]
    assert (result.num_fewer_shots, result.num_dropped_shots, result.shots_fit_length) == (6, 0, None)
    assert "6 of 6 inputs got fewer than 20 demonstrations (the demonstration split has too few renderable rows)" \
        in caplog.text
    assert "max_input_length" not in caplog.text and "- shots_toy / choices: 6 of 6\n" in to_markdown(report)


def test_one_shot_and_one_task_are_worded_in_the_singular(tmp_path, model, t5_tokenizer, caplog):
    # was: "fewer than 1 demonstrations" (log and report.md) and "decaScore (sum of 1 task medians)"
    task = _task(tmp_path)
    inputs = [f"Positive? {row['text']}" for row in VALIDATION]
    limit = max(len(ids) for ids in t5_tokenizer(inputs)["input_ids"])  # each query fits, no demonstration does
    settings = EvalSettings(num_shots=1, batch_size=8, templates={"shots_toy": ["choices"]}, max_input_length=limit)
    markdown = to_markdown(evaluate_tasks(model, t5_tokenizer, [task], settings, progress=False))
    assert "6 of 6 inputs got fewer than 1 demonstration (" in caplog.text
    assert "Inputs given fewer than 1 demonstration (" in markdown and "decaScore (sum of 1 task median):" in markdown


def test_bad_shot_settings_are_refused_naming_the_option(tmp_path, t5_tokenizer_dir, capsys):
    with pytest.raises(EvaluationError, match="num_shots must be an integer >= 0"):
        EvalSettings(num_shots=-1)
    base = {"model": {"dims": {"d_model": 8}}, "data": {"tasks": ["parity"], "held_out_clusters": ["comparison"]}}
    with pytest.raises(ConfigError, match="evaluation.shots_split names the split .* set evaluation.num_shots"):
        evaluation_plan(config_from_dict({**base, "evaluation": {"held_out": True, "shots_split": "train"}}))
    with pytest.raises(ConfigError, match="evaluation.shots_split: task .* has no split 'dev'"):
        evaluation_plan(config_from_dict({**base, "evaluation": {"held_out": True, "num_shots": 2,
                                                                  "shots_split": "dev"}}))
    names, settings = evaluation_plan(config_from_dict({**base, "evaluation": {"held_out": True, "num_shots": 2}}))
    assert names and settings.num_shots == 2
    args = ["eval", "--checkpoint", str(tmp_path), "--held-out", "--held-out-clusters", "comparison"]
    for extra, message in ((["--shots", "-1"], "--shots must be at least 0"),
                           # (without --shots, the run's evaluation.num_shots decides: test_eval_runner checks it)
                           (["--shots", "0", "--shots-split", "train"],
                            "--shots-split names the split of k-shot demonstrations; with --shots 0 it is ignored")):
        assert cli_main([*args, *extra]) == 2
        assert message in capsys.readouterr().err


# ---- mixed zero-/few-shot training prompts (data.few_shot) ----------------------------------------------------

def test_the_training_mix_settings_are_checked_by_key():
    from t2t_mtl.data.few_shot import FewShotConfigError, FewShotMix

    assert FewShotMix.from_config(None) is None and FewShotMix.from_config(False) is None
    assert FewShotMix.from_config(True) == FewShotMix(0.5, 3) == FewShotMix.from_config({})
    assert FewShotMix.from_config({"rate": 0}) is None  # nothing to mix
    for section, message in (({"rate": 1.5}, r"data.few_shot.rate=1.5: must be a number in \[0, 1\]"),
                             ({"max_shots": 0}, "data.few_shot.max_shots=0: must be an integer >= 1"),
                             ({"max_shots": 2.5}, "data.few_shot.max_shots=2.5"),
                             ({"shots": 2}, "unknown key data.few_shot.shots; did you mean 'max_shots'"),
                             ("often", "data.few_shot must be a mapping")):
        with pytest.raises(FewShotConfigError, match=message):
            FewShotMix.from_config(section)


def _mixable_task(tmp_path, rows=600) -> task_registry.Task:
    path = tmp_path / "mix_train.jsonl"
    path.write_text("".join(json.dumps({"text": f"review {i} was {'fun' if i % 2 else 'dull'}", "label": i % 2}) + "\n"
                            for i in range(rows)))
    templates = [task_registry.Template("ask", "Positive? {{ text }} ||| {{ answer_choices[label] }}",
                                        answer_choices="no ||| yes"),
                 task_registry.Template("label", "Label: {{ text }} ||| {{ ['negative', 'positive'][label] }}")]
    return task_registry.Task("mix_toy", task_registry.LocalFileSource({"train": str(path)}), templates,
                              splits=("train",))


def test_a_share_of_training_inputs_get_demonstrations_of_their_own_template(tmp_path, t5_tokenizer, caplog):
    from t2t_mtl.data.few_shot import FewShotMix, add_demonstrations

    rendered = _mixable_task(tmp_path).to_dataset("train")
    mix = FewShotMix(rate=0.3, max_shots=3)

    def mixed(seed, limit=512):
        return add_demonstrations(rendered, mix, t5_tokenizer, limit, seed=seed, tokenizer_key="t5", task="mix_toy")

    out = mixed(seed=5)
    # the count is reported where an unconfigured `t2t-mtl train` shows it (INFO was silently dropped)
    assert "task mix_toy: " in caplog.text and "training examples few-shot" in caplog.text
    demonstration_of = {f"{r['inputs']}\n{r['targets']}": (i, r["template"]) for i, r in enumerate(rendered)}
    shots = []
    for index, (before, after) in enumerate(zip(rendered, out)):
        assert after["targets"] == before["targets"] and after["template"] == before["template"]
        *demos, query = after["inputs"].split("\n\n")
        assert query == before["inputs"]
        rows = [demonstration_of[d] for d in demos]  # every demonstration is a whole solved row ...
        assert all(row != index and template == before["template"] for row, template in rows)  # ... of its template
        assert len(set(rows)) == len(rows) <= 3
        shots.append(len(demos))
    n = len(shots)
    few = [s for s in shots if s]
    assert abs(len(few) / n - 0.3) < 4 * (0.3 * 0.7 / n) ** 0.5  # the rate, within 4 standard deviations
    for k in (1, 2, 3):  # k uniform in 1..max_shots (everything fits at 512 tokens)
        assert abs(few.count(k) - len(few) / 3) < 4 * (len(few) * 2 / 9) ** 0.5
    assert mixed(seed=5)["inputs"] == out["inputs"] and mixed(seed=6)["inputs"] != out["inputs"]

    tight = mixed(seed=5, limit=20)  # demonstrations that do not fit are dropped, the query is kept whole
    for before, after, drawn in zip(rendered, tight, shots):
        assert after["inputs"].endswith(before["inputs"])
        if after["inputs"] != before["inputs"]:
            assert len(t5_tokenizer(after["inputs"])["input_ids"]) <= 20
        assert after["inputs"].count("\n\n") <= drawn


def test_a_span_corruption_task_stays_zero_shot_in_the_training_mix(tmp_path, t5_tokenizer, caplog):
    # was: its inputs got demonstrations whose sentinels <extra_id_0>, ... were those of its own spans, so the
    # target was ambiguous
    from t2t_mtl.data.few_shot import FewShotMix, corrupts_spans
    from t2t_mtl.data.streams import tokenize_task

    path = tmp_path / "text.jsonl"
    path.write_text("".join(json.dumps({"text": f"the quick brown fox number {i} jumps over the lazy dog"}) + "\n"
                            for i in range(40)))
    task = task_registry.Task("denoise_toy", task_registry.LocalFileSource({"train": str(path)}),
                              [task_registry.Template("t", "{{ corrupted }} ||| {{ spans }}")], splits=("train",),
                              preprocessors=[task_registry.SpanCorruption("text")])
    settings = dict(split="train", max_input_length=128, max_target_length=32, cache_dir=None)
    plain = tokenize_task(task, t5_tokenizer, **settings)
    mixed = tokenize_task(task, t5_tokenizer, **settings, few_shot=FewShotMix(rate=1.0, max_shots=2))
    assert (mixed.input_lengths == plain.input_lengths).all()
    assert "task denoise_toy: left zero-shot by data.few_shot" in caplog.text
    assert not corrupts_spans(_mixable_task(tmp_path))


def test_training_streams_carry_the_few_shot_prompts(tmp_path, monkeypatch):
    from engine_helpers import tiny_config, train_tiny_tokenizer
    from t2t_mtl.data.few_shot import FewShotMix
    from t2t_mtl.engine import trainer as trainer_mod

    tok = train_tiny_tokenizer(tmp_path / "tok")
    built = {}
    real = trainer_mod.build_task_streams

    def recording(names, tokenizer, **kwargs):
        built[kwargs["few_shot"]] = streams = real(names, tokenizer, **kwargs)
        return streams

    monkeypatch.setattr(trainer_mod, "build_task_streams", recording)
    for index, few_shot in enumerate((None, {"rate": 1.0, "max_shots": 2})):
        cfg = tiny_config(tmp_path / f"run{index}", tok, tmp_path / "cache", training={"steps": 2},
                          data={"few_shot": few_shot, "max_input_length": 64})
        assert trainer_mod.train(cfg, evaluate_held_in=False).step == 2
    zero, mixed = built[None], built[FewShotMix(1.0, 2)]
    for name in zero:  # every input got demonstrations where they fit: longer, never shorter
        assert (mixed[name].input_lengths >= zero[name].input_lengths).all()
        assert (mixed[name].input_lengths > zero[name].input_lengths).mean() > 0.5
        assert (mixed[name].target_lengths == zero[name].target_lengths).all()
    with pytest.raises(ValueError, match="unknown key data.few_shot.rat"):
        trainer_mod.train(tiny_config(tmp_path / "bad", tok, tmp_path / "cache", data={"few_shot": {"rat": 1}}),
                          evaluate_held_in=False)
    assert not (tmp_path / "bad").exists()  # refused before anything is written


def _grouped_task(tmp_path, name: str, split: str, questions: int, answers: int):
    """A MultiRC-like task (`group_by: q`, `answers` rows per question) of one split, and its rows."""
    rows = [{"q": q, "answer": f"answer {q}-{a}", "label": a % 2} for q in range(questions) for a in range(answers)]
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    template = task_registry.Template("t", "{{ answer }}? ||| {{ answer_choices[label] }}", answer_choices="no ||| yes")
    task = task_registry.Task(name, task_registry.LocalFileSource({split: str(path)}), [template], splits=(split,),
                              group_by="q")
    return task, rows


def test_demonstrations_from_the_evaluated_split_skip_the_examples_group(tmp_path):
    # MultiRC has only a validation split: the other answers to an example's question, with their gold labels,
    # were eligible demonstrations
    task, rows = _grouped_task(tmp_path, "mini_mrc", "validation", questions=4, answers=3)
    template = task.templates[0]
    loaded = task.load_rows("validation")
    demos = Demonstrations(task, template, loaded, same_split=True, seed=0)
    for index, row in enumerate(rows):
        drawn = demos.draw(index, 20)  # everything it may see: the 9 rows of the other questions
        assert len(drawn) == 9 and not any(d.startswith(f"answer {row['q']}-") for d in drawn)


def _repeating_task(tmp_path, name: str, split: str, count: int):
    """(rows, task, template): `count` rows in one `split` whose text repeats every 4 rows."""
    rows = [{"text": f"review {i % 4}", "label": i % 2} for i in range(count)]
    path = tmp_path / f"{split}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    template = task_registry.Template("free", "Label: {{ text }} ||| {{ ['negative', 'positive'][label] }}")
    task = task_registry.Task(name, task_registry.LocalFileSource({split: str(path)}), [template], splits=(split,))
    return rows, task, template


def test_a_duplicate_of_the_example_is_never_its_demonstration(tmp_path):
    # BIG-bench tasks have one split, and some repeat an example in another row (sports_understanding: 27 rows):
    # that row, solved, was an eligible demonstration of the example; likewise a train row equal to it
    rows, task, template = _repeating_task(tmp_path, "dup_toy", "validation", 8)  # rows i and i + 4 render alike
    loaded = task.load_rows("validation")
    for same_split in (True, False):
        demos = Demonstrations(task, template, loaded, same_split=same_split, seed=0)
        for index in range(len(rows)):
            query = template.render(loaded[index], task=task.name, row_index=index).inputs
            drawn = demos.draw(index, 20, query=query)
            assert len(drawn) == 6 and not any(d.startswith(query + "\n") for d in drawn)


def test_two_tasks_draw_different_demonstrations_for_the_same_rows(tmp_path, t5_tokenizer):
    # the per-row seed named no task, so every task's row i drew the same positions (and, in training, the same
    # few-shot-or-not decision and k): the same pattern across the tasks of a mixture
    from t2t_mtl.data.few_shot import FewShotMix, add_demonstrations

    base = _task(tmp_path)
    twin = task_registry.Task("shots_twin", base.source, base.templates, splits=base.splits)
    rows = base.load_rows("train")
    draws = {task.name: [Demonstrations(task, task.templates[1], rows, same_split=True, seed=3).draw(i, 3)
                         for i in range(len(rows))] for task in (base, twin)}
    assert draws["shots_toy"] != draws["shots_twin"]
    assert draws["shots_toy"] == [Demonstrations(base, base.templates[1], rows, same_split=True, seed=3).draw(i, 3)
                                  for i in range(len(rows))]  # still a pure function of the task, seed and row

    rendered = _mixable_task(tmp_path).to_dataset("train")

    def shots(name):  # which rows get demonstrations, and how many
        mixed = add_demonstrations(rendered, FewShotMix(rate=0.5, max_shots=3), t5_tokenizer, 512, seed=5,
                                   tokenizer_key="t5", task=name)
        return [text.count("\n\n") for text in mixed["inputs"]]

    assert shots("mix_a") != shots("mix_b")
    assert shots("mix_a") == shots("mix_a")


def test_training_demonstrations_skip_the_examples_group(tmp_path, t5_tokenizer, monkeypatch):
    # training drew demonstrations from any other row of the template, so a MultiRC example could be shown
    # another answer to its own question with its gold label (evaluation already kept the group out)
    from t2t_mtl.data import streams
    from t2t_mtl.data.few_shot import FewShotMix, add_demonstrations

    task, rows = _grouped_task(tmp_path, "mini_mrc_train", "train", questions=6, answers=4)
    rendered = task.to_dataset("train", with_groups=True)
    assert rendered["group"] == [str(row["q"]) for row in rows]
    mixed = add_demonstrations(rendered, FewShotMix(rate=1.0, max_shots=3), t5_tokenizer, 512, seed=0,
                               tokenizer_key="t5", task=task.name)
    assert "group" not in mixed.column_names
    for row, example in zip(rows, mixed):
        *demos, query = example["inputs"].split("\n\n")
        assert demos and query == f"{row['answer']}?"
        assert not any(demo.startswith(f"answer {row['q']}-") for demo in demos)

    received = []  # the training streams hand the groups over
    monkeypatch.setattr(streams, "add_demonstrations",
                        lambda rendered, *args, **kwargs: received.append(rendered.column_names) or rendered)
    streams.tokenize_task(task, t5_tokenizer, split="train", max_input_length=64, max_target_length=8,
                          cache_dir=None, few_shot=FewShotMix(rate=1.0, max_shots=2))
    assert "group" in received[0]


def test_a_duplicate_of_the_training_example_is_never_its_demonstration(tmp_path, t5_tokenizer):
    # training passed over the example's own row (and group) only: a row repeating its input (the procedural parity
    # task has some) was an eligible demonstration, showing the example's own answer, as evaluation already refused
    from t2t_mtl.data.few_shot import FewShotMix, add_demonstrations

    rows, task, _ = _repeating_task(tmp_path, "dup_train_toy", "train", 12)  # rows i, i + 4 and i + 8 render alike
    rendered = task.to_dataset("train")
    mixed = add_demonstrations(rendered, FewShotMix(rate=1.0, max_shots=12), t5_tokenizer, 512, seed=0,
                               tokenizer_key="t5", task=task.name)
    others = {f"review {n}": {f"Label: review {m}" for m in range(4) if m != n} for n in range(4)}
    counts = []
    for row, example in zip(rows, mixed):
        *demos, query = example["inputs"].split("\n\n")
        assert query == f"Label: {row['text']}" and demos
        assert {demo.split("\n")[0] for demo in demos} <= others[row["text"]]  # the 9 rows of the other 3 inputs
        counts.append(len(demos))
    assert max(counts) == 9  # a draw of k >= 9 (k uniform in 1..12) gets all nine, not one fewer



def test_a_training_examples_demonstrations_are_distinct_rows(tmp_path, t5_tokenizer):
    # was: a draw that could take one row twice (no check of the rows picked already) passed every test: the tests of
    # the training mix drew from rows rendering alike, where a repeated row reads as another row of the same text
    from t2t_mtl.data.few_shot import FewShotMix, add_demonstrations

    rows = [{"text": f"review {i}", "label": i % 2} for i in range(10)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    template = task_registry.Template("free", "Label: {{ text }} ||| {{ ['negative', 'positive'][label] }}")
    source = task_registry.LocalFileSource({"train": str(tmp_path / "train.jsonl")})
    task = task_registry.Task("distinct_demos_toy", source, [template], splits=("train",))
    mixed = add_demonstrations(task.to_dataset("train"), FewShotMix(rate=1.0, max_shots=9), t5_tokenizer, 512,
                               seed=0, tokenizer_key="t5", task=task.name)
    counts = []
    for row, example in zip(rows, mixed):
        *demos, query = example["inputs"].split("\n\n")
        assert query == f"Label: {row['text']}" and demos
        assert len(set(demos)) == len(demos), demos  # every other row renders differently
        assert not any(demo.startswith(query + "\n") for demo in demos)
        counts.append(len(demos))
    assert max(counts) > 1  # (several demonstrations, so a repeat could show)

def test_training_demonstrations_fit_with_the_eos_the_pipeline_appends(tmp_path):
    # the fit counted `tokenizer(prompt)` ids, which end in EOS for T5's tokenizer only; with one that adds no special
    # token, a prompt of exactly max_input_length tokens was kept and then lost its query's last token to the EOS
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from t2t_mtl.data.few_shot import FewShotMix
    from t2t_mtl.data.streams import tokenize_task

    words = ["<pad>", "</s>", "<unk>", "x", "y", *(f"w{i}" for i in range(8))]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()  # no post-processor: no EOS of its own
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>")
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"text": f"w{i} w{i + 1} w{i + 2}", "label": "xy"[i % 2]}) + "\n"
                            for i in range(6)))
    task = task_registry.Task("eos_toy", task_registry.LocalFileSource({"train": str(path)}),
                              [task_registry.Template("t", "{{ text }} ||| {{ label }}")], splits=("train",))
    # a query is 3 words + EOS = 4 ids; one demonstration in front adds 4 (3 words and its target): 8 > 7
    tokenized = tokenize_task(task, tokenizer, split="train", max_input_length=7, max_target_length=4,
                              cache_dir=None, few_shot=FewShotMix(rate=1.0, max_shots=1))
    assert tokenized.truncated == 0
    for ids in tokenized.dataset["input_ids"]:
        assert len(ids) == 4 and ids[-1] == tokenizer.eos_token_id  # the whole query, zero-shot


def test_training_prompts_read_from_the_cache_build_no_index_of_the_rows(tmp_path, t5_tokenizer, monkeypatch):
    # was: add_demonstrations indexed every row (its demonstration text, its template's rows, its group and input
    # counts) before datasets looked for the cached prompts, so a run reading them still spent 2.5 CPU-s on AG News'
    # 10,001 rows (now 0.18)
    from t2t_mtl.data import few_shot

    rendered = _mixable_task(tmp_path).to_dataset("train")
    made, text = [], few_shot.demonstration_text
    monkeypatch.setattr(few_shot, "demonstration_text", lambda inputs, targets: made.append(inputs) or
                        text(inputs, targets))

    def mixed():
        return list(few_shot.add_demonstrations(rendered, few_shot.FewShotMix(rate=0.3, max_shots=3), t5_tokenizer,
                                                512, seed=5, tokenizer_key="t5", task="mix_toy")["inputs"])

    first = mixed()
    assert made == list(rendered["inputs"])  # (every row is a demonstration its template's rows may draw)
    made.clear()
    assert mixed() == first and made == []
