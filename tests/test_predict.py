"""`t2t-mtl predict` / `t2t_mtl.evaluation.predict`: answers to free-form inputs, checked against the model
itself run one input at a time (`generate` per input; each choice's log-likelihood from a full forward with
labels), task routing of a task-routed MoE model, JSON-lines round trip with `tasks preview --jsonl`, and
clear errors for bad input."""
from __future__ import annotations

import importlib
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from t2t_mtl.cli import main
from t2t_mtl.evaluation import load_checkpoint
from t2t_mtl.evaluation.errors import EvaluationError
from t2t_mtl.evaluation.predict import PredictInputError, PredictRequest, predict, read_requests
from t2t_mtl.model.moe import convert_to_moe
from t2t_mtl.tokenizer import load_tokenizer

INPUTS = ["Is the sky blue? yes or no", "Translate to German: the house", "count the words: a b c d"]
CHOICES = ["yes", "no", "maybe so"]


def _dense(tokenizer) -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config(vocab_size=len(tokenizer), d_model=16, d_ff=32, d_kv=8, num_heads=2,
                                               num_layers=2, pad_token_id=0, eos_token_id=1,
                                               decoder_start_token_id=0, dropout_rate=0.0))


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory, t5_tokenizer_dir):
    tokenizer = load_tokenizer(t5_tokenizer_dir)
    folder = tmp_path_factory.mktemp("dense")
    _dense(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def moe_dir(tmp_path_factory, t5_tokenizer_dir):
    """A task-routed MoE (fresh experts, so the two tasks' routes compute different functions)."""
    tokenizer = load_tokenizer(t5_tokenizer_dir)
    torch.manual_seed(1)
    model = convert_to_moe(_dense(tokenizer), {"num_experts": 4, "top_k": 1, "every": 1, "routing": "task",
                                               "upcycle": False}, task_names=["alpha", "beta"])
    folder = tmp_path_factory.mktemp("moe")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _one_by_one_generate(model, tokenizer, texts, **routing):
    out = []
    for text in texts:
        ids = tokenizer(text, return_tensors="pt").input_ids
        with torch.no_grad():
            tokens = model.generate(input_ids=ids, max_new_tokens=8, do_sample=False, num_beams=1, **routing)
        out.append(tokenizer.decode(tokens[0], skip_special_tokens=True).strip())
    return out


def _log_likelihood(model, tokenizer, text, choice):
    ids = tokenizer(text, return_tensors="pt").input_ids
    labels = tokenizer(text_target=choice, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(input_ids=ids, labels=labels).logits
    return float(torch.log_softmax(logits.float(), -1).gather(-1, labels[..., None]).sum())


def test_generation_and_ranking_equal_the_model_run_input_by_input(dense_dir, capsys):
    model, tokenizer, _ = load_checkpoint(dense_dir)
    expected = _one_by_one_generate(model, tokenizer, INPUTS)
    requests = [PredictRequest(t) for t in INPUTS]
    got = predict(model, tokenizer, requests, max_new_tokens=8, batch_size=2)  # padded batches of 2 and 1
    assert [p.prediction for p in got] == expected and all(p.scores is None for p in got)

    ranked = predict(model, tokenizer, [PredictRequest(t, list(CHOICES)) for t in INPUTS], batch_size=2)
    for text, result in zip(INPUTS, ranked):
        reference = [_log_likelihood(model, tokenizer, text, c) for c in CHOICES]
        assert result.scores == pytest.approx(reference, abs=1e-4)
        assert result.prediction == CHOICES[max(range(3), key=lambda i: reference[i])]

    # the command line: texts in, one line per input; --choices ranks
    assert main(["predict", "--checkpoint", str(dense_dir), "--max-new-tokens", "8", *INPUTS]) == 0
    assert capsys.readouterr().out.splitlines() == expected
    assert main(["predict", "--checkpoint", str(dense_dir), "--choices", " ||| ".join(CHOICES), *INPUTS]) == 0
    assert capsys.readouterr().out.splitlines() == [r.prediction for r in ranked]


def test_an_empty_list_of_answer_choices_is_generated_as_none_is(dense_dir):
    # `tasks preview --jsonl` writes [] for a template without choices: from Python or a JSON line, such an input is
    # generated (rank scoring refuses it by number) — the rendered-dataset schema read as it is written
    model, tokenizer, _ = load_checkpoint(dense_dir)
    expected = _one_by_one_generate(model, tokenizer, INPUTS[:1])
    line = read_requests([json.dumps({"inputs": INPUTS[0], "answer_choices": []})], jsonl=True, source="x")
    for request in (PredictRequest(INPUTS[0], []), *line):
        (got,) = predict(model, tokenizer, [request], max_new_tokens=8)
        assert [got.prediction] == expected and got.scores is None
        with pytest.raises(EvaluationError, match=r"^input 1 has no answer choices: rank scoring needs them"):
            predict(model, tokenizer, [request], scoring="rank")


def test_task_routed_moe_takes_each_inputs_task(moe_dir, capsys, tmp_path):
    model, tokenizer, _ = load_checkpoint(moe_dir)
    alpha = _one_by_one_generate(model, tokenizer, INPUTS, task_ids=torch.tensor([0]))
    beta = _one_by_one_generate(model, tokenizer, INPUTS, task_ids=torch.tensor([1]))
    assert alpha != beta  # the routes differ, so the task really chooses the experts
    assert main(["predict", "--checkpoint", str(moe_dir), "--task", "alpha", "--max-new-tokens", "8", *INPUTS]) == 0
    assert capsys.readouterr().out.splitlines() == alpha
    # per-input tasks from JSON lines win over --task; other keys are echoed
    rows = [{"inputs": t, "task": "beta", "id": i} for i, t in enumerate(INPUTS)]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["predict", "--checkpoint", str(moe_dir), "--task", "alpha", "--max-new-tokens", "8",
                 "--input", str(path)]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["prediction"] for o in out] == beta and [o["id"] for o in out] == [0, 1, 2]
    assert all(o["task"] == "beta" for o in out)
    # no task: refused, saying how to give one
    assert main(["predict", "--checkpoint", str(moe_dir), *INPUTS]) == 2
    assert "computes per task" in capsys.readouterr().err
    # from Python, the error names the arguments that give a task (was: only the command's --task and JSON field)
    with pytest.raises(EvaluationError, match=r"computes per task .*predict's default_task, or "
                                              r"PredictRequest\(\.\.\., task=NAME\)"):
        predict(model, tokenizer, [PredictRequest(INPUTS[0])])


def test_a_model_of_one_tasks_route_answers_inputs_without_a_task_by_it(moe_dir, tmp_path, capsys):
    # was: an `export --task parity` folder (one task, id 0) refused every input without --task parity
    from t2t_mtl.model.moe import extract_task_subnetwork

    model, tokenizer, _ = load_checkpoint(moe_dir)
    sub = extract_task_subnetwork(model, "beta")
    expected = _one_by_one_generate(model, tokenizer, INPUTS, task_ids=torch.tensor([1]))
    got = predict(sub, tokenizer, [PredictRequest(t) for t in INPUTS], max_new_tokens=8)
    assert [p.prediction for p in got] == expected
    sub.save_pretrained(tmp_path / "beta")
    tokenizer.save_pretrained(tmp_path / "beta")
    assert main(["predict", "--checkpoint", str(tmp_path / "beta"), "--max-new-tokens", "8", *INPUTS]) == 0
    assert capsys.readouterr().out.splitlines() == expected


def test_a_model_of_one_tasks_route_applies_that_tasks_postprocess_to_inputs_without_a_task(moe_dir, tmp_path,
                                                                                             capsys):
    # was: an `export --task beta` folder answered an input without a task through beta's route but printed the
    # decoded text, where --task beta (and eval) gave beta's postprocess of it; and --tasks-dir, registering beta for
    # that postprocess, was refused as serving no input
    import task_registry
    from t2t_mtl.model.moe import extract_task_subnetwork

    model, tokenizer, _ = load_checkpoint(moe_dir)
    raw = _one_by_one_generate(model, tokenizer, INPUTS, task_ids=torch.tensor([1]))
    shouted = [text.upper() + "!" for text in raw]  # the postprocess, in Python
    folder = tmp_path / "beta"
    extract_task_subnetwork(model, "beta").save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    tasks = _shouting_task_dir(tmp_path, "beta")
    base = ["predict", "--checkpoint", str(folder), "--max-new-tokens", "8", "--tasks-dir", str(tasks)]
    with task_registry.isolated_registry():
        for options in ([], ["--task", "beta"]):
            assert main([*base, *options, *INPUTS]) == 0, capsys.readouterr().err
            assert capsys.readouterr().out.splitlines() == shouted, options
        assert main([*base[:-2], "--raw", *INPUTS]) == 0  # (--raw leaves --tasks-dir nothing to serve)
        assert capsys.readouterr().out.splitlines() == raw
        sub, tokenizer, _ = load_checkpoint(folder)
        got = predict(sub, tokenizer, [PredictRequest(text) for text in INPUTS], max_new_tokens=8,
                      postprocessing={"beta": task_registry.get_task("beta")})
    assert [(p.prediction, p.output) for p in got] == list(zip(shouted, raw))


def test_an_export_task_folder_of_plain_t5_form_answers_inputs_without_a_task_as_its_task(moe_dir, tmp_path,
                                                                                         capsys):
    # was: export --task of a top-1 task-routed model writes a plain T5, which has no route to take its task from,
    # so predict without --task printed the decoded text where --task beta printed beta's postprocess of it (and a
    # model with task embeddings lost the task token): the folder's meta names the task it serves
    import task_registry
    from t2t_mtl.engine.export import export_task_subnetwork

    folder = export_task_subnetwork(moe_dir, "beta", tmp_path / "beta")
    model, tokenizer, meta = load_checkpoint(folder)
    assert getattr(model, "routing_task_names", None) is None and meta["task"] == "beta"  # a plain T5
    raw = _one_by_one_generate(model, tokenizer, INPUTS)
    shouted = [text.upper() + "!" for text in raw]
    tasks = _shouting_task_dir(tmp_path, "beta")
    base = ["predict", "--checkpoint", str(folder), "--max-new-tokens", "8"]
    with task_registry.isolated_registry():
        assert main([*base, *INPUTS]) == 0, capsys.readouterr().err  # its task unregistered: nothing to apply
        assert capsys.readouterr().out.splitlines() == raw
        for options in ([], ["--task", "beta"]):
            assert main([*base, "--tasks-dir", str(tasks), *options, *INPUTS]) == 0, capsys.readouterr().err
            assert capsys.readouterr().out.splitlines() == shouted, options
        beta = {"beta": task_registry.get_task("beta")}
        got = predict(model, tokenizer, [PredictRequest(text) for text in INPUTS], max_new_tokens=8, meta=meta,
                      postprocessing=beta)
        assert [p.prediction for p in got] == shouted
        got = predict(model, tokenizer, [PredictRequest(text) for text in INPUTS], max_new_tokens=8,
                      postprocessing=beta)  # (without its meta a plain T5 serves no task)
    assert [p.prediction for p in got] == raw


def test_tasks_dir_serves_inputs_without_a_task_through_the_folders_task_beside_a_ranked_input_naming_it(
        moe_dir, tmp_path, capsys):
    # mutation testing: predict deciding whether to wait for the model's implied task only where no input names a
    # task (any, for all) passed every test, and refused --tasks-dir here before loading the model ('every input that
    # names a task is ranked'), though the line without a task is generated and takes beta's postprocess
    import task_registry
    from t2t_mtl.engine.export import export_task_subnetwork

    folder = export_task_subnetwork(moe_dir, "beta", tmp_path / "beta")
    model, tokenizer, _ = load_checkpoint(folder)
    shouted = _one_by_one_generate(model, tokenizer, [INPUTS[1]])[0].upper() + "!"
    lines = tmp_path / "inputs.jsonl"
    lines.write_text(json.dumps({"inputs": INPUTS[0], "answer_choices": CHOICES, "task": "beta"}) + "\n"
                     + json.dumps({"inputs": INPUTS[1]}) + "\n")
    tasks = _shouting_task_dir(tmp_path, "beta")
    with task_registry.isolated_registry():
        assert main(["predict", "--checkpoint", str(folder), "--max-new-tokens", "8", "--tasks-dir", str(tasks),
                     "--input", str(lines)]) == 0, capsys.readouterr().err
    ranked, generated = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert ranked["prediction"] in CHOICES and generated == {"inputs": INPUTS[1], "prediction": shouted}


def test_a_broken_task_file_of_tasks_dir_is_error_lines_naming_it(moe_dir, tmp_path, capsys):
    # mutation testing: run_predict letting the tasks' ValueError out (a traceback, exit 1) passed every test
    import task_registry

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "broken.yaml").write_text("name: alpha\n")
    with task_registry.isolated_registry():
        assert main(["predict", "--checkpoint", str(moe_dir), "--task", "alpha", "--tasks-dir", str(tasks),
                     INPUTS[0]]) == 2
    broken = tasks / "broken.yaml"
    assert capsys.readouterr().err == (f"error: {broken}:1: missing required key 'source'\n"
                                       f"error: {broken}:1: missing required key 'templates'\n")


def test_a_task_the_model_was_not_trained_on_is_named_with_its_close_trained_task(moe_dir, tmp_path, t5_tokenizer_dir,
                                                                                  caplog):
    # was: `predict --task alpah` answered silently through the unseen-task route, so a misspelt task name gave
    # another model's answers with nothing said; the answers stay the unseen route's, now with a warning per name
    from t2t_mtl.analysis.task_embeddings import TaskTokens

    model, tokenizer, _ = load_checkpoint(moe_dir)
    unseen = _one_by_one_generate(model, tokenizer, INPUTS[:1], task_ids=torch.tensor([-1]))
    with caplog.at_level("WARNING", logger="t2t_mtl.evaluation.predict"):
        got = predict(model, tokenizer, [PredictRequest(INPUTS[0]), PredictRequest(INPUTS[0], task="beta")],
                      default_task="alpah", max_new_tokens=8)
    assert got[0].prediction == unseen[0]
    (record,) = caplog.records  # one for 'alpah'; 'beta' is trained
    assert all(text in record.getMessage() for text in ("'alpah'", "did you mean 'alpha'?", "alpha, beta", "unseen"))
    caplog.clear()
    with caplog.at_level("WARNING", logger="t2t_mtl.evaluation.predict"):
        predict(model, tokenizer, [PredictRequest(text, task="alpha") for text in INPUTS], max_new_tokens=8)
    assert not caplog.records
    # a task-embeddings model: a task without its token is named the same way
    tokenizer = load_tokenizer(t5_tokenizer_dir)
    TaskTokens(tokenizer, ["alpha", "beta"])
    _dense(tokenizer).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, tokenizer, _ = load_checkpoint(tmp_path)
    with caplog.at_level("WARNING", logger="t2t_mtl.evaluation.predict"):
        predict(model, tokenizer, [PredictRequest(INPUTS[0], CHOICES, "betta")])
    (record,) = caplog.records
    assert "'betta'" in record.getMessage() and "did you mean 'beta'?" in record.getMessage()


def test_task_embeddings_model_gets_each_inputs_task_token(tmp_path, t5_tokenizer_dir, capsys):
    from t2t_mtl.analysis.task_embeddings import TaskTokens

    tokenizer = load_tokenizer(t5_tokenizer_dir)
    TaskTokens(tokenizer, ["alpha", "beta"])  # a TE⊕ENC model: trained and evaluated with its task token in front
    _dense(tokenizer).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, tokenizer, _ = load_checkpoint(tmp_path)
    text = INPUTS[0]
    expected = {task: [_log_likelihood(model, tokenizer, prefix, c) for c in CHOICES]
                for task, prefix in (("alpha", f"<task:alpha> {text}"), ("unseen", text))}
    for task, scores in expected.items():  # a task without a token (not trained on) gets none, as in evaluation
        row = {"inputs": text, "answer_choices": CHOICES, "task": task}
        (out,) = predict(model, tokenizer, read_requests([json.dumps(row)], jsonl=True, source="x"))
        assert out.scores == pytest.approx(scores, abs=1e-4) and out.to_dict()["inputs"] == text
    assert main(["predict", "--checkpoint", str(tmp_path), "--task", "alpha", "--jsonl", "--choices",
                 " ||| ".join(CHOICES), text]) == 0
    assert json.loads(capsys.readouterr().out)["scores"] == pytest.approx(expected["alpha"], abs=1e-4)


def test_a_task_token_comes_on_top_of_the_input_limit_as_in_evaluation(tmp_path, t5_tokenizer_dir):
    # evaluation (and training) give a TE⊕ENC model its task token on top of max_input_length; predict cut the
    # input's last token for it instead, so an input exactly at the limit scored differently than in `eval`
    from t2t_mtl.analysis.task_embeddings import TaskTokens

    tokenizer = load_tokenizer(t5_tokenizer_dir)
    TaskTokens(tokenizer, ["alpha"])
    _dense(tokenizer).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, tokenizer, _ = load_checkpoint(tmp_path)
    text = INPUTS[1]
    limit = len(tokenizer(text).input_ids)  # the input with its EOS fills the limit exactly
    for task, prompt in (("alpha", f"<task:alpha> {text}"), ("unseen", text)):  # an unseen task gets no token
        whole = [_log_likelihood(model, tokenizer, prompt, c) for c in CHOICES]  # nothing cut
        request = PredictRequest(text, CHOICES, task)
        (ranked,) = predict(model, tokenizer, [request], max_input_length=limit)
        assert ranked.scores == pytest.approx(whole, abs=1e-4)
        (generated,) = predict(model, tokenizer, [PredictRequest(text, None, task)], max_input_length=limit,
                               max_new_tokens=8)
        assert generated.prediction == _one_by_one_generate(model, tokenizer, [prompt])[0]


def test_predict_warns_of_the_moe_choices_dropped_over_capacity(t5_tokenizer_dir, caplog):
    # was: predictions of a token-routed MoE whose layers dropped tokens over eval_capacity_factor had no word of it
    from t2t_mtl.model.moe import moe_blocks

    tokenizer = load_tokenizer(t5_tokenizer_dir)
    torch.manual_seed(1)
    model = convert_to_moe(_dense(tokenizer), {"num_experts": 4, "top_k": 1, "every": 1, "upcycle": False,
                                               "eval_capacity_factor": 0.5, "min_capacity": 1}).eval()
    routed = {"dropped": 0, "choices": 0}

    def count(block, args, out):  # (the layers' own counts, summed over every forward: what the warning adds up)
        routed["dropped"] += block.aux["num_dropped"]
        routed["choices"] += block.aux["choices"]

    handles = [block.register_forward_hook(count) for _, block in moe_blocks(model)]
    try:
        with caplog.at_level("WARNING", logger="t2t_mtl.evaluation.predict"):
            predict(model, tokenizer, [PredictRequest(t, list(CHOICES)) for t in INPUTS] + [PredictRequest(INPUTS[1])],
                    max_new_tokens=4)
    finally:
        for handle in handles:
            handle.remove()
    assert routed["dropped"] > 0
    (record,) = caplog.records
    assert record.getMessage().startswith(f"the MoE layers dropped {routed['dropped']} of the {routed['choices']} "
                                          f"(token, slot) choices they routed over expert capacity")
    caplog.clear()
    with caplog.at_level("WARNING", logger="t2t_mtl.evaluation.predict"):  # (a dense model drops nothing)
        predict(_dense(tokenizer), tokenizer, [PredictRequest(INPUTS[0])], max_new_tokens=2)
    assert not caplog.records


def test_tasks_preview_jsonl_feeds_predict(dense_dir, capsys, monkeypatch):
    assert main(["tasks", "preview", "parity", "-n", "4", "--jsonl"]) == 0
    preview = capsys.readouterr().out
    rows = [json.loads(line) for line in preview.splitlines()]
    assert len(rows) == 4 and all({"inputs", "targets", "answer_choices", "task", "template"} <= set(r) for r in rows)
    monkeypatch.setattr("sys.stdin", io.StringIO(preview))
    assert main(["predict", "--checkpoint", str(dense_dir), "--jsonl", "--input", "-"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["inputs"] for o in out] == [r["inputs"] for r in rows]
    assert [o["targets"] for o in out] == [r["targets"] for r in rows]  # echoed for comparison
    for o, r in zip(out, rows):  # rows with answer choices are ranked over them, the others generated
        assert (o["prediction"] in r["answer_choices"] and len(o["scores"]) == len(r["answer_choices"])
                if r["answer_choices"] else "scores" not in o)


def test_a_json_line_is_answered_by_its_own_keys_in_their_order_then_the_answer(dense_dir, capsys, monkeypatch):
    # was: the line's other keys, then inputs, prediction, answer_choices, task, scores: the line's order lost,
    # and an empty "answer_choices" (the rendered-dataset schema's "none") dropped from the output
    rows = [{"id": 7, "task": "parity", "inputs": INPUTS[0], "answer_choices": CHOICES, "meta": {"a": 1}},
            {"answer_choices": [], "inputs": INPUTS[1], "targets": "das Haus"},
            {"inputs": INPUTS[2]}]
    stdin = "".join(json.dumps(row) + "\n" for row in rows)
    expected = [[*rows[0], "prediction", "scores"], [*rows[1], "prediction"], ["inputs", "prediction"]]
    given = [[*rows[0], "prediction", "scores"], [*rows[1], "prediction", "scores"],
             ["inputs", "answer_choices", "prediction", "scores"]]  # --choices: in place, else after the line's keys
    for options, keys in (([], expected), (["--choices", "a ||| b"], given)):
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        assert main(["predict", "--checkpoint", str(dense_dir), "--jsonl", "--input", "-", *options]) == 0
        out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [list(o) for o in out] == keys
        assert all(o[key] == row[key] for o, row in zip(out, rows) for key in row if key != "answer_choices")
    assert out[1]["answer_choices"] == out[2]["answer_choices"] == ["a", "b"] and out[0]["answer_choices"] == CHOICES


def test_an_earlier_predict_output_fed_back_carries_no_stale_scores(dense_dir, capsys, monkeypatch):
    # predict's own JSON lines are valid input; their "scores" were echoed beside a new, generated prediction
    earlier = {"inputs": INPUTS[0], "answer_choices": CHOICES, "prediction": "maybe so", "scores": [-1.0, -2.0, -3.0]}
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(earlier) + "\n"))
    assert main(["predict", "--checkpoint", str(dense_dir), "--jsonl", "--input", "-", "--scoring", "generate",
                 "--max-new-tokens", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    tokenizer = load_tokenizer(dense_dir)
    model = _dense(tokenizer).eval()
    assert out["prediction"] == _one_by_one_generate(model, tokenizer, [INPUTS[0]])[0][:len(out["prediction"])]
    assert "scores" not in out and out["answer_choices"] == CHOICES


def _shouting_task_dir(tmp_path: Path, name: str) -> Path:
    """A folder holding one YAML task `name` whose postprocess upper-cases a text and adds '!'."""
    (tmp_path / "rows.jsonl").write_text(json.dumps({"q": "a", "a": "b"}) + "\n")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "shout.yaml").write_text(textwrap.dedent(f"""\
        name: {name}
        splits: [validation]
        metrics: [exact_match]
        postprocess: "(text | upper) ~ '!'"
        source: {{files: {{validation: {tmp_path / 'rows.jsonl'}}}}}
        templates:
          - {{name: t, jinja: "{{{{ q }}}} ||| {{{{ a }}}}"}}
        """))
    return tasks


def test_a_generated_answer_of_a_task_with_a_postprocess_is_printed_postprocessed(dense_dir, tmp_path, capsys,
                                                                                 monkeypatch):
    # was: predict printed the decoded text whatever the task, while eval scores the task's postprocess of it
    import task_registry

    tasks = _shouting_task_dir(tmp_path, "shout_words")
    model, tokenizer, _ = load_checkpoint(dense_dir)
    raw = _one_by_one_generate(model, tokenizer, INPUTS)
    shouted = [text.upper() + "!" for text in raw]  # the expression, in Python
    base = ["predict", "--checkpoint", str(dense_dir), "--max-new-tokens", "8"]
    with task_registry.isolated_registry():
        assert main([*base, "--task", "shout_words", "--tasks-dir", str(tasks), *INPUTS]) == 0
        assert capsys.readouterr().out.splitlines() == shouted
        # the run's data.tasks_dir is the default, as in eval; --raw prints the decoded text
        run = (model, tokenizer, {"config": {"data": {"tasks_dir": str(tasks)}}})
        monkeypatch.setattr("t2t_mtl.evaluation.load_checkpoint", lambda path: run)
        for option, expected in (([], shouted), (["--raw"], raw)):
            assert main([*base, "--task", "shout_words", *option, *INPUTS]) == 0
            assert capsys.readouterr().out.splitlines() == expected
        monkeypatch.undo()
        # each JSON line's own task; a ranked answer is the choice as written; a line of no task is left as decoded
        rows = [{"inputs": INPUTS[0], "task": "shout_words"}, {"inputs": INPUTS[1]},
                {"inputs": INPUTS[2], "task": "shout_words", "answer_choices": CHOICES}]
        monkeypatch.setattr("sys.stdin", io.StringIO("".join(json.dumps(r) + "\n" for r in rows)))
        assert main([*base, "--jsonl", "--input", "-", "--tasks-dir", str(tasks)]) == 0
        out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [o["prediction"] for o in out[:2]] == [shouted[0], raw[1]] and out[2]["prediction"] in CHOICES
    with task_registry.isolated_registry():  # (shout_words registered by no earlier command)
        cases = {("--task", "shout_words"): "and 'shout_words' is not a registered task (built in, or from "
                                            "--tasks-dir / --task-module, by default the run's data.tasks_dir / "
                                            "data.task_modules) whose postprocess or tie rule predict could apply: "
                                            "drop --task, or register the task",
                 ("--tasks-dir", str(tasks)): "no input names a task (--task, or a \"task\" field): drop --tasks-dir",
                 ("--task", "shout_words", "--tasks-dir", str(tasks), "--raw", "--task-module", "x"):
                     "--tasks-dir registers YAML tasks for the postprocess of generated answers (a YAML task has no "
                     "tie rule for ranked ones), but --raw prints generated answers without it: drop --tasks-dir"}
        for args, message in cases.items():
            assert main([*base, *args, INPUTS[0]]) == 2, args
            assert message in capsys.readouterr().err, args


def test_one_answer_choice_holding_the_separator_is_refused():
    # was: ranked as the only choice, so the prediction was always 'yes ||| no' (the --choices form in a list)
    with pytest.raises(PredictInputError, match=r"^x:2: \"answer_choices\" is one choice holding '\|\|\|' "
                                                r"\('yes \|\|\| no'\).*e\.g\. \[\"yes\", \"no\"\]$"):
        read_requests(['{"inputs": "a", "answer_choices": ["yes", "no"]}',
                       '{"inputs": "b", "answer_choices": ["yes ||| no"]}'], jsonl=True, source="x")
    assert read_requests(['{"inputs": "a", "answer_choices": ["a ||| b", "c"]}'], jsonl=True,
                         source="x")[0].answer_choices == ["a ||| b", "c"]  # row text may hold the separator


def test_bad_input_is_named(dense_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"inputs": "fine"}\n{"inputs": 3}\n')
    with pytest.raises(PredictInputError, match=r"bad\.jsonl:2: a JSON line needs an \"inputs\" string"):
        read_requests(open(bad), jsonl=True, source=str(bad))
    with pytest.raises(PredictInputError, match=r"x:1: not a JSON object"):
        read_requests(["no json"], jsonl=True, source="x")
    with pytest.raises(PredictInputError, match=r"\"answer_choices\" must be a list of strings"):
        read_requests(['{"inputs": "a", "answer_choices": "yes"}'], jsonl=True, source="x")
    with pytest.raises(PredictInputError, match="no input"):
        read_requests(["", "  "], jsonl=False, source="empty.txt")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café\n".encode("latin-1"))
    with pytest.raises(PredictInputError, match=r"latin\.txt: not UTF-8 text .*save it as UTF-8"):
        read_requests(open(latin, encoding="utf-8"), jsonl=False, source=str(latin))
    # a blank text line is an input too, so the k-th answer stays the k-th line's; JSON lines skip blanks
    assert [r.inputs for r in read_requests(["a\n", "\n", "b\n"], jsonl=False, source="x")] == ["a", "", "b"]
    assert [r.inputs for r in read_requests(['{"inputs": "a"}\n', "\n"], jsonl=True, source="x")] == ["a"]
    cases = {
        ("--input", str(bad)): "bad.jsonl:2",
        ("--input", str(latin)): "latin.txt: not UTF-8 text",
        ("--choices", "yes", "a text"): "at least two non-empty choices",
        ("--input", str(tmp_path / "missing.txt")): "no such file",
        ("--input", str(tmp_path)): "is a folder; give a file of inputs",  # was: "no such file"
        ("--input", str(bad), "a text"): "one of the two",
        ("--scoring", "rank", "a text"): "input 1 has no answer choices",
        ("--num-beams", "0", "a text"): "--num-beams must be at least 1",
        # (mutation testing: predict leaving --max-input-length out of its check passed every test)
        ("--max-input-length", "0", "a text"): "--max-input-length must be at least 1, got 0",
        # options the chosen scoring would ignore
        ("--choices", "yes ||| no", "--scoring", "generate", "a text"): "--choices are ranked by log-likelihood",
        ("--length-norm", "--scoring", "generate", "a text"): "--length-norm changes how answer choices are ranked",
        ("--num-beams", "2", "--scoring", "rank", "--choices", "a ||| b", "x"): "--num-beams sets the beam width",
        # was: "... no registered task 'parity' has a postprocess ...", as if parity were not registered
        ("--task", "parity", "a text"): "error: --task parity would change nothing here: this model takes no task "
                                        "(it has no task-routed experts, per-task LoRA adapters or task embeddings "
                                        "to pick from), and the registered task 'parity' has no postprocess or tie "
                                        "rule of its own for predict to apply (its answers are the decoded text or "
                                        "the highest-scoring choice, with or without --task): drop --task\n",
        # ... or that these inputs would ignore under --scoring auto
        ("--length-norm", "a text"): "--length-norm changes how answer choices are ranked, but no input has any",
        ("--num-beams", "2", "--choices", "a ||| b", "x"): "every input has answer choices and is ranked",
        # was: accepted and silently unused
        ("--max-new-tokens", "3", "--scoring", "rank", "--choices", "a ||| b", "x"):
            "--max-new-tokens limits generation",
        ("--max-new-tokens", "3", "--choices", "a ||| b", "x"): "--max-new-tokens applies to generation, but every "
                                                               "input has answer choices",
    }
    for args, message in cases.items():
        assert main(["predict", "--checkpoint", str(dense_dir), *args]) == 2, args
        assert message in capsys.readouterr().err, args
    assert main(["predict", "--checkpoint", str(tmp_path / "nowhere"), "a text"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_newline_inside_a_prediction_is_printed_as_backslash_n_keeping_one_line_per_input(dense_dir, capsys):
    # mutation testing: printing the prediction as it is (its newline splitting the input's line) passed every test
    model, tokenizer, _ = load_checkpoint(dense_dir)
    choices = ["first\nline", "second\nline"]
    best = max(choices, key=lambda choice: _log_likelihood(model, tokenizer, INPUTS[0], choice))
    assert main(["predict", "--checkpoint", str(dense_dir), "--choices", " ||| ".join(choices), INPUTS[0]]) == 0
    assert capsys.readouterr().out == best.replace("\n", "\\n") + "\n"


def test_inputs_are_batched_longest_first_and_answered_in_their_own_order(dense_dir, monkeypatch):
    # was: batches were cut in input order, so a short input padded to the longest input of its batch
    predict_module = importlib.import_module("t2t_mtl.evaluation.predict")  # (the package exports `predict`)
    model, tokenizer, _ = load_checkpoint(dense_dir)
    texts = [" ".join(["word"] * n) for n in (2, 9, 1, 6, 4, 8, 3)]
    calls = []
    for name in ("generate_texts", "score_choices"):
        real = getattr(predict_module, name)
        monkeypatch.setattr(predict_module, name, lambda m, t, inputs, *a, _real=real, **k:
                            calls.append(list(inputs)) or _real(m, t, inputs, *a, **k))
    requests = [PredictRequest(text, list(CHOICES) if i % 2 else None) for i, text in enumerate(texts)]
    got = predict(model, tokenizer, requests, max_new_tokens=8, batch_size=2)
    generated, ranked = texts[0::2], texts[1::2]
    assert calls == [sorted(generated, key=len, reverse=True), sorted(ranked, key=len, reverse=True)]
    assert [p.prediction for p in got[0::2]] == _one_by_one_generate(model, tokenizer, generated)
    for text, result in zip(ranked, got[1::2]):
        assert result.scores == pytest.approx([_log_likelihood(model, tokenizer, text, c) for c in CHOICES], abs=1e-4)


def test_predict_of_a_local_model_loads_neither_datasets_nor_evaluate(dense_dir):
    # was: building the CLI's parser imported task_registry (datasets, pandas, pyarrow), and so did the hub check of a
    # local tokenizer folder, and the evaluation package imported `evaluate`: about a sixth of predict's CPU time
    code = ("import sys; from t2t_mtl.cli import main; code = main(['predict', '--checkpoint', sys.argv[1], "
            "'--max-new-tokens', '2', 'a b c']); "
            "print(code, sorted(m for m in ('datasets', 'evaluate', 'task_registry', 'pandas') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code, str(dense_dir)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.stdout.splitlines()[-1] == "0 []", done.stdout + done.stderr


@pytest.mark.parametrize("kwargs,match", [
    # a string of choices was iterated: each character a choice, scored and picked from (a ' ' predicted)
    ({"answer_choices": "yes ||| no"}, r"answer_choices must be a list of strings, got the string 'yes \|\|\| no': "
                                       r"write \['yes', 'no'\]"),
    ({"answer_choices": ["yes", 1]}, r"answer_choices must be a list of strings, got \['yes', 1\]"),
    ({"inputs": ["a", "b"]}, r"inputs must be the input text \(a string\), got \['a', 'b'\]"),
    ({"task": ["parity"]}, r"task must be a task name \(a string\) or None, got \['parity'\]"),
], ids=["choices-string", "choices-not-strings", "inputs-list", "task-list"])
def test_a_request_of_the_wrong_types_is_refused_naming_the_field(kwargs, match):
    with pytest.raises(PredictInputError, match=rf"^PredictRequest: {match}"):
        PredictRequest(**{"inputs": "is it?", **kwargs})
    assert PredictRequest("is it?", ("yes", "no")).answer_choices == ["yes", "no"]


@pytest.mark.parametrize("requests,match", [
    (["parity: 1 0"], r"request 1 is a str, not a PredictRequest: write PredictRequest\('parity: 1 0'\)"),
    ("parity: 1 0", r"requests must be a list of PredictRequest objects, got the string 'parity: 1 0': "
                    r"write \[PredictRequest\('parity: 1 0'\)\]"),
    (PredictRequest("parity: 1 0"), r"requests must be a list of PredictRequest objects, got one PredictRequest "
                                    r"\('parity: 1 0'\): put it in a list, \[request\]$"),
    ((PredictRequest(text) for text in ["a", "b"]), r"requests must be a list of PredictRequest objects, got a "
                                                    r"generator: write list\(requests\)$"),
    (None, r"requests must be a list of PredictRequest objects, got None$"),
], ids=["list-of-strings", "one-string", "one-request", "generator", "none"])
def test_predict_names_requests_that_are_not_predict_requests(requests, match):
    # a list of strings (or one string) raised AttributeError: 'str' object has no attribute 'answer_choices'; one
    # PredictRequest ('object is not iterable') and a generator ('has no len()', its requests used up by the checks)
    # a raw TypeError
    with pytest.raises(PredictInputError, match=rf"^predict: {match}"):
        predict(None, None, requests)


def test_predict_breaks_a_tie_between_choices_as_evaluation_does(dense_dir, bigbench_dir, capsys, monkeypatch,
                                                                 caplog):
    # was: predict gave a tie to the first listed choice, where evaluation breaks a BIG-bench task's as BIG-bench
    # does (a hash of the scores in the file's order): tasks preview --jsonl wrote no choice_file_positions, the field
    # that rule reads, so a model scoring choices alike was answered otherwise than evaluation graded it
    import task_registry
    from task_registry.bigbench import import_bigbench
    from test_bigbench import _two_best, bigbench_pick

    predict_module = importlib.import_module("t2t_mtl.evaluation.predict")
    monkeypatch.setattr(predict_module, "score_choices", lambda model, tokenizer, inputs, choices, **kwargs: [
        [_two_best(choice) for choice in row] for row in choices])  # a tie between each example's two best
    data = json.loads((bigbench_dir / "date_understanding" / "task.json").read_text(encoding="utf-8"))
    with task_registry.isolated_registry():
        import_bigbench(bigbench_dir)
        task = task_registry.get_task("bigbench_date_understanding")
        assert main(["tasks", "preview", task.name, "--split", "test", "-n", "20", "--jsonl"]) == 0
        preview = capsys.readouterr().out
        lines = [json.loads(line) for line in preview.splitlines()]
        rows = task.load_rows("test")
        assert [line["choice_file_positions"] for line in lines] == rows["choice_file_positions"][:20]
        monkeypatch.setattr("sys.stdin", io.StringIO(preview))
        assert main(["predict", "--checkpoint", str(dense_dir), "--jsonl", "--input", "-"]) == 0
        answers = [json.loads(line)["prediction"] for line in capsys.readouterr().out.splitlines()]
        expected = [bigbench_pick(data["examples"][row["idx"]]["target_scores"], _two_best) for row in rows][:20]
        first_best = [max(line["answer_choices"], key=_two_best) for line in lines]
        assert answers == expected and answers != first_best  # (the tie rule decides here)
        old = "".join(json.dumps({k: v for k, v in line.items() if k != "choice_file_positions"}) + "\n"
                      for line in lines)  # a line written before preview wrote the field: the first of the best
        monkeypatch.setattr("sys.stdin", io.StringIO(old))
        assert main(["predict", "--checkpoint", str(dense_dir), "--jsonl", "--input", "-"]) == 0
        assert [json.loads(line)["prediction"] for line in capsys.readouterr().out.splitlines()] == first_best
        assert ("task 'bigbench_date_understanding' breaks a tie between answer choices by its evaluation protocol, "
                "which reads choice_file_positions from an input's JSON line; 20 of its ranked inputs lack it") \
            in caplog.text
        bad = json.dumps({**lines[0], "choice_file_positions": [0]}) + "\n"
        monkeypatch.setattr("sys.stdin", io.StringIO(bad))
        assert main(["predict", "--checkpoint", str(dense_dir), "--jsonl", "--input", "-"]) == 2
        assert "error: input 1 (task 'bigbench_date_understanding'): {\"choice_file_positions\": [0]} does not fit " \
               "its" in capsys.readouterr().err


TIE_RULE_MODULE = """\
from task_registry import EvalProtocol, LocalFileSource, Task, Template, register_task


class PreferredOnTies(EvalProtocol):
    pick_fields = ("prefer",)

    def pick(self, scores, row):
        best = max(scores)
        return row["prefer"] if scores[row["prefer"]] == best else scores.index(best)


register_task(Task("tied_choices", LocalFileSource({"validation": "unused.jsonl"}),
                   [Template("t", "{{ q }} ||| {{ a }}")], splits=("validation",), eval_protocol=PreferredOnTies()))
"""


def test_raw_takes_a_task_modules_tie_rule_for_ranked_inputs(dense_dir, tmp_path, capsys, monkeypatch,
                                                            restored_component_tables):
    # was: --raw with --task-module was refused ('--raw prints answers without it'), though --raw leaves out only the
    # postprocess of generated answers and a module's task may break ties between a ranked input's choices
    import task_registry

    module = tmp_path / "tie_rule_tasks.py"
    module.write_text(TIE_RULE_MODULE)
    predict_module = importlib.import_module("t2t_mtl.evaluation.predict")
    monkeypatch.setattr(predict_module, "score_choices", lambda model, tokenizer, inputs, choices, **kwargs: [
        [-1.0] * len(row) for row in choices])  # every choice ties
    rows = [{"inputs": "pick one", "answer_choices": CHOICES, "task": "tied_choices", "prefer": prefer}
            for prefer in (2, 1)]
    base = ["predict", "--checkpoint", str(dense_dir), "--jsonl", "--input", "-", "--raw", "--task-module",
            str(module)]
    with task_registry.isolated_registry():
        monkeypatch.setattr("sys.stdin", io.StringIO("".join(json.dumps(row) + "\n" for row in rows)))
        assert main(base) == 0, capsys.readouterr().err
        assert [json.loads(line)["prediction"] for line in capsys.readouterr().out.splitlines()] == [CHOICES[2],
                                                                                                  CHOICES[1]]
        # generated inputs only: the module's tasks would serve nothing under --raw
        generated = [{"inputs": "say one", "task": "tied_choices"}]
        monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(generated[0]) + "\n"))
        assert main(base) == 2
        assert capsys.readouterr().err == (
            "error: --task-module registers tasks for the postprocess of generated answers and the tie rule of ranked "
            "ones, but --raw prints generated answers without their postprocess and no input that names a task is "
            "ranked: drop --task-module\n")
        # a YAML task has no tie rule: --tasks-dir serves ranked inputs nothing, --raw or not
        monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(rows[0]) + "\n"))
        assert main([*base[:-3], "--tasks-dir", str(tmp_path)]) == 2
        assert capsys.readouterr().err == (
            "error: --tasks-dir registers YAML tasks for the postprocess of generated answers (a YAML task has no tie "
            "rule for ranked ones), but every input that names a task is ranked: drop --tasks-dir\n")


def test_task_sources_serving_nothing_under_scoring_generate_or_rank_are_refused_before_the_model_loads(
        tmp_path, capsys, monkeypatch):
    # was: the refusal was only checked under --scoring auto, so `--scoring generate --raw --tasks-dir DIR` (answers
    # printed as decoded, which a YAML task's postprocess was all --tasks-dir served) ran without a word
    def load(path):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("t2t_mtl.evaluation.load_checkpoint", load)
    line = json.dumps({"inputs": INPUTS[0], "answer_choices": CHOICES, "task": "some_task"}) + "\n"
    uses = {"--tasks-dir": "--tasks-dir registers YAML tasks for the postprocess of generated answers (a YAML task "
                           "has no tie rule for ranked ones), but ",
            "--task-module": "--task-module registers tasks for the postprocess of generated answers and the tie rule "
                             "of ranked ones, but "}
    cases = [(["--scoring", "generate", "--raw", "--tasks-dir", str(tmp_path)],
              uses["--tasks-dir"] + "--raw prints generated answers without it: drop --tasks-dir"),
             (["--scoring", "rank", "--tasks-dir", str(tmp_path)],
              uses["--tasks-dir"] + "every input that names a task is ranked: drop --tasks-dir"),
             # the line's choices are not ranked under --scoring generate, so no tie rule is read
             (["--scoring", "generate", "--raw", "--task-module", "some_module"],
              uses["--task-module"] + "--raw prints generated answers without their postprocess and no input that "
                                      "names a task is ranked: drop --task-module")]
    for options, message in cases:
        monkeypatch.setattr("sys.stdin", io.StringIO(line))
        assert main(["predict", "--checkpoint", str(tmp_path), "--jsonl", "--input", "-", *options]) == 2, options
        assert capsys.readouterr().err == f"error: {message}\n", options


def test_ranked_lines_of_an_unregistered_task_holding_a_tie_rules_fields_are_warned_of_naming_the_remedy(
        dense_dir, capsys, monkeypatch, caplog):
    # was: a BIG-bench task's lines (choice_file_positions, as tasks preview --jsonl writes them) given to predict
    # without the task registered were answered first-best without a word, where evaluation breaks ties by its rule
    import task_registry

    predict_module = importlib.import_module("t2t_mtl.evaluation.predict")
    monkeypatch.setattr(predict_module, "score_choices", lambda model, tokenizer, inputs, choices, **kwargs: [
        [-1.0] * len(row) for row in choices])  # every choice ties
    lines = [{"inputs": "pick one", "answer_choices": CHOICES, "task": "bigbench_navigate",
              "choice_file_positions": [2, 0, 1]}, {"inputs": "and one", "answer_choices": CHOICES, "task": "other"}]
    with task_registry.isolated_registry():
        monkeypatch.setattr("sys.stdin", io.StringIO("".join(json.dumps(line) + "\n" for line in lines)))
        assert main(["predict", "--checkpoint", str(dense_dir), "--jsonl", "--input", "-"]) == 0
    assert [json.loads(line)["prediction"] for line in capsys.readouterr().out.splitlines()] == [CHOICES[0]] * 2
    warned = [record.getMessage() for record in caplog.records if "tie rule" in record.getMessage()]
    assert warned == [
        "task 'bigbench_navigate' is not a registered task here, so predict has no tie rule for it: 1 of its ranked "
        "inputs hold choice_file_positions, which BigBenchEvalProtocol's tie rule reads, and a tie among their choices "
        "goes to the first listed, not as evaluation breaks it; register the task (t2t-mtl predict --task-module "
        "MODULE, a module that registers it, e.g. one calling task_registry.bigbench.import_bigbench(DIR) for a "
        "BIG-bench task; by default the run's data.task_modules; from Python, pass its eval_protocol in "
        "pick_protocols)"]  # (the line of task 'other' holds no tie rule's field: nothing said of it)


SHOUTING_MODULE = """\
from task_registry import LocalFileSource, Task, Template, register_task

register_task(Task("module_shout", LocalFileSource({"validation": "unused.jsonl"}),
                   [Template("t", "{{ q }} ||| {{ a }}")], splits=("validation",),
                   postprocess=lambda text: text.upper() + "!"))
"""


def _folder_naming_an_unimported_module(model_dir: Path, tmp_path: Path, tasks: list) -> tuple:
    """A copy of model folder `model_dir` trained on `tasks`, whose data.task_modules names SHOUTING_MODULE's file
    (which registers module_shout); (the folder, the module's path)."""
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    module = tmp_path / "shouting_tasks.py"
    module.write_text(SHOUTING_MODULE)
    (folder / "t2t_mtl_meta.json").write_text(json.dumps({"tasks": tasks, "config": {
        "data": {"task_modules": [str(module)]}}}))
    return folder, module


def test_inputs_of_a_task_a_model_folders_unimported_module_registers_are_warned_of_as_answered_without_it(
        dense_dir, tmp_path, capsys, monkeypatch, restored_component_tables):
    # was: after the warning that the folder's data.task_modules are not imported, the answers of the task the folder
    # was trained on were printed without its postprocess, without a word of it
    import task_registry

    folder, module = _folder_naming_an_unimported_module(dense_dir, tmp_path, ["module_shout"])
    model, tokenizer, _ = load_checkpoint(dense_dir)
    raw = _one_by_one_generate(model, tokenizer, INPUTS[:2])
    capsys.readouterr()  # (the reference's load drew its bars)
    rows = [{"inputs": text, "task": "module_shout"} for text in INPUTS[:2]]

    def answers(*options, lines=rows):
        monkeypatch.setattr("sys.stdin", io.StringIO("".join(json.dumps(row) + "\n" for row in lines)))
        with task_registry.isolated_registry():
            code = main(["predict", "--checkpoint", str(folder), "--jsonl", "--input", "-", "--max-new-tokens", "8",
                         *options])
        out, err = capsys.readouterr()
        assert code == 0, err
        return [json.loads(line)["prediction"] for line in out.splitlines()], err

    warning = (f"warning: task 'module_shout', which model folder {folder} was trained on, is not registered here: 2 "
               f"inputs naming it are answered without the postprocess or tie rule it may have, unlike in `t2t-mtl "
               f"eval` (the folder's data.task_modules [{str(module)!r}], which may register it, were not imported: "
               f"see above); pass --task-module MODULE to import the one you trust\n")
    predictions, err = answers()
    assert predictions == raw and err.endswith(warning) and err.startswith("warning: not importing data.task_modules")
    predictions, err = answers("--raw")  # (printed as decoded, as asked: nothing is left out)
    assert predictions == raw and "is not registered here" not in err
    # a ranked input is answered without the task's tie rule, --raw or not: warned of (the generated one is not)
    predictions, err = answers("--raw", lines=[{**rows[0], "answer_choices": CHOICES}, rows[1]])
    assert predictions[0] in CHOICES and predictions[1] == raw[1]
    assert err.endswith(warning.replace("2 inputs naming it are", "1 input naming it is"))
    predictions, err = answers("--task-module", str(module))  # (imported: postprocessed as eval scores it)
    assert predictions == [text.upper() + "!" for text in raw] and err == ""


def test_the_unregistered_task_warning_names_each_task_once_and_only_those_an_answer_lacks_something_of(
        dense_dir, tmp_path, capsys, monkeypatch, restored_component_tables):
    # (mut44: each of these passed the test above: a warning per input, one for a registered built-in task, 'which
    # model folder ... was trained on' for any task, 'are' for one input, and a ranked input, whose tie rule --raw
    # does not drop, left out under --raw; and a warning where the folder names no module)
    import task_registry

    folder, module = _folder_naming_an_unimported_module(dense_dir, tmp_path, ["module_shout"])

    def warnings(rows, *options):
        monkeypatch.setattr("sys.stdin", io.StringIO("".join(json.dumps(row) + "\n" for row in rows)))
        with task_registry.isolated_registry():
            code = main(["predict", "--checkpoint", str(folder), "--jsonl", "--input", "-", "--max-new-tokens", "2",
                         *options])
        err = capsys.readouterr().err
        assert code == 0, err
        return [line for line in err.splitlines() if "is not registered here" in line]

    def warning(task, trained, inputs):
        return (f"warning: task {task!r}{f', which model folder {folder} was trained on,' if trained else ''} is not "
                f"registered here: {inputs} naming it {'is' if inputs.startswith('1 ') else 'are'} answered without "
                f"the postprocess or tie rule it may have, unlike in `t2t-mtl eval` (the folder's data.task_modules "
                f"[{str(module)!r}], which may register it, were not imported: see above); pass --task-module MODULE "
                f"to import the one you trust")

    rows = [{"inputs": INPUTS[0], "task": "module_shout"}, {"inputs": INPUTS[1], "task": "count_word"},
            {"inputs": INPUTS[2], "task": "elsewhere"}, {"inputs": INPUTS[0], "task": "module_shout"},
            {"inputs": INPUTS[1]}]
    assert warnings(rows) == [warning("module_shout", True, "2 inputs"), warning("elsewhere", False, "1 input")]
    ranked = [{"inputs": INPUTS[0], "task": "elsewhere", "answer_choices": CHOICES}, *rows[:1]]
    assert warnings(ranked, "--raw") == [warning("elsewhere", False, "1 input")]  # (module_shout's printed raw)
    (folder / "t2t_mtl_meta.json").write_text(json.dumps({"tasks": ["module_shout"]}))
    assert warnings(rows) == []  # (no module left unimported: a task no module registers is no module's to give)


def test_inputs_given_their_task_by_the_task_option_are_counted_in_the_unregistered_task_warning(
        moe_dir, tmp_path, capsys, restored_component_tables):
    # (mut44: counting the inputs' own "task" fields alone, none here, passed every test)
    import task_registry

    folder, _ = _folder_naming_an_unimported_module(moe_dir, tmp_path, ["alpha", "beta"])
    with task_registry.isolated_registry():
        assert main(["predict", "--checkpoint", str(folder), "--task", "alpha", "--max-new-tokens", "2",
                     *INPUTS[:2]]) == 0
    err = capsys.readouterr().err
    assert f"warning: task 'alpha', which model folder {folder} was trained on, is not registered here: 2 inputs " \
           f"naming it are answered without the postprocess" in err, err


def test_an_over_long_input_of_a_bigbench_line_keeps_its_end_as_evaluation_keeps_it(dense_dir, bigbench_dir, capsys,
                                                                                  monkeypatch):
    # was: cut at its end, keeping its beginning, where evaluation keeps the end of a BIG-bench task's input (as
    # BIG-bench's model wrapper does): analogical_similarity's lines, its long task prefix first, were each scored on
    # that prefix alone, so every line got the same scores and answer, whatever its question
    import task_registry
    from task_registry.bigbench import import_bigbench

    model, tokenizer, _ = load_checkpoint(dense_dir)
    with task_registry.isolated_registry():
        import_bigbench(bigbench_dir / "analogical_similarity")
        assert main(["tasks", "preview", "bigbench_analogical_similarity", "-n", "2", "--jsonl"]) == 0
        preview = capsys.readouterr().out
        monkeypatch.setattr("sys.stdin", io.StringIO(preview))
        assert main(["predict", "--checkpoint", str(dense_dir), "--jsonl", "--input", "-",
                     "--max-input-length", "32"]) == 0
        answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for line, answer in zip([json.loads(line) for line in preview.splitlines()], answers):
        end = torch.tensor([tokenizer(line["inputs"]).input_ids[-32:]])  # its last 31 tokens and T5's EOS
        reference = []
        for choice in line["answer_choices"]:
            labels = tokenizer(text_target=choice, return_tensors="pt").input_ids
            with torch.no_grad():
                logits = model(input_ids=end, labels=labels).logits
            reference.append(float(torch.log_softmax(logits.float(), -1).gather(-1, labels[..., None]).sum()))
        assert answer["scores"] == pytest.approx(reference, abs=1e-4)
    assert answers[0]["scores"] != pytest.approx(answers[1]["scores"], abs=1e-4)


def test_inputs_longer_than_the_input_limit_are_warned_of_with_the_limit_that_holds_them(dense_dir, caplog):
    # was: cut to --max-input-length and answered on the part that fits without a word, where eval warns of its
    # truncated inputs and names the limit that holds them whole
    model, tokenizer, _ = load_checkpoint(dense_dir)
    lengths = [len(tokenizer(text).input_ids) for text in INPUTS]  # (EOS counted, as the limit counts it)
    limit = sorted(lengths)[1]  # (the longest input alone is over it)
    with caplog.at_level("WARNING", logger="t2t_mtl.evaluation.predict"):
        predict(model, tokenizer, [PredictRequest(text, list(CHOICES)) for text in INPUTS], max_input_length=limit)
    assert [record.getMessage() for record in caplog.records] == [
        f"1 of 3 inputs are longer than max_input_length={limit} tokens and are answered on the part that fits (the "
        f"model sees only their beginning); to answer them whole, raise it to {max(lengths)} tokens (t2t-mtl predict "
        f"--max-input-length {max(lengths)})"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="t2t_mtl.evaluation.predict"):
        predict(model, tokenizer, [PredictRequest(text, list(CHOICES)) for text in INPUTS],
                max_input_length=max(lengths))
    assert not caplog.records
    caplog.clear()  # an input of a task whose evaluation keeps an over-long input's end (BIG-bench's) is cut so
    from task_registry.eval_protocol import EvalProtocol

    requests = [PredictRequest(text, list(CHOICES), task="ends" if index == 0 else None)
                for index, text in enumerate(INPUTS)]
    with caplog.at_level("WARNING", logger="t2t_mtl.evaluation.predict"):
        predict(model, tokenizer, requests, max_input_length=min(lengths) - 1,
                pick_protocols={"ends": EvalProtocol(truncation_side="left")})
    assert [record.getMessage() for record in caplog.records] == [
        f"3 of 3 inputs are longer than max_input_length={min(lengths) - 1} tokens and are answered on the part that "
        f"fits (the model sees only the beginning of 2 and the end of 1); to answer them whole, raise it to "
        f"{max(lengths)} tokens (t2t-mtl predict --max-input-length {max(lengths)})"]


def test_the_limit_a_task_tokens_input_needs_is_given_without_its_task_token(tmp_path, t5_tokenizer_dir, caplog):
    # kills a mutant of predict's truncated-inputs warning that its tests let live (their model had no task tokens):
    # the limit to raise to counting the task token, which comes on top of --max-input-length
    from t2t_mtl.analysis.task_embeddings import TaskTokens

    tokenizer = load_tokenizer(t5_tokenizer_dir)
    TaskTokens(tokenizer, ["alpha"])
    _dense(tokenizer).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, tokenizer, _ = load_checkpoint(tmp_path)
    needed = len(tokenizer(INPUTS[1]).input_ids)  # (with its EOS; the task token on top)
    with caplog.at_level("WARNING", logger="t2t_mtl.evaluation.predict"):
        predict(model, tokenizer, [PredictRequest(INPUTS[1], CHOICES, "alpha")], max_input_length=needed - 1)
    assert [record.getMessage() for record in caplog.records] == [
        f"1 of 1 inputs are longer than max_input_length={needed - 1} tokens and are answered on the part that fits "
        f"(the model sees only their beginning); to answer them whole, raise it to {needed} tokens (t2t-mtl predict "
        f"--max-input-length {needed})"]


def test_an_input_of_the_default_task_is_cut_from_that_tasks_side(dense_dir, caplog):
    # kills a mutant of predict that its tests let live (each input's side taken from its own task alone): inputs
    # given no task of their own, answered for a default task whose evaluation keeps an over-long input's end
    # (a BIG-bench task's, `predict --task`), were cut at their end, keeping their beginning
    from task_registry.eval_protocol import EvalProtocol

    model, tokenizer, _ = load_checkpoint(dense_dir)
    limit = min(len(tokenizer(text).input_ids) for text in INPUTS) - 1
    protocols = {"ends": EvalProtocol(truncation_side="left")}
    named = predict(model, tokenizer, [PredictRequest(text, list(CHOICES), task="ends") for text in INPUTS],
                    max_input_length=limit, pick_protocols=protocols)
    with caplog.at_level("WARNING", logger="t2t_mtl.evaluation.predict"):
        defaulted = predict(model, tokenizer, [PredictRequest(text, list(CHOICES)) for text in INPUTS],
                            max_input_length=limit, pick_protocols=protocols, default_task="ends")
    assert [p.scores for p in defaulted] == [p.scores for p in named]
    assert "(the model sees only their end)" in caplog.records[-1].getMessage()
