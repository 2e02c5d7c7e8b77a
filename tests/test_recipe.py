"""The packaged `t5_recipe` config: every check a run makes passes on the shared real data, and the recipe —
real held-in tasks plus span corruption, packed rows, token-normalised loss, keep_best with early stopping,
zero-shot evaluation during training — trains end to end when scaled down to a tiny model."""
from __future__ import annotations

import pytest

import task_registry
from t2t_mtl.config import check_paths
from t2t_mtl.engine.checkpoint import latest_checkpoint, read_meta
from t2t_mtl.engine.trainer import as_config, train
from t2t_mtl.engine.run_checks import check_run_config

from engine_helpers import step_records

TINY = ["model.dims={d_model: 32, d_kv: 8, d_ff: 64, num_layers: 1, num_decoder_layers: 1, num_heads: 2, "
        "dropout_rate: 0.0}", "data.max_examples_per_task=24", "data.max_input_length=96",
        "data.max_target_length=16",  # (each periodic validation generates up to this many tokens a row)
        "data.validation_examples=0", "data.bucket_batches=2", "training.steps=6", "training.micro_batch_size=2",
        "training.validate_every=2", "training.validate_examples=2", "training.early_stopping=2",
        "training.warmup=0", "training.checkpoint_every=0", "training.progress_bar=false",
        "training.tensorboard=false", "training.plot=false", "training.precision=fp32", "training.num_threads=2",
        "evaluation.max_examples=2", "evaluation.every=3", "evaluation.batch_size=8"]


def _checked(name, data_dir):
    """(config, rates, sampling config) of a packaged config after every check a run makes, on `data_dir`."""
    cfg = as_config(name)
    cfg.data.data_dir = str(data_dir)
    check_paths(cfg)
    previous = task_registry.get_data_dir()
    try:
        checked = check_run_config(cfg)
        return cfg, checked.rates, checked.sampling
    finally:
        task_registry.set_data_dir(previous)


def test_the_recipe_passes_every_check_of_a_run(shared_data_dir):
    cfg, rates, sampling = _checked("t5_recipe", shared_data_dir)
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


# ------------------------------------------------------------------ t0_lora: LoRA on a pretrained T5

def test_the_t0_lora_config_passes_every_check_of_a_run(shared_data_dir):
    from t2t_mtl.model.lora import lora_settings

    cfg, rates, sampling = _checked("t0_lora", shared_data_dir)
    assert "glue_sst2" in rates and not {"glue_rte", "super_glue_copa", "super_glue_cb"} & set(rates)
    # T0's mixture: every template, 500k examples a dataset split over its templates
    assert cfg.data.all_templates and sampling["dataset_cap"] == 500_000 and sampling["sizes_count_templates"]
    assert sampling["templates"] == {name: len(task_registry.get_task(name).templates) for name in rates}
    assert lora_settings(cfg.model.lora).targets == ["q", "k", "v", "o", "wi_0", "wi_1", "wo"]


@pytest.mark.slow
def test_t0_lora_fine_tunes_a_local_pretrained_t5_scaled_down(tmp_path, shared_data_dir, t5_tokenizer_dir,
                                                              t5_tokenizer):
    import torch
    from transformers import T5ForConditionalGeneration

    from t2t_mtl.engine.export import export_model
    from t2t_mtl.model import t5_config_from_dims

    # a stand-in for google/t5-base-lm-adapt: a T5 v1.1-shaped (gated-GELU) folder with T5's vocabulary
    torch.manual_seed(0)
    dims = {"d_model": 32, "d_kv": 8, "d_ff": 48, "num_layers": 1, "num_decoder_layers": 1, "num_heads": 2,
            "feed_forward_proj": "gated-gelu", "dropout_rate": 0.0}
    T5ForConditionalGeneration(t5_config_from_dims(dims, len(t5_tokenizer))).save_pretrained(tmp_path / "base")
    overrides = [o for o in TINY if not o.startswith(("model.dims", "training.early_stopping"))]
    previous = task_registry.get_data_dir()
    try:
        train("t0_lora", overrides=[*overrides, f"model.name_or_path={tmp_path / 'base'}",
                                    f"tokenizer.path={t5_tokenizer_dir}", "data.max_examples_per_task=8",
                                    "data.tasks=[glue_sst2, trec, ag_news]", "evaluation.tasks=[glue_rte]",
                                    f"training.output_dir={tmp_path / 'run'}"],
              data_dir=str(shared_data_dir), evaluate_held_in=False)
    finally:
        task_registry.set_data_dir(previous)
    out = export_model(tmp_path / "run", tmp_path / "hf")
    base = T5ForConditionalGeneration.from_pretrained(tmp_path / "base").state_dict()
    tuned = T5ForConditionalGeneration.from_pretrained(out).state_dict()
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    # the adapted linears changed (B·A folded in), nothing else did
    assert changed and all(k.rsplit(".", 2)[-2] in ("q", "k", "v", "o", "wi_0", "wi_1", "wo") for k in changed)
    assert (tmp_path / "run" / "eval" / "step-00000003").is_dir()
