"""t2t_mtl.data: per-task tokenized streams (cached one by one, truncation counted), the padding collator,
and the batch builder (sampler picks tasks, TaskStreams rows; length bucketing; resumable state)."""
from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest

from t2t_mtl.data import BatchBuilder, DataPipelineError, Seq2SeqCollator, TokenizedTask, count_tokens, tokenize_task
from t2t_mtl.data.batches import waiting_rows
from t2t_mtl.sampling import TaskStreams, build_sampler

from engine_helpers import train_tiny_tokenizer


def synthetic_task(name: str, n: int, seed: int) -> TokenizedTask:
    rng = np.random.default_rng(seed)
    ins = [list(rng.integers(3, 50, size=int(rng.integers(2, 30)))) + [1] for _ in range(n)]
    labs = [list(rng.integers(3, 50, size=int(rng.integers(1, 10)))) + [1] for _ in range(n)]
    ds = datasets.Dataset.from_dict({"input_ids": ins, "labels": labs})
    return TokenizedTask(name, "train", ds, np.array([len(x) for x in ins]), np.array([len(y) for y in labs]), 0)


@pytest.fixture(scope="module")
def streams():
    return {"a": synthetic_task("a", 97, 0), "b": synthetic_task("b", 41, 1), "c": synthetic_task("c", 60, 2)}


def make_builder(streams, *, mode="homogeneous", bucket=1, mb=4, padding="longest"):
    sizes = {k: len(v) for k, v in streams.items()}
    sampler = build_sampler({"strategy": "uniform", "mode": mode}, sizes, seed=3)
    ts = TaskStreams(sizes, seed=3)
    collator = Seq2SeqCollator(0, max_input_length=32, max_target_length=12, padding=padding, pad_to_multiple_of=1)
    return BatchBuilder(streams, sampler, ts, collator, micro_batch_size=mb, mode=mode, bucket_batches=bucket, seed=5)


def test_collator_pads_like_a_hand_built_batch():
    col = Seq2SeqCollator(0, max_input_length=10, max_target_length=6, pad_to_multiple_of=4)
    batch = col([[5, 6, 1], [7, 1]], [[9, 1], [8, 8, 8, 1]], [2, 0])
    assert batch["input_ids"].tolist() == [[5, 6, 1, 0], [7, 1, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[9, 1, -100, -100], [8, 8, 8, 1]]
    assert batch["task_ids"].tolist() == [2, 0]
    assert count_tokens(batch) == 5 + 6
    naive = Seq2SeqCollator(0, max_input_length=10, max_target_length=6, padding="max_length")(
        [[5, 6, 1]], [[9, 1]], [0])
    assert naive["input_ids"].shape == (1, 10) and naive["labels"].shape == (1, 6)
    # rounding up stops at the configured maximum (9 -> 10, not 12), and a row longer than it keeps every token
    capped = col([[3] * 9], [[4] * 5], [0])
    assert capped["input_ids"].shape == (1, 10) and capped["labels"].shape == (1, 6)
    longer = col([[3] * 11, [5, 1]], [[4] * 7, [9, 1]], [0, 0])
    assert longer["input_ids"].shape == (2, 11) and longer["labels"].shape == (2, 7)
    assert longer["input_ids"][0].tolist() == [3] * 11 and longer["attention_mask"][1].tolist() == [1, 1] + [0] * 9


@pytest.mark.parametrize("padding", ["longest", "max_length"])
def test_collator_matches_padding_each_row_by_hand_on_random_rows(padding):
    import random

    rng = random.Random(3)
    inputs = [[rng.randrange(1, 400) for _ in range(rng.randint(0, 30))] for _ in range(37)]
    labels = [[rng.randrange(1, 400) for _ in range(rng.randint(1, 12))] for _ in range(37)]
    tasks = [rng.randrange(5) for _ in range(37)]
    batch = Seq2SeqCollator(7, max_input_length=30, max_target_length=12, padding=padding)(inputs, labels, tasks)
    in_w = 30 if padding == "max_length" else min(-(-max(map(len, inputs)) // 8) * 8, 30)  # rounded up, capped
    tgt_w = 12 if padding == "max_length" else min(-(-max(map(len, labels)) // 8) * 8, 12)
    assert batch["input_ids"].tolist() == [x + [7] * (in_w - len(x)) for x in inputs]
    assert batch["attention_mask"].tolist() == [[1] * len(x) + [0] * (in_w - len(x)) for x in inputs]
    assert batch["labels"].tolist() == [y + [-100] * (tgt_w - len(y)) for y in labels]
    assert batch["task_ids"].tolist() == tasks
    assert all(str(batch[key].dtype) == "torch.int64" for key in batch)


def test_collator_pads_inputs_with_its_pad_id():
    batch = Seq2SeqCollator(3, max_input_length=8, max_target_length=4, pad_to_multiple_of=1)(
        [[5, 1], [6, 6, 1]], [[7, 1], [8, 8, 1]], [0, 0])
    assert batch["input_ids"].tolist() == [[5, 1, 3], [6, 6, 1]]
    assert batch["labels"].tolist() == [[7, 1, -100], [8, 8, 1]]


def test_homogeneous_batches_follow_sampler_and_streams(streams):
    builder = make_builder(streams)
    sizes = {k: len(v) for k, v in streams.items()}
    ref_sampler = build_sampler({"strategy": "uniform"}, sizes, seed=3)
    ref_streams = TaskStreams(sizes, seed=3)
    for _ in range(40):
        chunk = builder.next_chunk()
        task = ref_sampler.next_task()
        assert {t for t, _ in chunk} == {task}
        assert [i for _, i in chunk] == ref_streams.next_indices(task, 4)
    batch = builder.collate([("b", 3), ("b", 7)])
    rows = streams["b"].dataset[[3, 7]]
    assert batch["input_ids"][0, : len(rows["input_ids"][0])].tolist() == rows["input_ids"][0]
    assert batch["labels"][1, : len(rows["labels"][1])].tolist() == rows["labels"][1]
    assert batch["task_ids"].tolist() == [1, 1]


def test_bucketing_serves_the_same_rows_with_less_padding(streams):
    plain, bucketed = make_builder(streams), make_builder(streams, bucket=8)
    sizes = {k: len(v) for k, v in streams.items()}
    ref_streams = TaskStreams(sizes, seed=3)
    pad_plain = pad_bucket = 0
    served = {t: [] for t in streams}
    for _ in range(48):
        b1, chunk = plain.next_batch(), bucketed.next_chunk()
        b2 = bucketed.collate(chunk)
        served[chunk[0][0]] += [i for _, i in chunk]
        pad_plain += b1["input_ids"].numel() + b1["labels"].numel() - count_tokens(b1)
        pad_bucket += b2["input_ids"].numel() + b2["labels"].numel() - count_tokens(b2)
    assert pad_bucket < 0.7 * pad_plain
    for task, rows in served.items():  # whole buckets: exactly the stream's first rows, reordered
        n_full = (len(rows) // 32) * 32
        assert sorted(rows[:n_full]) == sorted(ref_streams.next_indices(task, n_full))


def test_bucketing_a_task_smaller_than_the_draw_keeps_each_micro_batch_distinct():
    # was: a draw of 8 micro-batches of 4 from a 16-row task holds every row twice, and sorted by length alone
    # the two copies sat side by side, so micro-batches held one example twice (unbucketed: 4 distinct rows)
    small = {"s": synthetic_task("s", 16, 4)}
    builder = make_builder(small, bucket=8)
    served = []
    for _ in range(40):
        chunk = builder.next_chunk()
        assert len(set(chunk)) == len(chunk) == 4
        served += [i for _, i in chunk]
    assert sorted(served) == sorted(list(range(16)) * 10)


def test_mixed_batches_draw_one_task_per_example(streams):
    builder = make_builder(streams, mode="mixed", mb=6)
    sizes = {k: len(v) for k, v in streams.items()}
    ref = build_sampler({"strategy": "uniform", "mode": "mixed"}, sizes, seed=3)
    for _ in range(10):
        chunk = builder.next_chunk()
        assert [t for t, _ in chunk] == ref.sample_tasks(6)
        batch = builder.collate(chunk)
        assert batch["task_ids"].tolist() == [builder.task_to_id[t] for t, _ in chunk]


@pytest.mark.parametrize("mode", ["homogeneous", "mixed"])
def test_state_dict_continues_identically(streams, mode):
    a = make_builder(streams, mode=mode, bucket=4)
    for _ in range(13):
        a.next_chunk()
    state = (a.state_dict(), a.sampler.state_dict(), a.task_streams.state_dict())
    expected = [a.next_chunk() for _ in range(20)]
    b = make_builder(streams, mode=mode, bucket=4)
    b.load_state_dict(state[0])
    b.sampler.load_state_dict(state[1])
    b.task_streams.load_state_dict(state[2])
    assert [b.next_chunk() for _ in range(20)] == expected



def test_a_state_saved_before_packing_kept_waiting_rows_continues_identically(streams):
    # a checkpoint of an earlier version holds no "leftover" key (nothing waited to be packed then)
    a = make_builder(streams, bucket=4)
    for _ in range(5):
        a.next_chunk()
    state = {key: value for key, value in a.state_dict().items() if key != "leftover"}
    sampler, task_streams = a.sampler.state_dict(), a.task_streams.state_dict()
    expected = [a.next_chunk() for _ in range(12)]
    b = make_builder(streams, bucket=4)
    b.load_state_dict(state)
    b.sampler.load_state_dict(sampler)
    b.task_streams.load_state_dict(task_streams)
    assert [b.next_chunk() for _ in range(12)] == expected


def test_an_unknown_sampling_mode_is_refused_by_name(streams):
    # any other word would draw a task per example, as "mixed" does, without a word said
    builder = make_builder(streams, mode="mixed")
    with pytest.raises(ValueError, match="sampling.mode must be 'homogeneous' or 'mixed', got 'mix'"):
        BatchBuilder(streams, builder.sampler, builder.task_streams, builder.collator, micro_batch_size=4, mode="mix")


@pytest.mark.parametrize("mode", ["homogeneous", "mixed"])
def test_a_resume_with_a_smaller_micro_batch_cuts_the_saved_micro_batches(streams, mode):
    a = make_builder(streams, mode=mode, bucket=4, mb=8)
    served = [pair for _ in range(5) for pair in a.next_chunk()]
    assert any(a.pending.values())  # bucketed micro-batches of 8 wait in the state
    b = make_builder(streams, mode=mode, bucket=4, mb=2)
    b.load_state_dict(a.state_dict())
    b.sampler.load_state_dict(a.sampler.state_dict())
    b.task_streams.load_state_dict(a.task_streams.state_dict())
    for _ in range(60):
        chunk = b.next_chunk()
        assert len(chunk) <= 2
        served += chunk
    waiting = [pair for queue in b.pending.values() for chunk in queue for pair in chunk]
    reference = TaskStreams({k: len(v) for k, v in streams.items()}, seed=3)
    for task in streams:  # nothing lost or repeated across the change
        rows = [i for t, i in served + waiting if t == task]
        assert sorted(rows) == sorted(reference.next_indices(task, len(rows)))



@pytest.mark.parametrize("saved_mode, mode", [("homogeneous", "mixed"), ("mixed", "homogeneous")])
def test_a_resume_with_another_sampling_mode_serves_the_saved_micro_batches(streams, saved_mode, mode):
    # was: the saved micro-batches were keyed by task (homogeneous) or "*" (mixed), and a run resumed with the
    # other sampling.mode never asked for those keys: their rows, drawn from the streams, were never trained
    a = make_builder(streams, mode=saved_mode, bucket=4)
    served = [pair for _ in range(5) for pair in a.next_chunk()]
    assert any(a.pending.values())
    b = make_builder(streams, mode=mode, bucket=4)
    b.load_state_dict(a.state_dict())
    b.task_streams.load_state_dict(a.task_streams.state_dict())
    saved = sorted(pair for queue in a.pending.values() for chunk in queue for pair in chunk)
    for _ in range(60):
        chunk = b.next_chunk()
        assert mode == "mixed" or len({t for t, _ in chunk}) == 1  # a homogeneous micro-batch holds one task
        served += chunk
    assert set(saved) <= set(served)
    waiting = [pair for queue in b.pending.values() for chunk in queue for pair in chunk]
    reference = TaskStreams({k: len(v) for k, v in streams.items()}, seed=3)
    for task in streams:  # nothing lost or repeated across the change
        rows = [i for t, i in served + waiting if t == task]
        assert sorted(rows) == sorted(reference.next_indices(task, len(rows)))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from t2t_mtl.tokenizer import load_tokenizer

    return load_tokenizer(str(train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")))


def test_tokenize_task_caches_per_task_and_counts_truncation(tokenizer, tmp_path):
    import task_registry

    task_registry.load_builtin_tasks()
    task = task_registry.get_task("reverse_words")
    stream = tokenize_task(task, tokenizer, split="train", max_input_length=8, max_target_length=64,
                           cache_dir=tmp_path, max_examples=40)
    rendered = task.to_dataset("train", max_examples=40)
    ids = [tokenizer(x, add_special_tokens=False)["input_ids"] for x in rendered["inputs"]]
    tgt = [tokenizer(y, add_special_tokens=False)["input_ids"] for y in rendered["targets"]]
    assert stream.truncated == sum(len(x) + 1 > 8 for x in ids) > 0
    assert stream.dataset["input_ids"] == [x[:7] + [tokenizer.eos_token_id] for x in ids]
    assert stream.dataset["labels"] == [y + [tokenizer.eos_token_id] for y in tgt]
    assert stream.input_lengths.tolist() == [min(len(x) + 1, 8) for x in ids]
    files = sorted((tmp_path / "reverse_words").glob("train-*.arrow"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    again = tokenize_task(task, tokenizer, split="train", max_input_length=8, max_target_length=64,
                          cache_dir=tmp_path, max_examples=40)
    assert files[0].stat().st_mtime_ns == mtime  # loaded, not rewritten
    assert again.dataset.cache_files[0]["filename"] == str(files[0])
    longer = tokenize_task(task, tokenizer, split="train", max_input_length=16, max_target_length=64,
                           cache_dir=tmp_path, max_examples=40)
    assert len(sorted((tmp_path / "reverse_words").glob("train-*.arrow"))) == 2  # new limits, new cache file
    assert longer.truncated < stream.truncated
    # another target limit, or other rendered rows (here 30 of them, not 40), each get their own file too
    tokenize_task(task, tokenizer, split="train", max_input_length=8, max_target_length=32, cache_dir=tmp_path,
                  max_examples=40)
    fewer = tokenize_task(task, tokenizer, split="train", max_input_length=8, max_target_length=64,
                          cache_dir=tmp_path, max_examples=30)
    assert len(sorted((tmp_path / "reverse_words").glob("train-*.arrow"))) == 4
    assert fewer.dataset["input_ids"] == stream.dataset["input_ids"][:30]


def test_the_same_tokenizer_from_another_folder_reuses_the_cache_and_another_one_does_not(tokenizer, tmp_path):
    # was: the key held the folder the tokenizer was loaded from, so a resume (which reads the run's own copy in
    # <run>/tokenizer, not tokenizer.path) tokenized every task again, and runs never shared data.cache_dir
    import task_registry
    from t2t_mtl.tokenizer import load_tokenizer, train_tokenizer

    task_registry.load_builtin_tasks()
    task = task_registry.get_task("reverse_words")
    settings = dict(split="train", max_input_length=16, max_target_length=16, cache_dir=tmp_path / "cache",
                    max_examples=20)
    first = tokenize_task(task, tokenizer, **settings)
    tokenizer.save_pretrained(str(tmp_path / "copy"))
    copy = load_tokenizer(tmp_path / "copy")
    assert copy.name_or_path != tokenizer.name_or_path
    again = tokenize_task(task, copy, **settings)
    assert again.dataset.cache_files[0]["filename"] == first.dataset.cache_files[0]["filename"]
    # a tokenizer of the same size trained on other text tokenizes differently: never the same cache file
    texts = [" ".join(reversed(x.split())).upper() for x in task.to_dataset("train", max_examples=64)["inputs"]]
    other = train_tokenizer(texts, tmp_path / "other", vocab_size=128)
    third = tokenize_task(task, other, **settings)
    assert third.dataset.cache_files[0]["filename"] != first.dataset.cache_files[0]["filename"]
    assert third.dataset["input_ids"] == [other(x, add_special_tokens=False)["input_ids"][:15] + [1]
                                          for x in task.to_dataset("train", max_examples=20)["inputs"]]


def _cached_reverse_words(tokenizer, cache_dir: Path) -> tuple:
    """(task, tokenize_task settings, its cache file) of reverse_words' first 20 train rows tokenized into
    `cache_dir`."""
    import task_registry

    task_registry.load_builtin_tasks()
    task = task_registry.get_task("reverse_words")
    settings = dict(split="train", max_input_length=16, max_target_length=16, cache_dir=cache_dir, max_examples=20)
    tokenize_task(task, tokenizer, **settings)
    [file] = (cache_dir / "reverse_words").glob("train-*.arrow")
    return task, settings, file


@pytest.mark.parametrize("damage", ["truncated", "empty", "not arrow"])
def test_a_damaged_cache_file_is_tokenized_again_with_a_warning_naming_it(tokenizer, tmp_path, caplog, damage):
    # was: a cache file cut short (a crash or a full disk while copying a cache, a partial rsync) made every later
    # run fail deep inside datasets with a bare pyarrow error naming neither the file nor the task
    task, settings, file = _cached_reverse_words(tokenizer, tmp_path)
    data = file.read_bytes()
    file.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "not arrow": b"input_ids\n" * 50}[damage])
    with caplog.at_level("WARNING", logger="t2t_mtl.tokenized_cache"):
        again = tokenize_task(task, tokenizer, **settings)
    assert str(file) in caplog.text and "damaged" in caplog.text
    inputs = task.to_dataset("train", max_examples=20)["inputs"]
    assert again.dataset["input_ids"] == [tokenizer(x, add_special_tokens=False)["input_ids"][:15] + [1]
                                          for x in inputs]
    assert file.read_bytes() == data  # built again, whole


def test_a_damaged_cache_file_another_process_removed_first_is_tokenized_again(tokenizer, tmp_path, monkeypatch):
    # ranks sharing data.cache_dir each find the damaged file; the first to remove it must not fail the others
    task, settings, file = _cached_reverse_words(tokenizer, tmp_path)
    real = datasets.Dataset.from_file

    def damaged_and_gone(filename, *args, **kwargs):
        if filename != str(file):  # (datasets reads its own caches this way too)
            return real(filename, *args, **kwargs)
        monkeypatch.setattr(datasets.Dataset, "from_file", real)
        file.unlink()  # another rank removed it between this rank's read and its removal
        raise OSError("Expected to be able to read 7216 bytes for message body, got 3188")

    monkeypatch.setattr(datasets.Dataset, "from_file", staticmethod(damaged_and_gone))
    again = tokenize_task(task, tokenizer, **settings)
    inputs = task.to_dataset("train", max_examples=20)["inputs"]
    assert again.dataset["input_ids"] == [tokenizer(x, add_special_tokens=False)["input_ids"][:15] + [1]
                                          for x in inputs]
    assert file.is_file()


def _unanswered_rows(split, num_rows, seed):
    yield from ({"x": f"question {k}", "y": ""} for k in range(num_rows))


def test_a_split_with_no_examples_is_refused_naming_the_task_and_split(tokenizer):
    from task_registry import GeneratorSource, Task, Template

    # every row's target is empty, so rendering skips them all
    task = Task("no_rows", GeneratorSource(_unanswered_rows, num_rows=3), [Template("xy", "{{x}} ||| {{y}}")])
    with pytest.raises(DataPipelineError, match=r"task 'no_rows' has no 'train' examples after rendering; .*"
                                                r"tasks preview no_rows --split train"):
        tokenize_task(task, tokenizer, split="train", max_input_length=8, max_target_length=8, cache_dir=None)


def _numbered_rows(split, num_rows, seed):
    yield from ({"x": f"one {'two ' * k}three", "y": "four " * (k % 3 + 1)} for k in range(num_rows))


def test_build_task_streams_tokenizes_the_templates_examples_and_seed_it_is_given(tokenizer):
    import task_registry
    from task_registry import GeneratorSource, Task, Template
    from t2t_mtl.data import build_task_streams

    task = Task("numbered", GeneratorSource(_numbered_rows, num_rows=12),
                [Template("short", "{{x}} ||| {{y}}"), Template("long", "say {{x}} ||| {{y}}")])
    eos = tokenizer.eos_token_id

    def expected(**render):
        return [tokenizer(x, add_special_tokens=False)["input_ids"] + [eos]
                for x in task.to_dataset("train", **render)["inputs"]]

    settings = dict(split="train", max_input_length=64, max_target_length=16, cache_dir=None, max_examples=8)
    with task_registry.isolated_registry():
        task_registry.register_task(task)
        only_long = build_task_streams(["numbered"], tokenizer, templates=["long"], **settings)["numbered"]
        seeded = build_task_streams(["numbered"], tokenizer, seed=7, **settings)["numbered"]
    assert len(only_long) == len(seeded) == 8
    assert only_long.dataset["input_ids"] == expected(templates=["long"], max_examples=8)
    assert expected(seed=7, max_examples=8) != expected(seed=0, max_examples=8)  # (the seed picks the templates)
    assert seeded.dataset["input_ids"] == expected(seed=7, max_examples=8)


def test_a_damaged_cache_file_that_cannot_be_removed_is_refused_naming_it(tokenizer, tmp_path, monkeypatch):
    import pathlib
    import re

    task, settings, file = _cached_reverse_words(tokenizer, tmp_path)
    file.write_bytes(file.read_bytes()[:100])

    def refusing(self, missing_ok=False):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(pathlib.Path, "unlink", refusing)  # as in a shared cache folder the user may only read
    expected = rf"'reverse_words'.*{re.escape(str(file))}.*damaged.*cannot be removed.*data\.cache_dir"
    with pytest.raises(DataPipelineError, match=expected):
        tokenize_task(task, tokenizer, **settings)


def test_task_tokens_added_for_a_new_task_keep_the_other_tasks_caches(tmp_path):
    # was: with model.task_embeddings every <task:NAME> token is in the tokenizer that keys the caches, so adding a
    # task to the mixture tokenized every task again, though the streams never hold a task token (the collator
    # puts its id in front)
    import task_registry
    from t2t_mtl.analysis.task_embeddings import TaskTokens
    from t2t_mtl.data import build_task_streams
    from t2t_mtl.tokenizer import load_tokenizer

    task_registry.load_builtin_tasks()
    tokenizer = load_tokenizer(train_tiny_tokenizer(tmp_path / "tok"))
    settings = dict(split="train", max_input_length=16, max_target_length=16, cache_dir=tmp_path / "cache",
                    max_examples=20)
    TaskTokens(tokenizer, ["reverse_words"])
    first = build_task_streams(["reverse_words"], tokenizer, **settings)["reverse_words"]
    TaskTokens(tokenizer, ["reverse_words", "parity"])
    again = build_task_streams(["reverse_words", "parity"], tokenizer, **settings)["reverse_words"]
    assert again.dataset.cache_files[0]["filename"] == first.dataset.cache_files[0]["filename"]
    assert again.dataset["input_ids"] == first.dataset["input_ids"]


def _hand_rows(split, num_rows, seed):
    # T5 token counts with EOS: "Hello" 2, "Hello world" 3, "Hello world Hello" 4
    yield from [{"x": "Hello world", "y": "Hello world"}, {"x": "Hello world Hello", "y": "Hello"},
                {"x": "Hello", "y": "Hello"}][:num_rows]


def test_tokenize_task_counts_rows_with_either_side_truncated(t5_tokenizer_dir, caplog):
    from t2t_mtl.tokenizer import load_tokenizer
    from task_registry import GeneratorSource, Task, Template

    tokenizer = load_tokenizer(t5_tokenizer_dir)
    task = Task("hand_rows", GeneratorSource(_hand_rows, num_rows=3), [Template("xy", "{{x}} ||| {{y}}")])
    stream = tokenize_task(task, tokenizer, split="train", max_input_length=3, max_target_length=2, cache_dir=None)
    assert stream.truncated == 2  # row 0 (target 3 > 2) and row 1 (input 4 > 3); row 2 fits
    assert stream.input_lengths.tolist() == [3, 3, 2] and stream.target_lengths.tolist() == [2, 2, 2]
    assert stream.dataset.column_names == ["input_ids", "labels"]
    assert stream.dataset["input_ids"] == [[8774, 296, 1], [8774, 296, 1], [8774, 1]]
    # the config keys that set the limits, and what to do (was: bare max_input_length=3, and no way on)
    assert ("task hand_rows/train: 2 of 3 examples truncated (1 inputs to data.max_input_length=3, 1 targets to "
            "data.max_target_length=2): training sees their beginning only; raise those limits to keep them whole "
            "(`t2t-mtl tasks preview hand_rows --tokenizer RUN/tokenizer` shows lengths in tokens)") in caplog.text


def _rows_with_special_text(split, num_rows, seed):
    return [{"x": "strike <s>this</s> out", "y": "ok"}, {"x": "plain", "y": "a <pad> b"}, {"x": "fine", "y": "yes"}]


def test_rendered_text_holding_a_special_tokens_literal_is_warned_about_by_task_and_count(t5_tokenizer_dir, caplog):
    # was: a literal "</s>" (HTML strike-through) or "<pad>" in a row became the EOS / pad id without a word (an EOS
    # in a target ends the answer there); T5's SentencePiece pipeline spells such text out
    from t2t_mtl.tokenizer import load_tokenizer
    from task_registry import GeneratorSource, Task, Template

    tokenizer = load_tokenizer(t5_tokenizer_dir)
    task = Task("html_rows", GeneratorSource(_rows_with_special_text, num_rows=3), [Template("xy", "{{x}} ||| {{y}}")])
    stream = tokenize_task(task, tokenizer, split="train", max_input_length=32, max_target_length=8, cache_dir=None)
    assert stream.dataset["input_ids"][0].count(tokenizer.eos_token_id) == 2  # (what the warning is about)
    assert "task html_rows/train: 1 / 1 of 3 examples hold the text '</s>' / '<pad>'" in caplog.text


def _rows_with_unknown_characters(split, num_rows, seed):
    return [{"x": "what is {x}?", "y": "<<2>> 2"}, {"x": "plain", "y": "text"}, {"x": "a {b}", "y": "fine"}]


def test_text_the_tokenizer_has_no_token_for_is_warned_about_by_task_and_count(t5_tokenizer_dir, caplog):
    # was: T5's vocabulary has no '{' nor '<' (a GSM8K target's '<<48/2=24>>'), and such text trained as <unk>, the
    # targets' <unk> learned and dropped by generation, without a word
    from t2t_mtl.tokenizer import load_tokenizer
    from task_registry import GeneratorSource, Task, Template

    tokenizer = load_tokenizer(t5_tokenizer_dir)
    task = Task("brace_rows", GeneratorSource(_rows_with_unknown_characters, num_rows=3),
                [Template("xy", "{{x}} ||| {{y}}")])
    stream = tokenize_task(task, tokenizer, split="train", max_input_length=32, max_target_length=8, cache_dir=None)
    unk = tokenizer.unk_token_id
    assert [unk in ids for ids in stream.dataset["input_ids"]] == [True, False, True]
    assert [unk in ids for ids in stream.dataset["labels"]] == [True, False, False]
    assert ("task brace_rows/train: 2 of 3 inputs and 1 targets hold text the tokenizer has no token for, read as "
            "<unk>: the model never sees that text, and learns to write <unk> where a target holds it, which "
            "generation drops; `t2t-mtl tasks preview brace_rows --tokenizer RUN/tokenizer` shows such examples as "
            "tokenized") in caplog.text
    caplog.clear()
    plain = Task("plain_rows", GeneratorSource(_rows_with_special_text, num_rows=3), [Template("y", "{{y}} ||| ok")])
    tokenize_task(plain, tokenizer, split="train", max_input_length=32, max_target_length=8, cache_dir=None)
    assert "has no token for" not in caplog.text


def _sentences(split, num_rows, seed):
    return [{"text": f"the quick brown fox {i} jumps over the lazy dog"} for i in range(num_rows)]


def test_sentinels_the_tokenizer_splits_into_pieces_are_warned_about_by_task_and_count(t5_tokenizer_dir, caplog):
    # was: span corruption's <extra_id_N> became a dozen byte-level pieces each (a BPE without T5's sentinels), in the
    # inputs and in the targets the model learns to write, without a word
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from t2t_mtl.tokenizer import load_tokenizer
    from task_registry import GeneratorSource, Task, Template
    from task_registry.span_corruption import SpanCorruption

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.train_from_iterator([r["text"] for r in _sentences("train", 4, 0)], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    bpe = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    pieces = backend.encode("<extra_id_0>", add_special_tokens=False).tokens
    assert len(pieces) == 12  # byte-level: one piece per character
    task = Task("denoise_rows", GeneratorSource(_sentences, num_rows=4),
                [Template("sc", "{{corrupted}} ||| {{spans}}")], preprocessors=[SpanCorruption("text")])
    tokenize_task(task, bpe, split="train", max_input_length=64, max_target_length=64, cache_dir=None)
    assert (f"task denoise_rows/train: 4 of 4 examples hold T5 sentinels (<extra_id_N>, span corruption's) that the "
            f"tokenizer has no token for (100 of the 100): it reads each as several tokens (<extra_id_0> as "
            f"{' '.join(pieces)})") in caplog.text
    caplog.clear()
    tokenize_task(task, load_tokenizer(t5_tokenizer_dir), split="train", max_input_length=64, max_target_length=64,
                  cache_dir=None)  # T5's vocabulary: each sentinel is one token
    assert "T5 sentinels" not in caplog.text


@pytest.mark.parametrize("kwargs,match", [
    ({"padding": "max"}, r"padding must be one of longest, max_length, got 'max'"),  # was: padded as "longest"
    ({"pad_to_multiple_of": 0}, r"pad_to_multiple_of must be an integer >= 1, got 0"),  # was: ZeroDivisionError
    ({"max_input_length": 0}, r"max_input_length must be an integer >= 1, got 0"),
    ({"max_target_length": 0}, r"max_target_length must be an integer >= 1, got 0"),
    ({"pad_to_multiple_of": True}, r"pad_to_multiple_of must be an integer >= 1, got True"),  # (a bool is an int)
])
def test_collator_settings_are_checked(kwargs, match):
    with pytest.raises(DataPipelineError, match=match):
        Seq2SeqCollator(0, **{"max_input_length": 10, "max_target_length": 6, **kwargs})


def test_collator_refuses_a_batch_of_unequal_parts():
    col = Seq2SeqCollator(0, max_input_length=10, max_target_length=6)
    # was a batch of 2 rows whose second had no input tokens and no labels (zip paired the first row only)
    with pytest.raises(DataPipelineError, match="got 2 input rows, 1 labels and 1 task ids"):
        col([[5, 1], [6, 1]], [[9, 1]], [0])
    with pytest.raises(DataPipelineError, match="got 2 input rows, 2 labels and 1 task ids"):
        col([[5, 1], [6, 1]], [[9, 1], [8, 1]], [0])
    with pytest.raises(DataPipelineError, match="got 0 input rows"):  # was: max() arg is an empty sequence
        col([], [], [])


def test_build_task_streams_refuses_a_string_of_task_names(tmp_path):
    from t2t_mtl.data import build_task_streams

    # "parity" was read as the tasks 'p', 'a', 'r', ... ("unknown task 'p'")
    with pytest.raises(DataPipelineError, match=r"task_names must be a list of task names, got the string 'parity' "
                                                r"\(write \['parity'\]\)"):
        build_task_streams("parity", None, split="train", max_input_length=8, max_target_length=8, cache_dir=tmp_path)


def test_collator_takes_numpy_integer_settings():
    # refused since the settings are checked ('max_input_length must be an integer >= 1, got np.int64(10)'), though
    # numpy's integers padded as Python's do before
    col = Seq2SeqCollator(0, max_input_length=np.int64(10), max_target_length=np.int32(6),
                          pad_to_multiple_of=np.int64(4))
    batch = col([[5, 6, 7, 8, 1]], [[9, 1]], [3])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 1, 0, 0, 0]]  # 5 tokens padded to a multiple of 4
    assert batch["labels"].tolist() == [[9, 1, -100, -100]]


def test_a_tasks_rows_come_in_the_order_asked_for_and_a_batch_keeps_its_chunks_order():
    task = _rows_of_lengths("s", [2, 3, 4], [1, 2, 3])
    assert task.rows([2, 0]) == {"input_ids": [[5, 5, 5, 5], [3, 3]], "labels": [[5, 5, 5], [3]]}
    builder = make_builder({"s": task})
    batch = builder.collate([("s", 1), ("s", 0)])
    assert batch["input_ids"].tolist() == [[4, 4, 4], [3, 3, 0]] and batch["labels"].tolist() == [[4, 4], [3, -100]]


def test_waiting_rows_lists_the_saved_rows_in_the_order_the_builder_serves_them(streams):
    # the contract the trainer deals untrained rows to new ranks by: checked against what the builder serves next
    builder = make_builder(streams, mode="mixed", bucket=4, mb=4)
    builder.next_chunk()  # one of the four micro-batches drawn together is served; three wait
    state = builder.state_dict()
    waiting = waiting_rows(state)
    served = [pair for _ in range(3) for pair in builder.next_chunk()]
    assert len(waiting) == 12 and waiting == served


def _rows_of_lengths(name, input_lengths, target_lengths):
    """A task whose row k has `input_lengths[k]` input ids (all 3 + k) and `target_lengths[k]` label ids."""
    ins = [[3 + k] * n for k, n in enumerate(input_lengths)]
    labs = [[3 + k] * n for k, n in enumerate(target_lengths)]
    ds = datasets.Dataset.from_dict({"input_ids": ins, "labels": labs})
    return TokenizedTask(name, "train", ds, np.array(input_lengths), np.array(target_lengths), 0)


def test_a_bucket_of_two_micro_batches_splits_its_rows_by_input_then_target_length():
    # 8 rows of equal inputs and targets of 1..8 tokens: a draw of 2 micro-batches of 4 holds the 4 shortest targets
    # in one micro-batch and the 4 longest in the other, whatever order the stream drew them in
    task = _rows_of_lengths("s", [5] * 8, [4, 8, 1, 6, 3, 7, 2, 5])
    for seed in range(3):
        builder = make_builder({"s": task}, bucket=2)
        builder.task_streams = TaskStreams({"s": 8}, seed=seed)
        halves = sorted(sorted(int(task.target_lengths[i]) for _, i in builder.next_chunk()) for _ in range(2))
        assert halves == [[1, 2, 3, 4], [5, 6, 7, 8]]


def test_bucketed_micro_batches_are_not_served_in_length_order():
    # 8 micro-batches of rows of 1..32 input tokens: sorted by length, then served in a shuffled order (one of the
    # 2 of 8! orders that are monotonic in length is what an unshuffled queue would give)
    task = _rows_of_lengths("s", list(range(1, 33)), [2] * 32)
    builder = make_builder({"s": task}, bucket=8)
    longest = [max(int(task.input_lengths[i]) for _, i in builder.next_chunk()) for _ in range(8)]
    assert sorted(longest) == [4, 8, 12, 16, 20, 24, 28, 32]
    assert longest not in (sorted(longest), sorted(longest, reverse=True))


def test_a_draw_of_four_epochs_of_a_small_task_keeps_each_micro_batch_distinct():
    # a draw of 8 micro-batches of 2 from a 4-row task holds every row 4 times: the third and fourth copies must not
    # meet either (copies numbered 0, 1, 2, 3, not 0, 1, 1, 1)
    task = _rows_of_lengths("s", [3, 5, 7, 9], [2, 2, 2, 2])
    builder = make_builder({"s": task}, bucket=8, mb=2)
    chunks = [builder.next_chunk() for _ in range(8)]
    assert all(len(set(chunk)) == 2 for chunk in chunks)
    assert sorted(i for chunk in chunks for _, i in chunk) == sorted([0, 1, 2, 3] * 4)


@pytest.mark.parametrize("mode", ["homogeneous", "mixed"])
def test_waiting_rows_are_the_drawn_rows_not_served_in_the_order_they_are_served(streams, mode):
    builder = make_builder(streams, mode=mode, bucket=4)
    served = [pair for _ in range(5) for pair in builder.next_chunk()]
    waiting = waiting_rows(builder.state_dict())
    drawn = builder.task_streams.seen()
    assert {t: sum(1 for p in served + waiting if p[0] == t) for t in streams} == drawn
    later = [pair for _ in range(40) for pair in builder.next_chunk()]
    for task in streams:  # each task's waiting rows come first in what the builder serves of that task next
        mine = [p for p in waiting if p[0] == task]
        assert [p for p in later if p[0] == task][:len(mine)] == mine


def test_a_cache_of_the_earlier_format_with_attention_masks_is_never_read_as_this_one(tokenizer, tmp_path):
    # the format changed (v2 also wrote an all-ones attention_mask column, which nothing read): the cache key names
    # the format, so a file of the old one — here planted with marker ids under the old key — is left alone
    from datasets.fingerprint import Hasher

    from task_registry.tokenize import tokenizer_fingerprint

    task, settings, file = _cached_reverse_words(tokenizer, tmp_path)
    rendered = task.to_dataset("train", max_examples=20)
    old_key = Hasher.hash((rendered._fingerprint, tokenizer_fingerprint(tokenizer), 16, 16, True,
                           sorted(rendered.column_names), "tokenize-v2"))[:16]  # tokenized_fingerprint of v2
    old = file.with_name(f"train-{old_key}.arrow")
    assert old != file
    file.unlink()
    datasets.Dataset.from_dict({"input_ids": [[7]] * 20, "attention_mask": [[1]] * 20, "labels": [[7]] * 20,
                                "inputs_truncated": [False] * 20, "targets_truncated": [False] * 20}
                               ).map(lambda batch: batch, batched=True, cache_file_name=str(old))
    again = tokenize_task(task, tokenizer, **settings)
    assert again.dataset["input_ids"] == [tokenizer(x, add_special_tokens=False)["input_ids"][:15] + [1]
                                          for x in rendered["inputs"]]
    assert again.dataset.cache_files[0]["filename"] == str(file)
    assert "attention_mask" not in datasets.Dataset.from_file(str(file)).column_names


def _rows_of_dropped_characters(split, num_rows, seed):
    return [{"x": "what is this?", "y": "\u200b"}, {"x": "\u200b\ufeff", "y": "text"}, {"x": "plain", "y": "\u200c"},
            {"x": "fine", "y": "yes"}]


def test_text_the_tokenizer_writes_as_no_token_at_all_is_warned_about_by_task_and_count(t5_tokenizer_dir, caplog):
    # was: a target or input of characters T5's normalisation drops (zero-width space, BOM, zero-width non-joiner) is
    # not empty to the renderer, so it was kept, and tokenized to the EOS alone: the model learned to answer nothing
    # for it, without a word (text it has no token for is warned about as <unk>)
    import sentencepiece as spm

    from t2t_mtl.tokenizer import load_tokenizer
    from task_registry import GeneratorSource, Task, Template

    tokenizer = load_tokenizer(t5_tokenizer_dir)
    reference = spm.SentencePieceProcessor(model_file=str(t5_tokenizer_dir / "spiece.model"))
    rows = _rows_of_dropped_characters("train", 4, 0)
    assert [reference.encode(row["y"]) for row in rows] == [[], reference.encode("text"), [], reference.encode("yes")]
    task = Task("invisible_rows", GeneratorSource(_rows_of_dropped_characters, num_rows=4),
                [Template("xy", "{{x}} ||| {{y}}")])
    stream = tokenize_task(task, tokenizer, split="train", max_input_length=32, max_target_length=8, cache_dir=None)
    assert len(stream) == 4 and [len(ids) == 1 for ids in stream.dataset["labels"]] == [True, False, True, False]
    assert stream.dataset["input_ids"][1] == [tokenizer.eos_token_id]
    assert ("task invisible_rows/train: 1 of 4 inputs and 2 targets are text the tokenizer writes as no token at all "
            "(characters its normalisation drops, such as zero-width spaces), so they train as the EOS alone: the "
            "model never sees such an input, and learns to answer nothing where a target is one; `t2t-mtl tasks "
            "preview invisible_rows --tokenizer RUN/tokenizer` shows their lengths in tokens (1: the EOS alone). "
            "Rewrite the characters (the template, or a `map` preprocessor)") in caplog.text
    caplog.clear()
    cut = Task("cut_rows", GeneratorSource(_rows_with_special_text, num_rows=3), [Template("xy", "{{x}} ||| {{y}}")])
    tokenize_task(cut, tokenizer, split="train", max_input_length=32, max_target_length=1, cache_dir=None)
    assert "truncated" in caplog.text and "no token at all" not in caplog.text  # (cut to the EOS: the limit's doing)


def _rows_of_a_dropped_target(split, num_rows, seed):
    return [{"x": "plain words", "y": "\u200b"}, {"x": "fine", "y": "yes"}]


def test_targets_alone_written_as_no_token_are_warned_about_and_inputs_cut_to_the_eos_are_not(t5_tokenizer_dir, caplog):
    # kills mutants of warn_tokenless_rows the test above let live: an input cut to the EOS by max_input_length read
    # against the targets' truncation flags (counted as tokenless), and the warning said only where an input is one
    from t2t_mtl.tokenizer import load_tokenizer
    from task_registry import GeneratorSource, Task, Template

    tokenizer = load_tokenizer(t5_tokenizer_dir)
    task = Task("invisible_target", GeneratorSource(_rows_of_a_dropped_target, num_rows=2),
                [Template("xy", "{{x}} ||| {{y}}")])
    stream = tokenize_task(task, tokenizer, split="train", max_input_length=1, max_target_length=8, cache_dir=None)
    assert stream.dataset["input_ids"] == [[tokenizer.eos_token_id]] * 2  # both cut to the EOS: the limit's doing
    assert "task invisible_target/train: 0 of 2 inputs and 1 targets are text the tokenizer writes as no token" in (
        caplog.text)
