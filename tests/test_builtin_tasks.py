"""Built-in real tasks: one per shared dataset, golden renderings, every row of a sample renders, metadata.

Golden renderings use the first row of each task's first split read from `shared_data_dir`; long texts are
spliced in from the raw JSON line (read here with `json`, not through the task pipeline).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import task_registry
from task_registry.builtin.real import HELD_OUT_CLUSTERS, bio_entities, conll2003_as_text, gsm8k_final_answer
from t2t_mtl.evaluation.metrics import METRICS

SAMPLE_ROWS = 120
T0_HELD_OUT = {"glue_rte", "glue_wnli", "super_glue_cb", "super_glue_copa", "super_glue_wic",
               "super_glue_wsc_fixed"}
FILE_OF_TASK = {
    "glue_sst2": "glue/sst2", "glue_rte": "glue/rte", "glue_cola": "glue/cola", "glue_wnli": "glue/wnli",
    "glue_mrpc": "glue/mrpc", "ag_news": "ag_news/default", "conll2003": "conll2003/conll2003",
    "super_glue_cb": "super_glue/cb", "super_glue_copa": "super_glue/copa", "super_glue_boolq": "super_glue/boolq",
    "super_glue_wic": "super_glue/wic", "super_glue_wsc_fixed": "super_glue/wsc.fixed",
    "super_glue_multirc": "super_glue/multirc", "trec": "trec/default", "web_questions": "web_questions/default",
    "xquad_en": "xquad/xquad.en", "multi30k_en_de": "bentrevett/multi30k/default",
    "dialogsum": "knkarthick/dialogsum/default", "gsm8k": "gsm8k/main",
}


@pytest.fixture(scope="module")
def real_tasks(shared_data_dir):
    previous = task_registry.get_data_dir()
    task_registry.set_data_dir(shared_data_dir)
    task_registry.load_builtin_tasks()
    yield {name: task_registry.get_task(name) for name in task_registry.get_mixture("real").flatten()}
    task_registry.set_data_dir(previous)


def _first_raw_row(data_dir: Path, task_name: str, split: str) -> dict:
    with open(data_dir / FILE_OF_TASK[task_name] / f"{split}.jsonl", encoding="utf-8") as handle:
        return json.loads(handle.readline())


SHORT_GOLDEN = {
    ('glue_sst2', 't5_prefix'): (
        'sst2 sentence: when are bears bears and',
        'positive', ['negative', 'positive']),
    ('glue_sst2', 'instruction'): (
        'Is the sentiment of this movie review positive or negative? when are bears bears and',
        'positive', ['negative', 'positive']),
    ('glue_rte', 't5_prefix'): (
        'rte sentence1: No Weapons of Mass Destruction Found in Iraq Yet. sentence2: Weapons of Mass '
        'Destruction Found in Iraq.',
        'not_entailment', ['entailment', 'not_entailment']),
    ('glue_rte', 'instruction'): (
        'No Weapons of Mass Destruction Found in Iraq Yet. Question: Does this imply that "Weapons of Mass '
        'Destruction Found in Iraq."? Yes or no?',
        'no', ['yes', 'no']),
    ('glue_cola', 't5_prefix'): (
        "cola sentence: Our friends won't buy this analysis, let alone the next one we propose.",
        'acceptable', ['unacceptable', 'acceptable']),
    ('glue_cola', 'instruction'): (
        "Is the following sentence grammatically acceptable? Our friends won't buy this analysis, let alone "
        'the next one we propose.',
        'yes', ['no', 'yes']),
    ('glue_wnli', 't5_prefix'): (
        "wnli sentence1: John couldn't see the stage with Billy in front of him because he is so short. "
        'sentence2: John is so short.',
        'entailment', ['not_entailment', 'entailment']),
    ('glue_wnli', 'instruction'): (
        "John couldn't see the stage with Billy in front of him because he is so short. Does it follow that "
        '"John is so short."? Yes or no?',
        'yes', ['no', 'yes']),
    ('glue_mrpc', 't5_prefix'): (
        'mrpc sentence1: Amrozi accused his brother, whom he called "the witness", of deliberately distorting '
        'his evidence. sentence2: Referring to him as only "the witness", Amrozi accused his brother of '
        'deliberately distorting his evidence.',
        'equivalent', ['not_equivalent', 'equivalent']),
    ('glue_mrpc', 'instruction'): (
        'Do these two sentences mean the same thing? Sentence 1: Amrozi accused his brother, whom he called '
        '"the witness", of deliberately distorting his evidence. Sentence 2: Referring to him as only "the '
        'witness", Amrozi accused his brother of deliberately distorting his evidence. Yes or no?',
        'yes', ['no', 'yes']),
    ('ag_news', 't5_prefix'): (
        'ag_news text: p2pnet.net News:- The US Federal Trade Commission has filed its first spyware case '
        'against former self-styled Spam King Sanford Wallace, says the Center for Democracy and Technology, '
        'which made the original complaint last February.',
        'Sci/Tech', ['World', 'Sports', 'Business', 'Sci/Tech']),
    ('ag_news', 'instruction'): (
        'What is this news article about: world politics, sports, business, or science and technology? '
        'p2pnet.net News:- The US Federal Trade Commission has filed its first spyware case against former '
        'self-styled Spam King Sanford Wallace, says the Center for Democracy and Technology, which made the '
        'original complaint last February.',
        'science and technology', ['world politics', 'sports', 'business', 'science and technology']),
    ('conll2003', 't5_prefix'): (
        'conll2003 ner: EU rejects German call to boycott British lamb .',
        'EU: ORG; German: MISC; British: MISC', []),
    ('conll2003', 'instruction'): (
        'List the named entities in this sentence with their types (PER, ORG, LOC or MISC), or say none: EU '
        'rejects German call to boycott British lamb .',
        'EU: ORG; German: MISC; British: MISC', []),
    ('super_glue_cb', 't5_prefix'): (
        'cb hypothesis: the language was peeled down premise: It was a complex language. Not written down but '
        'handed down. One might say it was peeled down.',
        'entailment', ['entailment', 'contradiction', 'neutral']),
    ('super_glue_cb', 'instruction'): (
        'It was a complex language. Not written down but handed down. One might say it was peeled down. '
        'Question: Does this imply that "the language was peeled down"? Yes, no, or maybe?',
        'yes', ['yes', 'no', 'maybe']),
    ('super_glue_copa', 't5_prefix'): (
        'copa premise: My body cast a shadow over the grass. question: cause choice1: The sun was rising. '
        'choice2: The grass was cut.',
        'The sun was rising.', ['The sun was rising.', 'The grass was cut.']),
    ('super_glue_copa', 'instruction'): (
        'My body cast a shadow over the grass. What was the cause? Pick the more plausible option. Option 1: '
        'The sun was rising. Option 2: The grass was cut.',
        'The sun was rising.', ['The sun was rising.', 'The grass was cut.']),
    ('super_glue_wic', 't5_prefix'): (
        'wic word: class sentence1: An emerging professional class. sentence2: Apologizing for losing your '
        'temper, even though you were badly provoked, showed real class.',
        'False', ['False', 'True']),
    ('super_glue_wic', 'instruction'): (
        'Does the word "class" mean the same thing in these two sentences? An emerging professional class. '
        'Apologizing for losing your temper, even though you were badly provoked, showed real class.',
        'no', ['no', 'yes']),
    ('super_glue_wsc_fixed', 't5_prefix'): (
        'wsc text: Bernard , who had not told the government official that he was less than 21 when he filed '
        'for a homestead claim, did not consider that he had done anything dishonest. Still, anyone who knew '
        'that he was 19 years old could take his claim away from him . span1: anyone span2: him',
        'False', ['False', 'True']),
    ('super_glue_wsc_fixed', 'instruction'): (
        'Bernard , who had not told the government official that he was less than 21 when he filed for a '
        'homestead claim, did not consider that he had done anything dishonest. Still, anyone who knew that he '
        'was 19 years old could take his claim away from him . In the passage above, does the pronoun "him" '
        'refer to "anyone"?',
        'no', ['no', 'yes']),
    ('trec', 't5_prefix'): (
        'trec question: How did serfdom develop in and then leave Russia ?',
        'DESC', ['ABBR', 'ENTY', 'DESC', 'HUM', 'LOC', 'NUM']),
    ('trec', 'instruction'): (
        'What kind of answer does this question ask for: an abbreviation, an entity, a description, a person, '
        'a location, or a number? How did serfdom develop in and then leave Russia ?',
        'description', ['abbreviation', 'entity', 'description', 'person', 'location', 'number']),
    ('web_questions', 't5_prefix'): (
        'web_questions question: what is the name of justin bieber brother?',
        'Jazmyn Bieber', []),
    ('web_questions', 'instruction'): (
        'Answer this question: what is the name of justin bieber brother?',
        'Jazmyn Bieber', []),
    ('multi30k_en_de', 't5_prefix'): (
        'translate English to German: Two young, White males are outside near many bushes.',
        'Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.', []),
    ('multi30k_en_de', 'instruction'): (
        'What is the German translation of this English sentence? Two young, White males are outside near many '
        'bushes.',
        'Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.', []),
    ('gsm8k', 't5_prefix'): (
        'gsm8k question: Natalia sold clips to 48 of her friends in April, and then she sold half as many '
        'clips in May. How many clips did Natalia sell altogether in April and May?',
        '72', []),
    ('gsm8k', 'instruction'): (
        'Solve this math word problem and answer with a number. Natalia sold clips to 48 of her friends in '
        'April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in '
        'April and May?',
        '72', []),
}


def _long_golden(raw: dict) -> dict:
    """Goldens of the first rows with long passages, built from the raw JSON rows by task name."""
    boolq, multirc, xquad, dialogsum = raw["super_glue_boolq"], raw["super_glue_multirc"], raw["xquad_en"], \
        raw["dialogsum"]
    return {
        ("super_glue_boolq", "t5_prefix"): (
            f"boolq passage: {boolq['passage']} question: does ethanol take more energy make that produces",
            "False", ["False", "True"]),
        ("super_glue_boolq", "instruction"): (
            f"{boolq['passage']} Based on the passage above, does ethanol take more energy make that produces? "
            f"Yes or no?", "no", ["no", "yes"]),
        ("super_glue_multirc", "t5_prefix"): (
            "multirc question: Would the mass of a baseball affect how much force you have to use to pick it up? "
            f"answer: No paragraph: {multirc['paragraph'].strip()}", "False", ["False", "True"]),
        ("super_glue_multirc", "instruction"): (
            f"{multirc['paragraph']} Question: Would the mass of a baseball affect how much force you have to use "
            'to pick it up? Is "No" a correct answer?', "no", ["no", "yes"]),
        ("xquad_en", "t5_prefix"): (
            f"xquad question: How many points did the Panthers defense surrender? context: {xquad['context']}",
            "308", []),
        ("xquad_en", "instruction"): (
            f"{xquad['context']} Answer the question with a span copied from the passage above. How many points "
            "did the Panthers defense surrender?", "308", []),
        ("dialogsum", "t5_prefix"): (
            f"summarize: {dialogsum['dialogue']}",
            "#Person2# has trouble breathing. The doctor asks #Person2# about it and will send #Person2# to a "
            "pulmonary specialist.", []),
        ("dialogsum", "instruction"): (
            f"{dialogsum['dialogue']} Write a short summary of the dialogue above.",
            "#Person2# has trouble breathing. The doctor asks #Person2# about it and will send #Person2# to a "
            "pulmonary specialist.", []),
    }


def test_one_task_per_shared_dataset_with_its_splits(real_tasks, shared_data_dir):
    on_disk = {str(p.parent.relative_to(shared_data_dir)) for p in Path(shared_data_dir).rglob("*.jsonl")}
    assert set(FILE_OF_TASK.values()) == on_disk
    assert set(real_tasks) == set(FILE_OF_TASK)
    for name, task in real_tasks.items():
        folder = Path(shared_data_dir) / FILE_OF_TASK[name]
        assert set(task.splits) == {p.stem for p in folder.glob("*.jsonl")}, name
        for split in task.splits:  # the hub id resolves to the shared file through the data-dir override
            assert task.source.local_file(split) == folder / f"{split}.jsonl"


def test_golden_renderings_of_every_template(real_tasks, shared_data_dir):
    raw = {name: _first_raw_row(Path(shared_data_dir), name, task.splits[0]) for name, task in real_tasks.items()}
    golden = {**SHORT_GOLDEN, **_long_golden(raw)}
    rendered = {}
    for name, task in real_tasks.items():
        row = task.load_rows(task.splits[0])[0]
        for template in task.templates:
            example = template.render(row, task=name, row_index=0)
            rendered[(name, template.name)] = (example.inputs, example.targets, example.answer_choices or [])
    assert rendered.keys() == golden.keys()
    for key, value in golden.items():
        assert rendered[key] == value, key


def test_instruction_templates_split_instruction_and_context(real_tasks):
    rte = real_tasks["glue_rte"].get_template("instruction").render(
        {"sentence1": "A man sleeps.", "sentence2": "A person rests.", "label": 0, "idx": 0})
    assert rte.instruction == "Does the first sentence imply the second? Yes or no?"
    assert rte.context == "A man sleeps. / A person rests."
    assert (rte.targets, rte.answer) == ("yes", "yes")
    copa = real_tasks["super_glue_copa"].get_template("instruction").render(
        {"premise": "It rained.", "choice1": "The grass got wet.", "choice2": "The sun shone.", "question": "effect",
         "label": 0, "idx": 0})
    assert copa.inputs == ("It rained. What happened as a result? Pick the more plausible option. Option 1: The grass "
                           "got wet. Option 2: The sun shone.")
    assert copa.instruction == "What happened as a result? Pick the more plausible option."


@pytest.mark.parametrize("name", sorted(FILE_OF_TASK))
def test_every_template_renders_a_sample_of_every_split(real_tasks, name):
    task = real_tasks[name]
    for split in task.splits:
        rows = task.load_rows(split)
        indices = sorted(set(range(min(len(rows), SAMPLE_ROWS // 2)))
                         | set(random.Random(0).sample(range(len(rows)), min(len(rows), SAMPLE_ROWS // 2))))
        for index in indices:
            row = rows[index]
            for template in task.templates:
                example = template.render(row, task=name, row_index=index)
                assert example.inputs and example.targets, (name, split, index, template.name)
                if template.answer_choices is not None:
                    assert example.targets in example.answer_choices
                    assert len(example.answer_choices) >= 2
                    assert not example.targets.isdigit()  # an answer string, never a label id


def test_task_metadata(real_tasks):
    assert len(real_tasks) == 19
    assert len({task.task_type for task in real_tasks.values()}) >= 6
    for name, task in real_tasks.items():
        names = task.template_names
        assert len(names) >= 2 and {"t5_prefix", "instruction"} <= set(names), name
        assert task.held_out == (task.cluster in HELD_OUT_CLUSTERS) == (name in T0_HELD_OUT), name
        assert task.metrics and all(metric in METRICS for metric in task.metrics), (name, task.metrics)
        for template in task.templates:
            assert all(metric in METRICS for metric in template.metadata.metrics), (name, template.name)
        classification = any(t.answer_choices for t in task.templates)
        assert classification == all(t.answer_choices for t in task.templates), name
    assert {t.cluster for t in real_tasks.values() if t.held_out} == set(HELD_OUT_CLUSTERS)


def test_real_mixtures(real_tasks):
    assert set(task_registry.get_mixture("t0_held_out").flatten()) == T0_HELD_OUT
    rates = task_registry.training_rates("real_train")  # raises if a held-out task slipped in
    assert not set(rates) & T0_HELD_OUT
    assert set(rates) == {n for n, t in real_tasks.items() if not t.held_out and "train" in t.splits}
    assert rates["glue_sst2"] == 2 ** 14 and rates["trec"] == 5452  # examples-proportional, capped at 2^14
    with pytest.raises(task_registry.HeldOutTaskError):
        task_registry.training_rates("real")


def test_to_dataset_end_to_end(real_tasks):
    dataset = real_tasks["glue_rte"].to_dataset("validation")
    assert len(dataset) == 277
    assert set(dataset.column_names) == {"inputs", "targets", "answer_choices", "references", "task", "template"}
    assert all(t in c for t, c in zip(dataset["targets"], dataset["answer_choices"]))
    streamed = list(real_tasks["glue_rte"].to_dataset("validation", streaming=True, max_examples=3))
    assert streamed == dataset.select(range(3)).to_list()
    tagged = real_tasks["conll2003"].to_dataset("validation", templates=["t5_prefix"], max_examples=5)
    assert tagged[0]["inputs"] == "conll2003 ner: CRICKET - LEICESTERSHIRE TAKE OVER AT TOP AFTER INNINGS VICTORY ."
    assert tagged[0]["targets"] == "LEICESTERSHIRE: ORG"


def test_bio_entities_against_hand_spans():
    tokens = ["Peter", "Blackburn", "of", "New", "York", "met", "Acme", "Corp", "and", "IBM", "in", "Paris", "Lyon"]
    tags = ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "I-ORG", "I-ORG", "O", "B-ORG", "O", "B-LOC", "B-LOC"]
    assert bio_entities(tokens, tags) == [("Peter Blackburn", "PER"), ("New York", "LOC"), ("Acme Corp", "ORG"),
                                          ("IBM", "ORG"), ("Paris", "LOC"), ("Lyon", "LOC")]
    # an I- tag of another type starts a new span
    assert bio_entities(["A", "B"], ["B-PER", "I-LOC"]) == [("A", "PER"), ("B", "LOC")]
    assert conll2003_as_text({"tokens": ["-DOCSTART-"], "ner_tags": [0]}) == {"sentence": "-DOCSTART-",
                                                                              "entities": "none"}


def test_gsm8k_final_answer_drops_thousands_separators():
    assert gsm8k_final_answer({"answer": "5 * 2 = <<5*2=10>>10\n#### 1,450,000"}) == {"final_answer": "1450000"}
    assert gsm8k_final_answer({"answer": "so\n#### -3"}) == {"final_answer": "-3"}


def test_builtins_register_again_after_an_isolated_registry_dropped_them():
    """`load_builtin_tasks` is not a one-shot import side effect: an emptied registry gets them back."""
    from task_registry import registry

    task_registry.load_builtin_tasks()
    with task_registry.isolated_registry():
        registry._TASKS.clear()
        registry._MIXTURES.clear()
        names = task_registry.load_builtin_tasks()
        assert "reverse_words" in names and "rte" in " ".join(names)
        assert task_registry.get_mixture("procedural").name == "procedural"


def test_conll2003_is_scored_by_entity_f1_over_its_own_target_format(real_tasks, shared_data_dir):
    from t2t_mtl.evaluation.metrics import compute_metric
    from t2t_mtl.evaluation.template_metrics import task_metrics

    task = real_tasks["conll2003"]
    for template in task.templates:
        assert task_metrics(task, template)[0][0] == "entity_f1"
    targets = task.to_dataset("validation", templates=["t5_prefix"])["targets"]
    assert "none" in targets  # sentences without entities are part of the corpus
    # every gold target parses: perfect predictions score 1; dropping the entities of one sentence loses
    # exactly its entities (recall) and nothing else; entities counted from the raw tags by seqeval
    from seqeval.metrics.sequence_labeling import get_entities

    from task_registry.builtin.real import CONLL2003_TAGS

    assert compute_metric("entity_f1", targets, targets)["f1"] == 1.0
    gold_entities = 0
    with open(shared_data_dir / "conll2003/conll2003/validation.jsonl", encoding="utf-8") as handle:
        for line in handle:
            gold_entities += len(get_entities([CONLL2003_TAGS[t] for t in json.loads(line)["ner_tags"]]))
    first = next(i for i, t in enumerate(targets) if t != "none")
    dropped = targets[first].count(": ")
    result = compute_metric("entity_f1", ["none" if i == first else t for i, t in enumerate(targets)], targets)
    assert result["precision"] == 1.0 and result["recall"] == pytest.approx((gold_entities - dropped) / gold_entities)


def test_qa_tasks_score_against_every_gold_answer(real_tasks, shared_data_dir):
    from t2t_mtl.evaluation.template_metrics import task_metrics

    web, xquad = real_tasks["web_questions"], real_tasks["xquad_en"]
    raw_web = _first_raw_row(shared_data_dir, "web_questions", "test")
    raw_xquad = _first_raw_row(shared_data_dir, "xquad_en", "validation")
    for template in web.templates:
        out = template.render(web.load_rows("test")[0])
        assert out.targets == raw_web["answers"][0] and out.references == raw_web["answers"]
        assert task_metrics(web, template)[0][0] == "squad_exact_match"  # SQuAD-normalised exact match first
    for template in xquad.templates:
        assert template.render(xquad.load_rows("validation")[0]).references == raw_xquad["answers"]["text"]
    multi = [r for r in web.to_dataset("test", templates=["t5_prefix"], max_examples=50) if len(r["references"]) > 1]
    assert multi and all(r["targets"] == r["references"][0] for r in multi)


def test_multirc_is_scored_per_answer_and_per_question_as_superglue_does(real_tasks, shared_data_dir):
    from t2t_mtl.evaluation.rendered_examples import render_examples
    from t2t_mtl.evaluation.template_metrics import task_metrics

    task = real_tasks["super_glue_multirc"]
    for template in task.templates:
        assert task_metrics(task, template)[0] == ["f1", "group_exact_match", "accuracy"]
    with open(shared_data_dir / "super_glue/multirc/validation.jsonl", encoding="utf-8") as handle:
        raw = [json.loads(line) for line in handle]
    questions = [(r["idx"]["paragraph"], r["idx"]["question"]) for r in raw]
    examples = render_examples(task, task.templates[0], task.load_rows("validation")).examples
    keys = [e.group for e in examples]
    assert len(examples) == len(raw) and len(set(keys)) == len(set(questions)) == 953
    # rows share a group exactly when they answer the same question of the same paragraph
    assert all((keys[i] == keys[j]) == (questions[i] == questions[j]) for i in range(0, len(raw), 97)
               for j in range(len(raw)))
