"""Static mixing rates with seqio's exact semantics.

seqio's `mixing_rate_num_examples(task, maximum, scale, temperature)` computes, per task,
``r = n * scale``; then ``r = min(r, maximum)`` when `maximum` is truthy (0/None mean no cap); then
``r = r ** (1 / temperature)`` when the temperature differs from 1. The mixture normalises the rates.

T0 builds one seqio task per (dataset, template), each with the dataset's rows and capped per template,
so a dataset's rate is the SUM over its templates: ``k * min(n * scale, c) ** (1 / T)`` with `k` templates
and per-template cap `c` (T0 uses ``c = dataset_cap // k``). With one template this is seqio's rate. Where a
template skips rows its seqio task holds fewer: ``sum_t min(n_t * scale, c) ** (1 / T)`` over each template's own
count `n_t`.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional

import numpy as np

from t2t_mtl.sampling.errors import EmptyTaskError, InvalidRateError
from t2t_mtl.wording import counted


def check_task_sizes(task_sizes: Mapping[str, int]) -> dict[str, int]:
    """Validate `{task: number of training rows}`: non-empty, every size a positive finite integer."""
    if task_sizes and not isinstance(task_sizes, Mapping):  # e.g. a list of names, or of sizes
        raise InvalidRateError(f"task_sizes must map task names to their numbers of training rows, e.g. "
                               f"{{task: 1000}}; got {task_sizes!r}")
    if not task_sizes:
        raise InvalidRateError("no tasks given: the mixture needs at least one task with its size")
    checked = {}
    for task, size in task_sizes.items():
        if size is None or not isinstance(size, (int, np.integer, float)) or not math.isfinite(size) or size < 0:
            raise InvalidRateError(f"task {task!r} has invalid size {size!r}: sizes are row counts >= 1")
        if size == 0:
            raise EmptyTaskError(
                f"task {task!r} has no training examples (size 0): check its data files/split, or drop it "
                f"from the mixture"
            )
        if size != int(size):
            raise InvalidRateError(f"task {task!r} has non-integer size {size!r}")
        checked[str(task)] = int(size)
    return checked


def check_rates(rates: Mapping[str, float]) -> dict[str, float]:
    """Validate raw rates: each finite and >= 0, and not all zero. Names the offending task."""
    if rates and not isinstance(rates, Mapping):
        raise InvalidRateError(f"sampling.rates must map task names to rates, e.g. {{task: 2.0}}; got {rates!r}")
    if not rates:
        raise InvalidRateError("no rates given: the mixture needs at least one task")
    checked = {}
    for task, rate in rates.items():
        try:
            value = float(rate)
        except (TypeError, ValueError):
            raise InvalidRateError(f"task {task!r} has a non-numeric rate {rate!r}") from None
        if math.isnan(value) or math.isinf(value):
            raise InvalidRateError(f"task {task!r} has rate {value}: rates must be finite numbers >= 0")
        if value < 0:
            raise InvalidRateError(f"task {task!r} has negative rate {value}: rates must be >= 0")
        checked[str(task)] = value
    if all(v == 0 for v in checked.values()):
        raise InvalidRateError(
            f"every rate is zero ({', '.join(checked)}): at least one task needs a positive rate"
        )
    if math.isinf(sum(checked.values())):
        raise InvalidRateError(f"the rates of {', '.join(checked)} add up to more than the largest float: "
                               f"scale them down (only their ratios matter)")
    return checked


def normalise(rates: Mapping[str, float]) -> dict[str, float]:
    """Validated rates divided by their sum."""
    rates = check_rates(rates)
    total = math.fsum(rates.values())
    return {task: rate / total for task, rate in rates.items()}


def seqio_rate(num_examples: float, *, maximum: Optional[float] = None, scale: float = 1.0,
               temperature: float = 1.0) -> float:
    """seqio's `mixing_rate_num_examples` on a count: scale, then clip at `maximum`, then ``** (1/T)``."""
    rate = num_examples * scale
    if maximum:
        rate = min(rate, maximum)
    if temperature != 1.0:
        rate = rate ** (1.0 / temperature)
    return rate


def template_cap_for(num_templates: int, *, template_cap: Optional[float] = None,
                     dataset_cap: Optional[float] = None) -> Optional[float]:
    """Per-template cap: `template_cap` as given, or T0's ``dataset_cap // num_templates``."""
    if template_cap is not None and dataset_cap is not None:
        raise InvalidRateError("give either sampling.template_cap or sampling.dataset_cap, not both")
    if dataset_cap is not None:
        return float(dataset_cap // num_templates)
    return template_cap


def check_template_sizes(template_sizes: Optional[Mapping[str, Mapping[str, int]]], templates: Mapping[str, int],
                         sizes: Mapping[str, int], sizes_count_templates: bool) -> dict[str, dict[str, int]]:
    """Validate `sampling.template_sizes` ({task: {template: examples}}): for sizes that count a row once per template
    (`sizes_count_templates`), each named task's `templates` count of templates with their own examples, adding up
    to its size in `sizes`. Raises InvalidRateError naming the task and what to give."""
    if not template_sizes:
        return {}
    if not isinstance(template_sizes, Mapping):
        raise InvalidRateError(f"sampling.template_sizes must map task names to {{template: examples}}, got "
                               f"{template_sizes!r}")
    if not sizes_count_templates:
        raise InvalidRateError("sampling.template_sizes gives the examples of each template of a task whose size "
                               "counts a row once per template: it needs sampling.sizes_count_templates: true (set "
                               "by data.all_templates)")
    checked = {}
    for task, counts in template_sizes.items():
        if task not in sizes:
            raise InvalidRateError(f"sampling.template_sizes names task {task!r}, which is not in the mixture")
        k = templates.get(task)
        if k is None:
            raise InvalidRateError(f"sampling.template_sizes gives task {task!r}'s templates, but sampling.templates "
                                   f"gives it no number of templates")
        if not isinstance(counts, Mapping) or not all(
                isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 0 for n in counts.values()):
            raise InvalidRateError(f"sampling.template_sizes of task {task!r} must map each of its templates to its "
                                   f"number of examples (an integer >= 0), got {counts!r}")
        if len(counts) != k or sum(counts.values()) != sizes[task]:
            given = f"{counted(len(counts), 'template')} with {counted(sum(counts.values()), 'example')}"
            raise InvalidRateError(f"sampling.template_sizes gives task {task!r} {given}; it has "
                                   f"{counted(int(k), 'template')} (sampling.templates) and "
                                   f"{counted(sizes[task], 'example')}: give each of its templates' own examples")
        checked[str(task)] = {str(name): int(n) for name, n in counts.items()}
    return checked


def size_rates(task_sizes: Mapping[str, int], *, temperature: float = 1.0, maximum: Optional[float] = None,
               scale: float = 1.0, templates: Optional[Mapping[str, int]] = None,
               template_cap: Optional[float] = None, dataset_cap: Optional[float] = None,
               sizes_count_templates: bool = False,
               template_sizes: Optional[Mapping[str, Mapping[str, int]]] = None) -> dict[str, float]:
    """Unnormalised rates of every task from its size (seqio semantics, optional per-template caps).

    Without `templates`, a task is one seqio task of `n` examples clipped at `maximum`. With `templates`
    ({task: k}), the task counts as `k` seqio tasks of `n` rows each — `n / k` each with `sizes_count_templates`
    (`n` counts each row once per template, as `data.all_templates` renders them), or each template's own count
    where `template_sizes` ({task: {template: examples}}, `check_template_sizes`) gives them (a template that skips
    rows holds fewer) —, each clipped at the per-template cap (`template_cap`, or `dataset_cap // k`, falling back to
    `maximum`), and its rate is their sum.
    `template_cap` and `dataset_cap` without `templates` are refused (they would cap nothing).
    """
    if temperature <= 0 or math.isnan(temperature):
        raise InvalidRateError(f"sampling.alpha (the temperature) must be > 0, got {temperature}")
    if maximum is not None and not maximum >= 0:
        raise InvalidRateError(f"sampling.cap must be >= 0 (0 or unset: no cap), got {maximum}")
    if not scale > 0:
        raise InvalidRateError(f"sampling.scale must be > 0, got {scale}")
    for key, cap in (("template_cap", template_cap), ("dataset_cap", dataset_cap)):
        if cap is not None and not cap > 0:
            raise InvalidRateError(f"sampling.{key} must be > 0, got {cap}")
    if not isinstance(sizes_count_templates, bool):
        raise InvalidRateError(f"sampling.sizes_count_templates must be true or false, got {sizes_count_templates!r}")
    sizes = check_task_sizes(task_sizes)
    if templates and not isinstance(templates, Mapping):
        raise InvalidRateError(f"sampling.templates must map task names to their numbers of templates, e.g. "
                               f"{{task: 3}}; got {templates!r}")
    templates = dict(templates or {})
    if not templates and (template_cap is not None or dataset_cap is not None):
        key = "template_cap" if template_cap is not None else "dataset_cap"
        raise InvalidRateError(f"sampling.{key} caps each template of a task, so it needs templates ({{task: number of "
                               f"templates}}); without them it would cap nothing (a cap on whole tasks is "
                               f"sampling.cap)")
    unknown = sorted(set(templates) - set(sizes))
    if unknown:
        raise InvalidRateError(f"template counts given for tasks not in the mixture: {', '.join(unknown)}")
    own_sizes = check_template_sizes(template_sizes, templates, sizes, sizes_count_templates)
    rates = {}
    for task, n in sizes.items():
        k, cap = templates.get(task), maximum
        if k is not None:
            if int(k) != k or k < 1:
                raise InvalidRateError(f"task {task!r} has {k!r} templates: the count must be an integer >= 1")
            cap = template_cap_for(int(k), template_cap=template_cap, dataset_cap=dataset_cap)
            if cap is None:
                cap = maximum
            elif cap == 0:  # seqio reads a cap of 0 as none: the task would get its whole, uncapped rate
                raise InvalidRateError(f"sampling.dataset_cap {dataset_cap:g} is smaller than task {task!r}'s {int(k)} "
                                       f"templates: its per-template cap dataset_cap // {int(k)} would be 0, which "
                                       f"means no cap at all; raise sampling.dataset_cap to at least {int(k)} "
                                       f"(or give sampling.template_cap)")
        try:
            if task in own_sizes:
                rate = math.fsum(seqio_rate(rows, maximum=cap, scale=scale, temperature=temperature)
                                 for rows in own_sizes[task].values())
            else:
                rows = n / k if k is not None and sizes_count_templates else n
                rate = (1 if k is None else int(k)) * seqio_rate(rows, maximum=cap, scale=scale,
                                                                 temperature=temperature)
        except OverflowError:
            rate = math.inf
        if math.isinf(rate):
            raise InvalidRateError(f"task {task!r} ({counted(n, 'example')}): its rate overflows a float at scale "
                                   f"{scale:g}, sampling.alpha {temperature:g}: use a larger alpha (or a smaller "
                                   f"scale)")
        rates[task] = rate
    return check_rates(rates)
