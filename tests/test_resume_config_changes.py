"""`engine.config_changes`: the settings a resumed run changes against its run's config.yaml, named with both
values."""
from __future__ import annotations

import pytest

from t2t_mtl.engine.config_changes import changed_settings, config_change_warning


def test_changed_settings_name_each_dotted_key_with_both_values_in_the_new_configs_order():
    saved = {"data": {"tasks": ["a", "b"], "few_shot": None}, "training": {"lr": 0.001, "steps": 10, "output_dir": "x"},
             "sampling": {"strategy": "annealed", "epochs": 4}, "evaluation": {"tasks": ["a"]},
             "model": {"dims": {"dropout_rate": 0.0}}}
    now = {"data": {"tasks": ["a", "b"], "few_shot": {"rate": 0.5}}, "training": {"lr": 0.0005, "steps": 10,
           "output_dir": "y"}, "sampling": {"strategy": "annealed", "epochs": 4}, "evaluation": {},
           "model": {"dims": {"dropout_rate": 0.1}}}
    assert changed_settings(saved, now) == [  # (output_dir and the model section, named elsewhere, left out)
        'data.few_shot null → {"rate": 0.5}', "training.lr 0.001 → 0.0005", 'evaluation.tasks ["a"] → (unset)']
    assert changed_settings(now, now) == []


def test_a_value_given_as_a_tuple_is_no_change_from_the_list_config_yaml_holds():
    # was: "evaluation.tasks ["a"] → ["a"]" at every resume of a run whose Python config gave the list as a tuple
    # (config.yaml holds YAML's list; the evaluation and deepspeed.extra sections keep what they are given)
    saved = {"evaluation": {"tasks": ["a"]}, "deepspeed": {"extra": {"betas": [0.9, 0.99]}}}
    now = {"evaluation": {"tasks": ("a",)}, "deepspeed": {"extra": {"betas": (0.9, 0.99)}}}
    assert changed_settings(saved, now) == []
    assert changed_settings(saved, {**now, "evaluation": {"tasks": ("a", "b")}}) == [
        'evaluation.tasks ["a"] → ["a", "b"]']


@pytest.mark.parametrize("text", [b"\xff: [", b"training: [lr: 1\n", b"- training\n", b"just text\n"])
def test_a_config_yaml_that_cannot_be_read_as_a_mapping_gives_no_warning(tmp_path, text):
    # (not UTF-8, not YAML, a list, a string: nothing to compare with; the resume goes on and replaces it)
    (tmp_path / "config.yaml").write_bytes(text)
    assert config_change_warning(tmp_path / "config.yaml", {"training": {"lr": 1}}, 3) is None


def test_a_missing_config_yaml_or_one_with_the_same_settings_gives_no_warning(tmp_path):
    assert config_change_warning(tmp_path / "missing.yaml", {"training": {"lr": 1}}, 3) is None
    (tmp_path / "config.yaml").write_text("training: {lr: 1}\n")
    assert config_change_warning(tmp_path / "config.yaml", {"training": {"lr": 1}}, 3) is None
    assert config_change_warning(tmp_path / "config.yaml", {"training": {"lr": 2}}, 3) == (
        f"resumed with settings other than {tmp_path / 'config.yaml'}'s, which apply from step 3: training.lr 1 → 2 "
        f"(the run's config.yaml now holds these)")


def test_changes_at_every_depth_name_the_saved_value_first_in_the_new_configs_order():
    # (mut44: these survived the test above: old and new swapped in the walk, which cancels at every second depth and
    # so showed only top-level and third-level keys backwards; the keys in the saved file's order; non-ASCII values
    # escaped)
    saved = {"seed": 1, "deepspeed": {"extra": {"zero_optimization": {"stage": 1}}}, "data": {"tasks": ["é"]}}
    now = {"data": {"tasks": ["ü"]}, "deepspeed": {"extra": {"zero_optimization": {"stage": 2}}}, "seed": 2}
    assert changed_settings(saved, now) == ['data.tasks ["é"] → ["ü"]',
                                            "deepspeed.extra.zero_optimization.stage 1 → 2", "seed 1 → 2"]

