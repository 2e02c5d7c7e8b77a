"""The tokenized tasks runs share: a run that sets no data.cache_dir keeps them in datasets' cache folder, where the
next run of the same tasks, templates, tokenizer and limits reads them, and a changed template is tokenized again."""
from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from t2t_mtl.data import tokenize_task
from t2t_mtl.data.streams import shared_cache_dir
from t2t_mtl.engine.trainer import train

from engine_helpers import TASKS, tiny_config, train_tiny_tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """datasets' cache folder, empty, for this test."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    return tmp_path / "hf_cache"


def _cached_files(folder: Path) -> dict:
    return {path: path.stat().st_mtime_ns for path in sorted(folder.glob("*/train-*.arrow"))}


def _losses(run_dir: Path) -> list:
    records = [json.loads(line) for line in (run_dir / "logs" / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if "loss" in r]


def test_a_second_run_into_a_new_folder_reads_the_tokenized_tasks_the_first_one_cached(tmp_path, tok, hf_cache):
    # was: a run without data.cache_dir tokenized into <output_dir>/cache, so every new run folder (the README's
    # `rm -rf runs/quickstart; t2t-mtl train`, a sweep) tokenized every task again
    def config(name):
        cfg = tiny_config(tmp_path / name, tok, tmp_path / "unused")
        del cfg["data"]["cache_dir"]
        return cfg

    first = train(config("first"), evaluate_held_in=False)
    shared = hf_cache / "t2t_mtl" / "tokenized"
    assert shared_cache_dir() == shared
    files = _cached_files(shared)
    assert sorted({path.parent.name for path in files}) == sorted(TASKS)
    second = train(config("second"), evaluate_held_in=False)
    assert _cached_files(shared) == files  # read, none written again
    assert not (first.run_dir / "cache").exists() and not (second.run_dir / "cache").exists()
    assert _losses(second.run_dir) == _losses(first.run_dir)  # the cached run trains as the uncached one did


def test_with_datasets_caching_off_a_run_keeps_its_tokenized_tasks_in_its_own_folder(tmp_path, tok, hf_cache):
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "unused", training={"steps": 1})
    del cfg["data"]["cache_dir"]
    datasets.disable_caching()
    try:
        assert shared_cache_dir() is None
        result = train(cfg, evaluate_held_in=False)
    finally:
        datasets.enable_caching()
    assert sorted(path.name for path in (result.run_dir / "cache").iterdir()) == sorted(TASKS)
    assert not (hf_cache / "t2t_mtl").exists()


def test_a_changed_template_is_rendered_and_tokenized_again_in_the_shared_cache(tok, hf_cache):
    import task_registry
    from t2t_mtl.tokenizer import load_tokenizer

    task_registry.load_builtin_tasks()
    builtin = task_registry.get_task("reverse_words")
    template = builtin.templates[0]
    tokenizer = load_tokenizer(tok)
    settings = dict(split="train", max_input_length=32, max_target_length=16, cache_dir=shared_cache_dir(),
                    max_examples=20)
    results = []
    for jinja in (template.jinja, "reverse it: " + template.jinja):  # same task, same template name, other text
        task = task_registry.Task("reverse_words", builtin.source, [task_registry.Template(template.name, jinja)])
        stream = tokenize_task(task, tokenizer, **settings)
        rendered = task.to_dataset("train", max_examples=20)["inputs"]
        assert stream.dataset["input_ids"] == [tokenizer(x, add_special_tokens=False)["input_ids"][:31] + [1]
                                               for x in rendered]
        results.append((stream.dataset.cache_files[0]["filename"], rendered))
    (first_file, first_inputs), (second_file, second_inputs) = results
    assert first_file != second_file and first_inputs != second_inputs
    assert all(text.startswith("reverse it: ") for text in second_inputs)


def test_a_tokenizer_splitting_special_tokens_written_in_text_does_not_read_the_cache_of_one_that_does_not(
        t5_tokenizer_dir, tmp_path, hf_cache):
    # was: split_special_tokens (tokenizer_config.json's) is no part of the tokenizer's serialisation, so both got one
    # key, and a run of the second trained on the ids the first gave '</s>' written in a text
    import task_registry
    from t2t_mtl.tokenizer import load_tokenizer

    load_tokenizer(t5_tokenizer_dir).save_pretrained(str(tmp_path / "splits"))
    config_file = tmp_path / "splits" / "tokenizer_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "split_special_tokens": True}))
    reads, splits = load_tokenizer(t5_tokenizer_dir), load_tokenizer(tmp_path / "splits")
    assert reads("yes </s> no")["input_ids"] != splits("yes </s> no")["input_ids"]  # (they do tokenize it otherwise)
    task_registry.load_builtin_tasks()
    builtin = task_registry.get_task("reverse_words")
    template = builtin.templates[0]
    task = task_registry.Task("reverse_words", builtin.source,
                              [task_registry.Template(template.name, "yes </s> " + template.jinja)])
    rendered = task.to_dataset("train", max_examples=8)["inputs"]
    settings = dict(split="train", max_input_length=64, max_target_length=16, cache_dir=shared_cache_dir(),
                    max_examples=8)
    for tokenizer in (reads, splits):
        stream = tokenize_task(task, tokenizer, **settings)
        assert stream.dataset["input_ids"] == [tokenizer(x, add_special_tokens=False)["input_ids"] + [1]
                                               for x in rendered]


def _cached_rows(folder: Path) -> datasets.Dataset:
    """Rows with inputs and targets backed by a cache file in `folder`: tokenize_dataset caches their tokenization
    there, keyed by its fingerprint."""
    rows = {"inputs": ["The Cat sat on the Mat with a Hat", "A Dog"], "targets": ["Yes", "No"]}
    return datasets.Dataset.from_dict(rows).map(lambda batch: batch, batched=True,
                                                cache_file_name=str(folder / "rows.arrow"))


def test_tokenizers_differing_only_in_their_truncation_side_do_not_share_a_cached_tokenization(
        t5_tokenizer_dir, tmp_path):
    # was: the key read the tokenizer's serialisation, which has no truncation_side, so the second tokenizer read the
    # ids the first cut from the other end (the default path cuts over-long rows with the tokenizer's own truncation)
    from task_registry.tokenize import tokenize_dataset
    from t2t_mtl.tokenizer import load_tokenizer

    rows = _cached_rows(tmp_path)
    results = []
    for side in ("right", "left"):
        tokenizer = load_tokenizer(t5_tokenizer_dir)
        tokenizer.truncation_side = side
        results.append(tokenize_dataset(rows, tokenizer, 5, 4)["input_ids"])
        assert results[-1] == [tokenizer(x, max_length=5, truncation=True)["input_ids"] for x in rows["inputs"]]
    assert results[0][0] != results[1][0]  # (the first row is cut: its beginning kept, then its end)


def test_slow_tokenizers_differing_only_in_a_python_side_option_do_not_share_a_cached_tokenization(tmp_path):
    # was: a tokenizer without a serialisation was keyed by its class, name, vocabulary and EOS id, equal here, so the
    # case-folding one read the ids the other had cached for the cased texts
    from transformers import ByT5Tokenizer

    from task_registry.tokenize import tokenize_dataset

    class CaseFoldingByT5(ByT5Tokenizer):
        """ByT5's bytes, of the text lowercased where `fold_case` (an option of its Python side alone)."""

        def __init__(self, fold_case: bool = False, **kwargs):
            self.fold_case = fold_case
            super().__init__(**kwargs)

        def prepare_for_tokenization(self, text, **kwargs):
            return (text.lower() if self.fold_case else text), kwargs

    rows = _cached_rows(tmp_path)
    cased, folded = CaseFoldingByT5(), CaseFoldingByT5(fold_case=True)
    assert cased.get_vocab() == folded.get_vocab() and cased("A")["input_ids"] != folded("A")["input_ids"]
    for tokenizer in (cased, folded):
        tokenized = tokenize_dataset(rows, tokenizer, 64, 8, append_eos=True)
        text_of = (lambda x: x.lower()) if tokenizer.fold_case else (lambda x: x)
        assert tokenized["input_ids"] == [[byte + 3 for byte in text_of(x).encode()] + [1]  # (ByT5: byte + 3, EOS 1)
                                          for x in rows["inputs"]]
