"""Tasks end to end: sources (local files of every format, hub ids through the data-dir override, generators),
preprocessors, `to_dataset` (map-style and streaming, columns, template choice, skip counting) and the
fingerprint-cached tokenized variant.
"""
from __future__ import annotations

import json
import random
import re
from collections import Counter

import datasets
import pytest

import task_registry
from task_registry import (
    DataSourceError,
    Filter,
    GeneratorSource,
    HFSource,
    LocalFileSource,
    Map,
    Rename,
    Task,
    Template,
    tokenize_dataset,
)

ROWS = [{"sentence": f"sentence number {i}", "label": i % 2} for i in range(10)]
SENTIMENT = Template("t5", "sst2 sentence: {{sentence}} ||| {{ answer_choices[label] }}",
                     answer_choices="negative ||| positive")
QUESTION = Template("question", "Is this positive? {{sentence}} ||| {{ answer_choices[label] }}",
                    answer_choices="no ||| yes")


def _write(path, rows, fmt):
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt in ("csv", "tsv"):
        sep = "," if fmt == "csv" else "\t"
        path.write_text(f"sentence{sep}label\n" + "".join(f"{r['sentence']}{sep}{r['label']}\n" for r in rows))
    elif fmt == "parquet":
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    elif fmt == "json":
        path.write_text(json.dumps(rows))


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "tsv", "parquet"])
def test_local_files_of_every_format(tmp_path, fmt):
    path = tmp_path / f"rows.{fmt}"
    _write(path, ROWS, fmt)
    task = Task("local", LocalFileSource({"train": path}), [SENTIMENT], splits=("train",))
    rows = task.load_rows("train")
    assert [dict(r) for r in rows] == ROWS
    out = task.to_dataset("train")
    assert out.column_names == ["inputs", "targets", "answer_choices", "references", "task", "template"]
    assert out[3] == {"inputs": "sst2 sentence: sentence number 3", "targets": "positive",
                      "answer_choices": ["negative", "positive"], "references": ["positive"], "task": "local",
                      "template": "t5"}
    assert task.num_rows("train") == 10


def test_local_file_extensions_are_read_case_insensitively_and_a_split_has_one_format(tmp_path):
    # `rows.JSONL` was "unsupported extension; use one of [..., '.jsonl', ...]"; a split of a .jsonl and a .csv
    # file was read with the JSON reader and failed with a JSON parse error in the csv file
    _write(tmp_path / "rows.jsonl", ROWS[:2], "jsonl")
    (tmp_path / "rows.jsonl").rename(tmp_path / "rows.JSONL")
    assert [dict(r) for r in LocalFileSource(tmp_path / "rows.JSONL").load("train")] == ROWS[:2]
    _write(tmp_path / "more.csv", ROWS[2:4], "csv")
    with pytest.raises(task_registry.TaskDefinitionError, match=r"the files \[.*rows.JSONL', .*more.csv'\] have "
                                                               r"different formats; the files of one split must"):
        LocalFileSource({"train": [tmp_path / "rows.JSONL", tmp_path / "more.csv"]})


def test_hub_id_maps_to_the_data_dir(shared_data_dir, monkeypatch):
    source = HFSource("super_glue", "cb")
    monkeypatch.setenv(task_registry.DATA_DIR_ENV, str(shared_data_dir))
    assert source.local_file("validation") == shared_data_dir / "super_glue" / "cb" / "validation.jsonl"
    rows = source.load("validation")
    with open(shared_data_dir / "super_glue" / "cb" / "validation.jsonl") as handle:
        assert [dict(r) for r in rows] == [json.loads(line) for line in handle]
    assert HFSource("trec").local_file("test") == shared_data_dir / "trec" / "default" / "test.jsonl"
    task_registry.set_data_dir(shared_data_dir / "nowhere")  # set_data_dir wins over the environment
    try:
        with pytest.raises(DataSourceError, match="nowhere/super_glue/cb/validation.jsonl"):
            source.load("validation")
    finally:
        task_registry.set_data_dir(None)


def _numbers(split, num_rows, seed):
    rng = random.Random(f"{seed}:{split}")
    for _ in range(num_rows):
        a, b = rng.randrange(100), rng.randrange(100)
        yield {"a": a, "b": b, "sum": a + b}


ADD = Template("add", "add {{a}} and {{b}} ||| {{sum}}")


def test_generator_source_and_streaming_match_map_style():
    task = Task("add", GeneratorSource(_numbers, num_rows={"train": 50, "validation": 7}, seed=3), [ADD],
                task_type="math")
    assert task.num_rows("train") == 50 and task.num_rows("validation") == 7
    mapped = task.to_dataset("train")
    streamed = task.to_dataset("train", streaming=True)
    assert isinstance(streamed, datasets.IterableDataset)
    assert list(streamed) == list(mapped)
    expected = list(_numbers("train", 50, 3))
    assert [r["targets"] for r in mapped] == [str(r["sum"]) for r in expected]
    assert mapped[0]["answer_choices"] == [] and mapped[0]["inputs"] == f"add {expected[0]['a']} and {expected[0]['b']}"
    assert len(task.to_dataset("validation", max_examples=3)) == 3
    assert len(list(task.to_dataset("validation", streaming=True, max_examples=3))) == 3


@pytest.fixture
def edited_module(tmp_path, monkeypatch):
    """write(text) -> the module `edited_code` holding `text`, imported afresh (as by a new run after an edit);
    datasets caches in a folder of this test's own."""
    import importlib
    import sys

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf")
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(text):
        (tmp_path / "edited_code.py").write_text(text)
        importlib.invalidate_caches()
        if "edited_code" in sys.modules:
            return importlib.reload(sys.modules["edited_code"])
        return importlib.import_module("edited_code")

    yield write
    sys.modules.pop("edited_code", None)


def test_a_generator_edited_between_runs_gives_its_new_rows(edited_module):
    # was: datasets keys a generator imported from a module by its name alone, so the rows of an edited generator
    # (or of a helper it calls, or the built-in procedural tasks after an upgrade) came from the old cache
    def rows_of(helper_text):
        module = edited_module(f"def helper(i):\n    return '{helper_text} ' + str(i)\n\n\n"
                               f"def rows(split, num_rows, seed):\n    for i in range(num_rows):\n"
                               f"        yield {{'x': helper(i), 'y': 'a'}}\n")
        task = Task("edited", GeneratorSource(module.rows, num_rows=3), [Template("t", "{{x}} ||| {{y}}")])
        return task.to_dataset("train")["inputs"]

    assert rows_of("old") == ["old 0", "old 1", "old 2"]
    assert rows_of("new text") == ["new text 0", "new text 1", "new text 2"]
    assert rows_of("old") == ["old 0", "old 1", "old 2"]


def test_a_generator_cache_written_by_another_datasets_version_is_not_read_back(tmp_path, monkeypatch):
    # was: keyed on the generator and its code alone, so a cache datasets 5.2 wrote was read by datasets 3.3 sharing
    # ~/.cache/huggingface (a raw "must be called with a dataclass type or instance" TypeError)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf")
    source = GeneratorSource(_numbers, num_rows=5, seed=3)

    def cache_file():
        return source.load("train").cache_files[0]["filename"]

    first = cache_file()
    assert cache_file() == first  # (the same version reads its own cache back)
    monkeypatch.setattr(datasets, "__version__", "3.3.0")
    assert cache_file() != first


def test_python_preprocessors_edited_between_runs_give_their_new_rows(edited_module, tmp_path):
    # was: datasets keys a Map or Filter function imported from a module by its name alone, so an edited one's
    # rows came from the old cache
    _write(tmp_path / "rows.jsonl", [{"x": f"row {i}"} for i in range(3)], "jsonl")

    def inputs_of(prefix, dropped):
        module = edited_module(f"def prefixed(row):\n    return {{'x': '{prefix} ' + row['x']}}\n\n\n"
                               f"def kept(row):\n    return row['x'] != 'row {dropped}'\n")
        task = Task("edited_steps", LocalFileSource(tmp_path / "rows.jsonl"), [Template("t", "{{x}} ||| a")],
                    preprocessors=[Filter(module.kept), Map(module.prefixed)], splits=("train",))
        return task.to_dataset("train")["inputs"]

    assert inputs_of("old", 1) == ["old row 0", "old row 2"]
    assert inputs_of("new text", 0) == ["new text row 1", "new text row 2"]
    assert inputs_of("old", 1) == ["old row 0", "old row 2"]


def test_template_choice_is_per_row_and_seeded(tmp_path):
    path = tmp_path / "rows.jsonl"
    _write(path, ROWS * 5, "jsonl")
    task = Task("two", LocalFileSource(path), [SENTIMENT, QUESTION], splits=("train",))
    first = task.to_dataset("train", seed=1)["template"]
    assert first == task.to_dataset("train", seed=1)["template"]
    assert first != task.to_dataset("train", seed=2)["template"]
    assert first == [[SENTIMENT, QUESTION][random.Random(f"1:{i}").randrange(2)].name for i in range(50)]
    assert set(task.to_dataset("train", templates=["question"])["template"]) == {"question"}


def test_every_template_renders_each_row_in_each_template_in_order(tmp_path, caplog):
    # T0's training mixture: a row in every template (rows x templates examples), not one template drawn per row
    path = tmp_path / "rows.jsonl"
    _write(path, ROWS, "jsonl")
    only_positive = Template("pos", "{% if label == 1 %}positive? {{sentence}} ||| yes{% endif %}")
    task = Task("every", LocalFileSource(path), [SENTIMENT, QUESTION, only_positive], splits=("train",))
    with caplog.at_level("WARNING"):
        out = task.to_dataset("train", every_template=True, max_examples=4)
    expected = []
    for row in ROWS[:4]:
        expected.append((f"sst2 sentence: {row['sentence']}", "t5"))
        expected.append((f"Is this positive? {row['sentence']}", "question"))
        if row["label"] == 1:
            expected.append((f"positive? {row['sentence']}", "pos"))
    assert list(zip(out["inputs"], out["template"])) == expected
    assert out["targets"][:2] == ["negative", "no"]
    stats = task.render_stats["train"]
    assert (stats.rows, stats.kept, stats.skipped_by_template) == (12, 10, {"pos": 2})
    assert stats.kept_by_template == Counter(template for _, template in expected)  # (the examples each one kept)
    assert list(task.to_dataset("train", every_template=True, max_examples=4, streaming=True)) == list(out)
    picked = task.to_dataset("train", every_template=True, templates=["question"], max_examples=4)
    assert picked["inputs"] == [f"Is this positive? {row['sentence']}" for row in ROWS[:4]]
    assert len(task.to_dataset("train", max_examples=4)) <= 4  # (one template per row: unchanged)


@pytest.mark.parametrize("streaming", [False, True])
def test_with_row_index_names_the_row_each_example_renders(tmp_path, streaming):
    path = tmp_path / "rows.jsonl"
    _write(path, ROWS, "jsonl")
    only_positive = Template("pos", "{% if label == 1 %}positive? {{sentence}} ||| yes{% endif %}")
    task = Task("rows", LocalFileSource(path), [SENTIMENT, only_positive], splits=("train",))
    out = list(task.to_dataset("train", every_template=True, max_examples=4, with_row_index=True,
                               streaming=streaming))
    expected = [(i, name) for i, row in enumerate(ROWS[:4]) for name in ("t5", "pos") if name == "t5" or row["label"]]
    assert [(example["row"], example["template"]) for example in out] == expected
    plain = list(task.to_dataset("train", every_template=True, max_examples=4, streaming=streaming))
    assert [{k: v for k, v in example.items() if k != "row"} for example in out] == plain


@pytest.mark.parametrize("streaming", [False, True])
def test_every_template_skips_are_counted_of_examples_not_of_rows(tmp_path, caplog, streaming):
    # was "3 of 18 rows skipped" for 6 rows: with every_template the count is of the rows' renderings in each template
    path = tmp_path / "rows.jsonl"
    _write(path, ROWS, "jsonl")
    only_positive = Template("pos", "{% if label == 1 %}positive? {{sentence}} ||| yes{% endif %}")
    task = Task("every_skips", LocalFileSource(path), [SENTIMENT, QUESTION, only_positive], splits=("train",))
    negatives = sum(row["label"] == 0 for row in ROWS[:6])
    with caplog.at_level("WARNING"):
        out = task.to_dataset("train", every_template=True, max_examples=6, streaming=streaming)
        assert len(list(out)) == 6 * 3 - negatives
    # the examples each template kept (the sampler's per-template sizes under data.all_templates), a missing one 0
    assert task.render_stats["train"].kept_of(["pos", "t5", "question", "other"]) == \
        {"pos": 6 - negatives, "t5": 6, "question": 6, "other": 0}
    assert (f"{negatives} of 18 examples (6 rows x 3 templates) skipped ({negatives} empty target, 0 empty input) "
            f"by template(s) {{'pos': {negatives}}}") in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        list(task.to_dataset("train", templates=["pos"], every_template=True, max_examples=6, streaming=streaming))
    assert f"{negatives} of 6 rows skipped" in caplog.text  # (one template: an example a row)

def test_preprocessors_rename_filter_map_and_counts(tmp_path):
    path = tmp_path / "rows.jsonl"
    _write(path, [{"text": r["sentence"], "label": r["label"] if i != 4 else -1} for i, r in enumerate(ROWS)], "jsonl")
    task = Task("pre", LocalFileSource({"train": path}),
                [Template("t", "{{sentence}} / {{shout}} ||| {{ answer_choices[label] }}",
                          answer_choices="no ||| yes")],
                preprocessors=[Rename({"text": "sentence"}), Filter("label != -1"),
                               Map({"shout": "sentence | upper"}), Map(lambda row: {"label": 1 - row["label"]})],
                splits=("train",))
    rows = task.load_rows("train")
    assert len(rows) == 9 and rows[0]["shout"] == "SENTENCE NUMBER 0" and rows[0]["label"] == 1
    stats = task.preprocess_stats["train"]
    assert (stats.rows_in, stats.rows_out, stats.dropped_by) == (10, 9, {"filter(label != -1)": 1})
    assert task.to_dataset("train")[0]["inputs"] == "sentence number 0 / SENTENCE NUMBER 0"
    assert task.num_rows("train") == 9
    # max_examples counts rows after the filter (row 4 was dropped, so the 5th kept row is row 5)
    assert task.to_dataset("train", max_examples=5)["inputs"][-1] == "sentence number 5 / SENTENCE NUMBER 5"
    unfiltered = Task("pre2", LocalFileSource({"train": path}), [Template("t", "{{text}} ||| x")],
                      preprocessors=[Map({"text": "text | upper"})], splits=("train",))
    assert unfiltered.to_dataset("train", max_examples=2)["inputs"] == ["SENTENCE NUMBER 0", "SENTENCE NUMBER 1"]
    assert unfiltered.preprocess_stats["train"].rows_in == 2  # selected before the map: no filter to count


def test_a_map_writing_a_field_back_gives_it_the_type_of_its_values_loaded_as_streamed(tmp_path):
    # was: a loaded label column that `hf: csv` read as float64 (one empty cell) stayed float64 after
    # `{label: "label | int"}` (datasets writes a map's ints into the column's type), so `{{label}}` printed "1.0"
    # and answer_choices[label] was refused, while the streamed rows held the ints
    (tmp_path / "rows.csv").write_text("p,label\na,1\nb,\nc,0\n")
    source = HFSource("csv", data_files={"train": str(tmp_path / "rows.csv")})
    assert source.load("train").features["label"].dtype == "float64"  # (the reader's own type: the reference)
    template = Template("t", "{{p}} {{label}} ||| {{ answer_choices[label] }}", answer_choices="no ||| yes")
    steps = {"yaml": Map({"label": "label | int"}), "python": Map(lambda row: {**row, "label": int(row["label"])})}
    for name, step in steps.items():
        task = Task(f"ints_{name}", source, [template], splits=["train"],
                    preprocessors=[Filter("label is not none"), step])
        for _ in range(2):  # (the second load reads the map's cached result)
            assert task.load_rows("train").features["label"].dtype == "int64", name
            loaded = [(row["inputs"], row["targets"]) for row in task.to_dataset("train")]
            assert loaded == [("a 1", "yes"), ("c 0", "no")], name
        assert [(row["inputs"], row["targets"]) for row in task.to_dataset("train", streaming=True)] == loaded


def test_a_map_writing_bools_or_numbers_over_another_kind_gives_them_their_own_type():
    dataset = datasets.Dataset.from_dict({"n": [1, 3], "flag": [True, False], "x": [0.5, 1.5]})
    written = {"n": [2.0, 6.0], "x": [True, False]}  # (pyarrow would store them as 2, 6 and 1.0, 0.0)
    out = Map(lambda row: {"n": row["n"] * 2.0, "x": row["flag"]})(dataset)
    assert out.to_dict() == {**dataset.to_dict(), **written}
    assert (out.features["n"].dtype, out.features["x"].dtype) == ("float64", "bool")
    assert Map({"x": "n"})(dataset).features["x"].dtype == "int64"
    assert Map({"n": "n + 1", "x": "x * 2"})(dataset).features == dataset.features  # (the same kinds: kept)
    assert "__t2t" not in " ".join(Map({"n": "n"})(dataset).column_names)
    numbers = Map({"flag": "n + 1"})(dataset)  # (was refused: pyarrow had stored them as True and True)
    assert (numbers["flag"], numbers.features["flag"].dtype) == ([2, 4], "int64")


def test_skipped_rows_are_dropped_and_counted(tmp_path, caplog):
    path = tmp_path / "rows.jsonl"
    _write(path, ROWS, "jsonl")
    only_positive = Template("pos", "{% if label == 1 %}{{sentence}} ||| yes{% endif %}")
    task = Task("skips", LocalFileSource(path), [only_positive], splits=("train",))
    with caplog.at_level("WARNING"):
        out = task.to_dataset("train")
    assert len(out) == 5
    stats = task.render_stats["train"]
    assert (stats.rows, stats.kept, stats.skipped, stats.skipped_by_template) == (10, 5, 5, {"pos": 5})
    assert "5 of 10 rows skipped" in caplog.text
    streamed_dataset = task.to_dataset("train", streaming=True)
    assert list(streamed_dataset) == list(out)
    assert task.render_stats["train"].skipped == 5
    # a second pass (the next epoch) counts the split again rather than adding to the first (was 20 rows, 10 skipped)
    assert list(streamed_dataset) == list(out)
    stats = task.render_stats["train"]
    assert (stats.rows, stats.kept, stats.skipped, stats.skipped_by_template) == (10, 5, 5, {"pos": 5})


def test_rows_that_render_an_empty_input_are_dropped_and_counted_as_skipped(tmp_path, caplog):
    # was: kept (input "", target "yes"), so the model trained on targets with nothing to read; T0 drops them
    path = tmp_path / "rows.jsonl"
    _write(path, ROWS, "jsonl")
    t0_style = Template("t0", "{% if label == 1 %}{{sentence}}{% endif %} ||| "
                              "{% if sentence != 'sentence number 0' %}yes{% endif %}")
    task = Task("empty_inputs", LocalFileSource(path), [t0_style], splits=("train",))
    # rows 1, 3, .. 9 render both; 2, 4, 6, 8 an empty input; 0 neither (an empty target, promptsource's skip)
    for streaming in (False, True):
        caplog.clear()
        with caplog.at_level("WARNING"):
            out = list(task.to_dataset("train", streaming=streaming))
        assert [row["inputs"] for row in out] == [f"sentence number {i}" for i in (1, 3, 5, 7, 9)], streaming
        stats = task.render_stats["train"]
        assert (stats.rows, stats.kept, stats.skipped, stats.empty_inputs, stats.skipped_by_template) == \
            (10, 5, 5, 4, {"t0": 5}), streaming
        assert "5 of 10 rows skipped (1 empty target, 4 empty input) by template(s) {'t0': 5}" in caplog.text


def test_a_filter_that_drops_every_row_gives_an_empty_dataset(tmp_path):
    # e.g. `label != -1` on a GLUE test split: every label is -1
    path = tmp_path / "rows.jsonl"
    _write(path, [{**r, "label": -1} for r in ROWS], "jsonl")
    task = Task("unlabelled", LocalFileSource(path), [SENTIMENT], preprocessors=[Filter("label != -1")],
                splits=("train",))
    out = task.to_dataset("train")
    assert len(out) == 0 and set(out.column_names) == {"inputs", "targets", "answer_choices", "references", "task",
                                                       "template"}
    stats = task.render_stats["train"]
    assert (stats.rows, stats.kept, stats.skipped) == (0, 0, 0)
    assert task.preprocess_stats["train"].rows_out == 0


def test_to_dataset_is_cached_by_fingerprint(tmp_path):
    path = tmp_path / "rows.jsonl"
    _write(path, ROWS, "jsonl")
    task = Task("cache", LocalFileSource(path), [SENTIMENT, QUESTION], splits=("train",))
    first, second = task.to_dataset("train"), task.to_dataset("train")
    assert first._fingerprint == second._fingerprint and first.cache_files == second.cache_files
    assert task.to_dataset("train", seed=5)._fingerprint != first._fingerprint
    assert task.to_dataset("train", templates=["t5"])._fingerprint != first._fingerprint


def test_tokenized_variant_matches_the_tokenizer_and_is_cached(tmp_path, t5_tokenizer_dir):
    from transformers import T5Tokenizer

    tokenizer = T5Tokenizer.from_pretrained(str(t5_tokenizer_dir))
    path = tmp_path / "rows.jsonl"
    _write(path, ROWS, "jsonl")
    rendered = Task("tok", LocalFileSource(path), [SENTIMENT], splits=("train",)).to_dataset("train")
    tokenized = tokenize_dataset(rendered, tokenizer, max_input_length=6, max_target_length=8)
    row = tokenized[1]
    assert row["input_ids"] == tokenizer("sst2 sentence: sentence number 1", max_length=6, truncation=True)["input_ids"]
    assert row["input_ids"][-1] == tokenizer.eos_token_id == 1 and len(row["input_ids"]) == 6
    assert row["labels"] == tokenizer("positive")["input_ids"] and row["labels"][-1] == 1
    assert "attention_mask" not in row and row["inputs"] == "sst2 sentence: sentence number 1"
    again = tokenize_dataset(rendered, tokenizer, max_input_length=6, max_target_length=8)
    assert again._fingerprint == tokenized._fingerprint and again.cache_files == tokenized.cache_files
    longer = tokenize_dataset(rendered, tokenizer, max_input_length=64, max_target_length=8)
    assert longer._fingerprint != tokenized._fingerprint
    streamed = tokenize_dataset(rendered.to_iterable_dataset(), tokenizer, 6, 8)
    assert [r["input_ids"] for r in streamed] == tokenized["input_ids"]


# Hand-made rows with T5 token counts (EOS included): "Hello" 2, "Hello world" 3, "Hello world Hello" 4,
# "Hello world Hello world" 5; limits 3 (inputs) and 2 (targets), so an exact fit is not a truncation.
HAND_ROWS = {"inputs": ["Hello world", "Hello world Hello world", "Hello", "Hello world Hello"],
             "targets": ["Hello world", "Hello", "Hello", "Hello world"]}


def test_truncation_is_flagged_and_counted_per_row(t5_tokenizer_dir):
    from transformers import T5Tokenizer

    from task_registry.tokenize import TruncationCounts, count_truncated

    tokenizer = T5Tokenizer.from_pretrained(str(t5_tokenizer_dir))
    rows = datasets.Dataset.from_dict(HAND_ROWS)
    tokenized = tokenize_dataset(rows, tokenizer, max_input_length=3, max_target_length=2, keep_in_memory=True)
    assert tokenized["inputs_truncated"] == [False, True, False, True]
    assert tokenized["targets_truncated"] == [True, False, False, True]
    assert count_truncated(tokenized) == TruncationCounts(inputs=2, targets=2, rows=3)
    assert count_truncated(tokenized.select([2, 0])) == TruncationCounts(inputs=0, targets=1, rows=1)
    assert tokenized["input_ids"] == [[8774, 296, 1], [8774, 296, 1], [8774, 1], [8774, 296, 1]]
    assert tokenized["labels"] == [[8774, 1], [8774, 1], [8774, 1], [8774, 1]]
    # T5's tokenizer adds exactly one final EOS, so appending it by hand gives the same ids and flags
    appended = tokenize_dataset(rows, tokenizer, 3, 2, append_eos=True, remove_columns=["inputs", "targets"])
    assert appended.column_names == ["input_ids", "labels", "inputs_truncated", "targets_truncated"]
    assert appended.to_dict() == tokenized.remove_columns(["inputs", "targets"]).to_dict()
    assert appended._fingerprint != tokenized._fingerprint
    streamed = list(tokenize_dataset(rows.to_iterable_dataset(), tokenizer, 3, 2))
    assert [r["inputs_truncated"] for r in streamed] == tokenized["inputs_truncated"]
    assert [r["labels"] for r in streamed] == tokenized["labels"]


class _CountingTokenizer:
    """A tokenizer that records every text it is asked to encode."""

    def __init__(self, tokenizer):
        self.tokenizer, self.texts = tokenizer, []

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)

    def __call__(self, text=None, text_target=None, **kwargs):
        self.texts.extend(text if text is not None else text_target)
        return self.tokenizer(text=text, text_target=text_target, **kwargs)


@pytest.mark.parametrize("append_eos", [False, True])
def test_each_distinct_text_of_a_batch_is_encoded_once_and_every_row_gets_its_ids(t5_tokenizer_dir, append_eos):
    # a batch's targets are mostly a few labels repeated (classification): each distinct text is encoded once
    from t2t_mtl.tokenizer import load_tokenizer

    from task_registry.tokenize import tokenizer_fingerprint

    tokenizer = _CountingTokenizer(load_tokenizer(t5_tokenizer_dir))
    rows = datasets.Dataset.from_dict({"inputs": ["Hello world", "Hello", "Hello world", "Hello world Hello world"],
                                       "targets": ["yes", "no", "yes", "yes"]})
    key = tokenizer_fingerprint(tokenizer.tokenizer)  # (apart: the key's probe encodes texts of its own)
    tokenized = tokenize_dataset(rows, tokenizer, max_input_length=3, max_target_length=8, append_eos=append_eos,
                                 keep_in_memory=True, tokenizer_key=key)
    # T5 ids (EOS 1): "Hello world" 3 tokens, "Hello" 2, the last input 5, cut to its first two and EOS
    assert tokenized["input_ids"] == [[8774, 296, 1], [8774, 1], [8774, 296, 1], [8774, 296, 1]]
    yes, no = (tokenizer.tokenizer(word)["input_ids"] for word in ("yes", "no"))
    assert tokenized["labels"] == [yes, no, yes, yes] and yes[-1] == no[-1] == 1 and yes != no
    assert tokenized["inputs_truncated"] == [False, False, False, True]
    assert "attention_mask" not in tokenized.column_names  # all ones: the collators that pad build their own
    again = [] if append_eos else ["Hello world Hello world"]  # the tokenizer's own truncation of the long one
    assert sorted(tokenizer.texts) == sorted(["Hello world", "Hello", "Hello world Hello world", *again, "yes", "no"])


def test_special_tokens_are_the_tokenizers_own_unless_eos_is_appended():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[UNK]": 3, "a": 4, "b": 5, "c": 6},
                                         unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                           special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                                        cls_token="[CLS]", sep_token="[SEP]", eos_token="[SEP]")
    rows = datasets.Dataset.from_dict({"inputs": ["a b c", "a"], "targets": ["c", "a b"]})
    own = tokenize_dataset(rows, tokenizer, max_input_length=4, max_target_length=3, keep_in_memory=True)
    assert own["input_ids"] == [[1, 4, 5, 2], [1, 4, 2]] and own["labels"] == [[1, 6, 2], [1, 4, 2]]
    assert own["inputs_truncated"] == [True, False] and own["targets_truncated"] == [False, True]
    appended = tokenize_dataset(rows, tokenizer, 4, 3, append_eos=True, keep_in_memory=True)
    assert appended["input_ids"] == [[4, 5, 6, 2], [4, 2]] and appended["labels"] == [[6, 2], [4, 5, 2]]
    assert appended["inputs_truncated"] == [False, False] and appended["targets_truncated"] == [False, False]
    with pytest.raises(ValueError, match="cache_file_name and keep_in_memory"):
        tokenize_dataset(rows.to_iterable_dataset(), tokenizer, 4, 3, keep_in_memory=True)


def test_the_tokenized_fingerprint_changes_with_the_input_the_tokenizer_each_limit_and_each_option():
    # the cache-file names of t2t_mtl.data.streams are this value: a part left out would reuse a stale file
    from task_registry.tokenize import tokenized_fingerprint

    rows = datasets.Dataset.from_dict({"inputs": ["a b"], "targets": ["c"]})
    base = {"dataset": rows, "tokenizer_key": "tok", "max_input_length": 8, "max_target_length": 4,
            "append_eos": False, "remove_columns": ["inputs"]}
    changes = [{"dataset": datasets.Dataset.from_dict({"inputs": ["a c"], "targets": ["c"]})},
               {"tokenizer_key": "other"}, {"max_input_length": 9}, {"max_target_length": 5}, {"append_eos": True},
               {"remove_columns": ["inputs", "targets"]}]
    fingerprints = [tokenized_fingerprint(**{**base, **change}) for change in [{}] + changes]
    assert len(set(fingerprints)) == 1 + len(changes)
    # the same columns in another order give the same result
    both, swapped = ({**base, "remove_columns": columns} for columns in (["inputs", "targets"], ["targets", "inputs"]))
    assert tokenized_fingerprint(**swapped) == tokenized_fingerprint(**both)


class _VocabOnly:
    """A tokenizer without a serialisation (no `backend_tokenizer`): keyed by its vocabulary and its name."""

    eos_token_id = 1

    def __init__(self, vocab, name):
        self.vocab, self.name_or_path = vocab, name

    def get_vocab(self):
        return dict(self.vocab)

    def __call__(self, text=None, text_target=None, **_):
        return {"input_ids": [self.vocab.get(word, 0) for word in (text or text_target).split()]}


def test_the_tokenizer_key_changes_with_the_eos_id_and_without_a_serialisation_with_the_name_and_vocabulary(
        t5_tokenizer_dir):
    from transformers import T5Tokenizer

    from task_registry.tokenize import tokenizer_fingerprint

    tokenizer, other_eos = (T5Tokenizer.from_pretrained(str(t5_tokenizer_dir)) for _ in range(2))
    assert tokenizer_fingerprint(other_eos) == tokenizer_fingerprint(tokenizer)
    other_eos.eos_token = "<unk>"  # append_eos appends id 2 now, though the serialisation is the same
    assert other_eos.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()
    assert tokenizer_fingerprint(other_eos) != tokenizer_fingerprint(tokenizer)
    vocab = {"<pad>": 0, "</s>": 1, "a": 2}
    key = tokenizer_fingerprint(_VocabOnly(vocab, "tok"))
    assert tokenizer_fingerprint(_VocabOnly(dict(reversed(vocab.items())), "tok")) == key
    assert tokenizer_fingerprint(_VocabOnly(vocab, "other")) != key
    assert tokenizer_fingerprint(_VocabOnly({**vocab, "b": 3}, "tok")) != key


def test_tokenize_dataset_keeps_a_cached_input_in_memory_when_asked(tmp_path, t5_tokenizer_dir):
    from transformers import T5Tokenizer

    tokenizer = T5Tokenizer.from_pretrained(str(t5_tokenizer_dir))
    path = tmp_path / "rows.jsonl"
    _write(path, ROWS, "jsonl")
    rendered = Task("mem", LocalFileSource(path), [SENTIMENT], splits=("train",)).to_dataset("train")
    assert rendered.cache_files  # by default the result would go into the input's cache folder
    tokenized = tokenize_dataset(rendered, tokenizer, 8, 8, keep_in_memory=True)
    assert tokenized.cache_files == [] and tokenized["labels"][1] == tokenizer("positive")["input_ids"]


def test_the_rendered_dataset_carries_the_gold_references(tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = [{"q": "capital of France?", "answers": ["Paris", "paris, France"]}, {"q": "skip me", "answers": []},
            {"q": "2+2?", "answers": ["4"]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    templates = [Template("all", "{% if answers %}{{ q }} ||| {{ answers[0] }}{% endif %}",
                          references="{{ answers | join(' ||| ') }}"),
                 Template("first", "{% if answers %}{{ q }} ||| {{ answers[0] }}{% endif %}")]
    task = Task("qa", LocalFileSource({"train": path}), templates, splits=("train",))
    for streaming in (False, True):
        with_refs = list(task.to_dataset("train", templates=["all"], streaming=streaming))
        assert [r["references"] for r in with_refs] == [["Paris", "paris, France"], ["4"]]
        assert task.render_stats["train"].skipped == 1
        default = list(task.to_dataset("train", templates=["first"], streaming=streaming))
        assert [r["references"] for r in default] == [["Paris"], ["4"]]
    assert task.describe()["templates"][0]["references"] == "{{ answers | join(' ||| ') }}"
    assert "references" not in task.describe()["templates"][1]


def test_data_files_are_loaded_under_a_data_dir(tmp_path, shared_data_dir):
    # under an active data dir `data_files` was ignored: HFSource("glue", "rte", data_files=...) silently read the
    # whole shared glue/rte copy, and HFSource("json", data_files=...) looked for <data_dir>/json/default/train.jsonl
    _write(tmp_path / "mine.jsonl", ROWS[:3], "jsonl")
    task_registry.set_data_dir(shared_data_dir)
    try:
        assert HFSource("glue", "rte", data_files={"train": str(tmp_path / "mine.jsonl")}).local_file("train") is None
        source = HFSource("json", data_files={"train": str(tmp_path / "mine.jsonl")})
        assert source.local_file("train") is None
        assert [dict(r) for r in source.load("train")] == ROWS[:3]
        with pytest.raises(DataSourceError, match=r"hub dataset json split 'train' could not be loaded .*its "
                                                  r"data_files \{'train': '.*absent.jsonl'\} are loaded as given"):
            HFSource("json", data_files={"train": str(tmp_path / "absent.jsonl")}).load("train")
    finally:
        task_registry.set_data_dir(None)


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_glob_pattern_of_local_files_reads_the_files_it_matches_in_order(tmp_path, fmt, streaming):
    # `LocalFileSource({"train": "shards/*.jsonl"})` (YAML `files:`, whose parser let patterns through to datasets)
    # failed at load: "split 'train' expects the file '.../shards/*.jsonl', which does not exist"
    (tmp_path / "shards").mkdir()
    for i in range(3):
        _write(tmp_path / "shards" / f"part-{i}.{fmt}", ROWS[3 * i:3 * i + 3], fmt)
    _write(tmp_path / "shards" / f".partial.{fmt}", ROWS[9:], fmt)  # hidden: not matched, as datasets' data_files
    rows = LocalFileSource({"train": str(tmp_path / "shards" / f"*.{fmt}")}).load("train", streaming=streaming)
    assert [dict(r) for r in rows] == ROWS[:9]
    reader = {"jsonl": "json", "csv": "csv"}[fmt]
    expected = HFSource(reader, data_files={"train": str(tmp_path / "shards" / f"*.{fmt}")}).load("train")
    assert [dict(r) for r in rows] == [dict(r) for r in expected]  # the files `hf: csv` / `hf: json` read
    with pytest.raises(DataSourceError, match=r"local files source: split 'train': the pattern '.*/none/\*\.jsonl' "
                                              r"matches no file; check its folder \('.*/none'\)"):
        LocalFileSource({"train": str(tmp_path / "none" / "*.jsonl")}).load("train")


def test_a_file_readers_data_files_are_read_in_its_data_dir(tmp_path, monkeypatch):
    # HFSource('json', data_dir='d', data_files={'train': '*.jsonl'}) was refused, "the pattern '*.jsonl' matches no
    # file; check its folder ('.')": the pattern was matched in the working directory, load_dataset matches it in d
    (tmp_path / "d").mkdir()
    _write(tmp_path / "d" / "part-0.jsonl", ROWS[:3], "jsonl")
    monkeypatch.chdir(tmp_path)
    assert [dict(r) for r in HFSource("json", data_dir="d", data_files={"train": "*.jsonl"}).load("train")] == ROWS[:3]
    with pytest.raises(DataSourceError, match=r"^hub dataset json: data_files of split 'train': the pattern "
                                              r"'d/none/\*\.jsonl' matches no file; check its folder \('d/none'\)"):
        HFSource("json", data_dir="d", data_files={"train": "none/*.jsonl"}).load("train")


@pytest.mark.parametrize("streaming", [False, True])
def test_a_pattern_matching_json_and_jsonl_files_reads_them_with_the_one_json_reader(tmp_path, streaming):
    # `LocalFileSource("data/rte.j*")` was refused as "unsupported extension" (the pattern's own '.j*'), though
    # datasets' json reader reads both the .json and the .jsonl file
    (tmp_path / "data").mkdir()
    _write(tmp_path / "data" / "rte.json", ROWS[:4], "json")
    _write(tmp_path / "data" / "rte.jsonl", ROWS[4:], "jsonl")
    rows = LocalFileSource(str(tmp_path / "data" / "rte.j*")).load("train", streaming=streaming)
    assert [dict(r) for r in rows] == ROWS  # rte.json's rows, then rte.jsonl's (the files sorted)


def test_a_pattern_matching_files_of_different_formats_is_refused_listing_them_per_extension(tmp_path):
    # a pattern matching a .jsonl and a .csv file was refused as "unsupported extension" (of the pattern), and one
    # with a known extension never had its files' formats compared
    (tmp_path / "data").mkdir()
    pattern = str(tmp_path / "data" / "rte.*")
    message = (rf"the files \['{re.escape(pattern)}'\] have different formats; the files of one split must share one "
               rf"format \(\.json and \.jsonl files share one reader, \.csv and \.tsv files do not\): \.csv: "
               rf"\['.*/data/rte\.csv'\]; \.jsonl: \['.*/data/rte\.jsonl', '.*/data/rte\.v2\.jsonl'\]\. List the "
               rf"files of one format, or a pattern matching only them \(e\.g\. '.*/data/\*\.csv'\), or convert")
    source = LocalFileSource({"train": pattern})  # matching nothing yet: its files are compared when loaded
    _write(tmp_path / "data" / "rte.csv", ROWS[:2], "csv")
    _write(tmp_path / "data" / "rte.jsonl", ROWS[2:4], "jsonl")
    _write(tmp_path / "data" / "rte.v2.jsonl", ROWS[4:], "jsonl")
    with pytest.raises(DataSourceError, match="^local files source: split 'train': " + message):
        source.load("train")
    with pytest.raises(task_registry.TaskDefinitionError, match="^LocalFileSource: " + message):
        LocalFileSource({"train": pattern})
    assert [dict(r) for r in LocalFileSource(str(tmp_path / "data" / "*.jsonl")).load("train")] == ROWS[2:]


@pytest.mark.parametrize("streaming", [False, True])
def test_a_json_row_with_a_repeated_key_is_reported_once_by_the_source_not_first_by_datasets_reader(tmp_path,
                                                                                                     streaming):
    # datasets' json reader printed "Failed to load JSON from file '...dup.jsonl' with error ..." (its logger, at
    # ERROR level) before raising the error the source reports, naming the file
    import logging

    from task_registry.reader_logs import READER_LOGGERS

    logged = []
    handler = logging.Handler()
    handler.emit = lambda record: logged.append(record.getMessage())  # what reaches the logger's handlers
    reader_logger = logging.getLogger(READER_LOGGERS[0])
    reader_logger.addHandler(handler)
    try:
        (tmp_path / "dup.jsonl").write_text('{"sentence": "a", "sentence": "b", "label": 1}\n')
        for source in (LocalFileSource(tmp_path / "dup.jsonl"),
                       HFSource("json", data_files=str(tmp_path / "dup.jsonl"))):
            with pytest.raises(DataSourceError, match=r"JSON parse error: Column\(/sentence\) was specified twice in "
                                                      r"row 0") as raised:
                list(source.load("train", streaming=streaming))
            assert str(tmp_path / "dup.jsonl") in str(raised.value)
        assert logged == []
        reader_logger.error("a reader's error outside a source's read")
        assert logged == ["a reader's error outside a source's read"]  # (logged as before)
    finally:
        reader_logger.removeHandler(handler)


def test_a_data_files_pattern_that_matches_no_file_is_named(tmp_path):
    # datasets reads such a pattern as no file, and its json reader stopped on a bare StopIteration: "hub dataset
    # json split 'validation' could not be loaded (StopIteration)", for every split of the source
    _write(tmp_path / "dev.jsonl", ROWS[:2], "jsonl")
    source = HFSource("json", data_files={"train": str(tmp_path / "none" / "*.jsonl"),
                                          "validation": str(tmp_path / "dev.jsonl")})
    with pytest.raises(DataSourceError, match=r"^hub dataset json: data_files of split 'train': the pattern "
                                              r"'.*/none/\*\.jsonl' matches no file; .* \(to load split "
                                              r"'validation', load_dataset reads every split's files\)$"):
        source.load("validation")


@pytest.mark.parametrize("streaming", [False, True])
def test_a_folder_saved_by_save_to_disk_is_read_as_its_splits(tmp_path, streaming):
    # LocalFileSource(folder) of a DatasetDict.save_to_disk folder was refused as an "unsupported extension", and
    # HFSource(folder) failed on "Couldn't find any data file", with a hint to point a data dir at it
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    whole = datasets.Dataset.from_list(ROWS, features=features)
    datasets.DatasetDict({"train": whole.select(range(6)),
                          "validation": whole.select(range(6, 10))}).save_to_disk(str(tmp_path / "dict"))
    whole.select(range(3)).save_to_disk(str(tmp_path / "one"))
    source = LocalFileSource(tmp_path / "dict")
    assert source.file_splits() == ["train", "validation"]
    assert [dict(r) for r in source.load("validation", streaming=streaming)] == ROWS[6:]
    rendered = Task("saved", source, [SENTIMENT]).to_dataset("train", streaming=streaming)
    assert [r["targets"] for r in rendered] == ["negative", "positive"] * 3
    mapped = LocalFileSource({"train": tmp_path / "one", "validation": tmp_path / "dict"})
    assert [dict(r) for r in mapped.load("train", streaming=streaming)] == ROWS[:3]
    assert [dict(r) for r in mapped.load("validation", streaming=streaming)] == ROWS[6:]
    with pytest.raises(DataSourceError, match=r"^local files source: '.*dict' \(saved by DatasetDict.save_to_disk\) "
                                              r"has no split 'test'; it has \['train', 'validation'\]"):
        source.load("test")
    with pytest.raises(DataSourceError, match=r"dict' is a folder saved by save_to_disk, which load_dataset does not "
                                              r"read: list it under `files:` in a task file"):
        HFSource(str(tmp_path / "dict")).load("train")
    with pytest.raises(task_registry.TaskDefinitionError, match=r"a folder saved by save_to_disk is read alone"):
        LocalFileSource([tmp_path / "one", tmp_path / "dict"])
    (tmp_path / "plain").mkdir()
    with pytest.raises(task_registry.TaskDefinitionError, match=r"plain' is a folder, but not one .* wrote \(it has no "
                                                               r"state.json .*\): list its files, or a glob pattern "
                                                               r"of them \('.*plain/\*\.jsonl'\)"):
        LocalFileSource(tmp_path / "plain")


def test_a_saved_folder_without_the_split_read_says_which_split_folder_may_be_read_as_it(tmp_path):
    # was: "... has no split 'train'; it has ['training', 'valid'] (...: list the ones it has)", and a task without a
    # train split does not train
    whole = datasets.Dataset.from_list(ROWS)
    datasets.DatasetDict({"training": whole.select(range(6)), "valid": whole.select(range(6, 10))}).save_to_disk(
        str(tmp_path / "dict"))
    folder = tmp_path / "dict"
    with pytest.raises(DataSourceError) as caught:
        LocalFileSource(folder).load("train")
    assert str(caught.value) == (
        f"local files source: '{folder}' (saved by DatasetDict.save_to_disk) has no split 'train'; it has ['training', "
        f"'valid'] (a task's `splits` default to [train, validation]: list the ones it has, or read a split's folder "
        f"as a split of the task: {{'train': '{folder}/training'}}, in a task file files: {{train: "
        f"{folder}/training}})")
    assert [dict(r) for r in LocalFileSource({"train": folder / "training"}).load("train")] == ROWS[:6]


def _train_split_refusal(reader: str, paths: list) -> str:
    """The DataSourceError's words on loading the train split of `paths` by a local-files source (`reader` "files")
    or datasets' json reader."""
    source = LocalFileSource({"train": paths}) if reader == "files" else HFSource("json", data_files={"train": paths})
    with pytest.raises(DataSourceError) as caught:
        source.load("train")
    return str(caught.value)


@pytest.mark.parametrize("reader", ["files", "json"])
def test_a_file_that_two_paths_of_a_split_read_is_refused_naming_both(tmp_path, reader):
    # was: files: {train: [en/*.jsonl, **/train-*.jsonl]} read en/train-1.jsonl twice, its rows doubled unseen in
    # training and in the scores (as `hf: json` with those data_files did)
    shards = tmp_path / "shards" / "en"
    shards.mkdir(parents=True)
    for i in range(2):
        (shards / f"train-{i}.jsonl").write_text(json.dumps({"q": f"q{i}"}) + "\n")
    paths = [str(shards / "*.jsonl"), str(tmp_path / "shards" / "**" / "train-1.jsonl")]
    rows = datasets.load_dataset("json", data_files={"train": paths}, split="train")
    assert sorted(row["q"] for row in rows) == ["q0", "q1", "q1"]  # (the reference: datasets reads it twice)
    assert _train_split_refusal(reader, paths).endswith(
        f"split 'train': the file {shards / 'train-1.jsonl'} is read by both {paths[0]!r} and {paths[1]!r}, so its "
        f"rows would be read twice; list each file once (narrow a pattern, or drop a path)")
    once = LocalFileSource({"train": paths[:1]}) if reader == "files" else HFSource("json", data_files=paths[:1])
    assert sorted(row["q"] for row in once.load("train")) == ["q0", "q1"]
    with pytest.raises(DataSourceError, match="is read by both"):  # (a path given twice, or a link to it, alike)
        (shards / "link.jsonl").symlink_to(shards / "train-0.jsonl")
        LocalFileSource([shards / "train-0.jsonl", shards / "link.jsonl"]).load("train")


def test_a_path_without_an_extension_that_does_not_exist_is_named_as_missing(tmp_path, monkeypatch):
    # was: LocalFileSource("data/saved/training") run from another folder than the one holding data/ was refused as
    # "file 'data/saved/training': unsupported extension; use one of [...]", though the folder save_to_disk wrote
    # was only not where the relative path was read from (a missing rows.jsonl is named as missing when read)
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "data" / "saved" / "training"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    source = LocalFileSource({"train": "data/saved/training"})
    with pytest.raises(DataSourceError) as caught:
        source.load("train")
    assert str(caught.value) == ("local files source: split 'train' expects the file 'data/saved/training', which "
                                 "does not exist")
    monkeypatch.chdir(tmp_path)
    assert len(source.load("train")) == len(ROWS)
    with pytest.raises(task_registry.TaskDefinitionError, match="rows.txt': unsupported extension"):
        (tmp_path / "rows.txt").write_text("a\n")  # (a file that exists is still refused by its extension)
        LocalFileSource(tmp_path / "rows.txt")


def test_preprocessor_and_render_caches_are_keyed_by_the_jinja_version(tmp_path, monkeypatch):
    # a Jinja upgrade can change what an expression or template yields; the cache key did not name it, so a
    # Filter / Map / rendering cached under the old version was reused
    import jinja2

    dataset = datasets.Dataset.from_list(ROWS)
    steps = {"filter": Filter("label == 1"), "map": Map({"upper": "sentence | upper"})}
    path = tmp_path / "rows.jsonl"
    _write(path, ROWS, "jsonl")
    task = Task("jinja_versioned", LocalFileSource(path), [SENTIMENT], splits=("train",))

    def fingerprints():
        return {**{name: step(dataset)._fingerprint for name, step in steps.items()},
                "render": task.to_dataset("train")._fingerprint}

    before = fingerprints()
    assert fingerprints() == before  # a pure function of the input and the step
    monkeypatch.setattr(jinja2, "__version__", jinja2.__version__ + ".post1")
    after = fingerprints()
    assert all(after[name] != before[name] for name in before)


def rows_for_repr(split, num_rows, seed):
    yield {"x": "a"}


def test_sources_repr_says_what_they_read(tmp_path):
    # was the default `<task_registry.sources.HFSource object at 0x...>`
    assert repr(HFSource("glue", "rte")) == "<HFSource glue/rte>"
    assert repr(LocalFileSource({"train": tmp_path / "t.jsonl"})) == f"<LocalFileSource train: ['{tmp_path}/t.jsonl']>"
    assert repr(GeneratorSource(rows_for_repr)) == f"<GeneratorSource generator {__name__}.rows_for_repr>"

    class Bare(task_registry.Source):  # a source without `describe` keeps the default repr
        pass

    assert "Bare object at 0x" in repr(Bare())


def test_a_templates_repr_shows_its_jinja():
    # was "Template(name='t5', answer_choices='no ||| yes')": looking at a task's templates in a notebook showed no
    # template's text
    template = Template("t5", "rte: {{premise}} ||| {{ answer_choices[label] }}", answer_choices="no ||| yes")
    assert repr(template) == ("Template(name='t5', jinja='rte: {{premise}} ||| {{ answer_choices[label] }}', "
                              "answer_choices='no ||| yes')")
    assert repr(Template("qa", "{{q}} ||| {{a[0]}}", references="{{ a | join(' ||| ') }}")) == (
        "Template(name='qa', jinja='{{q}} ||| {{a[0]}}', answer_choices=None, references=\"{{ a | join(' ||| ') }}\")")


def flip_label(row):
    return {"label": 1 - row["label"]}


def test_a_task_with_expression_preprocessors_pickles(tmp_path):
    # a Filter/Map of Jinja expressions (every YAML task's, built-in conll2003's and gsm8k's) held lambdas, so the
    # task could not be pickled (multiprocessing, DataLoader workers started by spawn): "Can't pickle local object"
    import pickle

    path = tmp_path / "rows.jsonl"
    _write(path, [{"text": r["sentence"], "label": r["label"] if i != 4 else -1} for i, r in enumerate(ROWS)], "jsonl")
    task = Task("pre", LocalFileSource({"train": path}), [Template("t", "{{shout}} ||| {{label}}")],
                preprocessors=[Filter("label != -1"), Map({"shout": "text | upper"}), Map(flip_label)],
                splits=("train",))
    copy = pickle.loads(pickle.dumps(task))
    assert [p.describe() for p in copy.preprocessors] == [p.describe() for p in task.preprocessors]
    rows = copy.to_dataset("train")
    # the independent reading of the rows: drop label -1, upper-case the text, flip the label
    expected = [(r["sentence"].upper(), str(1 - r["label"])) for i, r in enumerate(ROWS) if i != 4]
    assert list(zip(rows["inputs"], rows["targets"])) == expected


class MinLength(Filter):
    """A Filter subclass with a setting of its own."""

    def __init__(self, minimum: int):
        self.minimum = minimum
        super().__init__("text | length >= " + str(minimum))


class LongerThan(Filter):
    """A Filter subclass whose predicate is its own method."""

    def __init__(self, minimum: int):
        self.minimum = minimum
        super().__init__(self.keeps)

    def keeps(self, row) -> bool:
        return len(row["text"]) > self.minimum


def test_a_filter_whose_predicate_is_its_own_method_describes_itself():
    # describe() built repr(predicate) even when it had a name: a bound method's repr holds its object's repr,
    # which is describe() again (RecursionError)
    assert LongerThan(3).describe() == "filter(LongerThan.keeps)"
    rows = datasets.Dataset.from_list([{"text": "abc"}, {"text": "abcdef"}])
    assert LongerThan(3)(rows)["text"] == ["abcdef"]


def test_an_expression_preprocessor_subclass_pickles_with_its_own_attributes():
    # the pickled state held the expression only, so a subclass's own settings were lost on loading
    import pickle

    copy = pickle.loads(pickle.dumps(MinLength(5)))
    assert copy.minimum == 5 and copy.describe() == "filter(text | length >= 5)"
    rows = datasets.Dataset.from_list([{"text": "abc"}, {"text": "abcdef"}])
    assert copy(rows)["text"] == ["abcdef"]


def _counting(split, num_rows, seed):
    for i in range(num_rows):
        yield {"i": i, "text": f"row {i}"}


def test_a_generator_task_counts_and_streams_its_rows_after_a_filter():
    # of 0..9, `i % 3 == 0` keeps 0, 3, 6, 9
    task = Task("thirds", GeneratorSource(_counting, num_rows=10), [Template("t", "{{text}} ||| {{i}}")],
                preprocessors=[Filter("i % 3 == 0")], splits=("train",))
    assert task.num_rows("train") == 4
    assert [row["i"] for row in task.load_rows("train", streaming=True, max_rows=2)] == [0, 3]
    assert [row["i"] for row in task.load_rows("train", max_rows=2)] == [0, 3]


def test_a_max_length_of_zero_is_refused():
    rows = datasets.Dataset.from_dict({"inputs": ["a"], "targets": ["b"]})
    for lengths in ((0, 8), (8, 0)):
        with pytest.raises(ValueError, match="max lengths must be positive"):
            tokenize_dataset(rows, None, *lengths)


def test_tokenize_dataset_refuses_missing_columns_and_an_eos_to_append_that_the_tokenizer_lacks():
    rows = datasets.Dataset.from_dict({"inputs": ["a"], "answer": ["b"]})
    with pytest.raises(ValueError, match=r"needs columns 'inputs' and 'targets'; missing \['targets'\]"):
        tokenize_dataset(rows, None, 8, 8)
    no_eos = _VocabOnly({"a": 0}, "tok")
    no_eos.eos_token_id = None
    with pytest.raises(ValueError, match="append_eos=True needs a tokenizer with an EOS token; _VocabOnly has none"):
        tokenize_dataset(rows.rename_column("answer", "targets"), no_eos, 8, 8, append_eos=True)


def test_a_split_the_task_does_not_list_is_refused_even_when_its_files_would_load(tmp_path):
    path = tmp_path / "rows.jsonl"
    _write(path, ROWS, "jsonl")  # one file for every split
    task = Task("only_train", LocalFileSource(path), [SENTIMENT], splits=("train",))
    assert len(task.load_rows("train")) == 10
    with pytest.raises(DataSourceError,
                       match=r"task 'only_train' has no split 'validation'; its splits are \['train'\]"):
        task.load_rows("validation")


DIGEST_MODULE = '''
from pathlib import Path

from task_registry import Filter, GeneratorSource, Map, Task, Template


def rows(split, num_rows, seed, words, where):
    for i in range(num_rows):
        yield {"text": sorted(words)[i % len(words)], "label": i % 2}


def keep(row):
    return row["label"] == 0


TASK = Task("digest_py", GeneratorSource(rows, num_rows=4, gen_kwargs={
    "words": {"alpha", "beta", "gamma", "delta", "epsilon"}, "where": Path("somewhere")}),
    Template("t", "{{text}} ||| {{label}}"), preprocessors=[Filter(keep), Map(lambda row: {"n": 1})])
'''
DIGESTS = """
import json, sys
import task_registry
sys.path.insert(0, sys.argv[1])
from digest_tasks import TASK
task_registry.load_builtin_tasks()
digests = {name: task_registry.get_task(name).definition_digest() for name in task_registry.list_tasks()}
print(json.dumps({**digests, TASK.name: TASK.definition_digest()}))
"""


def test_definition_digests_are_equal_in_every_process_and_follow_the_python_code(tmp_path):
    """A transfer study compares the digests its runs were stored under with ones a later process computes: an
    object's address, a set's order (which PYTHONHASHSEED changes) or a repr would refuse an unchanged task."""
    import subprocess
    import sys

    from engine_helpers import subprocess_env

    (tmp_path / "digest_tasks.py").write_text(DIGEST_MODULE)

    def digests(hash_seed: str) -> dict:
        env = {**subprocess_env(), "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", DIGESTS, str(tmp_path)], env=env, capture_output=True,
                             text=True, check=True)
        return json.loads(out.stdout)

    first = digests("1")
    task_registry.load_builtin_tasks()  # (this process's registry may also hold tasks other tests registered)
    builtin = [name for name in first if name != "digest_py"]
    assert len(builtin) > 30 and {name: first[name] for name in builtin} == {
        name: task_registry.get_task(name).definition_digest() for name in builtin}
    assert digests("2") == first and len(set(first.values())) == len(first)  # and no two tasks alike
    # the generator's and the filter's code (edited under the same names) is part of the definition
    (tmp_path / "digest_tasks.py").write_text(DIGEST_MODULE.replace('== 0', '== 1'))
    edited = digests("1")
    assert edited.pop("digest_py") != first.pop("digest_py") and edited == first


@pytest.mark.parametrize("streaming", [False, True])
def test_a_map_writing_bools_or_text_over_a_class_label_or_large_string_column_keeps_them_as_written(tmp_path,
                                                                                                     streaming):
    # loaded, datasets wrote them in the column's type: a bool over a large_string column as "false" (true in a
    # template's `if`), a bool over a class-label column as 0 or 1, a text as its label's number; streamed rows kept
    # them as written
    features = datasets.Features({"text": datasets.Value("large_string"),
                                  "label": datasets.ClassLabel(names=["no", "yes"])})
    datasets.Dataset.from_dict({"text": ["", "b"], "label": [1, 0]}, features=features).save_to_disk(
        str(tmp_path / "saved"))
    template = Template("t", "{{ 'x' if text else 'empty' }} {{ label }} ||| {{ text }}")
    steps = {"yaml": Map({"text": "text != ''", "label": "['no', 'yes'][label]"}),
             "python": Map(lambda row: {**row, "text": row["text"] != "", "label": ["no", "yes"][row["label"]]})}
    for name, step in steps.items():
        task = Task(f"typed_{name}", LocalFileSource({"train": str(tmp_path / "saved")}), [template],
                    preprocessors=[step], splits=("train",))
        rows = [(row["inputs"], row["targets"]) for row in task.to_dataset("train", streaming=streaming)]
        assert rows == [("empty yes", "False"), ("x no", "True")], name


def _relabelled(row):
    return {"label": 0} if row["label"] == -1 else {}


@pytest.mark.parametrize("streaming", [False, True])
def test_a_python_map_returning_other_fields_on_another_row_is_refused_naming_both_rows(tmp_path, streaming):
    # loaded, datasets took the map's columns from its first row: a field only later rows wrote was dropped without a
    # word (label -1 left for the template to refuse), one the first row wrote and a later row did not was a KeyError
    # naming a column of the map's own; streamed rows each kept their own fields
    path = tmp_path / "rows.jsonl"
    _write(path, [{"sentence": "a", "label": 1}, {"sentence": "b", "label": -1}], "jsonl")
    task = Task("relabelled", LocalFileSource(path), [QUESTION], preprocessors=[Map(_relabelled)], splits=("train",))
    with pytest.raises(task_registry.TaskDefinitionError) as info:
        list(task.to_dataset("train", streaming=streaming))
    assert str(info.value) == (
        "task 'relabelled': split 'train': map(_relabelled), row 1: the function returned the fields ['label'], on row "
        "0 []: return the same fields on every row (the row, edited, or a dict of every field it writes, None for one "
        "with no value)")
    flipped = Task("flipped", LocalFileSource(path), [QUESTION], splits=("train",),
                   preprocessors=[Map(lambda row: {"label": 0} if row["label"] == 1 else {})])
    with pytest.raises(task_registry.TaskDefinitionError, match=r"row 1: .* fields \[\], on row 0 \['label'\]: "):
        list(flipped.to_dataset("train", streaming=streaming))


def test_a_file_that_one_pattern_matches_twice_through_a_link_is_refused_naming_both_paths(tmp_path):
    # a pattern matching a file and a link to it reads the file twice (datasets reads each match); a file and a link
    # to it listed as two paths name the link as the file read again
    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(2):
        (shards / f"train-{i}.jsonl").write_text(json.dumps({"q": f"q{i}"}) + "\n")
    (shards / "link.jsonl").symlink_to(shards / "train-0.jsonl")
    pattern = str(shards / "*.jsonl")
    rows = datasets.load_dataset("json", data_files={"train": pattern}, split="train")
    assert sorted(row["q"] for row in rows) == ["q0", "q0", "q1"]  # (the reference: datasets reads it twice)
    with pytest.raises(DataSourceError) as caught:
        LocalFileSource({"train": pattern}).load("train")
    assert str(caught.value) == (
        f"local files source: split 'train': the file {shards / 'link.jsonl'} (also as {shards / 'train-0.jsonl'}) "
        f"is read twice by {pattern!r}, so its rows would be read twice; list each file once (narrow a pattern, or "
        f"drop a path)")
    listed = [str(shards / "train-0.jsonl"), str(shards / "link.jsonl")]
    with pytest.raises(DataSourceError) as caught:
        LocalFileSource({"train": listed}).load("train")
    assert str(caught.value).endswith(
        f"split 'train': the file {listed[0]} (also as {listed[1]}) is read by both {listed[0]!r} and {listed[1]!r}, "
        f"so its rows would be read twice; list each file once (narrow a pattern, or drop a path)")


def test_a_hub_file_readers_split_is_loaded_though_another_split_reads_a_file_twice(tmp_path):
    # load_dataset reads every split's files, but a file another split reads twice doubles that split's rows alone
    train, validation = tmp_path / "train.jsonl", tmp_path / "validation.jsonl"
    _write(train, ROWS[:2], "jsonl")
    _write(validation, ROWS[2:5], "jsonl")
    source = HFSource("json", data_files={"train": [str(train), str(train)], "validation": str(validation)})
    assert [dict(row) for row in source.load("validation")] == ROWS[2:5]
    with pytest.raises(DataSourceError, match=re.escape(f"split 'train': the file {train} is read by {str(train)!r}")):
        source.load("train")


def test_a_map_field_takes_the_kind_of_all_its_values_numpy_ones_and_unsigned_columns_too():
    # ints and whole floats written together are floats (not the ints pyarrow would store them as in an int column);
    # numpy numbers are typed as datasets types them in a new field (a float32 float32); a field written over an
    # unsigned column is typed by its values; a field written null on every row keeps its column's type
    import numpy as np

    features = datasets.Features({"n": datasets.Value("int64"), "u": datasets.Value("uint8")})
    dataset = datasets.Dataset.from_dict({"n": [1, 4], "u": [1, 4]}, features=features)
    mixed = Map(lambda row: {"n": 2.0 if row["n"] == 1 else 3})(dataset)
    assert (mixed["n"], mixed.features["n"].dtype) == ([2.0, 3.0], "float64")
    halves = Map(lambda row: {"n": np.float32(row["n"] * 2), "u": row["u"] * 2.0})(dataset)
    assert (halves["n"], halves["u"]) == ([2.0, 8.0], [2.0, 8.0])
    assert (halves.features["n"].dtype, halves.features["u"].dtype) == ("float32", "float64")
    nulls = Map(lambda row: {"n": None})(dataset)
    assert (nulls["n"], nulls.features) == ([None, None], features)


def test_a_map_function_of_a_script_read_from_standard_input_maps_its_rows(tmp_path):
    # was: `python - < script.py` (a script piped to python, as over ssh) has a __main__ whose __file__ is '<stdin>',
    # and Map(fn) of a function defined in it raised FileNotFoundError: '<stdin>' hashing its source for the cache key
    import os
    import subprocess
    import sys

    script = ("import datasets\nfrom task_registry import Map\n"
              "rows = datasets.Dataset.from_dict({'x': ['a', 'b']})\n"
              "print(list(Map(lambda row: {'x': row['x'].upper()})(rows)['x']))\n")
    done = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf")})
    assert (done.returncode, done.stdout) == (0, "['A', 'B']\n"), done.stderr[-2000:]


def test_a_saved_split_folder_is_offered_for_one_task_split_alone_and_test_never_for_train_or_validation():
    from task_registry.data_paths import split_folders

    # 'train_small' is close to 'training' too, which 'train' reads: two splits read from one folder is no offer
    assert split_folders("saved", ["train", "train_small"], ["training"]) == {"train": "saved/training"}
    assert split_folders("saved/", ["train", "validation"], ["trn", "val", "test"]) == {"train": "saved/trn",
                                                                                       "validation": "saved/val"}
    assert split_folders("saved", ["train", "validation"], ["test"]) == {}


@pytest.mark.parametrize("reader", ["files", "json"])
def test_a_path_a_split_lists_twice_is_named_as_listed_twice(tmp_path, reader):
    # was: "is read by both 'x' and 'x'", the one path named twice as if two
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"q": "q0"}) + "\n")
    assert _train_split_refusal(reader, [str(train), str(train)]).endswith(
        f"split 'train': the file {train} is read by {str(train)!r}, listed twice, so its rows would be read twice; "
        f"list each file once (narrow a pattern, or drop a path)")


def test_a_code_digest_hashes_the_module_file_alone_where_the_module_has_one(tmp_path, monkeypatch):
    # kills a mutant of code_digest that its tests let live: the module's source taken where its path exists rather
    # than where it is a file (a function of `python -c`, or of a module without __file__, read the working folder:
    # IsADirectoryError); the stdin test's '<stdin>' exists nowhere
    import hashlib
    import types

    from task_registry.code_digests import code_digest

    monkeypatch.chdir(tmp_path)  # ('' and '.' name a folder that exists)
    source = tmp_path / "scripted.py"
    source.write_text("def fn(row):\n    return row\n")
    for file, expected in ((None, ""), ("<stdin>", ""), (str(tmp_path), ""),
                           (str(source), hashlib.sha256(b"scripted.py\0" + source.read_bytes() + b"\0").hexdigest())):
        module = types.ModuleType("scripted_fn_module")
        if file is not None:
            module.__file__ = file
        monkeypatch.setitem(__import__("sys").modules, module.__name__, module)

        def fn(row):
            return row
        fn.__module__ = module.__name__
        assert code_digest(fn) == expected[:16], file


def test_one_file_listed_twice_as_a_path_and_as_text_is_named_as_listed_twice(tmp_path):
    # kills a mutant of read_twice that its tests let live (their paths were all text): a Path and the same path
    # as text compared as objects, named "by both 'F' and 'F'" as if two paths
    from task_registry.data_paths import read_twice

    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"q": "q0"}) + "\n")
    assert read_twice([train, str(train)]) == (
        f"the file {train} is read by {str(train)!r}, listed twice, so its rows would be read twice; list each file "
        f"once (narrow a pattern, or drop a path)")


def test_a_map_writing_over_a_column_keeps_the_columns_in_their_order():
    # kills a mutant of map_types.written_back that its tests let live: the fields written over columns moved to
    # the end (their names apart came last in the mapped dataset), so the columns' order changed with the map
    dataset = datasets.Dataset.from_dict({"a": [1, 2], "b": ["x", "y"], "c": [0.5, 1.5]})
    mapped = Map(lambda row: {"a": row["a"] * 2, "b": row["b"].upper()})(dataset)
    assert mapped.column_names == ["a", "b", "c"]
    assert mapped.to_list() == [{"a": 2, "b": "X", "c": 0.5}, {"a": 4, "b": "Y", "c": 1.5}]


@pytest.mark.parametrize("max_words", [None, 3])
def test_a_span_corruption_edited_between_runs_gives_its_new_rows(edited_module, tmp_path, max_words):
    # was: SpanCorruption's map was keyed by datasets' hash of the step's settings alone, which names its class and
    # methods but not their code, so a corruption changed since the cache was written (a subclass edited, or the
    # built-in one after an upgrade, as when chunked rows stopped keeping the old column) came from the old cache
    _write(tmp_path / "rows.jsonl", [{"text": f"row {i} has five words"} for i in range(3)], "jsonl")

    def inputs_of(marker):
        module = edited_module("from task_registry.span_corruption import SpanCorruption\n\n\n"
                               "class Marked(SpanCorruption):\n    def corrupt(self, text):\n"
                               "        corrupted, spans = super().corrupt(text)\n"
                               f"        return '{marker} ' + corrupted, spans\n")
        task = Task("edited_corruption", LocalFileSource(tmp_path / "rows.jsonl"),
                    [Template("t", "{{corrupted}} ||| {{spans}}")],
                    preprocessors=[module.Marked("text", max_words=max_words)], splits=("train",))
        return [text.split()[0] for text in task.to_dataset("train")["inputs"]]

    assert inputs_of("old") == ["old"] * (3 if max_words is None else 6)
    assert inputs_of("new") == ["new"] * (3 if max_words is None else 6)
    assert inputs_of("old") == ["old"] * (3 if max_words is None else 6)


def _swapped(row):
    """label on the first row, sentence on the second."""
    return {"label": 0} if row["label"] == 1 else {"sentence": "c"}


def _mapped_targets(tmp_path, fn, streaming: bool) -> list:
    """The targets of QUESTION over two rows (label 1, then -1) mapped by `fn`."""
    path = tmp_path / "rows.jsonl"
    _write(path, [{"sentence": "a", "label": 1}, {"sentence": "b", "label": -1}], "jsonl")
    task = Task("mapped", LocalFileSource(path), [QUESTION], preprocessors=[Map(fn)], splits=("train",))
    return [row["targets"] for row in task.to_dataset("train", streaming=streaming)]


@pytest.mark.parametrize("streaming", [False, True])
def test_a_python_map_returning_as_many_other_fields_on_another_row_is_refused_naming_both(tmp_path, streaming):
    # kills a mutant of Map._same_fields that its tests let live (the fields counted, not named): a row writing
    # sentence where the first wrote label passed, loaded to a KeyError of the map's own renamed column
    with pytest.raises(task_registry.TaskDefinitionError) as info:
        _mapped_targets(tmp_path, _swapped, streaming)
    assert str(info.value) == (
        "task 'mapped': split 'train': map(_swapped), row 1: the function returned the fields ['sentence'], on row 0 "
        "['label']: return the same fields on every row (the row, edited, or a dict of every field it writes, None "
        "for one with no value)")
    reordered = _mapped_targets(  # (the same fields in another order: taken)
        tmp_path, lambda row: {"label": 0, "sentence": "x"} if row["label"] == 1 else {"sentence": "y", "label": 1},
        streaming)
    assert reordered == ["no", "yes"]


def _corrupted_inputs(path, *preprocessors) -> list:
    """The inputs of a task over `path` corrupted by its `preprocessors` (the last a SpanCorruption)."""
    task = Task("corrupted", LocalFileSource(path), [Template("t", "{{corrupted}} ||| {{spans}}")],
                preprocessors=list(preprocessors), splits=("train",))
    return list(task.to_dataset("train")["inputs"])


def test_a_span_corruption_of_other_settings_or_other_rows_is_not_served_the_cached_rows_of_another(tmp_path):
    # kills 2 mutants of SpanCorruption._fingerprint the tests let live: its settings, or its input's fingerprint,
    # left out of the map's fingerprint, so the second corruption read the first's cache file (seed 1's rows for
    # seed 2; the rows the filter kept for the rows of the file)
    from task_registry.span_corruption import SpanCorruption

    texts = [f"row {i} has ten words to be corrupted in spans {i}" for i in range(4)]
    _write(tmp_path / "rows.jsonl", [{"text": text} for text in texts], "jsonl")

    def expected(seed, kept=texts):
        return [SpanCorruption("text", noise_density=0.5, seed=seed).corrupt(text)[0] for text in kept]

    assert expected(1) != expected(2)
    for seed in (1, 2):
        assert _corrupted_inputs(tmp_path / "rows.jsonl", SpanCorruption("text", noise_density=0.5, seed=seed)) == (
            expected(seed))
    kept = Filter("'0' not in text")
    assert _corrupted_inputs(tmp_path / "rows.jsonl", kept, SpanCorruption("text", noise_density=0.5, seed=1)) == (
        expected(1, texts[1:]))


def test_a_span_corruption_subclasss_cached_rows_are_keyed_by_the_code_of_each_class_it_derives_from(monkeypatch):
    # kills a mutant of SpanCorruption._fingerprint the tests let live: the code of the step's own class alone, so a
    # subclass whose base (the built-in corruption, after an upgrade) changed was served the rows of the old base
    from task_registry import span_corruption

    class Marked(span_corruption.SpanCorruption):
        pass

    digests = {span_corruption.SpanCorruption: "base v1", Marked: "marked"}
    monkeypatch.setattr(span_corruption, "code_digest", lambda kind: digests[kind])
    dataset = datasets.Dataset.from_dict({"text": ["one two three four"]})
    before = Marked("text")(dataset)._fingerprint
    digests[span_corruption.SpanCorruption] = "base v2"
    assert Marked("text")(dataset)._fingerprint != before
    digests[span_corruption.SpanCorruption] = "base v1"
    assert Marked("text")(dataset)._fingerprint == before
