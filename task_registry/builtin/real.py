"""The real NLP tasks: one per dataset of the shared data folder, registered against its HF hub id.

Each task reads `load_dataset(path, config)` (offline through the data-dir override), has a plain T5-style
prefix template (`rte sentence1: ... sentence2: ...`) and a natural-language instruction template, and
carries answer choices when it is classification or multiple choice, so targets are answer-choice
strings, never label ids. Clusters follow T0: ``nli`` (RTE, WNLI, CB), ``commonsense`` (COPA),
``word_sense`` (WiC) and ``coreference`` (WSC) are held out; the other clusters are held in.

Splits are the ones the datasets have (BoolQ, WiC, WSC, MultiRC and XQuAD only `validation`; DialogSum
`validation` and `test`; AG News, TREC, MRPC, WebQuestions and GSM8K `train` and `test`).
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..preprocessors import Map
from ..sources import HFSource
from ..task import Task
from ..template import Template

HELD_OUT_CLUSTERS = ("nli", "commonsense", "word_sense", "coreference")

CONLL2003_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
NO_ENTITIES = "none"
CLASSIFY = "{{ answer_choices[label] }}"


def bio_entities(tokens: Sequence[str], tags: Sequence[str]) -> List[Tuple[str, str]]:
    """Entity spans (text, type) of a BIO-tagged sentence, in order; an `I-` tag that does not continue a
    span of its type starts a new one (CoNLL's IOB1 usage)."""
    spans: List[Tuple[List[str], str]] = []
    previous = "O"
    for token, tag in zip(tokens, tags):
        if tag == "O":
            previous = "O"
            continue
        prefix, kind = tag.split("-", 1)
        if prefix == "I" and previous != "O" and previous.split("-", 1)[1] == kind:
            spans[-1][0].append(token)
        else:
            spans.append(([token], kind))
        previous = tag
    return [(" ".join(words), kind) for words, kind in spans]


def conll2003_as_text(row: Mapping[str, Any]) -> Dict[str, str]:
    """`tokens` + `ner_tags` → `sentence` and `entities` ("EU: ORG; German: MISC", or "none")."""
    tags = [CONLL2003_TAGS[tag] for tag in row["ner_tags"]]
    entities = bio_entities(row["tokens"], tags)
    return {"sentence": " ".join(row["tokens"]),
            "entities": "; ".join(f"{text}: {kind}" for text, kind in entities) or NO_ENTITIES}


def gsm8k_final_answer(row: Mapping[str, Any]) -> Dict[str, str]:
    """The number after `####` of a GSM8K solution as `final_answer`."""
    return {"final_answer": row["answer"].rsplit("####", 1)[1].strip().replace(",", "")}


def _template(name: str, jinja: str, metrics: Sequence[str], *, choices: Optional[str] = None,
              choices_in_prompt: bool = False, instruction: Optional[str] = None,
              context: Optional[str] = None, languages: Sequence[str] = ("en",),
              references: Optional[str] = None) -> Template:
    metadata = {"original_task": True, "choices_in_prompt": choices_in_prompt, "metrics": list(metrics),
                "languages": list(languages)}
    return Template(name, jinja, answer_choices=choices, metadata=metadata, instruction=instruction,
                    context=context, references=references)


def _task(name: str, source: HFSource, templates: Sequence[Template], *, task_type: str, cluster: str,
          metrics: Sequence[str], splits: Sequence[str], description: str,
          preprocessors: Sequence[Map] = (), group_by: Optional[str] = None) -> Task:
    return Task(name, source, list(templates), preprocessors=list(preprocessors), metrics=tuple(metrics),
                task_type=task_type, cluster=cluster, held_out=cluster in HELD_OUT_CLUSTERS, splits=tuple(splits),
                description=description, group_by=group_by)


def _pair_classification(prefix: str, first: str, second: str, prefix_choices: str,
                         instruction: str, instruction_jinja: str, instruction_context: str,
                         instruction_choices: str, metrics: Sequence[str]) -> Tuple[Template, Template]:
    return (
        _template("t5_prefix", f"{prefix} {first}: {{{{ {first} }}}} {second}: {{{{ {second} }}}} ||| {CLASSIFY}",
                  metrics, choices=prefix_choices),
        _template("instruction", f"{instruction_jinja} ||| {CLASSIFY}", metrics, choices=instruction_choices,
                  choices_in_prompt=True, instruction=instruction, context=instruction_context),
    )


def real_tasks() -> List[Task]:
    """The 19 real tasks (fresh `Task` objects)."""
    acc = ("accuracy",)
    ner = ("entity_f1", "exact_match")
    closed_qa = ("squad_exact_match", "exact_match")
    multirc = ("f1", "group_exact_match", "accuracy")  # SuperGLUE: F1a, then EM per question
    web_answers = "{{ answers | join(' ||| ') }}"
    xquad_answers = "{{ answers.text | join(' ||| ') }}"
    return [
        _task("glue_sst2", HFSource("glue", "sst2"), (
            _template("t5_prefix", f"sst2 sentence: {{{{ sentence }}}} ||| {CLASSIFY}", acc,
                      choices="negative ||| positive"),
            _template("instruction", "Is the sentiment of this movie review positive or negative? {{ sentence }} "
                                     f"||| {CLASSIFY}", acc, choices="negative ||| positive", choices_in_prompt=True,
                      instruction="Is the sentiment of this movie review positive or negative?",
                      context="{{ sentence }}"),
        ), task_type="sentiment", cluster="sentiment", metrics=acc, splits=("train", "validation"),
            description="SST-2 binary sentiment of movie-review phrases (GLUE)."),
        _task("glue_rte", HFSource("glue", "rte"), _pair_classification(
            "rte", "sentence1", "sentence2", "entailment ||| not_entailment",
            "Does the first sentence imply the second? Yes or no?",
            '{{ sentence1 }} Question: Does this imply that "{{ sentence2 }}"? Yes or no?',
            '{{ sentence1 }} / {{ sentence2 }}', "yes ||| no", acc),
            task_type="nli", cluster="nli", metrics=acc, splits=("train", "validation"),
            description="Recognizing Textual Entailment (GLUE RTE), 2-way."),
        _task("glue_cola", HFSource("glue", "cola"), (
            _template("t5_prefix", f"cola sentence: {{{{ sentence }}}} ||| {CLASSIFY}", ("matthews_correlation",),
                      choices="unacceptable ||| acceptable"),
            _template("instruction", "Is the following sentence grammatically acceptable? {{ sentence }} "
                                     f"||| {CLASSIFY}", ("matthews_correlation",), choices="no ||| yes",
                      instruction="Is the following sentence grammatically acceptable?", context="{{ sentence }}"),
        ), task_type="acceptability", cluster="acceptability", metrics=("matthews_correlation", "accuracy"),
            splits=("train", "validation"), description="CoLA grammatical acceptability (GLUE)."),
        _task("glue_wnli", HFSource("glue", "wnli"), _pair_classification(
            "wnli", "sentence1", "sentence2", "not_entailment ||| entailment",
            "Does the second sentence follow from the first? Yes or no?",
            '{{ sentence1 }} Does it follow that "{{ sentence2 }}"? Yes or no?',
            '{{ sentence1 }} / {{ sentence2 }}', "no ||| yes", acc),
            task_type="nli", cluster="nli", metrics=acc, splits=("train", "validation"),
            description="Winograd NLI (GLUE WNLI): does the sentence with the pronoun resolved follow?"),
        _task("glue_mrpc", HFSource("glue", "mrpc"), _pair_classification(
            "mrpc", "sentence1", "sentence2", "not_equivalent ||| equivalent",
            "Do these two sentences mean the same thing? Yes or no?",
            "Do these two sentences mean the same thing? Sentence 1: {{ sentence1 }} Sentence 2: {{ sentence2 }} "
            "Yes or no?", "Sentence 1: {{ sentence1 }} Sentence 2: {{ sentence2 }}", "no ||| yes",
            ("accuracy", "f1")),
            task_type="paraphrase", cluster="paraphrase", metrics=("accuracy", "f1"), splits=("train", "test"),
            description="Microsoft Research Paraphrase Corpus (original release: train, labelled test)."),
        _task("ag_news", HFSource("ag_news"), (
            _template("t5_prefix", f"ag_news text: {{{{ text }}}} ||| {CLASSIFY}", acc,
                      choices="World ||| Sports ||| Business ||| Sci/Tech"),
            _template("instruction", "What is this news article about: world politics, sports, business, or "
                                     f"science and technology? {{{{ text }}}} ||| {CLASSIFY}", acc,
                      choices="world politics ||| sports ||| business ||| science and technology",
                      choices_in_prompt=True,
                      instruction="What is this news article about: world politics, sports, business, or science "
                                  "and technology?", context="{{ text }}"),
        ), task_type="topic", cluster="topic", metrics=acc, splits=("train", "test"),
            description="AG News topic classification, 4 classes."),
        _task("conll2003", HFSource("conll2003", "conll2003"), (
            _template("t5_prefix", "conll2003 ner: {{ sentence }} ||| {{ entities }}", ner),
            _template("instruction", "List the named entities in this sentence with their types (PER, ORG, LOC "
                                     "or MISC), or say none: {{ sentence }} ||| {{ entities }}", ner,
                      instruction="List the named entities in this sentence with their types (PER, ORG, LOC or "
                                  "MISC), or say none:", context="{{ sentence }}"),
        ), task_type="tagging", cluster="tagging", metrics=ner,
            splits=("train", "validation", "test"), preprocessors=(Map(conll2003_as_text),),
            description='CoNLL-2003 named entities as text: target "EU: ORG; German: MISC" (or "none"), scored by '
                        'entity-level F1 over (span, type) pairs.'),
        _task("super_glue_cb", HFSource("super_glue", "cb"), (
            _template("t5_prefix", f"cb hypothesis: {{{{ hypothesis }}}} premise: {{{{ premise }}}} ||| {CLASSIFY}",
                      ("accuracy", "f1_macro"), choices="entailment ||| contradiction ||| neutral"),
            _template("instruction", '{{ premise }} Question: Does this imply that "{{ hypothesis }}"? Yes, no, or '
                                     f"maybe? ||| {CLASSIFY}", ("accuracy", "f1_macro"),
                      choices="yes ||| no ||| maybe", choices_in_prompt=True,
                      instruction="Does the premise imply the hypothesis? Yes, no, or maybe?",
                      context="{{ premise }} / {{ hypothesis }}"),
        ), task_type="nli", cluster="nli", metrics=("accuracy", "f1_macro"), splits=("train", "validation"),
            description="CommitmentBank (SuperGLUE CB), 3-way entailment."),
        _task("super_glue_copa", HFSource("super_glue", "copa"), (
            _template("t5_prefix", "copa premise: {{ premise }} question: {{ question }} choice1: {{ choice1 }} "
                                   f"choice2: {{{{ choice2 }}}} ||| {CLASSIFY}", acc,
                      choices="{{ choice1 }} ||| {{ choice2 }}", choices_in_prompt=True),
            _template("instruction", "{{ premise }} {% if question == 'cause' %}What was the cause?{% else %}What "
                                     "happened as a result?{% endif %} Pick the more plausible option. Option 1: "
                                     f"{{{{ choice1 }}}} Option 2: {{{{ choice2 }}}} ||| {CLASSIFY}", acc,
                      choices="{{ choice1 }} ||| {{ choice2 }}", choices_in_prompt=True,
                      instruction="{% if question == 'cause' %}What was the cause?{% else %}What happened as a "
                                  "result?{% endif %} Pick the more plausible option.",
                      context="{{ premise }} Option 1: {{ choice1 }} Option 2: {{ choice2 }}"),
        ), task_type="commonsense", cluster="commonsense", metrics=acc, splits=("train", "validation"),
            description="Choice of Plausible Alternatives (SuperGLUE COPA): the more plausible cause/effect."),
        _task("super_glue_boolq", HFSource("super_glue", "boolq"), (
            _template("t5_prefix", f"boolq passage: {{{{ passage }}}} question: {{{{ question }}}} ||| {CLASSIFY}",
                      acc, choices="False ||| True"),
            _template("instruction", "{{ passage }} Based on the passage above, {{ question }}? Yes or no? "
                                     f"||| {CLASSIFY}", acc, choices="no ||| yes", choices_in_prompt=True,
                      instruction="Based on the passage, {{ question }}? Yes or no?", context="{{ passage }}"),
        ), task_type="yes_no_qa", cluster="reading_comprehension", metrics=acc, splits=("validation",),
            description="BoolQ yes/no questions about a Wikipedia passage (SuperGLUE validation)."),
        _task("super_glue_wic", HFSource("super_glue", "wic"), (
            _template("t5_prefix", "wic word: {{ word }} sentence1: {{ sentence1 }} sentence2: {{ sentence2 }} "
                                   f"||| {CLASSIFY}", acc, choices="False ||| True"),
            _template("instruction", 'Does the word "{{ word }}" mean the same thing in these two sentences? '
                                     f"{{{{ sentence1 }}}} {{{{ sentence2 }}}} ||| {CLASSIFY}", acc,
                      choices="no ||| yes",
                      instruction='Does the word "{{ word }}" mean the same thing in these two sentences?',
                      context="{{ sentence1 }} {{ sentence2 }}"),
        ), task_type="word_sense", cluster="word_sense", metrics=acc, splits=("validation",),
            description="Word-in-Context (SuperGLUE WiC): same sense of a word in two sentences?"),
        _task("super_glue_wsc_fixed", HFSource("super_glue", "wsc.fixed"), (
            _template("t5_prefix", "wsc text: {{ text }} span1: {{ span1_text }} span2: {{ span2_text }} "
                                   f"||| {CLASSIFY}", acc, choices="False ||| True"),
            _template("instruction", '{{ text }} In the passage above, does the pronoun "{{ span2_text }}" refer to '
                                     f'"{{{{ span1_text }}}}"? ||| {CLASSIFY}', acc, choices="no ||| yes",
                      instruction='Does the pronoun "{{ span2_text }}" refer to "{{ span1_text }}"?',
                      context="{{ text }}"),
        ), task_type="coreference", cluster="coreference", metrics=acc, splits=("validation",),
            description="Winograd Schema Challenge (SuperGLUE WSC, fixed spans): does the pronoun refer to the "
                        "noun phrase?"),
        _task("super_glue_multirc", HFSource("super_glue", "multirc"), (
            _template("t5_prefix", "multirc question: {{ question }} answer: {{ answer }} paragraph: {{ paragraph }} "
                                   f"||| {CLASSIFY}", multirc, choices="False ||| True"),
            _template("instruction", '{{ paragraph }} Question: {{ question }} Is "{{ answer }}" a correct answer? '
                                     f"||| {CLASSIFY}", multirc, choices="no ||| yes",
                      instruction='Question: {{ question }} Is "{{ answer }}" a correct answer?',
                      context="{{ paragraph }}"),
        ), task_type="yes_no_qa", cluster="reading_comprehension", metrics=multirc, splits=("validation",),
            group_by="idx.question",
            description="MultiRC answer verification: is a candidate answer to a question about a paragraph "
                        "correct? Scored as SuperGLUE does: F1 over all answers (F1a), then exact match per "
                        "question (every answer of it right), then accuracy per answer."),
        _task("trec", HFSource("trec"), (
            _template("t5_prefix", "trec question: {{ text }} ||| {{ answer_choices[coarse_label] }}", acc,
                      choices="ABBR ||| ENTY ||| DESC ||| HUM ||| LOC ||| NUM"),
            _template("instruction", "What kind of answer does this question ask for: an abbreviation, an entity, a "
                                     "description, a person, a location, or a number? {{ text }} ||| "
                                     "{{ answer_choices[coarse_label] }}", acc,
                      choices="abbreviation ||| entity ||| description ||| person ||| location ||| number",
                      choices_in_prompt=True,
                      instruction="What kind of answer does this question ask for: an abbreviation, an entity, a "
                                  "description, a person, a location, or a number?", context="{{ text }}"),
        ), task_type="question_classification", cluster="topic", metrics=acc, splits=("train", "test"),
            description="TREC question classification, 6 coarse classes."),
        _task("web_questions", HFSource("web_questions"), (
            _template("t5_prefix", "web_questions question: {{ question }} ||| {{ answers[0] }}", closed_qa,
                      references=web_answers),
            _template("instruction", "Answer this question: {{ question }} ||| {{ answers[0] }}", closed_qa,
                      instruction="Answer this question:", context="{{ question }}", references=web_answers),
        ), task_type="closed_book_qa", cluster="closed_book_qa", metrics=closed_qa,
            splits=("train", "test"),
            description="WebQuestions closed-book QA; the target is the first acceptable answer, a prediction is "
                        "scored against all of them (SQuAD-normalised exact match)."),
        _task("xquad_en", HFSource("xquad", "xquad.en"), (
            _template("t5_prefix", "xquad question: {{ question }} context: {{ context }} ||| {{ answers.text[0] }}",
                      ("squad", "exact_match"), references=xquad_answers),
            _template("instruction", "{{ context }} Answer the question with a span copied from the passage above. "
                                     "{{ question }} ||| {{ answers.text[0] }}", ("squad", "exact_match"),
                      instruction="Answer the question with a span copied from the passage. {{ question }}",
                      context="{{ context }}", references=xquad_answers),
        ), task_type="extractive_qa", cluster="extractive_qa", metrics=("squad", "exact_match"),
            splits=("validation",),
            description="XQuAD English (SQuAD v1.1 format) extractive QA, scored against every annotated answer."),
        _task("multi30k_en_de", HFSource("bentrevett/multi30k"), (
            _template("t5_prefix", "translate English to German: {{ en }} ||| {{ de }}", ("bleu",),
                      languages=("en", "de")),
            _template("instruction", "What is the German translation of this English sentence? {{ en }} ||| {{ de }}",
                      ("bleu",), languages=("en", "de"),
                      instruction="What is the German translation of this English sentence?", context="{{ en }}"),
        ), task_type="translation", cluster="translation", metrics=("bleu",),
            splits=("train", "validation", "test"), description="Multi30k image-caption translation, en→de."),
        _task("dialogsum", HFSource("knkarthick/dialogsum"), (
            _template("t5_prefix", "summarize: {{ dialogue }} ||| {{ summary }}", ("rouge",)),
            _template("instruction", "{{ dialogue }} Write a short summary of the dialogue above. ||| {{ summary }}",
                      ("rouge",), instruction="Write a short summary of the dialogue.", context="{{ dialogue }}"),
        ), task_type="summarization", cluster="summarization", metrics=("rouge",), splits=("validation", "test"),
            description="DialogSum dialogue summarization (validation and test only)."),
        _task("gsm8k", HFSource("gsm8k", "main"), (
            _template("t5_prefix", "gsm8k question: {{ question }} ||| {{ final_answer }}", ("exact_match",)),
            _template("instruction", "Solve this math word problem and answer with a number. {{ question }} "
                                     "||| {{ final_answer }}", ("exact_match",),
                      instruction="Solve this math word problem and answer with a number.",
                      context="{{ question }}"),
        ), task_type="math", cluster="math", metrics=("exact_match",), splits=("train", "test"),
            preprocessors=(Map(gsm8k_final_answer),),
            description="GSM8K grade-school math; the target is the final number after ####."),
    ]
