"""The procedural task family: 15 seeded text-to-text tasks in 5 clusters, generated on the fly.

Clusters: ``lists`` (reverse/sort/dedup/membership), ``arithmetic`` (word problems, counting, parity),
``conversion`` (units, dates), ``extraction`` (fact lookup, entity tagging) are held in; ``comparison``
(larger number, longer list, alphabetical order) is held out by default. The held-out cluster is built to
be reachable zero-shot: its templates are natural-language questions answered by rank classification over
answer choices, with ``yes``/``no`` choices as in the held-in ``list_contains`` and ``parity``, and its
skills (ordering numbers and words, counting words) are practised by ``sort_numbers``, ``sort_words`` and
``count_word``.

Every task has a plain T5-style prefix template and at least one natural-language instruction template.
Rows come from `generators.generate_row`: deterministic for (task, seed, split, index), splits disjoint.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ..errors import TaskDefinitionError, UnknownTaskError
from ..sources import GeneratorSource
from ..task import Task
from ..template import Template
from .generators import SPLIT_BUCKETS, procedural_rows

HELD_OUT_CLUSTERS = ("comparison",)
DEFAULT_NUM_ROWS = {"train": 5000, "validation": 300, "test": 300}
SPLITS = tuple(SPLIT_BUCKETS)

YES_NO = "yes ||| no"
FIRST_SECOND = "first ||| second"


@dataclasses.dataclass(frozen=True)
class ProceduralTaskSpec:
    """What a procedural task is: its generator (by name), templates and evaluation facts."""

    name: str
    cluster: str
    task_type: str
    metrics: Tuple[str, ...]
    description: str
    templates: Tuple[Template, ...]

    @property
    def held_out(self) -> bool:
        """Whether the task's cluster is held out of training (`HELD_OUT_CLUSTERS`)."""
        return self.cluster in HELD_OUT_CLUSTERS


def _template(name: str, jinja: str, *, choices: Optional[str] = None, metrics: Sequence[str] = ("exact_match",),
              choices_in_prompt: bool = False, instruction: Optional[str] = None,
              context: Optional[str] = None) -> Template:
    metadata = {"original_task": True, "choices_in_prompt": choices_in_prompt, "metrics": list(metrics),
                "languages": ["en"]}
    return Template(name, jinja, answer_choices=choices, metadata=metadata, instruction=instruction,
                    context=context)


def _generation(name: str, prefix_input: str, instruction: str, instruction_input: str,
                context: str) -> Tuple[Template, Template]:
    """A T5-prefix template and an instruction template whose target is the row's `answer`."""
    return (
        _template("t5_prefix", f"{name}: {prefix_input} ||| {{{{ answer }}}}"),
        _template("instruction", f"{instruction_input} ||| {{{{ answer }}}}", instruction=instruction,
                  context=context),
    )


CLASSIFY = "{{ answer_choices[label] }}"
WORDS = "{{ words | join(' ') }}"
WORDS_COMMA = "{{ words | join(', ') }}"

PROCEDURAL_TASKS: Tuple[ProceduralTaskSpec, ...] = (
    ProceduralTaskSpec(
        "reverse_words", "lists", "sequence_edit", ("exact_match",),
        "Reverse a list of 3-6 words.",
        _generation("reverse_words", WORDS, "Write these words in reverse order:",
                    f"Write these words in reverse order: {WORDS_COMMA}", WORDS_COMMA)),
    ProceduralTaskSpec(
        "sort_words", "lists", "sequence_edit", ("exact_match",),
        "Sort 3-6 words alphabetically.",
        _generation("sort_words", WORDS, "Sort the following words alphabetically:",
                    f"Sort the following words alphabetically: {WORDS_COMMA}", WORDS_COMMA)),
    ProceduralTaskSpec(
        "sort_numbers", "lists", "sequence_edit", ("exact_match",),
        "Sort 3-6 numbers below 100 in ascending order.",
        _generation("sort_numbers", "{{ numbers | join(' ') }}",
                    "Put these numbers in order from smallest to largest:",
                    "Put these numbers in order from smallest to largest: {{ numbers | join(', ') }}",
                    "{{ numbers | join(', ') }}")),
    ProceduralTaskSpec(
        "dedup_words", "lists", "sequence_edit", ("exact_match",),
        "Remove repeated words from a list, keeping first occurrences in order.",
        _generation("dedup_words", WORDS, "Remove the repeated words from this list, keeping the first of each:",
                    f"Remove the repeated words from this list, keeping the first of each: {WORDS}", WORDS)),
    ProceduralTaskSpec(
        "list_contains", "lists", "classification", ("accuracy",),
        "Is a word in a list? (yes/no)",
        (_template("t5_prefix", f"list_contains word: {{{{ query }}}} list: {WORDS} ||| {CLASSIFY}",
                   choices=YES_NO, metrics=("accuracy",)),
         _template("instruction", f"Is the word {{{{ query }}}} in the list {WORDS_COMMA}? ||| {CLASSIFY}",
                   choices=YES_NO, metrics=("accuracy",),
                   instruction="Is the word {{ query }} in the list?", context=WORDS_COMMA))),
    ProceduralTaskSpec(
        "word_problem", "arithmetic", "math", ("exact_match",),
        "One-step addition or subtraction word problems with numbers up to 40.",
        _generation("word_problem", "{{ question }}", "Solve this math problem and answer with a number.",
                    "Solve this math problem and answer with a number. {{ question }}", "{{ question }}")),
    ProceduralTaskSpec(
        "count_word", "arithmetic", "math", ("exact_match",),
        "Count how often a word occurs in a list of 3-9 words.",
        (_template("t5_prefix", f"count_word word: {{{{ query }}}} list: {WORDS} ||| {{{{ answer }}}}"),
         _template("instruction", f"How many times does the word {{{{ query }}}} appear in: {WORDS}? ||| "
                                  f"{{{{ answer }}}}",
                   instruction="How many times does the word {{ query }} appear?", context=WORDS))),
    ProceduralTaskSpec(
        "parity", "arithmetic", "classification", ("accuracy",),
        "Is a number below 1000 even or odd?",
        (_template("t5_prefix", f"parity: {{{{ number }}}} ||| {CLASSIFY}", choices="even ||| odd",
                   metrics=("accuracy",)),
         _template("instruction", f"Is {{{{ number }}}} an even number? ||| {CLASSIFY}", choices=YES_NO,
                   metrics=("accuracy",), instruction="Is this an even number?", context="{{ number }}"))),
    ProceduralTaskSpec(
        "unit_conversion", "conversion", "conversion", ("exact_match",),
        "Convert whole quantities between metric units (km/m/cm/mm, kg/g, l/ml).",
        (_template("t5_prefix", "convert: {{ quantity }} {{ from_unit }} to {{ to_unit }} ||| {{ answer }}"),
         _template("instruction", "How many {{ to_name }} are in {{ quantity }} {{ from_name }}? ||| {{ answer }}",
                   instruction="How many {{ to_name }} are in this?", context="{{ quantity }} {{ from_name }}"))),
    ProceduralTaskSpec(
        "date_format", "conversion", "conversion", ("exact_match",),
        "Rewrite an ISO date (1950-2049) as day, month name and year.",
        _generation("date_format", "{{ date }}", "Write this date with the month spelled out.",
                    "Write the date {{ date }} with the month spelled out.", "{{ date }}")),
    ProceduralTaskSpec(
        "fact_lookup", "extraction", "extractive_qa", ("exact_match",),
        "Answer a question about one of three stated facts (city, fruit or pet).",
        (_template("t5_prefix", "fact_lookup question: {{ question }} context: {{ facts }} ||| {{ answer }}"),
         _template("instruction", "{{ facts }} Answer the question using the sentences above. {{ question }} "
                                  "||| {{ answer }}",
                   instruction="Answer the question using the sentences. {{ question }}", context="{{ facts }}"))),
    ProceduralTaskSpec(
        "entity_tagging", "extraction", "tagging", ("exact_match",),
        "List the people (PER) and places (LOC) of a short sentence as `name: TYPE; ...`.",
        _generation("entity_tagging", "{{ sentence }}",
                    "List the people (PER) and places (LOC) named in this sentence, in order:",
                    "List the people (PER) and places (LOC) named in this sentence, in order: {{ sentence }}",
                    "{{ sentence }}")),
    ProceduralTaskSpec(
        "compare_numbers", "comparison", "classification", ("accuracy",),
        "Which of two numbers below 1000 is larger?",
        (_template("t5_prefix", f"compare_numbers first: {{{{ a }}}} second: {{{{ b }}}} ||| {CLASSIFY}",
                   choices=FIRST_SECOND, metrics=("accuracy",)),
         _template("which_larger", f"Which number is larger, {{{{ a }}}} or {{{{ b }}}}? ||| {CLASSIFY}",
                   choices="{{ a }} ||| {{ b }}", choices_in_prompt=True, metrics=("accuracy",),
                   instruction="Which number is larger?", context="{{ a }} or {{ b }}"),
         _template("yes_no", f"Is {{{{ a }}}} greater than {{{{ b }}}}? ||| {CLASSIFY}", choices=YES_NO,
                   metrics=("accuracy",), instruction="Is the first number greater than the second?",
                   context="{{ a }}, {{ b }}"))),
    ProceduralTaskSpec(
        "compare_lengths", "comparison", "classification", ("accuracy",),
        "Which of two word lists (1-6 words, different lengths) has more words?",
        (_template("t5_prefix", "compare_lengths first: {{ first | join(' ') }} second: {{ second | join(' ') }} "
                                f"||| {CLASSIFY}", choices=FIRST_SECOND, metrics=("accuracy",)),
         _template("which_longer", "Which list has more words, the first or the second? First: "
                                   "{{ first | join(', ') }}. Second: {{ second | join(', ') }}. "
                                   f"||| {CLASSIFY}",
                   choices=FIRST_SECOND, choices_in_prompt=True, metrics=("accuracy",),
                   instruction="Which list has more words, the first or the second?",
                   context="First: {{ first | join(', ') }}. Second: {{ second | join(', ') }}."),
         _template("yes_no", "Does the list {{ first | join(', ') }} have more words than the list "
                             f"{{{{ second | join(', ') }}}}? ||| {CLASSIFY}",
                   choices=YES_NO, metrics=("accuracy",),
                   instruction="Does the first list have more words than the second?",
                   context="{{ first | join(', ') }} / {{ second | join(', ') }}"))),
    ProceduralTaskSpec(
        "alphabetical_order", "comparison", "classification", ("accuracy",),
        "Which of two words comes first in alphabetical order?",
        (_template("t5_prefix", f"alphabetical_order first: {{{{ first }}}} second: {{{{ second }}}} ||| {CLASSIFY}",
                   choices=FIRST_SECOND, metrics=("accuracy",)),
         _template("which_first", "Which word comes first in alphabetical order, {{ first }} or {{ second }}? "
                                  f"||| {CLASSIFY}",
                   choices="{{ first }} ||| {{ second }}", choices_in_prompt=True, metrics=("accuracy",),
                   instruction="Which word comes first in alphabetical order?",
                   context="{{ first }} or {{ second }}"),
         _template("yes_no", f"Does {{{{ first }}}} come before {{{{ second }}}} in the dictionary? ||| {CLASSIFY}",
                   choices=YES_NO, metrics=("accuracy",),
                   instruction="Does the first word come before the second in the dictionary?",
                   context="{{ first }}, {{ second }}"))),
)

SPECS_BY_NAME: Dict[str, ProceduralTaskSpec] = {spec.name: spec for spec in PROCEDURAL_TASKS}


def procedural_task(name: str, num_rows: Optional[Mapping[str, int]] = None, seed: int = 0) -> Task:
    """A fresh `Task` for procedural task `name` with `num_rows` per split (default `DEFAULT_NUM_ROWS`)."""
    try:
        spec = SPECS_BY_NAME[name]
    except KeyError:
        raise UnknownTaskError(name, SPECS_BY_NAME) from None
    sizes = dict(DEFAULT_NUM_ROWS if num_rows is None else num_rows)
    unknown = sorted(set(sizes) - set(SPLITS))
    if unknown or not sizes:
        raise TaskDefinitionError(f"procedural task {name!r}: num_rows has split(s) {unknown or '(none)'}; "
                                  f"procedural splits are {list(SPLITS)}")
    source = GeneratorSource(procedural_rows, num_rows=sizes, seed=seed, gen_kwargs={"task": name})
    return Task(name, source, list(spec.templates), metrics=spec.metrics, task_type=spec.task_type,
                cluster=spec.cluster, held_out=spec.held_out, splits=tuple(sizes), description=spec.description)


def procedural_tasks(num_rows: Optional[Mapping[str, int]] = None, seed: int = 0) -> List[Task]:
    """All procedural tasks (see `procedural_task`)."""
    return [procedural_task(spec.name, num_rows, seed) for spec in PROCEDURAL_TASKS]
