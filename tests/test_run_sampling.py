"""The sampler config a run builds from its `sampling` section (t2t_mtl.engine.run_sampling), against the values
its docstring says it fills in: the mixture's rates, the micro-batch size as CA-MTL's pool, the templates per task
and, once rendered, each template's size."""
from __future__ import annotations

import task_registry
from t2t_mtl.config import config_from_dict
from t2t_mtl.engine.run_sampling import run_sampling_config, with_template_sizes

RATES = {"parity": 0.25, "reverse_words": 0.75}


def _config(sampling, **data):
    return config_from_dict({"model": {"dims": {"d_model": 8}}, "training": {"micro_batch_size": 3},
                             "data": {"tasks": list(RATES), **data}, "sampling": sampling})


def _templates():
    task_registry.load_builtin_tasks()
    return {name: len(task_registry.get_task(name).templates) for name in RATES}


def test_explicit_takes_the_mixtures_rates_and_uncertainty_the_micro_batch_size_where_the_section_leaves_them_out():
    assert run_sampling_config(_config({"strategy": "explicit"}), RATES)["rates"] == RATES
    given = {"parity": 1.0, "reverse_words": 3.0}
    assert run_sampling_config(_config({"strategy": "explicit", "rates": given}), RATES)["rates"] == given
    assert run_sampling_config(_config({"strategy": "uncertainty"}), RATES)["pool_per_task"] == 3
    assert run_sampling_config(_config({"strategy": "uncertainty", "pool_per_task": 5}), RATES)["pool_per_task"] == 5


def test_templates_are_filled_in_for_caps_and_for_size_based_strategies_over_all_templates_only():
    templates = _templates()
    assert max(templates.values()) > 1  # (reverse_words has several)
    every = run_sampling_config(_config({"strategy": "temperature", "alpha": 2.0}, all_templates=True), RATES)
    assert every["templates"] == templates and every["sizes_count_templates"] is True
    # one template per example: a task's size is its rows, whatever its template count
    assert "templates" not in run_sampling_config(_config({"strategy": "temperature", "alpha": 2.0}), RATES)
    # uniform rates no sizes, so it takes no templates even over all templates
    uniform = run_sampling_config(_config({"strategy": "uniform"}, all_templates=True), RATES)
    assert "templates" not in uniform and "sizes_count_templates" not in uniform
    capped = run_sampling_config(_config({"strategy": "temperature", "template_cap": 10}), RATES)
    assert capped["templates"] == templates and "sizes_count_templates" not in capped


def test_each_template_is_rated_at_its_rendered_size_for_the_tasks_the_sampler_rates_per_template():
    cfg = _config({"strategy": "temperature", "alpha": 2.0}, all_templates=True)
    sampling = run_sampling_config(cfg, RATES)
    rendered = {"parity": {"t5_prefix": 7}, "reverse_words": {"t5_prefix": 5, "instruction": 4}, "other": {"x": 1}}
    assert with_template_sizes(cfg, sampling, rendered)["template_sizes"] == {task: rendered[task] for task in RATES}
    # without data.all_templates a row is one example: no per-template sizes
    plain = _config({"strategy": "temperature", "alpha": 2.0})
    assert "template_sizes" not in with_template_sizes(plain, run_sampling_config(plain, RATES), rendered)
