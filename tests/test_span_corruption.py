"""T5 span corruption as a preprocessor: the noise mask against T5's counts, random segmentation frequencies
against the uniform distribution over compositions, lossless corruption (inputs + targets give the text back),
seeded determinism, the YAML entry, short rows skipped and counted, bad options named, and the sentinels
being single tokens of the project's tokenizer."""
from __future__ import annotations

import collections
import itertools
import json
import random
import re

import pytest

import task_registry
from task_registry.errors import TaskDefinitionError, TaskFileError
from task_registry.span_corruption import (NUM_SENTINELS, SpanCorruption, _random_segmentation, corrupt_spans,
                                           random_spans_noise_mask)

from engine_helpers import train_tiny_tokenizer


def _runs(mask):
    return [(value, len(list(group))) for value, group in itertools.groupby(mask)]


@pytest.mark.parametrize("length,density,mean", [(2, 0.15, 3), (7, 0.15, 3), (40, 0.15, 3), (100, 0.5, 2),
                                                 (300, 0.3, 1), (1000, 0.15, 3), (5000, 0.9, 1),
                                                 (13, 0.15, 3), (50, 0.15, 3)])  # 1.95 -> 2 noise; 8/3 -> 3 spans
def test_the_noise_mask_has_t5s_counts_and_alternating_runs(length, density, mean):
    rng = random.Random(0)
    for _ in range(20):
        mask = random_spans_noise_mask(length, density, mean, rng)
        noise = min(max(round(length * density), 1), length - 1)
        spans = min(max(round(noise / mean), 1), NUM_SENTINELS, noise, length - noise)
        runs = _runs(mask)
        assert len(mask) == length and sum(mask) == noise
        assert [v for v, _ in runs] == [False, True] * spans  # kept first, then noise, alternating
        assert all(n >= 1 for _, n in runs)


def test_random_segmentation_is_uniform_over_compositions():
    rng = random.Random(1)
    draws = 30000
    counts = collections.Counter(tuple(_random_segmentation(6, 3, rng)) for _ in range(draws))
    compositions = [c for c in itertools.product(range(1, 5), repeat=3) if sum(c) == 6]  # C(5, 2) = 10
    assert sorted(counts) == sorted(compositions)
    expected = draws / len(compositions)
    chi2 = sum((counts[c] - expected) ** 2 / expected for c in compositions)
    assert chi2 < 27.9  # chi-square, 9 degrees of freedom, p = 0.001


def _restore(corrupted: str, spans: str) -> str:
    """Put each sentinel's words back in place (independent of the corruption code)."""
    pieces = re.split(r"(<extra_id_\d+>)", spans)
    fill = {pieces[k]: pieces[k + 1].strip() for k in range(1, len(pieces), 2)}
    return " ".join(fill.get(word, word) for word in corrupted.split()).replace("  ", " ")


def test_corruption_loses_nothing_and_numbers_sentinels_in_order():
    rng = random.Random(2)
    vocabulary = [f"w{i}" for i in range(50)]
    for _ in range(300):
        words = [rng.choice(vocabulary) for _ in range(rng.randint(2, 80))]
        mask = random_spans_noise_mask(len(words), rng.uniform(0.05, 0.9), rng.uniform(1, 5), rng)
        corrupted, spans = corrupt_spans(words, mask)
        assert _restore(corrupted, spans) == " ".join(words)
        used = re.findall(r"<extra_id_(\d+)>", corrupted)
        assert used == re.findall(r"<extra_id_(\d+)>", spans) == [str(i) for i in range(len(used))]
        assert len(used) == sum(1 for value, _ in _runs(mask) if value)



def test_a_mask_that_starts_with_noise_gets_a_sentinel_for_its_first_span():
    # random_spans_noise_mask starts with kept words; corrupt_spans takes any mask
    assert corrupt_spans(["a", "b", "c", "d"], [True, False, True, True]) == (
        "<extra_id_0> b <extra_id_1>", "<extra_id_0> a <extra_id_1> c d")

def test_a_text_is_corrupted_the_same_way_for_the_same_seed_only():
    text = " ".join(f"token{i}" for i in range(60))
    a, b = SpanCorruption("text", seed=3), SpanCorruption("text", seed=4)
    assert a.corrupt(text) == SpanCorruption("text", seed=3).corrupt(text)
    assert a.corrupt(text) != b.corrupt(text)
    assert a.corrupt("single") == ("single", "")  # too short: no target, the template skips the row
    noise = [len(s.split()) - len(re.findall("<extra_id", s)) for s in
             (SpanCorruption("text", seed=k).corrupt(text)[1] for k in range(200))]
    assert set(noise) == {round(60 * 0.15)}  # T5's count, every time


def _yaml_task(tmp_path, preprocessor: str):
    rows = [{"text": f"sentence {i} has some words in it for the model {'to denoise' * (i % 3)}".strip()}
            for i in range(12)] + [{"text": "alone"}]
    (tmp_path / "text.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "denoise.yaml").write_text(
        "name: denoise_toy\ncluster: pretraining\nsplits: [train]\n"
        "source:\n  files: {train: text.jsonl}\n"
        f"preprocessors:\n  - {preprocessor}\n"
        "templates:\n  - name: span\n    jinja: \"{{corrupted}} ||| {{spans}}\"\n")
    return tmp_path


def test_a_yaml_span_corruption_task_renders_and_counts_short_rows(tmp_path):
    with task_registry.isolated_registry():
        task_registry.load_task_dir(_yaml_task(tmp_path, "span_corruption: {field: text, noise_density: 0.3}"))
        task = task_registry.get_task("denoise_toy")
        ds = task.to_dataset("train")
        assert len(ds) == 12 and task.render_stats["train"].skipped == 1  # "alone" has nothing to corrupt
        for row, raw in zip(ds, task.load_rows("train")):
            assert _restore(row["inputs"], row["targets"]) == raw["text"]
            assert row["targets"].startswith("<extra_id_0>")


@pytest.mark.parametrize("entry,message", [
    ("span_corruption: {field: text, density: 0.3}", r"no option\(s\) \['density'\]"),
    ("span_corruption: {noise_density: 0.3}", "needs a mapping with `field`"),
    ("span_corruption: {field: text, noise_density: 1.5}", r"noise_density must be in \(0, 1\)"),
    ("span_corruption: {field: text, mean_span_length: 0}", "mean_span_length must be >= 1"),
])
def test_bad_span_corruption_entries_are_named(tmp_path, entry, message):
    with task_registry.isolated_registry():
        with pytest.raises(TaskFileError, match=message):
            task_registry.load_task_dir(_yaml_task(tmp_path, entry))


@pytest.mark.parametrize("options, message", [
    ({"noise_density": 1}, r"noise_density must be in \(0, 1\), got 1"),
    ({"noise_density": 0}, r"noise_density must be in \(0, 1\), got 0"),
    ({"noise_density": True}, r"noise_density must be in \(0, 1\), got True"),
    ({"mean_span_length": 0.5}, "mean_span_length must be >= 1, got 0.5"),
    ({"seed": True}, "seed must be an integer, got True"),
    ({"inputs_field": "out", "targets_field": "out"}, "inputs_field and targets_field must differ, both are 'out'"),
])
def test_span_corruption_options_are_checked_at_their_bounds(options, message):
    with pytest.raises(TaskDefinitionError, match=message):
        SpanCorruption("text", **options)


def test_the_smallest_allowed_options_corrupt_and_describe_themselves():
    one = SpanCorruption("text", noise_density=0.5, mean_span_length=1, seed=7, max_words=2)
    assert one.describe() == ("span_corruption('text', noise_density=0.5, mean_span_length=1.0, seed=7, "
                              "max_words=2)")
    assert random_spans_noise_mask(2, 0.5, 1, random.Random(0)) == [False, True]  # 1 noise word after 1 kept
    with pytest.raises(ValueError, match="needs at least 2 items, got 1"):
        random_spans_noise_mask(1, 0.5, 1, random.Random(0))


def test_a_missing_or_non_text_field_is_named(tmp_path):
    import datasets

    with pytest.raises(TaskDefinitionError, match=r"no field 'body'; fields are \['text'\]"):
        SpanCorruption("body")(datasets.Dataset.from_dict({"text": ["a b c"]}))
    with pytest.raises(TaskDefinitionError, match="field 'text' must be text, got int"):
        SpanCorruption("text")(datasets.Dataset.from_dict({"text": [3]}))


def test_sentinels_are_single_tokens_of_the_project_tokenizer(tmp_path):
    from t2t_mtl.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(str(train_tiny_tokenizer(tmp_path / "tok")))
    corrupted, spans = SpanCorruption("text", noise_density=0.4).corrupt("reverse the words of this short list")
    for text in (corrupted, spans):
        pieces = tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])
        assert pieces.count("<extra_id_0>") == 1


def test_max_words_cuts_long_texts_into_chunks_that_each_become_a_row():
    import datasets

    long_text = " ".join(f"w{i}" for i in range(260))
    rows = datasets.Dataset.from_dict({"text": [long_text, "two words", ""], "source": ["a", "b", "c"]})
    out = SpanCorruption("text", max_words=50)(rows)
    assert len(out) == 6 + 1 + 1 and not SpanCorruption("text", max_words=50).keeps_rows
    assert [len(r["text"].split()) for r in out][:6] == [50] * 5 + [10]
    assert " ".join(r["text"] for r in out if r["source"] == "a") == long_text  # every word, in order, once
    for row in out:
        if row["spans"]:
            assert _restore(row["corrupted"], row["spans"]) == row["text"]
    assert out[7]["spans"] == "" and out[7]["source"] == "c"  # an empty text stays a row (then skipped)
    with pytest.raises(TaskDefinitionError, match="max_words must be an integer >= 2"):
        SpanCorruption("text", max_words=1)


def test_every_word_lands_in_one_chunk_whatever_the_last_chunk_holds():
    # the test above ends its long text with a 10-word chunk: a chunking that lost a last chunk of one word (range
    # over len(words) - 1) passed it
    import datasets

    texts = [" ".join(f"n{n}w{i}" for i in range(n)) for n in range(12)]
    out = SpanCorruption("text", max_words=3)(datasets.Dataset.from_dict({"text": texts, "n": list(range(12))}))
    for n, text in enumerate(texts):
        sizes, left = [], n
        while left > 0:  # greedy: full chunks of 3, then the rest
            sizes.append(min(3, left))
            left -= sizes[-1]
        chunks = [row["text"] for row in out if row["n"] == n]
        assert [len(chunk.split()) for chunk in chunks] == (sizes or [0])
        assert " ".join(chunks) == text


def test_chunking_replaces_existing_columns_as_corrupting_whole_texts_does():
    # with max_words, a column named like a new field was appended to twice: a `spans` column already in the rows
    # failed with ArrowInvalid, and inputs_field=field (corrupt the text in place) doubled the rows, half of them
    # uncorrupted chunks paired with the row's old values
    import datasets

    rows = datasets.Dataset.from_dict({"text": ["w0 w1 w2 w3 w4 w5 w6 w7"], "spans": ["old"]})
    for options in ({}, {"inputs_field": "text", "targets_field": "target"}):
        whole, chunked = SpanCorruption("text", **options)(rows), SpanCorruption("text", max_words=4, **options)(rows)
        assert whole.column_names == chunked.column_names and len(chunked) == 2
        for chunk in chunked:
            spans = chunk[options.get("targets_field", "spans")]
            corrupted = chunk[options.get("inputs_field", "corrupted")]
            assert "<extra_id_0>" in corrupted and spans.startswith("<extra_id_0>") and len(corrupted.split()) <= 4


def test_a_yaml_task_with_max_words_counts_its_rows(tmp_path):
    with task_registry.isolated_registry():
        task_registry.load_task_dir(_yaml_task(tmp_path, "span_corruption: {field: text, max_words: 4}"))
        task = task_registry.get_task("denoise_toy")
        rows = task.load_rows("train")
        stats = task.preprocess_stats["train"]
        assert stats.rows_in == 13 and stats.rows_out == len(rows) > 13 and not stats.dropped_by
        assert all(len(r["text"].split()) <= 4 for r in rows)


def test_the_new_fields_names_are_part_of_the_steps_description_and_of_the_tasks_definition(tmp_path):
    # was: describe() (the step in messages and `tasks show`, and its identity in Task.definition_digest) left out
    # inputs_field / targets_field, so a task whose step wrote its corruption to other fields kept its digest, and
    # registering it again over the first (a notebook cell edited) was taken as the same definition
    renamed = SpanCorruption("text", inputs_field="noisy", targets_field="missing")
    assert renamed.describe() == ("span_corruption('text', noise_density=0.15, mean_span_length=3.0, seed=0, "
                                  "max_words=None, inputs_field='noisy', targets_field='missing')")
    assert SpanCorruption("text", targets_field="missing").describe().endswith(
        "max_words=None, targets_field='missing')")
    # (the defaults are left unsaid: a task that keeps them keeps the digest it had)
    assert SpanCorruption("text").describe() == ("span_corruption('text', noise_density=0.15, mean_span_length=3.0, "
                                                 "seed=0, max_words=None)")
    digests = []
    for step in ("{field: text}", "{field: text, inputs_field: noisy, targets_field: missing}"):
        folder = tmp_path / str(len(digests))
        folder.mkdir()
        with task_registry.isolated_registry():
            task_registry.load_task_dir(_yaml_task(folder, f"span_corruption: {step}"))
            digests.append(task_registry.get_task("denoise_toy").definition_digest())
    assert digests[0] != digests[1]
