"""Row generators of the procedural task family: seeded, any size, no download.

Each generator draws one raw row (the problem's fields plus its correct answer) from a `random.Random`.
`generate_row(task, seed, split, index)` makes rows deterministic for (task, seed, split, index), and
keeps the splits disjoint by construction: a problem belongs to exactly one split, decided by a hash of
its content (80% train, 10% validation, 10% test); rows for a split are drawn until one falls in it. The
partition does not depend on the seed, so a test problem never appears in any seed's training data.

Vocabularies are small and inputs short so that a tiny T5 trained from scratch can learn the tasks.
"""
from __future__ import annotations

import calendar
import hashlib
import json
import random
from typing import Callable, Dict, Iterator, List, Sequence

from ..errors import DataSourceError, UnknownTaskError

Row = Dict[str, object]
RowMaker = Callable[[random.Random], Row]

SPLIT_BUCKETS = {"train": range(0, 80), "validation": range(80, 90), "test": range(90, 100)}

ANIMALS = ("cat", "dog", "fox", "owl", "bee", "cow", "pig", "hen", "ant", "bat", "yak", "emu")
COLORS = ("red", "blue", "green", "black", "white", "pink", "gray", "brown")
FRUITS = ("apple", "pear", "plum", "lime", "kiwi", "fig", "grape", "peach", "mango", "melon", "lemon",
          "cherry")
LIST_WORDS = ANIMALS + COLORS + FRUITS
NAMES = ("Alice", "Bob", "Carol", "Dave", "Emma", "Frank", "Grace", "Henry", "Iris", "Jack", "Kate",
         "Liam", "Mia", "Noah", "Olga", "Paul")
CITIES = ("Paris", "Rome", "Oslo", "Cairo", "Lima", "Tokyo", "Delhi", "Berlin", "Madrid", "Vienna",
          "Dublin", "Prague")
ITEMS = ("apples", "books", "coins", "pens", "cards", "stamps", "shells", "marbles", "cookies", "stickers")
# (abbreviation, plural name) of the larger unit, of the smaller unit, and how many small units make one.
UNIT_PAIRS = (
    (("km", "kilometers"), ("m", "meters"), 1000),
    (("m", "meters"), ("cm", "centimeters"), 100),
    (("cm", "centimeters"), ("mm", "millimeters"), 10),
    (("kg", "kilograms"), ("g", "grams"), 1000),
    (("l", "liters"), ("ml", "milliliters"), 1000),
)
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")  # literal: calendar.month_name follows the process locale
FACT_RELATIONS = {
    # relation: (values, fact pattern, question pattern)
    "city": (CITIES, "{person} lives in {value}.", "Where does {person} live?"),
    "fruit": (tuple(f.capitalize() for f in FRUITS), "{person} likes {value}.", "What does {person} like?"),
    "pet": (tuple(a.capitalize() for a in ANIMALS), "{person} owns a {value}.", "What does {person} own?"),
}
TAGGING_PATTERNS = (
    "{P} met {P} in {L}",
    "{P} flew from {L} to {L}",
    "{P} and {P} visited {L}",
    "{P} called {P} from {L}",
    "{P} moved to {L} last year",
    "the train from {L} to {L} was late",
    "{P} wrote to {P}",
    "{P} stayed in {L} with {P}",
)


def _words(rng: random.Random, low: int, high: int, pool: Sequence[str] = LIST_WORDS) -> List[str]:
    return rng.sample(pool, rng.randint(low, high))


def make_reverse_words(rng: random.Random) -> Row:
    """3-6 distinct `words`; `answer`: them in reverse order, space-joined."""
    words = _words(rng, 3, 6)
    return {"words": words, "answer": " ".join(reversed(words))}


def make_sort_words(rng: random.Random) -> Row:
    """3-6 distinct `words`; `answer`: them sorted, space-joined."""
    words = _words(rng, 3, 6)
    return {"words": words, "answer": " ".join(sorted(words))}


def make_sort_numbers(rng: random.Random) -> Row:
    """3-6 distinct `numbers` in [0, 100); `answer`: them ascending, space-joined."""
    numbers = rng.sample(range(100), rng.randint(3, 6))
    return {"numbers": numbers, "answer": " ".join(str(n) for n in sorted(numbers))}


def make_dedup_words(rng: random.Random) -> Row:
    """4-8 `words` drawn from a pool of 2-4; `answer`: each word once, in order of first appearance."""
    pool = rng.sample(LIST_WORDS, rng.randint(2, 4))
    words = [rng.choice(pool) for _ in range(rng.randint(4, 8))]
    unique = list(dict.fromkeys(words))
    return {"words": words, "answer": " ".join(unique)}


def make_list_contains(rng: random.Random) -> Row:
    """3-6 `words` and a `query` word; `label` 0 when `query` is among them, 1 when not."""
    words = _words(rng, 3, 6)
    present = rng.random() < 0.5
    query = rng.choice(words) if present else rng.choice([w for w in LIST_WORDS if w not in words])
    return {"words": words, "query": query, "label": 0 if present else 1}


def make_word_problem(rng: random.Random) -> Row:
    """An add/subtract `question` about a person's items, with its operands `a`, `b` and `op`; `answer`: the
    result (never negative)."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    op = rng.choice(("add", "subtract"))
    a = rng.randint(2, 20)
    b = rng.randint(1, 20) if op == "add" else rng.randint(1, a)
    change = f"gets {b} more" if op == "add" else f"gives away {b}"
    question = f"{name} has {a} {item} and {change}. How many {item} does {name} have now?"
    return {"question": question, "a": a, "b": b, "op": op, "answer": str(a + b if op == "add" else a - b)}


def make_count_word(rng: random.Random) -> Row:
    """3-9 `words` from 3 animals and a `query` among them; `answer`: how often `query` occurs."""
    pool = rng.sample(ANIMALS, 3)
    words = [rng.choice(pool) for _ in range(rng.randint(3, 9))]
    query = rng.choice(pool)
    return {"words": words, "query": query, "answer": str(words.count(query))}


def make_parity(rng: random.Random) -> Row:
    """A `number` in [0, 999]; `label` 0 when it is even, 1 when odd."""
    number = rng.randint(0, 999)
    return {"number": number, "label": number % 2}


def make_unit_conversion(rng: random.Random) -> Row:
    """A `quantity` in one unit (`from_unit`, `from_name`) to convert to another (`to_unit`, `to_name`);
    `answer`: the whole-number result."""
    (big, small, factor) = rng.choice(UNIT_PAIRS)
    if rng.random() < 0.5:  # larger unit to smaller: 3 km -> 3000 m
        quantity = rng.randint(2, 99)
        source, target, answer = big, small, quantity * factor
    else:  # smaller unit to larger, always a whole number: 3000 m -> 3 km
        answer = rng.randint(2, 99)
        source, target, quantity = small, big, answer * factor
    return {"quantity": quantity, "from_unit": source[0], "from_name": source[1], "to_unit": target[0],
            "to_name": target[1], "answer": str(answer)}


def make_date_format(rng: random.Random) -> Row:
    """A valid ISO `date` (YYYY-MM-DD, 1950-2049); `answer`: it as "<day> <English month> <year>"."""
    year, month = rng.randint(1950, 2049), rng.randint(1, 12)
    day = rng.randint(1, calendar.monthrange(year, month)[1])
    return {"date": f"{year:04d}-{month:02d}-{day:02d}", "answer": f"{day} {MONTHS[month - 1]} {year}"}


def make_fact_lookup(rng: random.Random) -> Row:
    """Three `facts` of one `relation` about three `people` and a `question` about one of them; `answer`: that
    person's value (`values` holds all three)."""
    relation = rng.choice(sorted(FACT_RELATIONS))
    values, fact, question = FACT_RELATIONS[relation]
    people = rng.sample(NAMES, 3)
    chosen = rng.sample(values, 3)
    asked = rng.randrange(3)
    facts = " ".join(fact.format(person=p, value=v) for p, v in zip(people, chosen))
    return {"facts": facts, "question": question.format(person=people[asked]), "relation": relation,
            "people": people, "values": chosen, "answer": chosen[asked]}


def make_entity_tagging(rng: random.Random) -> Row:
    """A `sentence` with person and city names; `entities`: [name, "PER" | "LOC"] pairs in order; `answer`:
    them as "name: KIND" joined by "; "."""
    pattern = rng.choice(TAGGING_PATTERNS)
    people = iter(rng.sample(NAMES, pattern.count("{P}")))
    places = iter(rng.sample(CITIES, pattern.count("{L}")))
    tokens, entities = [], []
    for token in pattern.split():
        if token == "{P}":
            token = next(people)
            entities.append([token, "PER"])
        elif token == "{L}":
            token = next(places)
            entities.append([token, "LOC"])
        tokens.append(token)
    return {"sentence": " ".join(tokens), "entities": entities,
            "answer": "; ".join(f"{text}: {kind}" for text, kind in entities)}


def make_compare_numbers(rng: random.Random) -> Row:
    """Two distinct numbers `a`, `b` in [0, 1000); `label` 0 when `a` is larger, 1 when `b` is."""
    a, b = rng.sample(range(1000), 2)
    return {"a": a, "b": b, "label": 0 if a > b else 1}


def make_compare_lengths(rng: random.Random) -> Row:
    """Two word lists `first`, `second` of distinct lengths 1-6; `label` 0 when `first` is longer, 1 when not."""
    first_length, second_length = rng.sample(range(1, 7), 2)
    return {"first": _words(rng, first_length, first_length), "second": _words(rng, second_length, second_length),
            "label": 0 if first_length > second_length else 1}


def make_alphabetical_order(rng: random.Random) -> Row:
    """Two distinct words `first`, `second`; `label` 0 when `first` sorts first, 1 when not."""
    first, second = rng.sample(LIST_WORDS, 2)
    return {"first": first, "second": second, "label": 0 if first < second else 1}


ROW_MAKERS: Dict[str, RowMaker] = {
    "reverse_words": make_reverse_words,
    "sort_words": make_sort_words,
    "sort_numbers": make_sort_numbers,
    "dedup_words": make_dedup_words,
    "list_contains": make_list_contains,
    "word_problem": make_word_problem,
    "count_word": make_count_word,
    "parity": make_parity,
    "unit_conversion": make_unit_conversion,
    "date_format": make_date_format,
    "fact_lookup": make_fact_lookup,
    "entity_tagging": make_entity_tagging,
    "compare_numbers": make_compare_numbers,
    "compare_lengths": make_compare_lengths,
    "alphabetical_order": make_alphabetical_order,
}


def problem_split(task: str, row: Row) -> str:
    """The split a problem belongs to: a hash of the task name and the row's content, seed-independent."""
    content = json.dumps(row, sort_keys=True)
    bucket = int.from_bytes(hashlib.blake2b(f"{task}\n{content}".encode(), digest_size=8).digest(), "big") % 100
    return next(split for split, buckets in SPLIT_BUCKETS.items() if bucket in buckets)


def generate_row(task: str, seed: int, split: str, index: int) -> Row:
    """Row `index` of `split` for procedural `task` under `seed`; the same arguments give the same row."""
    if task not in ROW_MAKERS:
        raise UnknownTaskError(task, ROW_MAKERS)
    if split not in SPLIT_BUCKETS:
        raise DataSourceError(f"procedural task {task!r} has no split {split!r}; procedural splits are "
                              f"{list(SPLIT_BUCKETS)}")
    make_row = ROW_MAKERS[task]
    rng = random.Random(f"{task}/{seed}/{split}/{index}")
    while True:
        row = make_row(rng)
        if problem_split(task, row) == split:
            return row


def generate_rows(task: str, seed: int, split: str, num_rows: int, start: int = 0) -> List[Row]:
    """Rows `start .. start + num_rows - 1` of `split` (see `generate_row`)."""
    return [generate_row(task, seed, split, index) for index in range(start, start + num_rows)]


def procedural_rows(split: str, num_rows: int, seed: int, task: str) -> Iterator[Row]:
    """`GeneratorSource` entry point: rows 0 .. num_rows - 1 of `split` for procedural `task`."""
    for index in range(num_rows):
        yield generate_row(task, seed, split, index)
