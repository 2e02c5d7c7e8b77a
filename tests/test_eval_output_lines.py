"""What `t2t-mtl eval` prints while it scores: a warning of the evaluation stands on a line of its own, not after
the progress bar drawn at that moment."""
from __future__ import annotations

import json
import logging

import torch
from transformers import T5Config, T5ForConditionalGeneration

import task_registry
from t2t_mtl.cli import main
from t2t_mtl.tokenizer import load_tokenizer


def _evaluated(tmp_path, t5_tokenizer_dir, capsys, templates) -> list[str]:
    """The lines `t2t-mtl eval` writes on stderr scoring `templates` of a task 'toy' (4 rows) with
    --max-input-length 4, as the command runs: no logging handler but logging's last resort."""
    rows = tmp_path / "validation.jsonl"
    rows.write_text("".join(json.dumps({"text": f"a long review number {i} of a film", "label": i % 2}) + "\n"
                            for i in range(4)))
    tokenizer = load_tokenizer(t5_tokenizer_dir)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=len(tokenizer), d_model=16, d_ff=32, d_kv=8, num_heads=2,
                                                num_layers=1, pad_token_id=0, eos_token_id=1,
                                                decoder_start_token_id=0))
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    with task_registry.isolated_registry():
        task_registry.register_task(task_registry.Task("toy", task_registry.LocalFileSource({"validation": rows}),
                                                       templates, splits=("validation",)))
        assert main(["eval", "--checkpoint", str(tmp_path / "model"), "--tasks", "toy", "--max-input-length", "4",
                     "--scoring", "rank"]) == 0
    err = capsys.readouterr().err
    assert "eval toy:" in err  # the bar was drawn
    return err.replace("\r", "\n").splitlines()


def test_a_warning_while_scoring_stands_on_a_line_of_its_own(tmp_path, t5_tokenizer_dir, capsys, monkeypatch):
    # was: "eval toy: 100%|██████████| 4/4 [00:00<00:00, 6.34ex/s]task 'toy' template 't': 4 of 4 inputs are longer
    # than max_input_length=4 tokens ...": the runner's warning went out through logging's last-resort handler
    # straight after the bar tqdm had drawn (no newline), in `eval` as in a run's evaluation after training
    monkeypatch.setattr(logging.root, "handlers", [])
    template = task_registry.Template("t", "Positive? {{ text }} ||| {{ answer_choices[label] }}",
                                      answer_choices="no ||| yes")
    lines = _evaluated(tmp_path, t5_tokenizer_dir, capsys, [template])
    warning = "task 'toy': inputs longer than max_input_length=4 tokens are truncated"
    assert [line for line in lines if warning in line] == [line for line in lines if line.startswith(warning)]
    assert any(line.startswith(warning) for line in lines)


def test_a_task_s_truncated_inputs_are_warned_of_in_one_line(tmp_path, t5_tokenizer_dir, capsys, monkeypatch):
    # was: a line per template ("task 'toy' template 't': 4 of 4 inputs are longer than ...", then 'u''s), 15 lines
    # for super_glue_cb alone, where report.md groups them under its task
    monkeypatch.setattr(logging.root, "handlers", [])
    templates = [task_registry.Template(name, prompt + " {{ text }} ||| {{ answer_choices[label] }}",
                                        answer_choices="no ||| yes")
                 for name, prompt in (("t", "Positive?"), ("short", ""), ("u", "Is this review a positive one?"))]
    lines = _evaluated(tmp_path, t5_tokenizer_dir, capsys, templates)
    tokenizer = load_tokenizer(t5_tokenizer_dir)
    texts = [f"a long review number {i} of a film" for i in range(4)]
    longest = {t.name: max(len(ids) for ids in tokenizer([t.render({"text": text, "label": 0}).inputs
                                                          for text in texts])["input_ids"]) for t in templates}
    assert longest["short"] > 4 and longest["u"] > longest["t"]  # every template truncates, 'u' the longest
    warned = [line for line in lines if "truncated" in line]
    assert warned == [f"task 'toy': inputs longer than max_input_length=4 tokens are truncated (the model sees only "
                      f"their beginning) in 3 templates: 't' 4 of 4, 'short' 4 of 4, 'u' 4 of 4; to score them whole, "
                      f"raise the limit to the longest, {longest['u']} tokens (t2t-mtl eval --max-input-length "
                      f"{longest['u']}; evaluation.max_input_length in a config; "
                      f"EvalSettings(max_input_length={longest['u']}) from Python)"]


def test_the_one_line_names_the_templates_that_truncate_and_the_longest_of_all(tmp_path, t5_tokenizer_dir, capsys,
                                                                               monkeypatch):
    # the longest template scored first and one whose inputs all fit: the line's limit is the longest over the task's
    # templates (not the last one's), and a template that truncated none is not listed
    monkeypatch.setattr(logging.root, "handlers", [])
    templates = [task_registry.Template(name, prompt + " ||| {{ answer_choices[label] }}", answer_choices="no ||| yes")
                 for name, prompt in (("u", "Is this review a positive one? {{ text }}"), ("fits", "Yes?"),
                                      ("t", "Positive? {{ text }}"))]
    lines = _evaluated(tmp_path, t5_tokenizer_dir, capsys, templates)
    tokenizer = load_tokenizer(t5_tokenizer_dir)
    texts = [f"a long review number {i} of a film" for i in range(4)]
    longest = {t.name: max(len(ids) for ids in tokenizer([t.render({"text": text, "label": 0}).inputs
                                                          for text in texts])["input_ids"]) for t in templates}
    assert longest["fits"] <= 4 < longest["t"] < longest["u"]
    assert [line for line in lines if "truncated" in line] == [
        f"task 'toy': inputs longer than max_input_length=4 tokens are truncated (the model sees only their "
        f"beginning) in 2 templates: 'u' 4 of 4, 't' 4 of 4; to score them whole, raise the limit to the longest, "
        f"{longest['u']} tokens (t2t-mtl eval --max-input-length {longest['u']}; evaluation.max_input_length in a "
        f"config; EvalSettings(max_input_length={longest['u']}) from Python)"]
