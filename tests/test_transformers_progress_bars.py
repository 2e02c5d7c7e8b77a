"""Hugging Face transformers' own progress bars ('Loading weights', 'Writing model shards') in the commands that load
or write a model folder: hidden where the command draws no bar of its own (predict, export, merge; eval under
--no-progress), and left as they were found after the command, as datasets' are (tests/test_cli_progress_bars.py)."""
from __future__ import annotations

import pytest
import torch
from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
from transformers.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

import task_registry
from t2t_mtl.cli import main
from t2t_mtl.model.moe import convert_to_moe
from t2t_mtl.tokenizer import load_tokenizer
from t2t_mtl.transformers_progress_bars import HUB_SWITCH, hidden_transformers_progress_bars
from test_predict import _dense

BARS = ("Loading weights", "Writing model shards")


@pytest.fixture()
def transformers_bars(monkeypatch):
    """transformers' (and huggingface_hub's) bars shown at the start, and as they were after the test."""
    monkeypatch.delenv(HUB_SWITCH, raising=False)
    shown, hub_hidden = is_progress_bar_enabled(), are_progress_bars_disabled()
    enable_progress_bar()
    yield
    (enable_progress_bar if shown else disable_progress_bar)()
    (disable_progress_bars if hub_hidden else enable_progress_bars)()


def _saved(model: torch.nn.Module, tokenizer, folder):
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def moe_dir(tmp_path_factory, t5_tokenizer_dir):
    """A tiny task-routed MoE folder (export --task takes its sub-network; predict loads it)."""
    tokenizer = load_tokenizer(t5_tokenizer_dir)
    model = convert_to_moe(_dense(tokenizer), {"num_experts": 2, "top_k": 1, "every": 1, "routing": "task",
                                               "upcycle": False}, task_names=["alpha", "beta"])
    return _saved(model, tokenizer, tmp_path_factory.mktemp("moe"))


def test_predict_and_export_draw_no_transformers_bar_and_leave_them_shown(moe_dir, tmp_path, capsys,
                                                                          transformers_bars):
    # was: 'Loading weights: 100%|...| 47/47' on stderr of every predict, and of export with 'Writing model shards'
    commands = (["predict", "--checkpoint", str(moe_dir), "--task", "alpha", "--max-new-tokens", "2", "a b"],
                ["export", str(moe_dir), "--task", "beta", "--out", str(tmp_path / "beta")])
    for command in commands:
        assert main(command) == 0, command
        err = capsys.readouterr().err
        assert not [bar for bar in BARS if bar in err], (command, err)
        assert is_progress_bar_enabled() and not are_progress_bars_disabled(), command


def test_merge_draws_no_transformers_bar_and_leaves_them_shown(t5_tokenizer_dir, tmp_path, capsys, transformers_bars):
    # was: 'Loading weights' for each folder merge read and 'Writing model shards' for the folder it wrote, where
    # export, which writes a model folder alike, draws neither
    tokenizer = load_tokenizer(t5_tokenizer_dir)
    base = _saved(_dense(tokenizer), tokenizer, tmp_path / "base")
    tuned = _dense(tokenizer)
    with torch.no_grad():
        tuned.shared.weight.add_(0.1)
    tuned = _saved(tuned, tokenizer, tmp_path / "tuned")
    capsys.readouterr()  # (the saves' own bars)
    assert main(["merge", str(base), str(tuned), "--out", str(tmp_path / "merged")]) == 0
    err = capsys.readouterr().err
    assert not [bar for bar in BARS if bar in err], err
    assert (tmp_path / "merged" / "config.json").is_file()
    assert is_progress_bar_enabled() and not are_progress_bars_disabled()


def test_eval_draws_no_transformers_bar_under_no_progress(t5_tokenizer_dir, tmp_path, capsys, transformers_bars):
    # was: 'Loading weights' drawn by eval --no-progress, whose own bar was off
    tokenizer = load_tokenizer(t5_tokenizer_dir)
    dense = _saved(_dense(tokenizer), tokenizer, tmp_path / "dense")
    capsys.readouterr()  # (the save's own bar)
    with task_registry.isolated_registry():
        assert main(["eval", "--checkpoint", str(dense), "--tasks", "parity", "--max-examples", "2", "--no-progress",
                     "--max-new-tokens", "2"]) == 0
    err = capsys.readouterr().err
    assert not [bar for bar in BARS if bar in err], err
    assert is_progress_bar_enabled() and not are_progress_bars_disabled()


def test_the_bars_are_hidden_in_the_block_only_and_the_users_switch_decides(monkeypatch, transformers_bars):
    with hidden_transformers_progress_bars():
        assert not is_progress_bar_enabled()
    assert is_progress_bar_enabled() and not are_progress_bars_disabled()
    disable_progress_bars()  # huggingface_hub's hidden on entering (transformers' shown): hidden again after
    with hidden_transformers_progress_bars():
        assert not is_progress_bar_enabled()
    assert is_progress_bar_enabled() and are_progress_bars_disabled()
    disable_progress_bar()  # hidden on entering: still hidden after
    with hidden_transformers_progress_bars():
        pass
    assert not is_progress_bar_enabled()
    enable_progress_bar()
    monkeypatch.setenv(HUB_SWITCH, "0")  # the user's switch: left alone
    with hidden_transformers_progress_bars():
        assert is_progress_bar_enabled()
    with hidden_transformers_progress_bars(hide=False):
        assert is_progress_bar_enabled()


@pytest.mark.parametrize("progress_bar", [True, False])
def test_train_hides_transformers_bars_only_without_its_own_progress_bar(progress_bar, monkeypatch, tmp_path,
                                                                         transformers_bars):
    # was: a run from a pretrained model drew 'Loading weights' under training.progress_bar false (and on every rank)
    from t2t_mtl.engine import trainer

    seen = []
    monkeypatch.setattr(trainer, "_train", lambda *args: seen.append(is_progress_bar_enabled()))
    monkeypatch.delenv("RANK", raising=False)
    trainer.train(None, overrides=[f"training.output_dir={tmp_path / 'run'}",
                                   f"training.progress_bar={str(progress_bar).lower()}"])
    assert seen == [progress_bar]
    assert is_progress_bar_enabled() and not are_progress_bars_disabled()
