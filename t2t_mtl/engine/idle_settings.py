"""The settings a run accepts but leaves idle, each a warning (`config_warnings`): a schedule or period longer than
the run, rates the sampler does not draw by (`unused_mixture_rates`), sampling keys CA-MTL selection does not read,
keys of model.moe its routing does not read (and renormalised top-1 gates), training or batching keys something else
replaces, a DeepSpeed key DeepSpeed does not read, gradient surgery in a run of one task, and held-out tasks of the
run's own that it neither trains nor scores; and, from the sampler and weighting a run builds, a sampling schedule or
curriculum start epoch its last step comes before (`idle_schedule_warning`, `idle_curriculum_warning`)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, FrozenSet, List, Mapping, Optional

from t2t_mtl.config import Config, changed_keys, tasks_dirs, tokenizer_source
from t2t_mtl.engine.checked_deepspeed import CheckedDeepSpeed, deepspeed_key_warnings
from t2t_mtl.engine.component_checks import placeholder_sampler
from t2t_mtl.engine.deepspeed_replaced_keys import replaced_training_keys
from t2t_mtl.engine.run_mixture import training_rates
from t2t_mtl.engine.run_sampling import run_sampling_config, size_based
from t2t_mtl.engine.signal_checks import validation_users
from t2t_mtl.model.moe_config import unread_moe_keys

if TYPE_CHECKING:
    from t2t_mtl.sampling import MixtureSampler

__all__ = ["config_warnings", "idle_curriculum_warning", "idle_schedule_warning", "sampling_warnings",
           "unused_mixture_rates"]


def unused_mixture_rates(cfg: Config) -> Optional[str]:
    """The warning for a registered `data.mixture` whose rates (of the tasks the run trains from it) differ while
    the sampler draws by something else: another strategy than `explicit`, or `sampling.rates`. None when they are
    equal (a list of tasks), drawn by, or rate tasks by a function (`rate_num_examples`) under a strategy that draws
    by task sizes itself. Reads the registry as `training_rates(cfg)` left it."""
    import task_registry

    d, strategy = cfg.data, cfg.sampling.get("strategy")
    if d.mixture is None or isinstance(d.tasks, dict) or d.mixture not in task_registry.list_mixtures():
        return None
    if strategy == "explicit" and "rates" not in cfg.sampling:
        return None
    if size_based(strategy) and _rates_by_function(task_registry.get_mixture(d.mixture)):
        return None
    rates = task_registry.training_rates(d.mixture, held_out_clusters=d.held_out_clusters, force=True)
    rates = {task: rates[task] for task in d.tasks if task in rates} if d.tasks else rates
    if len(set(rates.values())) < 2:
        return None
    shares = task_registry.normalize(rates)
    shown = ", ".join(f"{task} {share:.3g}" for task, share in list(shares.items())[:4])
    more = f", … ({len(shares)} tasks)" if len(shares) > 4 else ""
    why = (f"sampling.strategy {strategy!r} does not draw by them" if strategy != "explicit"
           else "sampling.rates replaces them")
    return (f"data.mixture {d.mixture!r} gives its tasks rates ({shown}{more}), but {why}: they go unused "
            f"(sampling.strategy: explicit without sampling.rates draws by them; `t2t-mtl mixture show --config` "
            f"shows what the run draws)")


def _rates_by_function(mixture: Any, seen: frozenset = frozenset()) -> bool:
    """Whether `mixture` or a mixture inside it rates a member by a function of the task (`rate_num_examples`)."""
    import task_registry

    for member, rate in mixture.members:
        if callable(rate):
            return True
        inner = task_registry.resolve(member) if isinstance(member, str) else member
        if isinstance(inner, task_registry.Mixture) and inner.name not in seen \
                and _rates_by_function(inner, seen | {mixture.name}):
            return True
    return False


def config_warnings(cfg: Config, world_size: int = 1, deepspeed: Optional[CheckedDeepSpeed] = None,
                    sampler: Optional[MixtureSampler] = None, resuming: bool = False) -> List[str]:
    """Settings a run on `world_size` ranks accepts but that leave a feature idle: a schedule or period longer than
    the run, rates that the sampler does not draw by, a DeepSpeed key DeepSpeed does not read (from `deepspeed`, the
    run's checked DeepSpeed config; None: built and parsed here). `sampler`: the run's (what it learns from is read
    on it; None: built here on placeholder sizes where a warning needs it). `resuming`: a resume, which reads the
    run's own tokenizer whatever tokenizer.train says (its config is the run's config.yaml, every key written out,
    a base config's too), so tokenizer.train is not warned of: the run's start was, where it was the user's."""
    out = list(deepspeed.warnings) if deepspeed is not None else deepspeed_key_warnings(cfg, world_size)
    filled = deepspeed.autos.auto_training_keys if deepspeed is not None else None
    return out + sampling_warnings(cfg) + _moe_warnings(cfg.model.moe or {}) + \
        _unused_key_warnings(cfg, filled, resuming) + _schedule_warnings(cfg, world_size, sampler) + \
        _surgery_warnings(cfg, sampler) + _held_out_warnings(cfg)


def _held_out_warnings(cfg: Config) -> List[str]:
    """Tasks of the run's own `data.tasks_dir` flagged held_out (kept for zero-shot evaluation) whose cluster
    `data.held_out_clusters` does not hold out and that neither `data.train_held_out` nor `evaluation.tasks` names:
    the run neither trains them nor reaches them by held-out evaluation (which scores the held-out clusters)."""
    import task_registry

    folders = [Path(folder).resolve() for folder in tasks_dirs(cfg)]
    if not folders:
        return []
    named = set(cfg.data.train_held_out) | {str(t) for t in (cfg.evaluation or {}).get("tasks") or ()}
    out = []
    for name in task_registry.list_tasks():
        path = task_registry.yaml_task_file(name)
        if path is None or not any(path.is_relative_to(folder) for folder in folders):
            continue  # (not one of the run's own YAML tasks)
        task = task_registry.get_task(name)
        if not task.held_out or task.cluster in cfg.data.held_out_clusters or name in named:
            continue
        out.append(f"task {name!r} ({path}) is flagged held_out (kept for zero-shot evaluation), but its cluster "
                   f"{task.cluster!r} is not in data.held_out_clusters {list(cfg.data.held_out_clusters)}: the run "
                   f"neither trains it nor scores it zero-shot; add {task.cluster!r} to data.held_out_clusters, or "
                   f"name it in evaluation.tasks")
    return out


def _surgery_warnings(cfg: Config, sampler: Optional[MixtureSampler]) -> List[str]:
    """gradient_surgery in a run of one task (read on `sampler`, None: the config's training rates), whose every step
    holds that task's gradient alone: nothing to combine (a transfer study's single-task runs of a base config with
    surgery train so, hence a warning, not a refusal); under sampling.strategy round_robin, a training.grad_accum
    that is no multiple of the tasks, whose steps straddle the cycles."""
    if not cfg.gradient_surgery:
        return []
    tasks = sampler.tasks if sampler is not None else list(training_rates(cfg))
    accum = cfg.training.grad_accum
    if len(tasks) > 1 and cfg.sampling.get("strategy") == "round_robin" and accum % len(tasks):
        return [f"sampling.strategy round_robin draws each of the {len(tasks)} tasks once in every {len(tasks)} "
                f"micro-batches, but training.grad_accum {accum} is no multiple of {len(tasks)}: the steps straddle "
                f"those cycles, so gradient_surgery's steps lack some tasks and may hold one twice; set "
                f"training.grad_accum to {len(tasks)} (or a multiple) for every step to hold each task"]
    if len(tasks) > 1:
        return []
    return [f"gradient_surgery combines the gradients of a step's tasks, but the run trains one task ({tasks[0]}), so "
            f"every step holds its gradient alone and there is nothing to combine: it has no effect (a method's "
            f"weight for one gradient only rescales it); train two or more tasks, or drop gradient_surgery"]


def sampling_warnings(cfg: Config) -> List[str]:
    """Rates (`data.tasks`', a mixture's) the sampler does not draw by; sampling.mode homogeneous and block_size under
    CA-MTL selection, which draws no tasks; weighting tchebycheff's max over the tasks of a micro-batch where each holds
    one task (of `config_warnings`; `mixture show --config` prints them too)."""
    out: List[str] = []
    strategy = cfg.sampling.get("strategy")
    if isinstance(cfg.data.tasks, dict) and (strategy != "explicit" or "rates" in cfg.sampling):
        why = (f"sampling.strategy {strategy!r} does not draw by rates" if strategy != "explicit"
               else "sampling.rates replaces them")
        out.append(f"data.tasks gives rates, but {why}: they go unused (sampling.strategy: explicit without "
                   f"sampling.rates draws by them)")
    elif (warning := unused_mixture_rates(cfg)) is not None:
        out.append(warning)
    selects = strategy == "uncertainty"  # (CA-MTL keeps the most uncertain candidates of every task's pool)
    idle = [key for key in ("mode", "block_size") if cfg.sampling.get(key) not in (None, "mixed")]
    if selects and idle:
        out.append(f"sampling.{' and sampling.'.join(idle)}: sampling.strategy 'uncertainty' keeps the most uncertain "
                   f"candidates of a pool of every task for each micro-batch, so its micro-batches mix tasks and it "
                   f"draws no tasks: {'it has' if len(idle) == 1 else 'they have'} no effect")
    one_task = cfg.sampling.get("mode", "homogeneous") == "homogeneous" and not selects
    if cfg.weighting.get("method") == "tchebycheff" and one_task:
        out.append("weighting.method tchebycheff takes the max over the tasks of one micro-batch, and under "
                   "sampling.mode homogeneous (the default) each micro-batch holds one task, so it reduces to the "
                   "weighted sum of the tasks' losses; sampling.mode: mixed gives the max over tasks")
    return out


#: an epoch past the end of every shipped schedule over epochs (annealed's sampling.epochs, dynamic_temperature's
#: warm-up), where a sampler's rates are those its schedule ends at
PAST_SCHEDULES = 1e9


def idle_schedule_warning(sampler: MixtureSampler, last_epoch: float, total_examples: int) -> Optional[str]:
    """The warning for a `sampler` whose rates follow a schedule over the epochs of the mixture's `total_examples`
    (they differ at a later epoch) that a run whose last step starts at epoch `last_epoch` never moves: its rates there
    are those of epoch 0, so the schedule's settings have no effect. None for a run that reaches a change (or, resumed,
    has reached one), and for rates no epoch changes (a constant strategy, one that learns instead, tasks of one size);
    a registered strategy is not looked at (its instance, which `probabilities_at` copies, may hold what does not
    copy)."""
    from t2t_mtl.sampling.registry import SHIPPED_STRATEGIES

    if sampler.strategy not in SHIPPED_STRATEGIES:
        return None
    start = sampler.probabilities_at(0.0)
    if sampler.probabilities_at(last_epoch) != start or sampler.probabilities_at(PAST_SCHEDULES) == start:
        return None
    return (f"sampling.strategy {sampler.strategy!r} changes its rates over the epochs of the mixture's "
            f"{total_examples} examples, but the run's last step starts at epoch {last_epoch:.3g} of them, before its "
            f"first change: it draws at its rates of epoch 0 throughout, so the schedule has no effect; train longer, "
            f"or on fewer examples (data.max_examples_per_task)")


def idle_curriculum_warning(weighting: Any, last_epoch: float, total_examples: int) -> Optional[str]:
    """The warning for a `curriculum` weighting with tasks whose start epoch e'_t comes after `last_epoch`, where the
    run's last step starts (epochs of the mixture's `total_examples`): their loss weights stay below half of their
    full weights throughout. None for any other weighting, and where every task's start epoch is reached."""
    from t2t_mtl.weighting.methods import CurriculumWeighting

    if not isinstance(weighting, CurriculumWeighting):
        return None
    late = [t for t in weighting.task_names if weighting.start_epochs[t] > last_epoch]
    if not late:
        return None
    shares = ", ".join(f"{t} ({weighting.start_epochs[t]:g}: "
                       f"{weighting.task_weight(t, last_epoch) / weighting.base[t]:.3g} of its full weight there)"
                       for t in late)
    return (f"weighting.method curriculum fades each task in around its start epoch, but the run's last step starts "
            f"at epoch {last_epoch:.3g} of the mixture's {total_examples} examples, before the start epoch of "
            f"{shares}: such a task trains at less than half its full loss weight throughout; lower its "
            f"weighting.start_epochs, train longer, or on fewer examples (data.max_examples_per_task)")


def _moe_warnings(moe: Mapping[str, Any]) -> List[str]:
    """Keys of the `model.moe` section its routing does not read (`unread_moe_keys`: capacity and backend under
    routing task, capacity under dropless, unseen-task routing under routing token), one expert, among which the
    routing has nothing to choose, and renormalised top-1 gates, which are all 1, so the training loss gives the
    routing no gradient."""
    out: List[str] = []
    one_expert = type(moe.get("num_experts")) is int and moe["num_experts"] == 1  # (true, 1.0: refused at build)
    if one_expert:
        out.append("model.moe.num_experts 1: every token goes to the one expert, so the routing chooses nothing and "
                   "each MoE layer is its dense feed-forward layer behind a gate (1 under score softmax), with the "
                   "routing's parameters and auxiliary losses on top; give at least 2 experts, or set model.moe to "
                   "null for a dense model")
    if moe.get("renormalize") is True and type(moe.get("top_k")) is int and moe["top_k"] == 1 and not one_expert:
        routed_by = {"task": "the task gate rows", "hybrid": "the router and the task gate rows"}
        out.append(f"model.moe.renormalize true with top_k 1: each token's one gate is renormalised to 1, so the "
                   f"training loss gives {routed_by.get(moe.get('routing'), 'the router')} no gradient and only the "
                   f"auxiliary losses move them; leave renormalize unset (top-1 gates then stay the experts' scores, "
                   f"as in Switch) or set it false")
    unread = unread_moe_keys(moe.get("routing", "token"), moe.get("dropless") is True)
    idle = [key for key in unread if key in moe]  # (the keys given that the routing leaves unread)
    capacity_keys = [key for key in idle if key != "backend" and unread[key] == "routing task"]
    if capacity_keys:
        out.append(f"model.moe.{', model.moe.'.join(capacity_keys)}: routing task sends every token of a task to "
                   f"its experts with no capacity limit, so {'it has' if len(capacity_keys) == 1 else 'they have'} "
                   f"no effect")
    idle_capacity = [key for key in idle if unread[key] == "dropless"]
    if idle_capacity:
        out.append(f"model.moe.{', model.moe.'.join(idle_capacity)}: dropless: true routes every token's top-k "
                   f"choices with no capacity limit, so {'it has' if len(idle_capacity) == 1 else 'they have'} "
                   f"no effect")
    if "backend" in idle:
        out.append("model.moe.backend: routing task runs no routing kernel (a task's experts are the top_k of its gate "
                   "row, chosen once per batch by the PyTorch reference), so it has no effect (it applies to routing "
                   "token and hybrid)")
    if "unseen_task_routing" in idle:
        out.append("model.moe.unseen_task_routing: routing token picks each token's experts by its own router, "
                   "whatever its task, so it has no effect (it applies to routing task and hybrid)")
    return out


def _unused_key_warnings(cfg: Config, filled: Optional[FrozenSet[str]], resuming: bool = False) -> List[str]:
    """Keys the rest of the run's settings leave unread: batching keys, training keys a DeepSpeed config replaces
    (but for those filling its "auto" values, `filled`; None: read here), `tokenizer.train` where the run loads its
    tokenizer (not `resuming`)."""
    out: List[str] = []
    d = cfg.data
    uses = {"bucket_batches": ("bucket", "pack"), "pad_to_multiple_of": ("bucket", "pack", "pad_to_longest")}
    idle = [key for key in changed_keys(d, list(uses)) if d.batching not in uses[key]]
    if idle:
        out.append(f"data.{' and data.'.join(idle)}: data.batching {d.batching} does not use "
                   f"{'it' if len(idle) == 1 else 'them'}, so {'it has' if len(idle) == 1 else 'they have'} no effect")
    for keys, why in replaced_training_keys(cfg, filled):
        out.append(f"training.{', training.'.join(keys)}: {why}, so {'it has' if len(keys) == 1 else 'they have'} "
                   f"no effect")
    source = tokenizer_source(cfg)
    if source is not None and not resuming and changed_keys(cfg.tokenizer, ["train"]) \
            and "tokenizer.train" not in cfg.base_only_keys:
        # (a base config's, as the quickstart's, left by the user's tokenizer.path: not theirs to drop)
        key = "tokenizer.path" if cfg.tokenizer.path is not None else "model.name_or_path"
        out.append(f"tokenizer.train is set, but the run loads the tokenizer of {key} ({source!r}) and trains none, "
                   f"so it has no effect")
    return out


def _schedule_warnings(cfg: Config, world_size: int, sampler: Optional[MixtureSampler]) -> List[str]:
    """Periods longer than the run: warm-up, periodic validation (and what relies on it: `validation_users`, read on
    `sampler`, None: built on placeholder sizes for `world_size` ranks), zero-shot evaluation."""
    t = cfg.training
    out: List[str] = []
    if t.warmup >= t.steps:
        out.append(f"training.warmup ({t.warmup}) >= training.steps ({t.steps}): the learning rate never leaves "
                   f"warm-up")
    if t.validate_every > t.steps:
        if sampler is None:
            rates = training_rates(cfg)
            sampler = placeholder_sampler(cfg, run_sampling_config(cfg, rates), list(rates), world_size=world_size)
        idle = validation_users(cfg, sampler) + ([f"training.early_stopping {t.early_stopping}"]
                                                 if t.early_stopping else [])
        out.append(f"training.validate_every ({t.validate_every}) > training.steps ({t.steps}): no periodic "
                   f"validation runs" + (f", so {' and '.join(idle)} never act" if idle else ""))
    if t.validate_every == 0 and changed_keys(t, ["validate_examples"]):
        out.append(f"training.validate_examples ({t.validate_examples}) sizes the periodic validation, which "
                   f"training.validate_every 0 turns off, so it has no effect (the held-in score at the end reads "
                   f"data.validation_examples)")
    from t2t_mtl.engine.validation import evaluation_every

    every = evaluation_every(cfg)
    if every > t.steps:
        out.append(f"evaluation.every ({every}) > training.steps ({t.steps}): no zero-shot evaluation during "
                   f"training (the one after training still runs)")
    return out
