"""Pairs of features that a run refuses as a pair, checked where `train` and `train --print-config` check a config
(`check_run_config`, before any data is read or a model built): each refusal names both settings."""
from __future__ import annotations

from typing import Any, Dict

import pytest

from t2t_mtl import config as C
from t2t_mtl.engine.run_checks import check_run_config


def tiny(**sections: Dict[str, Any]) -> C.Config:
    """A run config on two procedural tasks, a T5 from dims, `sections` merged over it section by section."""
    cfg: Dict[str, Any] = {"model": {"dims": {"d_model": 8}}, "tokenizer": {"path": "tok"},
                           "data": {"tasks": ["parity", "count_word"]}}
    for section, values in sections.items():
        cfg[section] = {**cfg.get(section, {}), **values}
    return C.config_from_dict(cfg)


def test_fp16_at_zero_stage_0_is_refused_by_the_run_checks():
    # was: check_run_config passed it, so a GPU run tokenized its tasks and built its model before
    # initialize_deepspeed refused it, and `train --print-config` printed the config as fine
    from t2t_mtl.engine.host_precision import PrecisionError

    with pytest.raises(PrecisionError, match=r"^fp16 with deepspeed.zero_stage 0: .*use zero_stage 1 or higher"):
        check_run_config(tiny(training={"precision": "fp16"}))
    check_run_config(tiny(training={"precision": "fp16"}, deepspeed={"zero_stage": 1}))


def test_gradient_surgery_in_a_run_of_one_task_is_warned_of():
    # was: accepted without a word, though every step held that task's gradient alone (nothing to combine); a
    # warning, not a refusal: a transfer study's single-task runs of a base config with surgery train so
    from t2t_mtl.engine.idle_settings import config_warnings

    surgery = {"gradient_surgery": {"method": "pcgrad"}, "training": {"grad_accum": 2}}
    one = tiny(data={"tasks": ["parity"]}, **surgery)
    warned = [w for w in config_warnings(one, sampler=check_run_config(one).sampler) + config_warnings(one)
              if w.startswith("gradient_surgery")]
    assert len(warned) == 2 and all("trains one task (parity)" in w and "drop gradient_surgery" in w for w in warned)
    assert not [w for w in config_warnings(tiny(**surgery)) if w.startswith("gradient_surgery")]
    assert not [w for w in config_warnings(tiny(data={"tasks": ["parity"]})) if w.startswith("gradient_surgery")]


def test_round_robin_steps_that_straddle_its_cycles_are_warned_of_under_gradient_surgery():
    # was: accepted without a word, though with grad_accum 3 over 2 tasks every other step held a task twice
    from t2t_mtl.engine.idle_settings import config_warnings

    def warned(accum: int, **sections: Dict[str, Any]) -> list:
        cfg = tiny(sampling={"strategy": "round_robin"}, training={"grad_accum": accum}, **sections)
        return [w for w in config_warnings(cfg) if w.startswith("sampling.strategy round_robin")]

    surgery = {"gradient_surgery": {"method": "pcgrad"}}
    assert warned(3, **surgery) == [
        "sampling.strategy round_robin draws each of the 2 tasks once in every 2 micro-batches, but "
        "training.grad_accum 3 is no multiple of 2: the steps straddle those cycles, so gradient_surgery's steps lack "
        "some tasks and may hold one twice; set training.grad_accum to 2 (or a multiple) for every step to hold each "
        "task"]
    assert warned(2, **surgery) == warned(4, **surgery) == warned(3) == []


def test_a_grad_accum_off_the_tasks_is_not_warned_of_under_a_strategy_that_draws_no_cycles():
    # uniform draws each micro-batch's task at random: there are no cycles for the steps to straddle
    from t2t_mtl.engine.idle_settings import config_warnings

    cfg = tiny(sampling={"strategy": "uniform"}, training={"grad_accum": 3}, gradient_surgery={"method": "pcgrad"})
    assert not [w for w in config_warnings(cfg) if "round_robin" in w]
