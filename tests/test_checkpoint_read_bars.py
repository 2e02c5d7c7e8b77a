"""The progress bar DeepSpeed's `zero_to_fp32` draws while it reads a ZeRO checkpoint's files ('Loading checkpoint
shards', on every export, eval and predict of a run trained under ZeRO) follows transformers' bars, as the commands
set them (`hidden_transformers_progress_bars`): hidden where they are hidden, drawn where they show."""
from __future__ import annotations

import pytest

from t2t_mtl.engine.export import load_trained_model
from t2t_mtl.engine.trainer import train

from engine_helpers import tiny_config, train_tiny_tokenizer


@pytest.fixture(scope="module")
def zero1_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    train(tiny_config(root / "run", train_tiny_tokenizer(root / "tok"), root / "cache", training={"steps": 1},
                      deepspeed={"zero_stage": 1}), evaluate_held_in=False)
    return root / "run"


@pytest.mark.parametrize("hidden", [True, False])
def test_deepspeeds_shard_loading_bar_is_drawn_where_transformers_bars_are(zero1_run, capsys, hidden):
    from transformers.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    shown = is_progress_bar_enabled()
    (disable_progress_bar if hidden else enable_progress_bar)()
    try:
        capsys.readouterr()
        load_trained_model(zero1_run)
        drawn = capsys.readouterr().err
    finally:
        (enable_progress_bar if shown else disable_progress_bar)()
    assert ("Loading checkpoint shards" in drawn) is not hidden
