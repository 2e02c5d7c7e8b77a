"""The packaged `t5_recipe` config: every check a run makes passes on the shared real data, and the recipe —
real held-in tasks plus span corruption, packed rows, token-normalised loss, keep_best with early stopping,
zero-shot evaluation during training — trains end to end when scaled down to a tiny model."""
from __future__ import annotations

import pytest

import task_registry
from t2t_mtl.config import check_paths
from t2t_mtl.engine.checkpoint import latest_checkpoint, read_meta
from t2t_mtl.engine.trainer import as_config, check_run_config, train

from engine_helpers import step_records

TINY = ["model.dims={d_model: 32, d_kv: 8, d_ff: 64, num_layers: 1, num_decoder_layers: 1, num_heads: 2, "
        "dropout_rate: 0.0}", "data.max_examples_per_task=24", "data.max_input_length=96",
        "data.validation_examples=0", "data.bucket_batches=2", "training.steps=6", "training.micro_batch_size=2",
        "training.validate_every=2", "training.validate_examples=2", "training.early_stopping=2",
        "training.warmup=0", "training.checkpoint_every=0", "training.progress_bar=false",
        "training.tensorboard=false", "training.plot=false", "training.precision=fp32", "training.num_threads=2",
        "evaluation.max_examples=2", "evaluation.every=3", "evaluation.batch_size=8"]


def test_the_recipe_passes_every_check_of_a_run(shared_data_dir):
    cfg = as_config("t5_recipe")
    cfg.data.data_dir = str(shared_data_dir)
    check_paths(cfg)
    previous = task_registry.get_data_dir()
    try:
        rates, sampling = check_run_config(cfg)
    finally:
        task_registry.set_data_dir(previous)
    assert "ag_news_span_corruption" in rates and "glue_rte" not in rates  # T0's held-out clusters held out
    assert sampling["rates"] == rates and cfg.data.batching == "pack"


@pytest.mark.slow
def test_the_recipe_trains_end_to_end_scaled_down(tmp_path, shared_data_dir, t5_tokenizer_dir):
    previous = task_registry.get_data_dir()
    try:
        result = train("t5_recipe", overrides=[*TINY, f"tokenizer.path={t5_tokenizer_dir}",
                                               f"training.output_dir={tmp_path / 'run'}"],
                       data_dir=str(shared_data_dir), evaluate_held_in=False)
    finally:
        task_registry.set_data_dir(previous)
    records = step_records(tmp_path / "run")
    assert "ag_news_span_corruption" in read_meta(latest_checkpoint(tmp_path / "run"))["tasks"]
    assert sum(sum(r["task_examples"].values()) for r in records.values()) > result.step * 2  # packed
    assert result.held_out_scores and result.eval_report is not None
    assert (tmp_path / "run" / "eval" / "step-00000003").is_dir()
    assert result.step == 6 or result.stopped_early
