"""Samplers and loss weightings of a user's own module (`register_sampler`, `register_weighting`): refused when they
could never be built, chosen by name in a training config once a `data.task_modules` module registers them, and
checkpointed and resumed as the shipped ones are."""
from __future__ import annotations

import os
import re
import signal
import sys
import uuid

import numpy as np
import pytest
import torch

from t2t_mtl.config import ConfigError
from t2t_mtl.engine import trainer as trainer_mod
from t2t_mtl.engine.resume_contract import check_sampler_resumes, check_weighting_resumes
from t2t_mtl.engine.trainer import train
from t2t_mtl.gradients import METHODS as GRADIENT_METHODS
from t2t_mtl.gradients import GradientMethod, GradientMethodError, PCGrad, build_method, register_method
from t2t_mtl.sampling import (STRATEGIES, MixtureSampler, SamplerRegistrationError, SamplingError,
                              UnknownStrategyError, build_sampler, register_sampler)
from t2t_mtl.sampling.static import TemperatureSampler
from t2t_mtl.weighting import (METHODS, LossWeighting, UnknownWeightingError, WeightingError,
                               WeightingRegistrationError, build_weighting, register_weighting)
from t2t_mtl.weighting.methods import EqualWeighting

from engine_helpers import step_records, tiny_config, train_tiny_tokenizer, write_config

SIZES = {"a": 10, "b": 30}

#: a task module registering a sampler and a weighting, as a researcher's own module would
EXTENSIONS = '''\
import numpy as np
import torch

from t2t_mtl.sampling import MixtureSampler, register_sampler
from t2t_mtl.weighting import LossWeighting, register_weighting

BUILT = []


@register_sampler
class LossChasingSampler(MixtureSampler):
    """p_t ∝ (EMA of task t's training loss, from 10: untried tasks look hard) ** power: the tasks furthest from
    learned are drawn most."""

    strategy = "loss_chasing"
    PARAMS = ("power", "momentum")

    def __init__(self, task_sizes, *, power: float = 1.0, momentum: float = 0.5, **common):
        super().__init__(task_sizes, **common)
        self.power, self.momentum = power, momentum
        self.ema = np.full(len(self.tasks), 10.0)
        BUILT.append(self)

    def _compute_probabilities(self):
        return self.ema ** self.power

    def _on_update(self, stats):
        losses = stats.get("loss") or {}
        for task, loss in losses.items():
            i = self.tasks.index(task)
            self.ema[i] = self.momentum * self.ema[i] + (1 - self.momentum) * loss
        return bool(losses)

    def _extra_state(self):
        return {"ema": self.ema.tolist()}

    def _load_extra_state(self, state):
        self.ema = np.array(state["ema"])


@register_weighting
class RunningMeanWeighting(LossWeighting):
    """w_t = 1 / max(floor, task t's summed loss / the calls so far)."""

    method = "running_mean"
    PARAMS = ("floor",)

    def __init__(self, task_names, task_sizes=None, *, floor: float = 0.1):
        super().__init__(task_names, task_sizes)
        self.floor = floor
        self.register_buffer("total", torch.zeros(len(self.task_names), dtype=torch.float64))
        self.calls = 0
        BUILT.append(self)

    def combine(self, losses, *, epoch, stats):
        self.calls += 1
        for task, loss in losses.items():
            self.total[self.index(task)] += float(loss.detach())
        return self.weighted_sum(losses, {t: 1.0 / max(self.floor, float(self.total[self.index(t)]) / self.calls)
                                          for t in losses})

    def get_extra_state(self):
        return {"calls": self.calls}

    def set_extra_state(self, state):
        self.calls = state["calls"]
'''


pytestmark = pytest.mark.usefixtures("restored_component_tables")  # (conftest: STRATEGIES, METHODS, modules)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


class Flat(MixtureSampler):
    """p_t = 1/M (the test's own uniform)."""

    strategy = "flat"

    def _compute_probabilities(self) -> np.ndarray:
        return np.ones(len(self.tasks))


class Halves(LossWeighting):
    """Σ_t L_t / 2."""

    method = "halves"

    def combine(self, losses, *, epoch, stats):
        return self.weighted_sum(losses, dict.fromkeys(losses, 0.5))


def test_a_registered_sampler_and_weighting_are_built_by_name_with_their_parameters():
    class Hot(TemperatureSampler):  # a shipped strategy's class under a name of its own
        strategy = "hot"

    assert register_sampler(Flat) is Flat and register_sampler(Hot) is Hot
    assert register_weighting(Halves) is Halves
    sampler = build_sampler({"strategy": "flat"}, SIZES, seed=0)
    assert type(sampler) is Flat and sampler.probabilities() == {"a": 0.5, "b": 0.5}
    hot = build_sampler({"strategy": "hot", "alpha": "1e9"}, SIZES, seed=0)  # (a YAML-quoted number is read)
    assert hot.probabilities() == pytest.approx({"a": 0.5, "b": 0.5})
    weighting = build_weighting({"method": "halves"}, ["a", "b"], SIZES)
    assert float(weighting({"a": torch.tensor(2.0), "b": torch.tensor(4.0)})) == 3.0
    # registering the same class again (a module imported twice) changes nothing
    assert register_sampler(Flat) is Flat and STRATEGIES["flat"] is Flat


def test_an_unknown_name_suggests_the_registered_ones_and_says_how_to_register_one():
    register_sampler(Flat)
    register_weighting(Halves)
    with pytest.raises(UnknownStrategyError, match=r"unknown sampling strategy 'flta'\. Did you mean 'flat'\? .*"
                                                   r"; registered: flat\. .*t2t_mtl.sampling.register_sampler"):
        build_sampler({"strategy": "flta"}, SIZES, seed=0)
    with pytest.raises(UnknownWeightingError, match=r"'halfs'\. Did you mean 'halves'\? .*; registered: halves\. "
                                                    r".*t2t_mtl.weighting.register_weighting"):
        build_weighting({"method": "halfs"}, ["a", "b"], SIZES)
    STRATEGIES.pop("flat")
    with pytest.raises(UnknownStrategyError, match=r"Valid strategies: uniform, .*, worst_task\. A sampler class "
                                                   r"of your own .*\(data\.task_modules\)"):
        build_sampler({"strategy": "flat"}, SIZES, seed=0)


class NoHook(MixtureSampler):
    strategy = "no_hook"


class UnlistedKeyword(MixtureSampler):
    strategy = "unlisted"

    def __init__(self, task_sizes, *, power: float, **common):  # required, but no config key could give it
        super().__init__(task_sizes, **common)

    def _compute_probabilities(self):
        return np.ones(len(self.tasks))


class ListedButNotTaken(Flat):
    strategy = "listed"
    PARAMS = ("power",)


class NoCommon(MixtureSampler):
    strategy = "no_common"

    def __init__(self, task_sizes, seed):  # (mode, rank, ... are given to every sampler)
        super().__init__(task_sizes, seed=seed)

    def _compute_probabilities(self):
        return np.ones(len(self.tasks))


class Inherits(TemperatureSampler):
    pass


@pytest.mark.parametrize("cls,message", [
    (Flat(SIZES, seed=0), r"register_sampler\(Flat\(strategy='flat', .*\)\): give the class itself, not an "
                          r"instance of it \(test_extension_points.Flat\(...\)\)"),
    (dict, r"register_sampler\(builtins.dict\): give a subclass of t2t_mtl.sampling.base.MixtureSampler"),
    (Inherits, r"strategy 'temperature' is a built-in one \(inherited from t2t_mtl.sampling.static.TemperatureSampler"
               r"\); give the class its own strategy"),
    (type("Blank", (Flat,), {"strategy": ""}), r"set the class attribute strategy .* got ''"),
    (NoHook, r"register_sampler\(.*NoHook\): implement _compute_probabilities"),
    (type("BadParams", (Flat,), {"strategy": "bad", "PARAMS": "power"}), r"PARAMS must be a tuple .* got 'power'"),
    (type("Common", (Flat,), {"strategy": "common", "PARAMS": ("mode",)}), r"PARAMS lists 'mode', which every"),
    (UnlistedKeyword, r"its constructor .*missing a required argument: 'power'.* list it among them"),
    (ListedButNotTaken, r"got an unexpected keyword argument 'power'"),
    (NoCommon, r"\*\*kwargs on to the base class"),
])
def test_a_class_that_could_never_be_a_strategy_is_refused_where_it_is_registered(cls, message):
    with pytest.raises(SamplerRegistrationError, match=message):
        register_sampler(cls)
    assert set(STRATEGIES) == {"uniform", "round_robin", "proportional", "temperature", "explicit", "annealed",
                               "dynamic_temperature", "uncertainty", "uncertainty_ema", "bandit_softmax",
                               "bandit_thompson", "worst_task"}


def test_a_name_registered_to_another_class_is_refused_unless_overwritten():
    register_sampler(Flat)
    other = type("Flat2", (Flat,), {"strategy": "flat"})
    with pytest.raises(SamplerRegistrationError, match=r"strategy 'flat' is already registered to "
                                                       r"test_extension_points.Flat; .* overwrite=True"):
        register_sampler(other)
    assert register_sampler(other, overwrite=True) is other and STRATEGIES["flat"] is other
    # a module imported anew (importlib.reload, a notebook's re-run cell) replaces its own classes
    again = type("Flat2", (Flat,), {"strategy": "flat", "__module__": other.__module__})
    assert register_sampler(again) is again and STRATEGIES["flat"] is again
    register_weighting(Halves)
    with pytest.raises(WeightingRegistrationError, match=r"method 'halves' is already registered to "):
        register_weighting(type("Halves3", (Halves,), {}))


@pytest.mark.parametrize("cls,message", [
    (torch.nn.Linear, r"give a subclass of t2t_mtl.weighting.base.LossWeighting"),
    (type("Eq", (EqualWeighting,), {}), r"method 'equal' is a built-in one \(inherited from "
                                        r"t2t_mtl.weighting.methods.EqualWeighting\)"),
    (type("NoCombine", (LossWeighting,), {"method": "no_combine"}), r"implement combine"),
    (type("Extra", (Halves,), {"method": "extra", "PARAMS": ("scale",)}), r"unexpected keyword argument 'scale'"),
])
def test_a_class_that_could_never_be_a_weighting_is_refused_where_it_is_registered(cls, message):
    with pytest.raises(WeightingRegistrationError, match=message):
        register_weighting(cls)
    assert set(METHODS) == {"equal", "size", "uncertainty", "dtp", "tchebycheff", "curriculum"}


class Forgetful(MixtureSampler):
    """Learns from the `stat` of its updates (the losses; a subclass's: the signal it declares), but keeps nothing of
    it in its state."""

    strategy, stat = "forgetful", "loss"

    def __init__(self, task_sizes, **common):
        super().__init__(task_sizes, **common)
        self.seen = np.ones(len(self.tasks))

    def _compute_probabilities(self):
        return self.seen

    def _on_update(self, stats):
        for task, value in (stats.get(self.stat) or {}).items():
            self.seen[self.tasks.index(task)] = value ** 4
        return bool(stats.get(self.stat))


class Unpicklable(Flat):
    strategy = "unpicklable"

    def _extra_state(self):
        return {"schedule": lambda epoch: epoch}


class ForgetfulWeighting(Halves):
    """Counts its calls in an attribute, outside its state_dict."""

    method = "forgetful"

    def __init__(self, task_names, task_sizes=None):
        super().__init__(task_names, task_sizes)
        self.calls = 0

    def combine(self, losses, *, epoch, stats):
        self.calls += 1
        return self.weighted_sum(losses, dict.fromkeys(losses, 1.0 / self.calls))


def test_the_resume_contract_refuses_state_a_checkpoint_loses_and_passes_state_it_keeps():
    sizes = {"a": 10, "b": 10, "c": 10}
    with pytest.raises(ConfigError, match=r"^S does not resume as it runs: .* _extra_state\(\)"):
        check_sampler_resumes(lambda: Forgetful(sizes, seed=0), "S")
    with pytest.raises(ConfigError, match=r"^S: its state_dict\(\) cannot be saved in a checkpoint \(.*lambda"):
        check_sampler_resumes(lambda: Unpicklable(sizes, seed=0), "S")
    # losses 2, 1, 2/3 after one call: the saved weighting's second call weights them 1/2, a fresh one's 1/1
    with pytest.raises(ConfigError, match=r"^W does not resume as it runs: .* gives the loss 3.66667 where the saved "
                                          r"one gives 1.83333; .*get_extra_state"):
        check_weighting_resumes(lambda: ForgetfulWeighting(list(sizes)), "W")
    check_sampler_resumes(lambda: Flat(sizes, seed=0), "S")
    check_weighting_resumes(lambda: Halves(list(sizes)), "W")
    for strategy in ("temperature", "bandit_softmax", "worst_task"):  # shipped ones keep the contract
        check_sampler_resumes(lambda: build_sampler({"strategy": strategy}, sizes, seed=3, log=False), strategy)
    for method in ("uncertainty", "tchebycheff", "dtp"):
        check_weighting_resumes(lambda: build_weighting({"method": method}, list(sizes), sizes), method)


class ForgetsWhatItDeclares(Forgetful):
    """Learns from the signal it declares (`stat`: entropy or val_score), but keeps nothing of it in its state."""

    strategy, stat = "forgets_entropy", "entropy"
    needs_entropy = True


class ForgetsValidation(ForgetsWhatItDeclares):
    strategy, stat = "forgets_validation", "val_score"
    needs_entropy, needs_validation = False, True


@pytest.mark.parametrize("cls, fed", [
    (ForgetsWhatItDeclares, "{'loss': {task: loss}, 'trained': {task: examples}}, then {'entropy': {task: entropy}}"),
    (ForgetsValidation, "{'loss': {task: loss}, 'trained': {task: examples}}, then {'val_loss': {task: loss}, "
                        "'val_score': {task: score}}")])
def test_the_resume_contract_feeds_a_sampler_the_signals_it_declares(cls, fed):
    # was: fed the training losses only, so what such a sampler learns, and loses in a checkpoint, went unchecked
    with pytest.raises(ConfigError, match=r"^S does not resume as it runs: .* _extra_state\(\)"):
        check_sampler_resumes(lambda: cls(SIZES, seed=0), "S")

    class Raising(cls):
        def _on_update(self, stats):
            raise RuntimeError("no")

    with pytest.raises(ConfigError, match=r"^S: fed " + re.escape(fed) + " as training feeds it after each step"):
        check_sampler_resumes(lambda: Raising(SIZES, seed=0), "S")


class ForgetsKpis(Halves):
    """Weights each task by the last validation KPI it was given, kept in an attribute outside its state_dict."""

    method = "forgets_kpis"
    needs_validation = True

    def __init__(self, task_names, task_sizes=None):
        super().__init__(task_names, task_sizes)
        self.kpi = dict.fromkeys(self.task_names, 1.0)

    def combine(self, losses, *, epoch, stats):
        self.kpi.update(stats.get("kpi") or {})
        return self.weighted_sum(losses, {task: self.kpi[task] for task in losses})


def test_the_resume_contract_feeds_a_weighting_declaring_needs_validation_its_kpis():
    # was: called with stats {} only, so the KPIs such a weighting learns, and loses in a checkpoint, went unchecked
    with pytest.raises(ConfigError, match=r"^W does not resume as it runs: .* gives the loss 3 where the saved one "
                                          r"gives 1.33333; .*get_extra_state"):  # (1/2 · 2 + 1/3 · 1)
        check_weighting_resumes(lambda: ForgetsKpis(list(SIZES)), "W")

    class Raising(ForgetsKpis):
        def combine(self, losses, *, epoch, stats):
            raise RuntimeError("no")

    with pytest.raises(ConfigError, match=r"^W: called on \{task: scalar loss\} with stats \{'kpi': \{task: score\}\}, "
                                          r"then \{\} as training calls it"):
        check_weighting_resumes(lambda: Raising(list(SIZES)), "W")
    check_weighting_resumes(lambda: build_weighting({"method": "dtp"}, list(SIZES), SIZES), "dtp")


class ValidationOnly(Flat):
    """Reads validation scores from every update, though training feeds most updates only losses."""

    strategy = "validation_only"

    def _on_update(self, stats):
        self.scores = dict(stats["val_score"])
        return True


class KpiOnly(Halves):
    method = "kpi_only"

    def combine(self, losses, *, epoch, stats):
        return self.weighted_sum(losses, stats["kpi"])


def test_an_error_a_registered_class_raises_under_the_resume_check_names_it_and_where_it_was_raised():
    # was: a raw KeyError traceback from the check (as from the first training step)
    with pytest.raises(ConfigError, match=r"^S: fed \{'loss': \{task: loss\}, 'trained': \{task: examples\}\} as "
                                          r"training feeds it after each step, "
                                          r"and drawn from \(.*\), it raised KeyError: 'val_score' \(.*"
                                          r"test_extension_points.py:\d+\)$"):
        check_sampler_resumes(lambda: ValidationOnly(SIZES, seed=0), "S")
    with pytest.raises(ConfigError, match=r"^W: called on \{task: scalar loss\} with stats \{\} as training calls "
                                          r"it \(.*\), it raised KeyError: 'kpi' \(.*test_extension_points.py:\d+\)$"):
        check_weighting_resumes(lambda: KpiOnly(list(SIZES)), "W")


class OwnDraws(Flat):
    """Draws from a generator of its own, whose position its state_dict leaves out."""

    strategy = "own_draws"

    def __init__(self, task_sizes, **common):
        super().__init__(task_sizes, **common)
        self.own = np.random.default_rng(0)

    def next_task(self):
        return self.tasks[int(self.own.integers(len(self.tasks)))]


class AlternatesOutsideItsState(Flat):
    """Keeps what it learnt (`seen`) in its state, but not how many updates it had: an odd one weights a task by its
    loss, an even one by the loss's inverse, so a restored sampler draws alike until its next update."""

    strategy = "alternates"

    def __init__(self, task_sizes, **common):
        super().__init__(task_sizes, **common)
        self.seen, self.updates = np.ones(len(self.tasks)), 0

    def _compute_probabilities(self):
        return self.seen

    def _on_update(self, stats):
        if not stats.get("loss"):
            return False
        self.updates += 1
        for task, value in stats["loss"].items():
            self.seen[self.tasks.index(task)] = value ** 4 if self.updates % 2 else value ** -4
        return True

    def _extra_state(self):
        return {"seen": self.seen.tolist()}

    def _load_extra_state(self, state):
        self.seen = np.array(state["seen"])


class DriftsSlightly(ForgetfulWeighting):
    """Weights each loss 0.5 + 1e-4 per call so far, the calls counted outside its state_dict."""

    method = "drifts_slightly"

    def combine(self, losses, *, epoch, stats):
        self.calls += 1
        return self.weighted_sum(losses, dict.fromkeys(losses, 0.5 + 1e-4 * self.calls))


def test_the_resume_contract_draws_and_updates_before_and_after_the_round_trip_and_compares_losses_exactly():
    # a sampler that loses its draws' position, one that loses what only its next update reads, and a weighting
    # whose resumed loss is off by 1e-4 relative are each refused
    sizes = {"a": 10, "b": 10, "c": 10}
    for cls in (OwnDraws, AlternatesOutsideItsState):
        with pytest.raises(ConfigError, match=r"^S does not resume as it runs: "):
            check_sampler_resumes(lambda: cls(sizes, seed=0), "S")
    with pytest.raises(ConfigError, match=r"^W does not resume as it runs: .* gives the loss 1.8337 where the saved "
                                          r"one gives 1.83407"):  # 0.5001 and 0.5002 of 2 + 1 + 2/3
        check_weighting_resumes(lambda: DriftsSlightly(list(sizes)), "W")


def _sigterm_during_step(monkeypatch, step: int) -> None:
    """Deliver SIGTERM during optimizer step `step`; the trainer saves after the step."""
    real, calls = trainer_mod.forward_losses, {"n": 0}

    def forward(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_mod, "forward_losses", forward)


def test_a_task_modules_sampler_and_weighting_train_from_a_yaml_config_and_resume_as_they_ran(tmp_path, tok,
                                                                                               monkeypatch):
    module = tmp_path / f"extensions_{uuid.uuid4().hex[:8]}.py"
    module.write_text(EXTENSIONS)
    sections = {"data": {"task_modules": [str(module)]}, "sampling": {"strategy": "loss_chasing", "power": 3},
                "weighting": {"method": "running_mean", "floor": "1e-1"}, "training": {"steps": 5}}
    whole = write_config(tiny_config(tmp_path / "whole", tok, tmp_path / "cache", **sections), tmp_path / "w.yaml")
    train(str(whole), evaluate_held_in=False)
    built = sys.modules[module.stem].BUILT
    sampler = [part for part in built if isinstance(part, MixtureSampler)][-1]  # (the run's: built after checks)
    weighting = [part for part in built if isinstance(part, LossWeighting)][-1]
    assert type(sampler).__name__ == "LossChasingSampler" and sampler.power == 3
    assert sum(sampler.drawn().values()) == 5 and weighting.calls == 5 and weighting.floor == 0.1
    assert len(set(sampler.ema.tolist()) - {10.0}) >= 2  # (it learned from the losses of two tasks or more)

    cut = write_config(tiny_config(tmp_path / "cut", tok, tmp_path / "cache", **sections), tmp_path / "c.yaml")
    with monkeypatch.context() as patch:
        _sigterm_during_step(patch, 2)
        assert train(str(cut), evaluate_held_in=False).step == 2
    train(str(cut), resume="auto", evaluate_held_in=False)
    resumed_sampler = [part for part in built if isinstance(part, MixtureSampler)][-1]
    resumed_weighting = [part for part in built if isinstance(part, LossWeighting)][-1]
    assert resumed_sampler.drawn() == sampler.drawn()
    assert resumed_sampler.ema.tolist() == pytest.approx(sampler.ema.tolist(), rel=1e-6)
    assert resumed_weighting.calls == 5 and torch.allclose(resumed_weighting.total, weighting.total, rtol=1e-6)
    records, reference = step_records(tmp_path / "cut"), step_records(tmp_path / "whole")
    for step in (3, 4, 5):
        assert records[step]["task_examples"] == reference[step]["task_examples"], step
        assert records[step]["weighted_loss"] == pytest.approx(reference[step]["weighted_loss"], rel=1e-6), step
        assert records[step]["loss"] == pytest.approx(reference[step]["loss"], rel=1e-6), step


def test_a_config_naming_a_strategy_its_task_modules_do_not_register_is_refused_with_the_registered_names(
        tmp_path, tok):
    from t2t_mtl.config import config_from_dict
    from t2t_mtl.engine.run_checks import check_run_config

    module = tmp_path / f"extensions_{uuid.uuid4().hex[:8]}.py"
    module.write_text(EXTENSIONS)
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", data={"task_modules": [str(module)]},
                      sampling={"strategy": "loss_chase"})
    with pytest.raises(UnknownStrategyError, match=r"'loss_chase'\. Did you mean 'loss_chasing'\?"):
        check_run_config(config_from_dict(cfg))
    cfg["sampling"] = {"strategy": "loss_chasing", "powr": 2}
    with pytest.raises(ConfigError, match=r"^sampling.powr: unknown parameter 'powr' .* Did you mean 'power'"):
        check_run_config(config_from_dict(cfg))


class EntropyChasing(MixtureSampler):
    """p_t ∝ the last prediction entropy fed for task t (1 before any); keeps every update's stats, and each
    instance in `built`."""

    strategy = "entropy_chasing"
    needs_entropy = True
    built: list = []

    def __init__(self, task_sizes, **common):
        super().__init__(task_sizes, **common)
        self.last, self.fed = np.ones(len(self.tasks)), []
        self.built.append(self)

    def _compute_probabilities(self):
        return self.last

    def _on_update(self, stats):
        self.fed.append(dict(stats))
        for task, value in (stats.get("entropy") or {}).items():
            self.last[self.tasks.index(task)] = value
        return "entropy" in stats

    def _extra_state(self):
        return {"last": self.last.tolist()}

    def _load_extra_state(self, state):
        self.last = np.array(state["last"])


def test_a_registered_sampler_declaring_needs_entropy_is_fed_the_training_entropies(tmp_path, tok, monkeypatch):
    # was: training computed the entropies only for sampling.strategy uncertainty_ema, so this sampler got none
    monkeypatch.setattr(EntropyChasing, "built", [])
    register_sampler(EntropyChasing)
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", sampling={"strategy": "entropy_chasing"},
                      training={"steps": 3})
    train(cfg, evaluate_held_in=False)
    run_sampler = EntropyChasing.built[-1]  # (built after the run's checks built theirs)
    fed = [stats["entropy"] for stats in run_sampler.fed if "entropy" in stats]
    assert len(fed) == 3
    records = step_records(tmp_path / "run")
    assert fed == [records[step]["entropy"] for step in (1, 2, 3)]  # each step's, as uncertainty_ema is fed them
    assert all(0 < value <= 1 for entropies in fed for value in entropies.values())  # (normalised by log V)


def _register_needing_validation(section: str, name: str) -> str:
    """Register a sampler (`section` 'sampling') or a weighting named `name` declaring needs_validation; returns the
    key naming it in its section."""
    if section == "sampling":
        register_sampler(type("ValidationChasing", (Flat,), {"strategy": name, "needs_validation": True}))
        return "strategy"
    register_weighting(type("KpiChasing", (Halves,), {"method": name, "needs_validation": True}))
    return "method"


NEEDING_VALIDATION = [("sampling", "bandit_softmax", "validation_chasing"), ("weighting", "dtp", "kpi_chasing")]


@pytest.mark.parametrize("section,shipped,declared", NEEDING_VALIDATION)
def test_a_registered_class_declaring_needs_validation_is_refused_without_validation_as_a_shipped_one_is(
        tmp_path, tok, section, shipped, declared):
    # was: the registered sampler / weighting trained without validation, its val_score / kpi never fed
    from t2t_mtl.config import config_from_dict
    from t2t_mtl.engine.run_checks import check_run_config

    key = _register_needing_validation(section, declared)
    messages = {}
    for name in (shipped, declared):
        cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", **{section: {key: name}})
        with pytest.raises(ConfigError) as refusal:
            check_run_config(config_from_dict(cfg))
        messages[name] = str(refusal.value)
    assert messages[declared] == messages[shipped].replace(f"'{shipped}'", f"'{declared}'")
    assert f"{section}.{key} '{shipped}'" in messages[shipped]
    assert "need(s) periodic held-in validation: set training.validate_every" in messages[shipped]
    cfg["training"].update(validate_every=2, validate_examples=2)
    check_run_config(config_from_dict(cfg))


@pytest.mark.parametrize("section,shipped,declared", NEEDING_VALIDATION)
def test_a_class_declaring_needs_validation_is_named_when_no_validation_runs_in_the_steps(tmp_path, tok, section,
                                                                                            shipped, declared):
    # was: the warning of a validate_every beyond the run named training.keep_best / early_stopping only, so a
    # sampler or a weighting learning from validation results (shipped or registered) trained without one unsaid
    from t2t_mtl.config import config_from_dict
    from t2t_mtl.engine.idle_settings import config_warnings
    from t2t_mtl.engine.run_checks import check_run_config

    key = _register_needing_validation(section, declared)
    for name in (shipped, declared):
        cfg = config_from_dict(tiny_config(tmp_path / "run", tok, tmp_path / "cache", **{section: {key: name}},
                                           training={"steps": 6, "validate_every": 10, "validate_examples": 2}))
        checked = check_run_config(cfg)
        for sampler in (checked.sampler, None):  # (None: config_warnings builds one)
            warnings = [w for w in config_warnings(cfg, 1, checked.deepspeed, sampler) if "validate_every" in w]
            assert len(warnings) == 1 and warnings[0].startswith(
                "training.validate_every (10) > training.steps (6): no periodic validation runs, so "
                f"{section}.{key} '{name}'"), warnings
            assert warnings[0].endswith(" never act")
    if section == "sampling":  # (under metric: loss, the training loss it learns from is fed every step)
        cfg = config_from_dict(tiny_config(tmp_path / "run", tok, tmp_path / "cache",
                                           sampling={"strategy": shipped, "metric": "loss"},
                                           training={"steps": 6, "validate_every": 10, "validate_examples": 2}))
        assert "training.validate_every (10) > training.steps (6): no periodic validation runs" in config_warnings(cfg)


#: classes of a module without `from __future__ import annotations`: its annotations are the types themselves
PLAIN_ANNOTATIONS = '''
import typing

import numpy as np

from t2t_mtl.sampling import MixtureSampler
from t2t_mtl.weighting import LossWeighting


class Powered(MixtureSampler):
    strategy = "powered"
    PARAMS = ("power", "cap")

    def __init__(self, task_sizes, *, power: float = 1.0, cap: int | None = None, **common):
        super().__init__(task_sizes, **common)
        self.power, self.cap = power, cap

    def _compute_probabilities(self):
        return np.array([min(self.task_sizes[t], self.cap or 10**9) for t in self.tasks]) ** self.power


class Floored(LossWeighting):
    method = "floored"
    PARAMS = ("floor",)

    def __init__(self, task_names, task_sizes=None, *, floor: typing.Optional[float] = None):
        super().__init__(task_names, task_sizes)
        self.floor = floor

    def combine(self, losses, *, epoch, stats):
        return self.weighted_sum(losses, dict.fromkeys(losses, self.floor or 1.0))
'''


def test_numeric_parameters_of_a_module_without_postponed_annotations_are_read_as_numbers():
    # was: only string annotations (`from __future__ import annotations`) were read, so a researcher's module
    # annotating `power: float` got YAML's '1e-1' as a string, failing deep in the sampler's arithmetic
    namespace: dict = {}
    exec(compile(PLAIN_ANNOTATIONS, "plain_annotations", "exec", dont_inherit=True), namespace)  # (not this file's)
    register_sampler(namespace["Powered"])
    register_weighting(namespace["Floored"])
    sampler = build_sampler({"strategy": "powered", "power": "1e-1", "cap": "20.0", "mode": "mixed"}, SIZES, seed=0)
    assert (sampler.power, sampler.cap) == (0.1, 20) and type(sampler.cap) is int
    assert sampler.probabilities()["a"] == pytest.approx(10 ** 0.1 / (10 ** 0.1 + 20 ** 0.1))
    assert build_sampler({"strategy": "powered", "cap": None}, SIZES, seed=0).cap is None  # (`int | None`)
    with pytest.raises(SamplingError, match=r"sampling strategy 'powered': 'power' must be a number, got 'high'"):
        build_sampler({"strategy": "powered", "power": "high"}, SIZES, seed=0)
    assert build_weighting({"method": "floored", "floor": "5e-1"}, ["a", "b"], SIZES).floor == 0.5
    assert build_weighting({"method": "floored", "floor": None}, ["a", "b"], SIZES).floor is None
    with pytest.raises(WeightingError, match=r"loss weighting 'floored': 'floor' must be a number, got \[1\]"):
        build_weighting({"method": "floored", "floor": [1]}, ["a", "b"], SIZES)


class Halving(GradientMethod):
    """w_t = 1/2 for every present task."""

    name = "halving"

    def _weights(self, gram, tasks):
        return np.full(len(tasks), 0.5)


@pytest.fixture()
def restored_gradient_methods():
    saved = dict(GRADIENT_METHODS)
    yield
    GRADIENT_METHODS.clear()
    GRADIENT_METHODS.update(saved)


@pytest.mark.parametrize("cls,message", [
    (type("Pc", (PCGrad,), {}), r"name 'pcgrad' is a built-in one \(inherited from t2t_mtl.gradients.pcgrad.PCGrad\)"),
    (type("Nameless", (GradientMethod,), {"_weights": Halving._weights}), r"set the class attribute name .* got None"),
    (type("NoWeights", (GradientMethod,), {"name": "no_weights"}), r"implement _weights"),
    (type("BadDefaults", (Halving,), {"name": "bad", "defaults": ("seed",)}),
     r"defaults must be a dict \{option: default\} .* got \('seed',\)"),
    (Halving(2), r"give the class itself, not an instance of it"),
])
def test_a_class_that_could_never_be_a_gradient_method_is_refused_where_it_is_registered(
        restored_gradient_methods, cls, message):
    # was: register_method stored any class under cls.name, replacing a shipped method without a word, and one
    # without _weights passed the run's checks and stopped the run at its first optimizer step
    with pytest.raises(GradientMethodError, match=message):
        register_method(cls)
    assert sorted(GRADIENT_METHODS) == ["cagrad", "gradvac", "mean", "mgda", "nashmtl", "pcgrad", "sum"]


def test_a_registered_gradient_method_is_built_by_name_and_a_taken_name_is_refused(restored_gradient_methods):
    assert register_method(Halving) is Halving and register_method(Halving) is Halving
    method = build_method({"method": "halving"}, 3)
    assert type(method) is Halving and method.weights(np.eye(3)).tolist() == [0.5, 0.5, 0.5]
    with pytest.raises(GradientMethodError, match=r"name 'halving' is already registered to "
                                                  r"test_extension_points.Halving; .*overwrite=True"):
        register_method(type("Halving2", (Halving,), {}))
    with pytest.raises(GradientMethodError, match=r"unknown method 'halvng'; did you mean 'halving'\? .*"
                                                  r"t2t_mtl.gradients.register_method"):
        build_method({"method": "halvng"}, 3)


def _rows(split, num_rows, seed):
    return ({"q": f"q{i}", "a": "a"} for i in range(num_rows))


def _with_index(row, index):
    return {"q2": row["q"]}


def _keep(row, index):
    return True


def _seqio_style(output, example):
    return output.strip()


def _seqio_defaults(output, example=None, is_target=False):
    return output.strip()


def test_a_step_or_postprocess_function_that_cannot_take_its_one_argument_is_refused_when_the_task_is_built():
    # was: Map(add) with add(row, index) was accepted, and reading the task's rows stopped on datasets' bare
    # "TypeError: add() missing 1 required positional argument: 'index'" (no task named); a postprocess(output,
    # example) failed only when the evaluation after training applied it
    import task_registry as tr

    with pytest.raises(tr.TaskDefinitionError, match=r"^map: _with_index\(row, index\) cannot be called with the row "
                                                     r"alone \(missing a required argument: 'index'\); .* defaults$"):
        tr.Map(_with_index)
    with pytest.raises(tr.TaskDefinitionError, match=r"^filter: _keep\(row, index\) cannot be called with the row"):
        tr.Filter(_keep)
    with pytest.raises(tr.TaskDefinitionError, match=r"^task 'sig_task': postprocess _seqio_style\(output, "
                                                     r"example\) cannot be called with the text alone .*"
                                                     r"is_target=False\) can be"):
        tr.Task("sig_task", tr.GeneratorSource(_rows, num_rows=2), tr.Template("t", "{{q}} ||| {{a}}"),
                postprocess=_seqio_style)
    task = tr.Task("sig_task", tr.GeneratorSource(_rows, num_rows=2), tr.Template("t", "{{q}} ||| {{a}}"),
                   postprocess=_seqio_defaults, preprocessors=[tr.Map(lambda row, extra=1: {"q": row["q"] * extra}),
                                                               tr.Filter(len)])
    assert task.postprocessed([" x "]) == ["x"]


@pytest.mark.slow
def test_a_fresh_process_resumes_a_run_of_a_modules_sampler_and_weighting(tmp_path, tok):
    # as a launcher starts them: `train` and `train --resume auto` are each a new process that knows loss_chasing /
    # running_mean only once data.task_modules is imported, before the config's checks and before the checkpoint's
    # sampler and weighting state is loaded into the registered classes
    import subprocess

    from engine_helpers import subprocess_env, train_command

    module = tmp_path / f"extensions_{uuid.uuid4().hex[:8]}.py"
    module.write_text(EXTENSIONS)
    sections = {"data": {"task_modules": [str(module)]}, "sampling": {"strategy": "loss_chasing", "power": 3},
                "weighting": {"method": "running_mean"}, "training": {"steps": 2}}
    config = write_config(tiny_config(tmp_path / "run", tok, tmp_path / "cache", **sections), tmp_path / "c.yaml")
    for extra in ([], ["--resume", "auto", "--set", "training.steps=3"]):
        done = subprocess.run(train_command(config, *extra), env=subprocess_env(), capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, (extra, done.stderr[-3000:])
    assert sorted(step_records(tmp_path / "run")) == [1, 2, 3]
    state = torch.load(tmp_path / "run" / "checkpoints" / "step-00000003" / "trainer_state.pt", weights_only=False)
    assert state["sampler"]["strategy"] == "loss_chasing" and sum(state["sampler"]["drawn"]) == 3
    assert state["weighting"]["_extra_state"] == {"calls": 3}  # (2 before the resume, restored, and 1 after)


@pytest.mark.slow
def test_a_modules_sampler_draws_the_same_task_on_two_ranks_and_resumes_on_them_as_it_ran(tmp_path, tok):
    # torchrun's two ranks each import data.task_modules and build loss_chasing, which learns from the step's
    # all-reduced losses: every step both ranks draw the one task (the record sums the ranks' examples), and a run cut
    # at step 3 and resumed on two ranks draws and trains as the uninterrupted one
    from engine_helpers import run_checked, torchrun_command

    module = tmp_path / f"extensions_{uuid.uuid4().hex[:8]}.py"
    module.write_text(EXTENSIONS)
    sections = {"data": {"task_modules": [str(module)]}, "sampling": {"strategy": "loss_chasing", "power": 3}}

    def config(name):  # (the uninterrupted run's step-3 checkpoint is the cut run's)
        return write_config(tiny_config(tmp_path / name, tok, tmp_path / "cache",
                                        training={"steps": 6, "checkpoint_every": 3}, **sections),
                            tmp_path / f"{name}.yaml")

    run_checked(torchrun_command(config("whole"), 2), timeout=400)
    run_checked(torchrun_command(config("resumed"), 2, "--resume",
                                 str(tmp_path / "whole" / "checkpoints" / "step-00000003")), timeout=400)
    whole, resumed = step_records(tmp_path / "whole"), step_records(tmp_path / "resumed")
    assert sorted(whole) == [1, 2, 3, 4, 5, 6] and sorted(resumed) == [4, 5, 6]
    for step, record in whole.items():  # one task, its micro-batch of 4 rows on each of the 2 ranks
        assert list(record["task_examples"].values()) == [8], (step, record["task_examples"])
    assert len({task for record in whole.values() for task in record["task_examples"]}) >= 2  # (not one task only)
    for step in (4, 5, 6):
        assert resumed[step]["task_examples"] == whole[step]["task_examples"], step
        assert resumed[step]["loss"] == pytest.approx(whole[step]["loss"], rel=1e-5), step
    state = torch.load(tmp_path / "resumed" / "checkpoints" / "step-00000006" / "trainer_state.pt",
                       weights_only=False)
    assert state["sampler"]["strategy"] == "loss_chasing" and sum(state["sampler"]["drawn"]) == 6


@pytest.mark.slow
def test_a_modules_weighting_learning_from_its_own_ranks_losses_is_refused_on_two_ranks_before_any_checkpoint(
        tmp_path, tok):
    # running_mean sums each rank's own losses and has no synchronize: the ranks weigh differently from step 1 on,
    # and a checkpoint would keep rank 0's sums for both. Was: trained and saved without a word
    import subprocess

    from engine_helpers import subprocess_env, torchrun_command

    module = tmp_path / f"extensions_{uuid.uuid4().hex[:8]}.py"
    module.write_text(EXTENSIONS)
    sections = {"data": {"task_modules": [str(module)]}, "weighting": {"method": "running_mean"},
                "training": {"steps": 3, "checkpoint_every": 1}}
    config = write_config(tiny_config(tmp_path / "run", tok, tmp_path / "cache", **sections), tmp_path / "c.yaml")
    done = subprocess.run(torchrun_command(config, 2), env=subprocess_env(), capture_output=True, text=True,
                          timeout=400)
    assert done.returncode != 0
    assert (f"error: training aborted: at step 1 the ranks hold different states where a checkpoint keeps rank 0's "
            f"alone (a resume would give every rank rank 0's, and the ranks already train differently): the loss "
            f"weighting's state (weighting.method: RunningMeanWeighting of module {module.stem}) on rank 1 of 2 "
            f"differs from rank 0's; a weighting learning from its rank's own losses makes what it learns the same "
            f"on every rank in synchronize(all_reduce_sum)") in done.stderr, done.stderr[-3000:]
    assert "the sampler's state" not in done.stderr
    assert not list((tmp_path / "run" / "checkpoints").glob("step-*"))


class ForgetsTrained(Forgetful):
    """Learns from the examples trained of each task (`trained`, fed with the losses), but keeps nothing of them."""

    strategy, stat = "forgets_trained", "trained"


def test_the_resume_contract_feeds_a_sampler_the_examples_trained_as_training_does():
    # was: fed {'loss': ...} alone, while training feeds {'loss': ..., 'trained': ...} every step (the README's update()
    # contract): a sampler losing what it learns of the examples trained passed the check and drifted when resumed
    with pytest.raises(ConfigError, match=r"^S does not resume as it runs: .* _extra_state\(\)"):
        check_sampler_resumes(lambda: ForgetsTrained(SIZES, seed=0), "S")
    targeted = {"strategy": "bandit_thompson", "target": "a"}  # (credits its target's wins by the examples trained)
    check_sampler_resumes(lambda: build_sampler(targeted, SIZES, seed=0, log=False), "bandit_thompson")


class LossRemembering(Flat):
    """Flat draws; logs the last training loss fed for each task as its learned state `last_loss`."""

    strategy = "loss_remembering"

    def __init__(self, task_sizes, **common):
        super().__init__(task_sizes, **common)
        self.last = {}

    def _on_update(self, stats):
        self.last.update(stats.get("loss") or {})
        return False

    def logged_state(self):
        return {"last_loss": dict(self.last)}


def test_a_registered_samplers_logged_state_reaches_tensorboard_as_a_bandits_does(tmp_path, tok):
    # was: its names were written to metrics.jsonl alone; TensorBoard and W&B got the bandits' bandit_q,
    # bandit_alpha and bandit_beta only
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    register_sampler(LossRemembering)
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", sampling={"strategy": "loss_remembering"},
                      training={"steps": 3, "tensorboard": True})
    train(cfg, evaluate_held_in=False)
    records = step_records(tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run" / "logs" / "tensorboard")).Reload()
    logged = {tag: {event.step: event.value for event in events.Scalars(tag)}
              for tag in events.Tags()["scalars"] if tag.startswith("last_loss/")}
    remembered = {}
    for step in (1, 2, 3):
        remembered.update(records[step]["task_loss"])
        assert records[step]["last_loss"] == remembered
    assert logged == {f"last_loss/{task}": {step: pytest.approx(rec["last_loss"][task], rel=1e-6)
                                            for step, rec in records.items() if task in rec["last_loss"]}
                      for task in remembered}
