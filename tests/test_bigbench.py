"""BIG-bench JSON import: the 14 shared tasks become evaluation-only tasks formatted as BIG-bench does."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import scipy.special
import torch
from transformers import T5Config, T5ForConditionalGeneration

import task_registry
from task_registry.bigbench import import_bigbench, load_bigbench_task
from t2t_mtl.evaluation import EvalSettings, evaluate_tasks, runner, to_markdown
from t2t_mtl.tokenizer import load_tokenizer

# Example counts as listed in ../shared/bigbench/README.md, less the examples that repeat an earlier one exactly
# (BIG-bench scores each once): winowhy 3 of 2865, strategyqa 1 of 2290, social_iqa 19 of 1954, sports_understanding 14
# of 1000.
EXPECTED_COUNTS = {
    "implicatures": 492, "presuppositions_as_nli": 735, "winowhy": 2862, "epistemic_reasoning": 2000,
    "strategyqa": 2289, "social_iqa": 1935, "navigate": 1000, "sports_understanding": 986, "causal_judgment": 190,
    "disambiguation_qa": 258, "date_understanding": 369, "anachronisms": 230, "emoji_movie": 100,
    "analogical_similarity": 323,
}


@pytest.fixture()
def imported(bigbench_dir):
    with task_registry.isolated_registry():
        yield import_bigbench(bigbench_dir)


def expected_prompt(data: dict, example: dict) -> str:
    """The head of BIG-bench's zero-shot prompt written out directly: task prefix, input prefix, input."""
    text = data.get("task_prefix", "") + data.get("example_input_prefix", "\nQ: ") + example["input"]
    return text


def test_the_gold_answer_position_is_shuffled(imported):
    """The files list the correct answer first; the import must not keep that order."""
    rows = task_registry.get_task("bigbench_date_understanding").load_rows("test")
    positions = [row["choices"].index(row["target"]) for row in rows]
    assert max(positions.count(p) for p in set(positions)) < 0.5 * len(positions)


def test_all_fourteen_tasks_import_with_their_examples(imported):
    assert sorted(imported) == sorted(f"bigbench_{name}" for name in EXPECTED_COUNTS)
    for name, count in EXPECTED_COUNTS.items():
        task = task_registry.get_task(f"bigbench_{name}")
        assert task.eval_only and task.held_out and task.cluster == "bigbench"
        assert task.metrics == ("multiple_choice_grade",)
        assert task.num_rows("test") == count


def test_prompts_honour_the_prefixes_and_choices_come_from_target_scores(imported, bigbench_dir):
    for name in EXPECTED_COUNTS:
        data = json.loads((bigbench_dir / name / "task.json").read_text(encoding="utf-8"))
        task = task_registry.get_task(f"bigbench_{name}")
        rows = task.load_rows("test")
        for index in (0, len(rows) - 1):
            example = data["examples"][rows[index]["idx"]]
            rendered = task.templates[0].render(rows[index], task=task.name, row_index=index)
            head = expected_prompt(data, example)
            output_prefix = data.get("example_output_prefix", "\nA: ")
            assert rendered.inputs.startswith(head.strip()), name
            assert rendered.inputs.endswith(output_prefix.strip() or example["input"].strip()), name
            tail = rendered.inputs[len(head.strip()):len(rendered.inputs) - len(output_prefix.strip())]
            if data.get("append_choices_to_input", True):
                prefix = data.get("choice_prefix", "\n  choice: ")
                listed = [c.strip() for c in tail.split(prefix)[1:]]
                assert listed == [c.strip() for c in rendered.answer_choices], name
            else:
                assert tail.strip() == ""
            assert sorted(rendered.answer_choices) == sorted(example["target_scores"])
            best = max(example["target_scores"].values())
            assert example["target_scores"][rendered.targets] == best
            assert rows[index]["target_scores"] == [float(example["target_scores"][c]) for c in rendered.answer_choices]


def test_bigbench_tasks_can_never_enter_a_training_mixture(imported):
    task_registry.load_builtin_tasks()
    held_in = next(n for n in task_registry.list_tasks() if not task_registry.get_task(n).held_out)
    mixture = task_registry.Mixture("with_bigbench", [held_in, imported[0]])
    with pytest.raises(task_registry.EvalOnlyTaskError, match=imported[0]):
        task_registry.training_rates(mixture)
    with pytest.raises(task_registry.EvalOnlyTaskError):
        task_registry.training_rates(mixture, force=True)


def test_import_is_idempotent_and_bad_files_are_named(imported, bigbench_dir, tmp_path):
    assert import_bigbench(bigbench_dir) == imported
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "task.json").write_text(json.dumps({"name": "bad", "examples": [{"input": "q", "target": "a"}]}))
    with pytest.raises(task_registry.TaskDefinitionError, match="example 0 has no 'target_scores'"):
        load_bigbench_task(bad)
    with pytest.raises(task_registry.DataSourceError, match="does not exist"):
        import_bigbench(tmp_path / "nowhere")


def test_a_separator_in_the_input_or_a_prefix_is_kept_as_text(tmp_path):
    # the input is substituted as a list of parts, which the template's pipe protection does not reach: a `|||`
    # in it split the prompt (a TemplateRenderError); one in a prefix did the same
    task_dir = tmp_path / "pipes"
    task_dir.mkdir()
    (task_dir / "task.json").write_text(json.dumps({
        "name": "pipes", "task_prefix": "a ||| b", "append_choices_to_input": False,
        "examples": [{"input": "x ||| y " + "z" * 2000, "target_scores": {"yes": 1, "no": 0}}]}))
    task = load_bigbench_task(task_dir)
    row = task.load_rows("test")[0]
    assert row["input"] == "x ||| y " + "z" * 2000
    example = task.templates[0].render(row)
    assert (example.inputs, example.targets) == ("a ||| b\nQ: x ||| y " + "z" * 2000 + "\nA:", "yes")


def test_a_null_prefix_is_no_prefix(tmp_path):
    task_dir = tmp_path / "null_prefix"
    task_dir.mkdir()
    (task_dir / "task.json").write_text(json.dumps({
        "name": "null_prefix", "task_prefix": None, "append_choices_to_input": False,
        "examples": [{"input": "2 + 2?", "target_scores": {"4": 1, "5": 0}}]}))
    task = load_bigbench_task(task_dir)
    assert task.templates[0].render(task.load_rows("test")[0]).inputs == "Q: 2 + 2?\nA:"  # was "NoneQ: ..."
    (task_dir / "task.json").write_text(json.dumps({
        "name": "null_prefix", "example_input_prefix": None, "example_output_prefix": None, "choice_prefix": None,
        "examples": [{"input": "2 + 2?", "target_scores": {"4": 1, "5": 0}}]}))
    task = load_bigbench_task(task_dir)  # each was the text "None"
    assert task.templates[0].render(task.load_rows("test")[0]).inputs == "2 + 2?54"  # BIG-bench lists 5 first


@pytest.mark.parametrize("scores,problem", [
    ({"yes": 0, "yes ": 1, "no": 0}, r"answer choices 'yes' and 'yes ' differ only in whitespace"),
    ({"a  b": 1, "a\nb": 0}, r"answer choices 'a  b' and 'a\\nb' differ only in whitespace"),
    ({" ": 1, "no": 0}, r"answer choice ' ' is empty once stripped of whitespace"),
])
def test_choices_that_differ_only_in_whitespace_are_refused(tmp_path, scores, problem):
    # were kept as two identical stripped choices with different scores: which one rank classification or a
    # generated answer matched (the first listed) decided the grade; a blank choice rendered an empty target
    (tmp_path / "task.json").write_text(json.dumps({"name": "ws", "examples": [
        {"input": "fine", "target_scores": {"a": 1, "b": 0}}, {"input": "pick", "target_scores": scores}]}))
    with pytest.raises(task_registry.TaskDefinitionError, match=r"task.json': example 1: " + problem):
        load_bigbench_task(tmp_path)


def test_a_choice_longer_than_the_truncation_is_listed_and_targeted_whole(tmp_path):
    # the target and the listed choices were substituted whole and truncated to 2048 characters, so the target was
    # not among the (untruncated) answer choices: every such row failed to render and was left out of the score
    long = "word " * 500
    (tmp_path / "task.json").write_text(json.dumps({"name": "long", "examples": [
        {"input": "pick", "target_scores": {long: 1, "short": 0}}]}))
    task = load_bigbench_task(tmp_path)
    example = task.templates[0].render(task.load_rows("test")[0])
    assert example.targets == long.strip() and long.strip() in example.answer_choices
    assert f"choice: {long}\n" in example.inputs


def test_multiple_choice_grade_of_a_tiny_model_on_two_tasks(imported, t5_tokenizer_dir):
    tokenizer = load_tokenizer(t5_tokenizer_dir)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=len(tokenizer), d_model=16, d_ff=32, d_kv=8, num_heads=2,
                                                num_layers=1, pad_token_id=0, eos_token_id=1,
                                                decoder_start_token_id=0))
    report = evaluate_tasks(model, tokenizer, ["bigbench_navigate", "bigbench_emoji_movie"],
                            EvalSettings(max_examples=6, keep_predictions=True), progress=False)
    for result in report.results:
        assert result.scoring == "rank" and result.num_examples == 6
        grades = [p["prediction"] == p["target"] for p in result.predictions]  # 0/1 target scores here
        assert result.score == pytest.approx(100 * sum(grades) / 6)
        assert result.metrics["multiple_choice_grade"]["multiple_choice_grade"] == pytest.approx(sum(grades) / 6)


def _write_task(folder, data):
    folder.mkdir(parents=True)
    (folder / "task.json").write_text(json.dumps(data))
    return folder


def test_an_example_repeated_exactly_is_scored_once_as_bigbench_scores_it(tmp_path, bigbench_dir):
    # BIG-bench drops an example whose JSON repeats an earlier one's before scoring; the import kept every copy, so
    # a repeated example counted twice in the grade (social_iqa repeats 19 of its 1954) and, as a demonstration of
    # its copy, showed the query's own answer
    examples = [{"input": "q0", "target_scores": {"yes": 1, "no": 0}},
                {"input": "q1", "target_scores": {"yes": 0, "no": 1}},
                {"input": "q0", "target_scores": {"yes": 1, "no": 0}},  # a copy of example 0: dropped
                {"input": "q0", "target_scores": {"yes": 0, "no": 1}},  # another answer: kept
                {"input": "q0", "target_scores": {"no": 0, "yes": 1}},  # another key order, as BIG-bench keeps it
                {"target_scores": {"yes": 1, "no": 0}, "input": "q1"}]
    rows = load_bigbench_task(_write_task(tmp_path / "dups", {"name": "dups", "examples": examples})).load_rows("test")
    assert [row["idx"] for row in rows] == [0, 1, 3, 4, 5]
    for name in ("social_iqa", "sports_understanding"):
        data = json.loads((bigbench_dir / name / "task.json").read_text(encoding="utf-8"))
        distinct = {json.dumps(example) for example in data["examples"]}
        assert load_bigbench_task(bigbench_dir / name).num_rows("test") == len(distinct) < len(data["examples"])


def bigbench_listing(choices) -> list:
    """The order BIG-bench lists an example's choices in (json_task.default_format_fn): sorted, then permuted by a
    numpy RandomState seeded afresh for every example with BIG-bench's default seed, 42."""
    return np.random.RandomState(42).permutation(sorted(choices)).tolist()


def test_the_choices_are_listed_in_bigbenchs_order_whatever_the_files_key_order(tmp_path):
    # the import shuffled each example's choices with a generator seeded by the task's name and the example's index:
    # its prompts listed them in another order than BIG-bench's, whose published scores are for its own prompts
    scores = {"a": 1, "b": 0, "c": 0, "d": 0, "e": 0}
    examples = [{"input": f"q{i}", "target_scores": dict(list(scores.items())[:2 + i % 4])} for i in range(12)]
    reordered = [{"input": e["input"], "target_scores": dict(reversed(e["target_scores"].items()))} for e in examples]
    for name, listed in (("one", examples), ("two", reordered)):
        rows = load_bigbench_task(_write_task(tmp_path / name, {"name": name, "examples": listed})).load_rows("test")
        assert [row["choices"] for row in rows] == [bigbench_listing(e["target_scores"]) for e in examples]


def test_a_zero_shot_prompt_is_bigbenchs_own_text(imported, bigbench_dir):
    # BIG-bench's prompt written out from the task.json: task prefix, input prefix, input, each listed choice after
    # the choice prefix, output prefix (stripped at the ends, as every rendered input is)
    for name in ("disambiguation_qa", "emoji_movie", "social_iqa"):
        data = json.loads((bigbench_dir / name / "task.json").read_text(encoding="utf-8"))
        choice_prefix = data.get("choice_prefix", "\n  choice: ")
        task = task_registry.get_task(f"bigbench_{name}")
        rows = task.load_rows("test")
        for row in (rows[index] for index in range(30)):
            example = data["examples"][row["idx"]]
            expected = (data.get("task_prefix", "") + data.get("example_input_prefix", "\nQ: ") + example["input"]
                        + choice_prefix + choice_prefix.join(bigbench_listing(example["target_scores"]))
                        + data.get("example_output_prefix", "\nA: "))
            assert task.templates[0].render(row).inputs == expected.strip(), name


@pytest.mark.parametrize("scores", [{"yes": 1, "no": 1}, {"yes": 0, "no": 0, "maybe": 0}, {"only": 0}])
def test_an_example_without_a_better_choice_is_refused_as_bigbench_refuses_it(tmp_path, scores):
    # BIG-bench refuses an example (without an explicit target) none of whose choices scores above the others, or
    # whose one choice scores 0; the import took the first choice as its answer and graded every model alike on it
    folder = _write_task(tmp_path / "flat", {"name": "flat", "examples": [
        {"input": "fine", "target_scores": {"a": 1, "b": 0}}, {"input": "flat", "target_scores": scores}]})
    with pytest.raises(task_registry.TaskDefinitionError,
                       match=r"flat.task.json': example 1: no answer choice scores above the others"):
        load_bigbench_task(folder)
    explained = _write_task(tmp_path / "explained", {"name": "explained", "examples": [
        {"input": "flat", "target_scores": scores, "target": "it depends"}]})
    assert load_bigbench_task(explained).load_rows("test")[0]["demonstration_targets"] == ["it depends"]
    single = _write_task(tmp_path / "single", {"name": "single", "examples": [
        {"input": "one", "target_scores": {"only": 1}}]})
    assert load_bigbench_task(single).load_rows("test")[0]["target"] == "only"


def test_a_boolean_target_score_is_refused(tmp_path):
    folder = _write_task(tmp_path / "flags", {"name": "flags", "examples": [
        {"input": "q", "target_scores": {"yes": True, "no": False}}]})
    with pytest.raises(task_registry.TaskDefinitionError, match="target score of 'yes' is True, not a finite number"):
        load_bigbench_task(folder)


def test_the_task_is_named_from_the_json_and_a_clash_from_another_file_is_refused(tmp_path):
    examples = [{"input": "q", "target_scores": {"yes": 1, "no": 0}}]
    _write_task(tmp_path / "a" / "folder_one", {"name": "same", "examples": examples})
    _write_task(tmp_path / "b" / "folder_two", {"name": "same", "examples": examples})
    with task_registry.isolated_registry():
        assert import_bigbench(tmp_path / "a") == ["bigbench_same"]
        with pytest.raises(task_registry.DuplicateRegistrationError, match="bigbench_same"):
            import_bigbench(tmp_path / "b")


def test_of_several_best_choices_the_target_is_the_first_in_the_file(tmp_path):
    # BIG-bench's target for tied best scores is the first such key of target_scores; the import took the first
    # in its shuffled order, so the target (few-shot answers, generated-answer scoring) moved with the task's name
    scores = {"alpha": 1, "zeta": 1, "mid": 0, "beta": 0.5}
    examples = [{"input": f"q{i}", "target_scores": scores} for i in range(12)]
    task = load_bigbench_task(_write_task(tmp_path / "ties", {"name": "ties", "examples": examples}))
    rows = task.load_rows("test")
    assert [row["choices"] for row in rows] == [["beta", "zeta", "alpha", "mid"]] * 12  # zeta is listed first
    assert [row["target"] for row in rows] == ["alpha"] * 12


@pytest.mark.parametrize("keys,problem", [
    ({"metrics": ["exact_str_match", "bleu"], "preferred_score": "exact_str_match"},
     r"'metrics' \['exact_str_match', 'bleu'\] do not list 'multiple_choice_grade'"),
    ({"metrics": ["multiple_choice_grade", "exact_str_match"], "preferred_score": "exact_str_match"},
     r"'preferred_score' is 'exact_str_match', but BIG-bench imports are scored by 'multiple_choice_grade' alone"),
])
def test_a_task_not_scored_by_multiple_choice_grade_is_refused(tmp_path, keys, problem):
    # BIG-bench reports such a task by another metric (exact_str_match of generated text); the import scored it by
    # multiple_choice_grade anyway and reported that as the task's score
    data = {"name": "gen", **keys, "examples": [{"input": "2 + 2?", "target_scores": {"4": 1, "5": 0}}]}
    with pytest.raises(task_registry.TaskDefinitionError, match=r"task.json': " + problem):
        load_bigbench_task(_write_task(tmp_path / "gen", data))


def test_the_shared_tasks_are_all_scored_by_their_preferred_multiple_choice_grade(bigbench_dir):
    for file in sorted(bigbench_dir.glob("*/task.json")):
        data = json.loads(file.read_text())
        assert data["preferred_score"] == "multiple_choice_grade" in data["metrics"], file
        assert load_bigbench_task(file).metrics == (data["preferred_score"],)


def test_a_task_with_subtasks_names_them_and_the_folder_to_import(tmp_path):
    # BIG-bench keeps a task with subtasks as a task.json without examples beside <subtask>/task.json folders; the
    # import said only that 'examples' must be a non-empty list, as if the file were broken
    parent = _write_task(tmp_path / "tasks" / "parent", {"name": "parent", "metrics": ["multiple_choice_grade"]})
    for sub in ("second", "first"):
        _write_task(parent / sub, {"name": f"parent:{sub}", "examples": [
            {"input": "q", "target_scores": {"a": 1, "b": 0}}]})
    problem = r"parent/task.json' has no 'examples': it is a BIG-bench task with subtasks \(first, second\).*" \
              r"--bigbench '.*parent/first'"
    for where in (tmp_path / "tasks", parent):
        with task_registry.isolated_registry(), pytest.raises(task_registry.TaskDefinitionError, match=problem):
            import_bigbench(where)
    with task_registry.isolated_registry():
        assert import_bigbench(parent / "first") == ["bigbench_parent:first"]


def _rank_without_a_model(monkeypatch) -> list:
    """Rank classification scores every choice 0 without a model; returns the list the inputs it is given go to."""
    seen = []

    def score_choices(model, tokenizer, inputs, choices, **kwargs):
        seen.extend(inputs)
        return [[0.0] * len(row) for row in choices]

    monkeypatch.setattr(runner, "score_choices", score_choices)
    return seen


def _file_order(task):
    """`task` with the project's `max_examples` (its first rows) in place of BIG-bench's draw, so that max_examples=1
    scores the file's first example; its k-shot prompt is still written and drawn as BIG-bench's run of the whole task
    writes and draws it."""
    return task_registry.Task(task.name, task.source, task.templates, metrics=task.metrics, task_type=task.task_type,
                              cluster=task.cluster, held_out=True, splits=task.splits, eval_only=True,
                              few_shot_format=task.few_shot_format)


def _scored_prompts(monkeypatch, tokenizer, task, settings):
    """The inputs rank classification is given for `task` under `settings`."""
    seen = _rank_without_a_model(monkeypatch)
    evaluate_tasks(None, tokenizer, [task], settings, progress=False)
    return seen


# BIG-bench's 2-shot prompts of the first example, written out by hand from the task.json files: the task prefix once,
# each demonstration formatted as the query and followed directly by its target, the default separator "\n" between
# them, the query last (stripped at the ends, as every rendered input is); the choices of each listed in BIG-bench's
# order, for three choices their sorted order (numpy.random.RandomState(42).permutation(3) is [0, 1, 2]).
# Demonstrations, as BIG-bench draws them: examples 256 and 162 of disambiguation_qa (non-default prefixes, choices
# appended), 916 and 1457 of social_iqa (every default).
TWO_SHOT_PROMPTS = {
    "disambiguation_qa": (
        "In the following sentences, explain the antecedent of the pronoun (which thing the pronoun refers to), or "
        "state that it is ambiguous.\n"
        "\nSentence: The undergraduate applied to work with the scientist because she needed a lab assistant."
        "\n  choice: Ambiguous\n  choice: The scientist needed an assistant"
        "\n  choice: The undergraduate needed an assistant"
        "\nPronoun identification: The scientist needed an assistant"
        "\n"
        "\nSentence: The designer collaborated with the carpenter and gave him a blueprint."
        "\n  choice: Ambiguous\n  choice: Gave the carpenter a blueprint\n  choice: Gave the designer a blueprint"
        "\nPronoun identification: Gave the carpenter a blueprint"
        "\n"
        "\nSentence: After meeting with the producers, Sam went to his office."
        "\n  choice: Ambiguous\n  choice: The office was Sam's office"
        "\n  choice: The office was the producers' office"
        "\nPronoun identification:"),
    "social_iqa": (
        "Q: Jesse wanted to flunk Bailey for her bad behavior, but Bailey passed Jesse's examination. What will Bailey "
        "want to do next? "
        "\n  choice: Celebrate\n  choice: Complain\n  choice: Study for the test"
        "\nA: Celebrate"
        "\n"
        "\nQ: Cameron took Aubrey to a festival with a lot of good food. How would you describe Cameron? "
        "\n  choice: Kind\n  choice: Loved\n  choice: Stuffed"
        "\nA: Kind"
        "\n"
        "\nQ: Tracy didn't go home that evening and resisted Riley's attacks. What does Tracy need to do before this? "
        "\n  choice: Find somewhere to go\n  choice: Go home and see Riley\n  choice: Make a new plan"
        "\nA:"),
}


@pytest.mark.parametrize("name", sorted(TWO_SHOT_PROMPTS))
def test_k_shot_prompts_are_written_as_bigbench_writes_them(imported, t5_tokenizer, monkeypatch, name):
    # were the project's blocks: each demonstration the whole zero-shot input (task prefix included), a newline and
    # the target, joined by blank lines
    settings = EvalSettings(max_examples=1, num_shots=2)
    prompts = _scored_prompts(monkeypatch, t5_tokenizer, _file_order(task_registry.get_task(f"bigbench_{name}")),
                              settings)
    assert prompts == [TWO_SHOT_PROMPTS[name]]


def test_a_k_shot_prompt_without_demonstrations_is_the_zero_shot_input(imported, t5_tokenizer, monkeypatch):
    for name in EXPECTED_COUNTS:
        task = task_registry.get_task(f"bigbench_{name}")
        rows = task.load_rows("test")
        for index in (0, len(rows) - 1):
            query = task.few_shot_format.query(rows[index])
            assert task.few_shot_format.prompt([], query) == task.templates[0].render(rows[index]).inputs, name
    task = task_registry.get_task("bigbench_social_iqa")  # no demonstration fits: the zero-shot input is scored
    zero_shot = _scored_prompts(monkeypatch, t5_tokenizer, task, EvalSettings(max_examples=3))
    limit = max(len(ids) for ids in t5_tokenizer(zero_shot)["input_ids"])
    assert _scored_prompts(monkeypatch, t5_tokenizer, task,
                           EvalSettings(max_examples=3, num_shots=2, max_input_length=limit)) == zero_shot


@pytest.mark.parametrize("name", sorted(TWO_SHOT_PROMPTS))
def test_an_over_long_k_shot_prompt_drops_bigbenchs_first_demonstration_and_names_the_limit(imported, t5_tokenizer,
                                                                                           monkeypatch, name):
    # the prompt kept the query and BIG-bench's later demonstration, but the report said neither how many
    # demonstrations the limit cost nor the limit that holds BIG-bench's whole prompt
    task = _file_order(task_registry.get_task(f"bigbench_{name}"))
    whole = TWO_SHOT_PROMPTS[name]
    size = len(t5_tokenizer(whole)["input_ids"])
    seen = _rank_without_a_model(monkeypatch)
    result = evaluate_tasks(None, t5_tokenizer, [task], EvalSettings(max_examples=1, num_shots=2,
                                                                     max_input_length=size - 1),
                            progress=False).results[0]
    first, second = {"disambiguation_qa": ("\nSentence: The undergraduate", "\nSentence: The designer"),
                     "social_iqa": ("Q: Jesse", "Q: Cameron")}[name]  # where each demonstration starts
    assert seen == [whole[:whole.index(first)] + whole[whole.index(second):]]  # the task prefix kept, the first cut
    assert (result.num_fewer_shots, result.num_dropped_shots, result.shots_fit_length) == (1, 1, size)


def test_the_separator_and_an_explicit_target_shape_the_demonstrations(tmp_path, t5_tokenizer, monkeypatch):
    # BIG-bench shows an example's explicit target in its demonstrations (one of a list), else the best choice
    task = load_bigbench_task(_write_task(tmp_path / "sep", {
        "name": "sep", "task_prefix": "Answer.", "example_input_prefix": " In: ", "example_output_prefix": " Out: ",
        "few_shot_example_separator": " ###", "append_choices_to_input": False, "examples": [
            {"input": "2 + 2?", "target_scores": {"4": 1, "5": 0}},
            {"input": "Is ice cold?", "target_scores": {"yes": 1, "no": 0}, "target": "yes, it is frozen water"},
            {"input": "Is fire cold?", "target_scores": {"yes": 0, "no": 1},
             "target": ["no, it burns", "no, it is hot"]}]}))
    assert [row["demonstration_targets"] for row in task.load_rows("test")] == [
        ["4"], ["yes, it is frozen water"], ["no, it burns", "no, it is hot"]]
    prompts = _scored_prompts(monkeypatch, t5_tokenizer, task, EvalSettings(num_shots=2))
    assert sorted(prompts) == [  # the list target's answers drawn for each demonstration: each shown once here
        "Answer. In: Is fire cold? Out: no, it burns ### In: Is ice cold? Out: yes, it is frozen water ### In: 2 + 2? "
        "Out:",
        "Answer. In: Is fire cold? Out: no, it is hot ### In: 2 + 2? Out: 4 ### In: Is ice cold? Out:",
        "Answer. In: Is ice cold? Out: yes, it is frozen water ### In: 2 + 2? Out: 4 ### In: Is fire cold? Out:"]


def bigbench_k_shot_prompts(data: dict, k: int, max_examples=None) -> list:
    """BIG-bench's k-shot prompts of a task.json's distinct examples, in the order it queries them, as its JsonTask
    writes them with its default seed (json_task.py: `default_format_fn`, then `make_nshot_dataset`, given
    `max_examples`, which is the number of examples when unset): one RandomState(42) draws the examples queried (a
    `choice` of `max_examples` of them without replacement), then for each query in turn k of the other examples
    (`choice` without replacement, kept in drawn order) and, for each of those, one of its targets (`choice`)."""
    prefixes = {key: data.get(key, default) for key, default in (
        ("task_prefix", ""), ("example_input_prefix", "\nQ: "), ("example_output_prefix", "\nA: "),
        ("choice_prefix", "\n  choice: "), ("few_shot_example_separator", "\n"))}
    seen, samples = set(), []
    for example in data["examples"]:
        if json.dumps(example) in seen:
            continue
        seen.add(json.dumps(example))
        scores = example["target_scores"]
        text = prefixes["example_input_prefix"] + example["input"]
        if data.get("append_choices_to_input", True):
            text += prefixes["choice_prefix"] + prefixes["choice_prefix"].join(bigbench_listing(scores))
        target = example.get("target", [c for c in scores if scores[c] == max(scores.values())][0])
        samples.append({"position": len(samples), "input": text + prefixes["example_output_prefix"],
                        "target": target if isinstance(target, list) else [target]})
    rng = np.random.RandomState(42)
    prompts = []
    for sample in rng.choice(samples, max_examples or len(samples), replace=False):
        shots = list(rng.choice([other for other in samples if other != sample], k, replace=False))
        context = [shot["input"] + rng.choice(shot["target"]) for shot in shots]
        joined = prefixes["few_shot_example_separator"].join([*context, sample["input"]])
        prompts.append((prefixes["task_prefix"] + joined).strip())
    return prompts


@pytest.mark.parametrize("name,k", [("disambiguation_qa", 3), ("emoji_movie", 1), ("social_iqa", 2)])
def test_k_shot_demonstrations_are_the_ones_bigbench_draws(imported, bigbench_dir, t5_tokenizer, monkeypatch, name,
                                                             k):
    # the demonstrations were the project's own draw (a generator seeded by the evaluation seed, the task and the
    # row), so a k-shot prompt showed other examples than BIG-bench's, whose published k-shot scores are for its own
    data = json.loads((bigbench_dir / name / "task.json").read_text(encoding="utf-8"))
    settings = EvalSettings(max_examples=8, num_shots=k, max_input_length=4096)
    prompts = _scored_prompts(monkeypatch, t5_tokenizer, task_registry.get_task(f"bigbench_{name}"), settings)
    assert sorted(prompts) == sorted(bigbench_k_shot_prompts(data, k, max_examples=8))  # (scored longest first)


def test_a_demonstration_shows_one_of_a_list_target_drawn_for_each_use(tmp_path, t5_tokenizer, monkeypatch):
    data = {"name": "many", "examples": [
        {"input": f"q{i}", "target_scores": {"yes": i % 2, "no": 1 - i % 2}, "target": [f"t{i}a", f"t{i}b", f"t{i}c"]}
        for i in range(6)]}
    task = load_bigbench_task(_write_task(tmp_path / "many", data))
    prompts = _scored_prompts(monkeypatch, t5_tokenizer, task, EvalSettings(num_shots=4))
    assert sorted(prompts) == sorted(bigbench_k_shot_prompts(data, 4))
    shown = {part.split("\nA: ")[1].strip() for prompt in prompts for part in prompt.split("\nQ: ") if "\nA: " in part}
    assert {target[-1] for target in shown} == {"a", "b", "c"}  # were one target per example, drawn once


def test_demonstrations_from_another_split_are_refused_naming_the_task(tmp_path):
    # BIG-bench draws a query's demonstrations from the task's own examples: another split has no draw of its own
    from t2t_mtl.evaluation import EvaluationError
    from t2t_mtl.evaluation.few_shot import Demonstrations

    task = load_bigbench_task(_write_task(tmp_path / "other", {"name": "other", "examples": [
        {"input": "q", "target_scores": {"yes": 1, "no": 0}}]}))
    with pytest.raises(EvaluationError, match="task 'bigbench_other' draws its k-shot demonstrations from the "
                                              "evaluated split"):
        Demonstrations(task, task.templates[0], task.load_rows("test"), same_split=False)


@pytest.mark.parametrize("target", [3, [], ["yes", None]])
def test_an_explicit_target_that_is_not_text_is_refused(tmp_path, target):
    folder = _write_task(tmp_path / "target", {"name": "target", "examples": [
        {"input": "q", "target_scores": {"yes": 1, "no": 0}, "target": target}]})
    with pytest.raises(task_registry.TaskDefinitionError,
                       match=r"example 0: 'target' must be a string or a non-empty list of strings"):
        load_bigbench_task(folder)


def test_a_few_shot_format_must_be_one(tmp_path):
    task = load_bigbench_task(_write_task(tmp_path / "fmt", {"name": "fmt", "examples": [
        {"input": "q", "target_scores": {"yes": 1, "no": 0}}]}))
    with pytest.raises(task_registry.TaskDefinitionError, match="task 'fmt': few_shot_format must be a FewShotFormat"):
        task_registry.Task("fmt", task.source, task.templates, few_shot_format="\n\n")


def test_inputs_past_the_input_limit_name_the_task_and_the_limit_that_holds_them(imported, t5_tokenizer, monkeypatch,
                                                                                 caplog):
    # analogical_similarity's prompts exceed 512 T5 tokens: the warning named the task but neither the option to raise
    # nor how far, and report.md said only that they were truncated
    task = task_registry.get_task("bigbench_analogical_similarity")
    seen = _rank_without_a_model(monkeypatch)
    with caplog.at_level("WARNING"):
        report = evaluate_tasks(None, t5_tokenizer, [task], EvalSettings(max_examples=3), progress=False)
    longest = max(len(ids) for ids in t5_tokenizer(seen)["input_ids"])
    assert longest > 512
    assert report.results[0].num_truncated == 3
    assert (f"task 'bigbench_analogical_similarity': inputs longer than max_input_length=512 tokens are truncated "
            f"(the model sees only their end, as BIG-bench keeps it) in 1 template: 'bigbench_zero_shot' 3 of 3; to "
            f"score them whole, raise the limit to the longest, {longest} tokens (t2t-mtl eval --max-input-length "
            f"{longest}; evaluation.max_input_length in a config; EvalSettings(max_input_length={longest}) from "
            f"Python)") in caplog.text
    markdown = to_markdown(report)
    assert "raise it to score them whole: `t2t-mtl eval --max-input-length N`" in markdown
    assert "- bigbench_analogical_similarity / bigbench_zero_shot: 3 of 3 (their end)" in markdown
    raised = evaluate_tasks(None, t5_tokenizer, [task], EvalSettings(max_examples=3, max_input_length=longest),
                            progress=False)
    assert raised.results[0].num_truncated == 0  # the limit the message names holds every input whole


def _tiny_t5(tokenizer) -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config(vocab_size=len(tokenizer), d_model=16, d_ff=32, d_kv=8, num_heads=2,
                                               num_layers=1, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))


def _encoder_inputs(model) -> list:
    """The list the encoder's input ids (each row without its padding) go to, whenever the encoder runs."""
    seen = []

    def record(module, args, kwargs):
        ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        seen.extend(row[keep.bool()].tolist() for row, keep in zip(ids, mask))

    model.get_encoder().register_forward_pre_hook(record, with_kwargs=True)
    return seen


@pytest.mark.parametrize("scoring", ["rank", "generate"])
def test_an_over_long_input_keeps_its_end_as_bigbench_keeps_it(imported, t5_tokenizer, scoring):
    # the encoder got an analogical_similarity input's first tokens, so a model never saw the question and choices at
    # its end; BIG-bench's model wrapper keeps the end of an over-long context (generate_text and cond_log_prob)
    task = task_registry.get_task("bigbench_analogical_similarity")
    rows = task.load_rows("test")
    limit = 40
    model = _tiny_t5(t5_tokenizer)
    seen = _encoder_inputs(model)
    result = evaluate_tasks(model, t5_tokenizer, [task], EvalSettings(max_examples=2, max_input_length=limit,
                                                                     scoring=scoring, max_new_tokens=2,
                                                                     keep_predictions=True),
                            progress=False).results[0]
    texts = [task.templates[0].render(rows[p["row"]]).inputs for p in result.predictions]
    whole = [t5_tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    assert all(len(ids) > limit for ids in whole) and result.num_truncated == 2
    expected = [ids[-(limit - 1):] + [t5_tokenizer.eos_token_id] for ids in whole]  # the last tokens, then T5's EOS
    assert sorted(seen[:2]) == sorted(expected)
    assert t5_tokenizer.decode(expected[0][:-1]).endswith(" ".join(texts[0].split()[-3:]))  # the prompt's last words
    assert t5_tokenizer.truncation_side == "right"  # the tokenizer is left as it was


def test_another_task_keeps_an_over_long_inputs_beginning_as_t0_does(imported, t5_tokenizer):
    # T0's evaluation (truncation=True, Hugging Face's right side) and seqio keep an input's beginning: the same
    # examples in a task without BIG-bench's protocol are cut at their end
    bigbench = task_registry.get_task("bigbench_analogical_similarity")
    task = task_registry.Task("long_inputs", bigbench.source, bigbench.templates, splits=("test",))
    limit = 40
    model = _tiny_t5(t5_tokenizer)
    seen = _encoder_inputs(model)
    evaluate_tasks(model, t5_tokenizer, [task], EvalSettings(max_examples=2, max_input_length=limit), progress=False)
    texts = [task.templates[0].render(task.load_rows("test")[i]).inputs for i in range(2)]
    expected = [t5_tokenizer(text, add_special_tokens=False)["input_ids"][:limit - 1] + [t5_tokenizer.eos_token_id]
                for text in texts]
    assert sorted(seen) == sorted(expected)


def test_an_eval_protocol_must_be_one(tmp_path):
    task = load_bigbench_task(_write_task(tmp_path / "prot", {"name": "prot", "examples": [
        {"input": "q", "target_scores": {"yes": 1, "no": 0}}]}))
    with pytest.raises(task_registry.TaskDefinitionError, match="task 'prot': eval_protocol must be an EvalProtocol"):
        task_registry.Task("prot", task.source, task.templates, eval_protocol="left")
    with pytest.raises(task_registry.TaskDefinitionError, match="truncation_side must be one of"):
        task_registry.EvalProtocol(truncation_side="start")


def bigbench_drawn_examples(data: dict, max_examples: int) -> list:
    """The distinct examples BIG-bench's JsonTask scores given `max_examples`, each with its `position` among them,
    written from json_task.py: repeats dropped (json.dumps equality), then `make_nshot_dataset`'s
    `numpy.random.RandomState(42).choice(samples, max_examples, replace=False)` (zero-shot; k-shot draws its queries
    by the same first call)."""
    seen, samples = set(), []
    for example in data["examples"]:
        if json.dumps(example) not in seen:
            seen.add(json.dumps(example))
            samples.append({"position": len(samples), **example})
    return list(np.random.RandomState(42).choice(samples, max_examples, replace=False))


@pytest.mark.parametrize("name", ["social_iqa", "navigate"])
def test_max_examples_scores_the_examples_bigbench_draws(imported, bigbench_dir, t5_tokenizer, monkeypatch, name):
    # --max-examples N scored the file's first N examples, where BIG-bench's max_examples scores N drawn at random
    data = json.loads((bigbench_dir / name / "task.json").read_text(encoding="utf-8"))
    task = task_registry.get_task(f"bigbench_{name}")
    seen = _rank_without_a_model(monkeypatch)
    result = evaluate_tasks(None, t5_tokenizer, [task], EvalSettings(max_examples=7, keep_predictions=True),
                            progress=False).results[0]
    drawn = bigbench_drawn_examples(data, 7)
    expected = sorted(sample["position"] for sample in drawn)
    assert expected != list(range(7))
    assert sorted(p["row"] for p in result.predictions) == expected
    assert all(any(sample["input"].strip() in prompt for prompt in seen) for sample in drawn)  # their own inputs


def test_max_examples_of_every_example_or_more_scores_them_all(imported, t5_tokenizer, monkeypatch):
    task = task_registry.get_task("bigbench_emoji_movie")
    _rank_without_a_model(monkeypatch)
    result = evaluate_tasks(None, t5_tokenizer, [task], EvalSettings(max_examples=100, keep_predictions=True),
                            progress=False).results[0]
    assert [p["row"] for p in result.predictions] == list(range(100))


def bigbench_pick(target_scores: dict, log_likelihood, absolute_normalization: bool = False) -> str:
    """The choice BIG-bench's multiple_choice_grade takes, written from task_metrics.py and json_task.py: the choices in
    the order of the file's target_scores, their log-probabilities less their logsumexp (unless the task sets
    absolute_normalization), then argmax with its tie rule (of the indices of the maximum, the one at the sha256 of
    the float64 array's bytes modulo their count)."""
    choices = list(target_scores)
    log_probs = np.array([log_likelihood(choice) for choice in choices], dtype=np.float64)
    if not absolute_normalization:
        log_probs = log_probs - scipy.special.logsumexp(log_probs)
    tied = np.arange(len(log_probs))[log_probs == np.max(log_probs)]
    return choices[tied[int(hashlib.sha256(np.asarray(log_probs).tobytes()).hexdigest(), 16) % len(tied)]]


def _rank_by(monkeypatch, log_likelihood) -> None:
    """Rank classification scores each choice `log_likelihood(choice)` without a model."""
    def score_choices(model, tokenizer, inputs, choices, **kwargs):
        return [[log_likelihood(choice) for choice in row] for row in choices]

    monkeypatch.setattr(runner, "score_choices", score_choices)


def _two_best(choice: str) -> float:
    """A tie between the two shortest choices (then the alphabetically first), -2 and below for the others."""
    return 0.0 if len(choice) <= 5 else -2.0 - len(choice) / 100


@pytest.mark.parametrize("name,log_likelihood", [("date_understanding", lambda choice: -1.5),
                                                 ("emoji_movie", lambda choice: -1.5),
                                                 ("navigate", lambda choice: 0.0),
                                                 ("date_understanding", _two_best)],
                         ids=["date_understanding-all-tie", "emoji_movie-all-tie", "navigate-all-tie",
                              "date_understanding-two-tie"])
def test_a_tie_between_choices_is_broken_as_bigbench_breaks_it(imported, bigbench_dir, t5_tokenizer, monkeypatch,
                                                               name, log_likelihood):
    # a tie went to the first listed choice, where BIG-bench's multiple_choice_grade picks by a hash of the scores in
    # the file's order: a model scoring its choices alike got another grade than BIG-bench gives it
    data = json.loads((bigbench_dir / name / "task.json").read_text(encoding="utf-8"))
    task = task_registry.get_task(f"bigbench_{name}")
    _rank_by(monkeypatch, log_likelihood)
    result = evaluate_tasks(None, t5_tokenizer, [task], EvalSettings(max_examples=40, keep_predictions=True),
                            progress=False).results[0]
    rows = task.load_rows("test")
    picked, grades, first_listed = [], [], []
    for prediction in result.predictions:
        example = data["examples"][rows[prediction["row"]]["idx"]]  # (idx: the example's index in the file)
        choice = bigbench_pick(example["target_scores"], log_likelihood)
        picked.append(choice)
        grades.append(example["target_scores"][choice])
        first_listed.append(rows[prediction["row"]]["choices"][0])
    assert [p["prediction"] for p in result.predictions] == picked
    assert picked != first_listed  # (the tie rule decides here)
    assert result.metrics["multiple_choice_grade"]["multiple_choice_grade"] == pytest.approx(np.mean(grades))


def test_absolute_normalization_breaks_ties_on_the_scores_as_they_are(tmp_path, t5_tokenizer, monkeypatch):
    # a task.json with absolute_normalization: true has BIG-bench hash its log-probabilities unnormalised: example i's
    # choices all score -0.1 (i + 1), so their normalised scores are alike (-log 4) and their raw ones are not
    examples = [{"input": f"q{i}", "target_scores": {f"c{j}_{i}": int(j == i % 4) for j in range(4)}}
                for i in range(30)]

    def log_likelihood(choice):
        return -0.1 * (1 + int(choice.split("_")[1]))

    picks = {}
    for absolute in (False, True):
        task = load_bigbench_task(_write_task(tmp_path / str(absolute), {
            "name": "abs", "absolute_normalization": absolute, "examples": examples}))
        _rank_by(monkeypatch, log_likelihood)
        result = evaluate_tasks(None, t5_tokenizer, [task], EvalSettings(keep_predictions=True),
                                progress=False).results[0]
        picks[absolute] = [p["prediction"] for p in result.predictions]
        assert picks[absolute] == [bigbench_pick(e["target_scores"], log_likelihood, absolute) for e in examples]
    assert [p.split("_")[0] for p in picks[False]] != [p.split("_")[0] for p in picks[True]]


def test_an_absolute_normalization_that_is_not_a_boolean_is_refused(tmp_path):
    folder = _write_task(tmp_path / "absn", {"name": "absn", "absolute_normalization": "yes", "examples": [
        {"input": "q", "target_scores": {"yes": 1, "no": 0}}]})
    with pytest.raises(task_registry.TaskDefinitionError, match="'absolute_normalization' must be true or false"):
        load_bigbench_task(folder)


@pytest.mark.parametrize("score", [float("nan"), float("-inf")], ids=["nan", "minus-inf"])
def test_choices_without_a_highest_score_get_the_first_listed_choice(tmp_path, t5_tokenizer, monkeypatch, score):
    # a model whose outputs are not finite scores every choice NaN (or -inf, NaN once normalised): BIG-bench's tie
    # rule found no highest choice and the evaluation stopped on ZeroDivisionError (integer modulo by zero); such
    # an example gets the first listed choice, as the default protocol of every other task gives it
    examples = [{"input": f"q{i}", "target_scores": {f"c{j}_{i}": int(j == i % 3) for j in range(3)}}
                for i in range(6)]
    task = load_bigbench_task(_write_task(tmp_path / "nonfinite", {"name": "nonfinite", "examples": examples}))
    _rank_by(monkeypatch, lambda choice: score)
    result = evaluate_tasks(None, t5_tokenizer, [task], EvalSettings(keep_predictions=True), progress=False).results[0]
    rows = task.load_rows("test")
    assert [p["prediction"] for p in result.predictions] == [rows[p["row"]]["choices"][0] for p in result.predictions]
    assert len(result.predictions) == len(examples)


@pytest.mark.parametrize("value", [None, 12, ["a", "b"]], ids=["null", "number", "list"])
def test_an_input_that_is_not_text_is_refused_naming_the_example(tmp_path, value):
    # was written into the prompt as Python prints it ("None", "12", "['a', 'b']") and scored without a word, where
    # BIG-bench's formatting (input prefix + input) stops on it
    folder = _write_task(tmp_path / "odd_input", {"name": "odd_input", "examples": [
        {"input": "q", "target_scores": {"yes": 1, "no": 0}}, {"input": value, "target_scores": {"yes": 0, "no": 1}}]})
    with pytest.raises(task_registry.TaskDefinitionError) as refused:
        load_bigbench_task(folder)
    assert str(refused.value) == (f"{str(folder / 'task.json')!r}: example 1: 'input' must be a string (the text "
                                  f"the example asks), got {value!r}")


@pytest.mark.parametrize("key", ["task_prefix", "example_input_prefix", "example_output_prefix", "choice_prefix",
                                 "few_shot_example_separator"])
def test_a_prefix_that_is_not_text_is_refused_naming_the_key(tmp_path, key):
    # was written into every prompt as Python prints it (["Q:"] as "['Q:']", 1 as "1"); a null one is no prefix
    folder = _write_task(tmp_path / "odd_prefix", {"name": "odd_prefix", key: ["Q:"], "examples": [
        {"input": "q", "target_scores": {"yes": 1, "no": 0}}]})
    with pytest.raises(task_registry.TaskDefinitionError) as refused:
        load_bigbench_task(folder)
    assert str(refused.value) == (f"{str(folder / 'task.json')!r}: {key!r} must be a string (or null: none), got "
                                  f"['Q:']")


def test_two_task_files_making_one_task_are_both_named_with_a_remedy_the_command_line_can_take(tmp_path):
    # was: "a task named 'bigbench_same' is already registered (Task(...)); pass overwrite=True to replace it": the
    # second file unnamed, and a remedy from Python that `eval --bigbench DIR` (or evaluation.bigbench) cannot take
    examples = [{"input": "q", "target_scores": {"yes": 1, "no": 0}}]
    one = _write_task(tmp_path / "one", {"name": "same", "examples": examples})
    two = _write_task(tmp_path / "two", {"name": "same", "examples": examples})
    with task_registry.isolated_registry():
        with pytest.raises(task_registry.DuplicateRegistrationError) as refused:
            import_bigbench(tmp_path)
    assert str(refused.value) == (
        f"BIG-bench task files {str(one / 'task.json')!r} and {str(two / 'task.json')!r} both make the task "
        f"'bigbench_same' (named by a task.json's 'name', else by its folder); give one of them another 'name'")


def test_a_comparison_of_bigbench_reports_says_a_differing_seed_changes_nothing(imported, t5_tokenizer, monkeypatch):
    # was: k-shot reports of two training seeds flagged "their scores are not like for like", though a BIG-bench
    # task's prompts and demonstrations are BIG-bench's own draw, which the evaluation seed does not change
    from dataclasses import replace

    from t2t_mtl.evaluation import EvalReport
    from t2t_mtl.evaluation.report import comparison_markdown

    task = task_registry.get_task("bigbench_emoji_movie")
    settings = EvalSettings(max_examples=4, num_shots=1, max_input_length=4096)
    prompts = _scored_prompts(monkeypatch, t5_tokenizer, task, settings)
    assert _scored_prompts(monkeypatch, t5_tokenizer, task, replace(settings, seed=7)) == prompts  # (the premise)
    result = _result_of(task.name, "bigbench_zero_shot")
    seed_0 = EvalReport("seed-0", [result], settings=settings.to_dict())
    seed_7 = replace(seed_0, name="seed-7", settings={**seed_0.settings, "seed": 7})
    assert comparison_markdown([seed_0, seed_7]).splitlines()[-1] == (
        "Scored with different `seed`: 0 (seed-0), 7 (seed-7); every task scored is a BIG-bench task, whose prompts "
        "and k-shot demonstrations are drawn with BIG-bench's own seed: it changes nothing.")
    # a task of the project's own beside it draws its demonstrations with the seed
    mixed = [replace(r, results=[result, _result_of("copa", "choose")]) for r in (seed_0, seed_7)]
    assert comparison_markdown(mixed).splitlines()[-1].endswith("their scores are not like for like.")


def _result_of(task: str, template: str):
    from t2t_mtl.evaluation import TemplateResult

    return TemplateResult(task=task, template=template, split="validation", scoring="rank", num_examples=4,
                          metrics={"accuracy": {"accuracy": 0.5}}, primary_metric="accuracy",
                          primary_key="accuracy", score=50.0)


def test_a_task_file_named_as_a_task_registered_in_python_is_refused_as_the_registry_refuses_it(tmp_path):
    # kills a mutant of import_bigbench that its tests let live: a clash with a task of another source (no task.json
    # to name) worded as two BIG-bench files' clash, reading the other task's missing file (an AttributeError)
    examples = [{"input": "q", "target_scores": {"yes": 1, "no": 0}}]
    _write_task(tmp_path / "one", {"name": "same", "examples": examples})
    with task_registry.isolated_registry():
        task_registry.register_task(task_registry.Task(
            "bigbench_same", task_registry.LocalFileSource({"validation": str(tmp_path / "rows.jsonl")}),
            task_registry.Template("t", "{{q}} ||| {{q}}")))
        with pytest.raises(task_registry.DuplicateRegistrationError,
                           match="^a task named 'bigbench_same' is already registered"):
            import_bigbench(tmp_path)


def test_a_differing_seed_is_said_to_change_nothing_only_where_every_report_scores_bigbench_tasks_alone():
    # kills mutants of the comparison's BIG-bench seed note that its test let live (its reports scored alike): the
    # tasks of the first report alone looked at (a later one's own task, drawn with the seed, unseen), and reports
    # scoring no task said to score BIG-bench tasks alone
    from dataclasses import replace

    from t2t_mtl.evaluation import EvalReport
    from t2t_mtl.evaluation.report import comparison_markdown

    settings = EvalSettings(max_examples=4, num_shots=1).to_dict()
    seed_0 = EvalReport("seed-0", [_result_of("bigbench_emoji_movie", "bigbench_zero_shot")], settings=settings)
    seed_7 = replace(seed_0, name="seed-7", settings={**settings, "seed": 7},
                     results=[*seed_0.results, _result_of("copa", "choose")])
    assert comparison_markdown([seed_0, seed_7]).splitlines()[-1].endswith("their scores are not like for like.")
    empty = [replace(report, results=[]) for report in (seed_0, seed_7)]
    assert "BIG-bench" not in comparison_markdown(empty)


def test_a_prefix_holding_template_syntax_is_rendered_as_its_text(tmp_path):
    # was: a prefix holding `}}` or `endraw` was refused ("the template cannot hold it as literal text") with no
    # remedy but editing the task's file: promptsource's rewrite turns every `}}` of a template into a truncation
    # filter, and `{% endraw %}` ended the raw block the prefix is written in
    from task_registry.bigbench import listed_choices

    prefixes = {"task_prefix": "Fill {{ x }} and {% endraw %}{{ y }}}: ",
                "example_input_prefix": "\nQ}} {%- endraw -%}", "choice_prefix": "\n  }choice{: ",
                "example_output_prefix": "\n}A}\n}"}
    folder = _write_task(tmp_path / "braces", {"name": "braces", **prefixes,
                                               "examples": [{"input": "2 + 2?", "target_scores": {"4": 1, "5": 0}}]})
    task = load_bigbench_task(folder)
    example = task.templates[0].render(task.load_rows("test")[0])
    choices = listed_choices(["4", "5"])
    expected = (prefixes["task_prefix"] + prefixes["example_input_prefix"] + "2 + 2?" + prefixes["choice_prefix"]
                + prefixes["choice_prefix"].join(choices) + prefixes["example_output_prefix"])  # (BIG-bench's format)
    assert (example.inputs, example.targets) == (expected.strip(), "4")


def test_a_comparison_of_zero_shot_bigbench_reports_says_a_differing_seed_changes_nothing():
    # kills a mutant of report._difference that its tests let live (the BIG-bench note asked after the zero-shot one):
    # zero-shot BIG-bench reports of two training seeds were said to differ in what templates drawing at random
    # render, though a BIG-bench task's one template draws nothing (its prompt is BIG-bench's own)
    from dataclasses import replace

    from t2t_mtl.evaluation import EvalReport
    from t2t_mtl.evaluation.report import comparison_markdown

    seed_0 = EvalReport("seed-0", [_result_of("bigbench_emoji_movie", "bigbench_zero_shot")],
                        settings=EvalSettings(max_examples=4).to_dict())
    seed_7 = replace(seed_0, name="seed-7", settings={**seed_0.settings, "seed": 7})
    assert seed_0.settings["num_shots"] == 0  # (zero-shot)
    assert comparison_markdown([seed_0, seed_7]).splitlines()[-1] == (
        "Scored with different `seed`: 0 (seed-0), 7 (seed-7); every task scored is a BIG-bench task, whose prompts "
        "and k-shot demonstrations are drawn with BIG-bench's own seed: it changes nothing.")
