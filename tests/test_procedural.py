"""The procedural task family: determinism, disjoint splits, correct answers, clusters and mixtures.

Answers are checked against independent computations from the rendered text or the row's raw fields
(reversing, sorting, counting, regex-parsed word problems, `datetime` for dates, a unit table, ...).
"""
from __future__ import annotations

import datetime
import json
import re
from collections import Counter

import pytest

import task_registry
from task_registry.builtin.generators import CITIES, NAMES, generate_row, generate_rows
from task_registry.builtin.procedural import PROCEDURAL_TASKS, procedural_task

ROWS_PER_TASK = 150
UNITS_IN_BASE = {"km": 1000, "m": 1, "cm": 0.01, "mm": 0.001, "kg": 1000, "g": 1, "l": 1000, "ml": 1}
UNIT_NAMES = {"km": "kilometers", "m": "meters", "cm": "centimeters", "mm": "millimeters", "kg": "kilograms",
              "g": "grams", "l": "liters", "ml": "milliliters"}
YES_NO = {True: "yes", False: "no"}
FIRST_SECOND = {True: "first", False: "second"}


@pytest.fixture(scope="module", autouse=True)
def builtins():
    task_registry.load_builtin_tasks()


def _dedup(words):
    seen, out = set(), []
    for word in words:
        if word not in seen:
            seen.add(word)
            out.append(word)
    return out


def _word_problem(question: str) -> int:
    match = re.fullmatch(r"(\w+) has (\d+) (\w+) and (gets (\d+) more|gives away (\d+))\. "
                         r"How many \3 does \1 have now\?", question)
    assert match, question
    start = int(match.group(2))
    return start + int(match.group(5)) if match.group(5) else start - int(match.group(6))


def _fact_lookup(facts: str, question: str) -> str:
    person = re.fullmatch(r"(?:Where|What) does (\w+) (?:live|like|own)\?", question).group(1)
    found = re.findall(rf"{person} (?:lives in|likes|owns a) (\w+)\.", facts)
    assert len(found) == 1, (facts, question)
    return found[0]


def _entities(sentence: str) -> str:
    # names and cities are the only capitalised words of the generated sentences
    tagged = [f"{w}: {'PER' if w in NAMES else 'LOC'}" for w in sentence.split() if w[0].isupper()]
    assert all(w.split(":")[0] in NAMES + CITIES for w in tagged)
    return "; ".join(tagged)


def expected_target(task: str, template: str, row: dict) -> str:
    """The correct target of `template` on `row`, computed without the generators or the templates."""
    if task == "reverse_words":
        return " ".join(row["words"][::-1])
    if task == "sort_words":
        return " ".join(sorted(row["words"]))
    if task == "sort_numbers":
        return " ".join(map(str, sorted(row["numbers"], key=int)))
    if task == "dedup_words":
        return " ".join(_dedup(row["words"]))
    if task == "list_contains":
        return YES_NO[row["query"] in row["words"]]
    if task == "word_problem":
        return str(_word_problem(row["question"]))
    if task == "count_word":
        return str(sum(1 for w in row["words"] if w == row["query"]))
    if task == "parity":
        even = row["number"] % 2 == 0
        return ("even" if even else "odd") if template == "t5_prefix" else YES_NO[even]
    if task == "unit_conversion":
        value = row["quantity"] * UNITS_IN_BASE[row["from_unit"]] / UNITS_IN_BASE[row["to_unit"]]
        assert value == int(value)
        return str(int(round(value)))
    if task == "date_format":
        date = datetime.date.fromisoformat(row["date"])
        return f"{date.day} {date.strftime('%B')} {date.year}"
    if task == "fact_lookup":
        return _fact_lookup(row["facts"], row["question"])
    if task == "entity_tagging":
        return _entities(row["sentence"])
    if task == "compare_numbers":
        first_larger = row["a"] > row["b"]
        return {"t5_prefix": FIRST_SECOND[first_larger], "which_larger": str(max(row["a"], row["b"])),
                "yes_no": YES_NO[first_larger]}[template]
    if task == "compare_lengths":
        first_longer = len(row["first"]) > len(row["second"])
        return {"t5_prefix": FIRST_SECOND[first_longer], "which_longer": FIRST_SECOND[first_longer],
                "yes_no": YES_NO[first_longer]}[template]
    if task == "alphabetical_order":
        first_earlier = row["first"] < row["second"]
        return {"t5_prefix": FIRST_SECOND[first_earlier], "which_first": min(row["first"], row["second"]),
                "yes_no": YES_NO[first_earlier]}[template]
    raise AssertionError(f"no independent check for {task}")


@pytest.mark.parametrize("spec", PROCEDURAL_TASKS, ids=lambda s: s.name)
def test_every_template_renders_the_correct_answer(spec):
    task = task_registry.get_task(spec.name)
    for split in ("train", "validation", "test"):
        for index, row in enumerate(generate_rows(spec.name, 0, split, ROWS_PER_TASK if split == "train" else 40)):
            for template in task.templates:
                example = template.render(row, task=spec.name, row_index=index)
                assert example.targets == expected_target(spec.name, template.name, row), (template.name, row)
                if template.answer_choices is not None:
                    assert example.targets in example.answer_choices
                    assert len(set(example.answer_choices)) == len(example.answer_choices) >= 2


@pytest.mark.parametrize("spec", PROCEDURAL_TASKS, ids=lambda s: s.name)
def test_rows_are_deterministic_and_splits_disjoint(spec):
    name = spec.name
    assert generate_rows(name, 3, "train", 20) == generate_rows(name, 3, "train", 20)
    assert generate_row(name, 3, "test", 17) == generate_rows(name, 3, "test", 18)[17]
    assert generate_rows(name, 3, "train", 20) != generate_rows(name, 4, "train", 20)
    keys = {split: {json.dumps(row, sort_keys=True) for seed in (0, 1) for row in generate_rows(name, seed, split, 400)}
            for split in ("train", "validation", "test")}
    assert not keys["train"] & keys["validation"]
    assert not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]
    assert len(keys["test"]) >= 60  # enough distinct problems to evaluate on


def test_datasets_are_deterministic_and_any_size():
    task = procedural_task("sort_numbers", num_rows={"train": 7, "validation": 3}, seed=5)
    assert task.splits == ("train", "validation") and task.num_rows("train") == 7
    first = task.to_dataset("train")
    again = procedural_task("sort_numbers", num_rows={"train": 7, "validation": 3}, seed=5).to_dataset("train")
    assert len(first) == 7 and first.to_list() == again.to_list()
    other_seed = procedural_task("sort_numbers", num_rows={"train": 7, "validation": 3}, seed=6).to_dataset("train")
    assert first.to_list() != other_seed.to_list()
    streamed = list(task.to_dataset("train", streaming=True))
    assert streamed == first.to_list()
    assert set(first.column_names) == {"inputs", "targets", "answer_choices", "references", "task", "template"}


def test_unknown_split_and_task_are_clear_errors():
    with pytest.raises(task_registry.DataSourceError, match="no split 'dev'"):
        generate_row("parity", 0, "dev", 0)
    with pytest.raises(task_registry.TaskDefinitionError, match=r"split\(s\) \['dev'\]"):
        procedural_task("parity", num_rows={"train": 5, "dev": 5})
    with pytest.raises(task_registry.UnknownTaskError, match="did you mean 'parity'"):
        generate_row("parityy", 0, "train", 0)
    with pytest.raises(task_registry.UnknownTaskError, match="did you mean 'sort_words'"):
        procedural_task("sort_word")


def test_family_shape_clusters_and_held_out_flags():
    tasks = [task_registry.get_task(spec.name) for spec in PROCEDURAL_TASKS]
    assert len(tasks) >= 10
    clusters = Counter(t.cluster for t in tasks)
    assert len(clusters) >= 4 and all(count >= 2 for count in clusters.values())
    assert {t.name for t in tasks if t.held_out} == {"compare_numbers", "compare_lengths", "alphabetical_order"}
    assert all(t.held_out == (t.cluster == "comparison") for t in tasks)
    for task in tasks:
        names = task.template_names
        assert len(names) >= 2 and names[0] == "t5_prefix"
        assert task.templates[0].jinja.startswith(f"{task.name}:") or task.templates[0].jinja.startswith(
            f"{task.name} ") or task.name == "unit_conversion"
        assert task.splits == ("train", "validation", "test")
        assert task.metrics
    classification = [t for t in tasks if all(tpl.answer_choices for tpl in t.templates)]
    assert {t.name for t in classification} >= {"list_contains", "parity", "compare_numbers"}
    # held-in classification tasks answer yes/no too, so the held-out yes/no templates are reachable
    held_in_choices = {c for t in classification if not t.held_out for tpl in t.templates
                       for c in (tpl.fixed_answer_choices or [])}
    assert {"yes", "no"} <= held_in_choices


def test_mixtures_cover_all_and_train_excludes_held_out():
    all_tasks = set(task_registry.get_mixture("procedural").flatten())
    assert all_tasks == {spec.name for spec in PROCEDURAL_TASKS}
    train = task_registry.training_rates("procedural_train")  # raises if a held-out task slipped in
    assert set(train) == {spec.name for spec in PROCEDURAL_TASKS if not spec.held_out}
    assert set(task_registry.get_mixture("procedural_held_out").flatten()) == all_tasks - set(train)
    assert task_registry.training_rates("procedural", held_out_clusters=["comparison"]) == train
    with pytest.raises(task_registry.HeldOutTaskError):
        task_registry.training_rates("procedural")


# Golden renderings: row 0 of seed 0's train split, every template (pins the generators and templates).
GOLDEN = {
    ("reverse_words", "t5_prefix"): ("reverse_words: fig dog peach mango fox pear", "pear fox mango peach dog fig", []),
    ("reverse_words", "instruction"): ("Write these words in reverse order: fig, dog, peach, mango, fox, pear",
                                       "pear fox mango peach dog fig", []),
    ("sort_words", "t5_prefix"): ("sort_words: cow pear black melon", "black cow melon pear", []),
    ("sort_words", "instruction"): ("Sort the following words alphabetically: cow, pear, black, melon",
                                    "black cow melon pear", []),
    ("sort_numbers", "t5_prefix"): ("sort_numbers: 92 89 22 88", "22 88 89 92", []),
    ("sort_numbers", "instruction"): ("Put these numbers in order from smallest to largest: 92, 89, 22, 88",
                                      "22 88 89 92", []),
    ("dedup_words", "t5_prefix"): ("dedup_words: owl hen hen owl", "owl hen", []),
    ("dedup_words", "instruction"): ("Remove the repeated words from this list, keeping the first of each: "
                                     "owl hen hen owl", "owl hen", []),
    ("list_contains", "t5_prefix"): ("list_contains word: cherry list: gray cherry dog blue bat", "yes", ["yes", "no"]),
    ("list_contains", "instruction"): ("Is the word cherry in the list gray, cherry, dog, blue, bat?", "yes",
                                       ["yes", "no"]),
    ("word_problem", "t5_prefix"): ("word_problem: Noah has 15 stamps and gives away 3. How many stamps does Noah "
                                    "have now?", "12", []),
    ("word_problem", "instruction"): ("Solve this math problem and answer with a number. Noah has 15 stamps and "
                                      "gives away 3. How many stamps does Noah have now?", "12", []),
    ("count_word", "t5_prefix"): ("count_word word: bat list: fox fox cat fox fox bat fox bat", "2", []),
    ("count_word", "instruction"): ("How many times does the word bat appear in: fox fox cat fox fox bat fox bat?",
                                    "2", []),
    ("parity", "t5_prefix"): ("parity: 568", "even", ["even", "odd"]),
    ("parity", "instruction"): ("Is 568 an even number?", "yes", ["yes", "no"]),
    ("unit_conversion", "t5_prefix"): ("convert: 86 kg to g", "86000", []),
    ("unit_conversion", "instruction"): ("How many grams are in 86 kilograms?", "86000", []),
    ("date_format", "t5_prefix"): ("date_format: 1952-10-21", "21 October 1952", []),
    ("date_format", "instruction"): ("Write the date 1952-10-21 with the month spelled out.", "21 October 1952", []),
    ("fact_lookup", "t5_prefix"): ("fact_lookup question: Where does Liam live? context: Henry lives in Oslo. Liam "
                                   "lives in Paris. Emma lives in Berlin.", "Paris", []),
    ("fact_lookup", "instruction"): ("Henry lives in Oslo. Liam lives in Paris. Emma lives in Berlin. Answer the "
                                     "question using the sentences above. Where does Liam live?", "Paris", []),
    ("entity_tagging", "t5_prefix"): ("entity_tagging: Iris wrote to Grace", "Iris: PER; Grace: PER", []),
    ("entity_tagging", "instruction"): ("List the people (PER) and places (LOC) named in this sentence, in order: "
                                        "Iris wrote to Grace", "Iris: PER; Grace: PER", []),
    ("compare_numbers", "t5_prefix"): ("compare_numbers first: 143 second: 496", "second", ["first", "second"]),
    ("compare_numbers", "which_larger"): ("Which number is larger, 143 or 496?", "496", ["143", "496"]),
    ("compare_numbers", "yes_no"): ("Is 143 greater than 496?", "no", ["yes", "no"]),
    ("compare_lengths", "t5_prefix"): ("compare_lengths first: white kiwi mango gray red second: lemon green",
                                       "first", ["first", "second"]),
    ("compare_lengths", "which_longer"): ("Which list has more words, the first or the second? First: white, kiwi, "
                                          "mango, gray, red. Second: lemon, green.", "first", ["first", "second"]),
    ("compare_lengths", "yes_no"): ("Does the list white, kiwi, mango, gray, red have more words than the list "
                                    "lemon, green?", "yes", ["yes", "no"]),
    ("alphabetical_order", "t5_prefix"): ("alphabetical_order first: emu second: black", "second",
                                          ["first", "second"]),
    ("alphabetical_order", "which_first"): ("Which word comes first in alphabetical order, emu or black?", "black",
                                            ["emu", "black"]),
    ("alphabetical_order", "yes_no"): ("Does emu come before black in the dictionary?", "no", ["yes", "no"]),
}


def test_golden_renderings_of_every_template():
    rendered = {}
    for spec in PROCEDURAL_TASKS:
        row = generate_row(spec.name, 0, "train", 0)
        for template in spec.templates:
            example = template.render(row, task=spec.name, row_index=0)
            rendered[(spec.name, template.name)] = (example.inputs, example.targets, example.answer_choices or [])
    assert rendered == GOLDEN
    # the first row of a dataset is the same row, rendered with a template chosen per row index
    first = task_registry.get_task("parity").to_dataset("train", max_examples=1)[0]
    assert (first["inputs"], first["targets"]) in {GOLDEN[("parity", "t5_prefix")][:2],
                                                   GOLDEN[("parity", "instruction")][:2]}


def test_register_procedural_tasks_resizes_the_registered_family():
    from task_registry.builtin import register_procedural_tasks

    with task_registry.isolated_registry():
        names = register_procedural_tasks({"train": 12, "validation": 4, "test": 4}, seed=9)
        assert set(names) == set(task_registry.get_mixture("procedural").flatten())
        task = task_registry.get_task("reverse_words")
        assert task.num_rows("train") == 12
        assert task.load_rows("train").to_list() == generate_rows("reverse_words", 9, "train", 12)
    assert task_registry.get_task("reverse_words").num_rows("train") == 5000
