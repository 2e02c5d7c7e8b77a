"""The checks that read from a callable's signature whether the call they will make binds (a step or a postprocess,
a generator source's function, a registered class's constructor, a registered metric, a DeepSpeed scheduler's
params): each names the callable, its signature and Python's reason, word for word, and lets through a callable
whose signature Python cannot read."""
from __future__ import annotations

import numpy as np
import pytest

from task_registry.preprocessors import one_argument_problem
from task_registry.sources import GeneratorSource
from t2t_mtl.config import ConfigError
from t2t_mtl.engine.deepspeed_optimizer_checks import check_scheduler
from t2t_mtl.evaluation.metrics import METRICS, MetricRegistrationError, register_metric
from t2t_mtl.sampling import MixtureSampler, SamplerRegistrationError, register_sampler


def _two(row, extra):
    return row


def _rows(split, num_rows):
    yield {}


def _seqio_metric(targets, predictions):
    return {}


class _Stubborn(MixtureSampler):
    strategy = "stubborn"

    def __init__(self, task_sizes, needed, **common):
        super().__init__(task_sizes, **common)

    def _compute_probabilities(self):
        return np.ones(len(self.tasks))


@pytest.fixture
def restored_metrics():
    """METRICS as it was before the test (a registration that should have been refused is undone)."""
    saved = dict(METRICS)
    yield
    METRICS.clear()
    METRICS.update(saved)


def test_a_step_or_postprocess_that_cannot_take_its_one_argument_is_named_with_its_signature():
    assert one_argument_problem(_two, "the row") == (
        "_two(row, extra) cannot be called with the row alone (missing a required argument: 'extra'); it is given "
        "nothing else: give its other parameters defaults")
    assert one_argument_problem(type, "the row") is None  # (no signature to read: found when called)
    assert one_argument_problem(lambda row, extra=1: row, "the row") is None


def test_a_generator_that_cannot_take_its_arguments_is_named_with_the_definition_to_write():
    assert GeneratorSource(_rows, num_rows=3, gen_kwargs={"k": 1}).signature_problem() == (
        f"generator {__name__}._rows cannot take the arguments GeneratorSource calls it with, split, num_rows and "
        f"seed as keywords and its gen_kwargs (got an unexpected keyword argument 'seed'); define it as def "
        f"_rows(split, num_rows, seed, k), or add **kwargs")
    assert GeneratorSource(type, num_rows=3).signature_problem() is None


def test_a_class_a_build_cannot_construct_is_refused_with_its_constructor(restored_component_tables):
    with pytest.raises(SamplerRegistrationError) as refusal:
        register_sampler(_Stubborn)
    assert str(refusal.value) == (
        f"register_sampler({__name__}._Stubborn): its constructor (task_sizes, needed, **common) cannot be called as "
        f"a build calls it, with 1 positional argument(s) and the keywords seed, rank, world_size, mode, block_size "
        f"(missing a required argument: 'needed'): take every config key (PARAMS) as a keyword, give it a default or "
        f"list it among them, and pass **kwargs on to the base class")


def test_a_metric_that_cannot_take_its_keywords_is_refused_with_its_signature(restored_metrics):
    with pytest.raises(MetricRegistrationError) as refusal:
        register_metric("sig_check_metric", _seqio_metric)
    assert str(refusal.value) == (
        "register_metric('sig_check_metric'): the function '_seqio_metric'(targets, predictions) cannot be called "
        "with the keywords predictions, references a metric is given (missing a required argument: 'targets'); name "
        "its parameters so (seqio's metric_fns take targets, predictions: write predictions, references)")


def test_scheduler_params_its_class_does_not_take_are_refused_with_pythons_reason():
    with pytest.raises(ConfigError) as refusal:
        check_scheduler({"scheduler": {"type": "WarmupLR", "params": {"warmup_steps": 2}}}, "deepspeed.extra.")
    assert str(refusal.value) == (
        "deepspeed.extra.scheduler.params do not fit WarmupLR: got an unexpected keyword argument 'warmup_steps'; "
        "give the params its constructor takes (https://www.deepspeed.ai/docs/config-json/#scheduler-parameters)")
