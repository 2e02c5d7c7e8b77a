"""Validation during and after training.

`held_in_exact_match`: end-of-run exact match of greedy generation on held-in validation examples.
`PeriodicValidator`: mid-training per-task validation loss and exact match (signals for adaptive samplers
and the dtp weighting). Both shard the rows over the data-parallel ranks and sum the results over them.
`zero_shot_evaluation`: the `evaluation:` section — every template of the held-out (or listed) tasks scored by
`t2t_mtl.evaluation`, report written to `<run dir>/eval`.
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from t2t_mtl.config import Config, ConfigError
from t2t_mtl.engine.bigbench_evaluation import bigbench_folders, check_bigbench_task_name, import_bigbench_tasks
from t2t_mtl.engine.distributed import DistEnv, sum_over_ranks
from t2t_mtl.engine.held_out import refuse_unknown_held_out_clusters
from t2t_mtl.evaluation.generation import ONE_SEQUENCE_EACH, decode_generated
from t2t_mtl.evaluation.labels import target_labels
from t2t_mtl.evaluation.rank_classification import evaluation_mode
from t2t_mtl.evaluation.scoring import written_form
from t2t_mtl.evaluation.sharding import shard_batches
from t2t_mtl.model.moe import CapacityDrops, batch_dependent, capacity_drops, token_masks
from t2t_mtl.size_limits import MAX_NEW_TOKENS
from t2t_mtl.wording import repeated_items


def with_task_token(tokenizer: Any, texts: Sequence[str], task: str, max_input_length: int) -> Tuple[List[str], int]:
    """(texts, max length to tokenize them with): with TE⊕ENC (the tokenizer has a `<task:NAME>` token for
    `task`) every text gets the task token in front and the length one more, as in training; else unchanged."""
    from t2t_mtl.analysis.task_embeddings import find_task_tokens, prefix_task_token

    if task not in find_task_tokens(tokenizer):
        return list(texts), max_input_length
    return [prefix_task_token(text, task) for text in texts], max_input_length + 1


def _lockstep(engine: Any, env: DistEnv) -> bool:
    """ZeRO-3 with several ranks: every forward pass gathers parameters with collectives, so the ranks must run
    the same passes (padding batches; `synced_gpus` generation)."""
    return engine.zero_optimization_stage() == 3 and env.world_size > 1


def _routing(pass_task_ids: bool, task_id: int, rows: int, device: torch.device) -> Dict[str, torch.Tensor]:
    """The `task_ids` keyword of a batch of one task (empty for models that take none)."""
    if not pass_task_ids:
        return {}
    return {"task_ids": torch.full((rows,), task_id, dtype=torch.long, device=device)}


def _exact_matches(model: Any, tokenizer: Any, enc: Any, inputs: Sequence[str], references: Sequence[Sequence[str]],
                   max_new_tokens: int, synced: bool, routing: Dict[str, torch.Tensor], task: Any) -> int:
    """How many greedy generations for the encoded `inputs` equal one of their `references` (each row's gold
    answers: the template's `references`, else its target), whitespace-normalised; both through `task`'s
    `postprocess` when it has one, as the evaluation scores generations."""
    out = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], do_sample=False,
                         num_beams=1, max_new_tokens=max_new_tokens, synced_gpus=synced, **ONE_SEQUENCE_EACH,
                         **routing)
    predictions = task.postprocessed(decode_generated(tokenizer, out, inputs))
    return count_exact_matches(predictions, [task.postprocessed(golds) for golds in references])


def count_exact_matches(preds: Sequence[str], references: Sequence[Sequence[str]]) -> int:
    """How many of `preds` equal one of their row's `references`, NFKC- and whitespace-normalised (ends dropped, runs
    read as one space), as the `exact_match` metric of the evaluation reads them."""
    return sum(written_form(p) in {written_form(g) for g in golds} for p, golds in zip(preds, references))


def held_in_split(task: Any) -> Optional[str]:
    """The split held-in validation scores of a training task: validation, else test, else its last split other
    than train (`preferred_split` of the others); None for a task whose only split is train (its rows are the
    training data)."""
    from t2t_mtl.evaluation.selection import preferred_split

    others = [split for split in task.splits if split != "train"]
    return preferred_split(others) if others else None


def held_in_exact_match(engine: Any, tokenizer: Any, task_names: Sequence[str], cfg: Config, env: DistEnv,
                        pass_task_ids: bool = False, batch_size: int = 32, drops: Optional[CapacityDrops] = None
                        ) -> Tuple[Dict[str, float], Optional[float], Optional[float]]:
    """Greedy-decode `data.validation_examples` rows of each task's `held_in_split`; return (per-task exact match
    against any of a row's gold answers, macro average, chance level), the same on every rank. Chance is
    1/len(answer choices) for tasks with choices, 0 otherwise. A task with no such split, or no rows in it, is left
    out of all three (the macro average and chance are None when no task is scored); the caller names the tasks
    missing from the first.

    Each rank decodes its shard of every task's rows (`shard_batches`) and the match counts are summed over the
    ranks: the numbers of one process decoding them all. Under ZeRO-3 with several ranks the ranks decode in
    lockstep (as many batches each, padding batches discarded; generation synced). `drops`, when given, gets the MoE
    capacity drops of the generations of the batches kept (`capacity_drops`), summed over the ranks with the match
    counts (no collective of their own), as periodic validation counts its own."""
    import task_registry

    model = engine.module
    lockstep = _lockstep(engine, env)
    correct = torch.zeros(len(task_names), dtype=torch.float64)
    datasets = []
    with evaluation_mode(model):
        for tid, name in enumerate(task_names):
            task = task_registry.get_task(name)
            split = held_in_split(task)
            ds = [] if split is None else task.to_dataset(split, templates=cfg.data.templates,
                                                          max_examples=cfg.data.validation_examples,
                                                          seed=cfg.training.seed)
            datasets.append(ds)
            for batch in shard_batches(len(ds), batch_size, env.rank, env.world_size, lockstep=lockstep):
                rows = ds[batch.rows]
                texts, max_length = with_task_token(tokenizer, rows["inputs"], name, cfg.data.max_input_length)
                enc = tokenizer(texts, max_length=max_length, truncation=True, padding=True,
                                return_tensors="pt").to(env.device)
                with capacity_drops(model) if drops is not None else nullcontext() as batch_drops:
                    matches = _exact_matches(model, tokenizer, enc, rows["inputs"], rows["references"],
                                             cfg.data.max_target_length, lockstep,
                                             _routing(pass_task_ids, tid, len(batch.rows), env.device), task)
                if batch.counted:
                    correct[tid] += matches
                    if drops is not None:
                        drops.merge(batch_drops)
    if drops is not None:
        correct = torch.cat([correct, torch.tensor([drops.dropped, drops.choices], dtype=torch.float64)])
    correct = sum_over_ranks(correct.to(env.device)).cpu()
    if drops is not None:
        drops.dropped, drops.choices = (int(count) for count in correct[-2:].tolist())
        correct = correct[:-2]
    per_task, chance = {}, []
    for name, ds, matches in zip(task_names, datasets, correct.tolist()):
        if len(ds):
            per_task[name] = matches / len(ds)
            choices = [len(c) for c in ds["answer_choices"] if c]
            chance.append(sum(1.0 / n for n in choices) / len(ds))
    if not per_task:
        return per_task, None, None
    return per_task, sum(per_task.values()) / len(per_task), sum(chance) / len(chance)


class PeriodicValidator:
    """Mid-training validation feeding the adaptive samplers and the dtp weighting.

    The first `examples` rows of each task's `held_in_split` (rendered once, tokenized per batch at each call; a task
    with none is a `ConfigError`) are scored by `__call__(engine)`: per-task mean token cross-entropy under teacher
    forcing (`val_loss`) and exact match of greedy generation against any of a row's gold answers (`val_score`, in
    [0, 1]). Each rank scores its shard of the rows (`local_sums`) and the sums are added over the ranks in float64,
    so every rank gets the same numbers — those of one process scoring every row, up to float summation order — and
    the sampler updates they drive stay identical across ranks. For a model whose MoE experts have a capacity
    (`batch_dependent`) a call also counts the (token, slot) choices its layers routed and dropped over capacity
    (`moe_drops`, summed over the ranks with the sums).
    """

    def __init__(self, tokenizer: Any, task_names: Sequence[str], cfg: Config, env: DistEnv, examples: int,
                 pass_task_ids: bool = False, batch_size: int = 32):
        import task_registry

        if examples < 1:
            raise ConfigError(f"training.validate_examples must be >= 1, got {examples}")
        self.tokenizer, self.task_names, self.cfg, self.env = tokenizer, list(task_names), cfg, env
        self.pass_task_ids, self.batch_size = pass_task_ids, batch_size
        self.rows: Dict[str, Dict[str, Any]] = {}
        self.moe_drops: Optional[CapacityDrops] = None
        self.tasks = {name: task_registry.get_task(name) for name in self.task_names}
        for name, task in self.tasks.items():
            split = held_in_split(task)
            if split is None:
                raise ConfigError(f"task {name!r} has only a train split, so periodic validation "
                                  f"(training.validate_every) would score its training rows: give the task a "
                                  f"validation split, or set training.validate_every: 0")
            ds = task.to_dataset(split, templates=cfg.data.templates, max_examples=examples, seed=cfg.training.seed)
            if len(ds) == 0:
                raise ConfigError(f"task {name!r} has no {split!r} rows for periodic validation "
                                  f"(training.validate_every); set training.validate_every: 0 or add the split")
            inputs, self.max_input_length = with_task_token(tokenizer, ds["inputs"], name, cfg.data.max_input_length)
            self.rows[name] = {"inputs": inputs, "targets": list(ds["targets"]), "references": list(ds["references"])}

    def __call__(self, engine: Any) -> Tuple[Dict[str, float], Dict[str, float]]:
        """(val_loss, val_score) per task, the same on every rank. `moe_drops` is then the capacity drops of the
        call's forwards over all ranks for a model with an expert capacity, else None; their counts ride the sums'
        one reduction (no collective of their own)."""
        drops = CapacityDrops() if batch_dependent(engine.module) else None
        local = self.local_sums(engine, drops)
        if drops is not None:
            counts = torch.tensor([[drops.dropped, drops.choices]], dtype=torch.float64)
            local = torch.cat([local, counts.to(local.device, non_blocking=True)])  # (nothing changes counts after)
        sums = sum_over_ranks(local).cpu()  # the call's one read of the device
        if drops is not None:
            drops = CapacityDrops(*(int(count) for count in sums[-1].tolist()))
            sums = sums[:-1]
        self.moe_drops = drops
        val_loss, val_score = {}, {}
        for name, (loss_sum, correct) in zip(self.task_names, sums.tolist()):
            val_loss[name] = loss_sum / len(self.rows[name]["inputs"])
            val_score[name] = correct / len(self.rows[name]["inputs"])
        return val_loss, val_score

    def local_sums(self, engine: Any, drops: Optional[CapacityDrops] = None) -> torch.Tensor:
        """[tasks, 2] float64 on the env's device: per task, this rank's sum of per-row mean token cross-entropies and
        its count of exact matches, over its shard of the rows (`shard_batches` with the env's rank and world size).
        The losses are added on the device in float64, in batch order (nothing waits for it here). Under ZeRO-3 with
        several ranks every rank runs as many teacher-forced forwards and (synced) generations, the padding batches'
        results discarded. `drops`, when given, gets the MoE capacity drops of the forwards of the batches kept
        (`capacity_drops`)."""
        lockstep = _lockstep(engine, self.env)
        losses = torch.zeros(len(self.task_names), dtype=torch.float64, device=self.env.device)
        correct = [0] * len(self.task_names)
        with evaluation_mode(engine.module):
            for tid, name in enumerate(self.task_names):
                inputs, targets, golds = (self.rows[name][key] for key in ("inputs", "targets", "references"))
                for batch in shard_batches(len(inputs), self.batch_size, self.env.rank, self.env.world_size,
                                           lockstep=lockstep):
                    with capacity_drops(engine.module) if drops is not None else nullcontext() as batch_drops:
                        loss_sum, matches = self._score_batch(engine.module, tid, [inputs[i] for i in batch.rows],
                                                              [targets[i] for i in batch.rows],
                                                              [golds[i] for i in batch.rows], lockstep)
                    if batch.counted:
                        losses[tid] += loss_sum.double()
                        correct[tid] += matches
                        if drops is not None:
                            drops.dropped += batch_drops.dropped
                            drops.choices += batch_drops.choices
        counts = torch.tensor(correct, dtype=torch.float64).to(self.env.device, non_blocking=True)
        return torch.stack([losses, counts], dim=1)  # (nothing changes the counts' host tensor after its copy)

    def _score_batch(self, model: Any, task_id: int, x: List[str], y: List[str], golds: List[List[str]],
                     synced: bool) -> Tuple[torch.Tensor, int]:
        """(sum over the rows of their mean token cross-entropy on the targets `y`, a float32 scalar on the device,
        not read here; generations matching one of their `golds`) of one batch."""
        device, tok, data = self.env.device, self.tokenizer, self.cfg.data
        # copies of host tensors nothing changes after: no need to wait for the device (pageable memory is staged)
        enc = tok(x, max_length=self.max_input_length, truncation=True, padding=True,
                  return_tensors="pt").to(device, non_blocking=True)
        labels = target_labels(tok, y, data.max_target_length).to(device, non_blocking=True)
        routing = _routing(self.pass_task_ids, task_id, len(x), device)
        with token_masks(model, decoder=labels.ne(-100)):
            logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                           decoder_input_ids=model._shift_right(labels), use_cache=False, **routing).logits
        token_ce = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100,
                                                     reduction="none")
        mask = (labels != -100).float()
        loss_sum = ((token_ce * mask).sum(1) / mask.sum(1).clamp(min=1.0)).sum()
        return loss_sum, _exact_matches(model, tok, enc, x, golds, data.max_target_length, synced, routing,
                                        self.tasks[self.task_names[task_id]])


def validation_drop_figures(drops: CapacityDrops) -> Dict[str, float]:
    """The `moe` figures of a validation record for the capacity drops of its validation: `val_dropped`, the share
    of the (token, slot) choices dropped over capacity (as training's `dropped`), and the counts `val_num_dropped`
    and `val_choices`."""
    share = drops.dropped / drops.choices if drops.choices else 0.0
    return {"val_dropped": share, "val_num_dropped": drops.dropped, "val_choices": drops.choices}


#: keys of the `evaluation:` config section (besides held_out / tasks / bigbench, these are EvalSettings fields)
EVALUATION_KEYS = ("held_out", "tasks", "bigbench", "max_examples", "scoring", "length_normalize", "batch_size",
                   "split", "num_beams", "max_new_tokens", "max_input_length", "every", "num_shots", "shots_split",
                   "original_task_only")


def evaluation_off(cfg: Config) -> bool:
    """`evaluation.held_out: false` without `tasks` or `bigbench`: the section is off, whatever settings a base config
    left."""
    section = cfg.evaluation or {}
    return section.get("held_out") is False and not section.get("tasks") and not section.get("bigbench")


def evaluation_every(cfg: Config) -> int:
    """`evaluation.every`: steps between zero-shot evaluations during training (0 or absent: only after it;
    0 when the section is off)."""
    every = (cfg.evaluation or {}).get("every", 0)
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise ConfigError(f"evaluation.every must be an integer >= 0 (steps between zero-shot evaluations during "
                          f"training; 0: only after training), got {every!r}")
    return 0 if evaluation_off(cfg) else every


def _check_default_generation_length(max_target_length: int) -> None:
    """ConfigError naming data.max_target_length where, as the default of evaluation.max_new_tokens, it is past
    `MAX_NEW_TOKENS` (EvalSettings' own refusal names evaluation.max_new_tokens, which the user never set)."""
    if max_target_length > MAX_NEW_TOKENS:
        raise ConfigError(f"data.max_target_length {max_target_length} is the default of evaluation.max_new_tokens, "
                          f"more than the {MAX_NEW_TOKENS} tokens a generation adds at most (t2t_mtl.size_limits): "
                          f"set evaluation.max_new_tokens to at most {MAX_NEW_TOKENS}, or lower "
                          f"data.max_target_length")


def evaluation_plan(cfg: Config) -> Tuple[List[str], Any]:
    """(task names, EvalSettings) for the `evaluation:` section; ([], None) when it is empty or disabled.

    `held_out: true` evaluates every registered task of `data.held_out_clusters`; `tasks: [..]` names tasks (a
    BIG-bench one among those `bigbench` imports); `bigbench: DIR` (or a list of folders; None or []: none) imports and
    adds the BIG-bench tasks there (`import_bigbench_tasks`);
    `held_out: false` without tasks or bigbench turns the section off (e.g. a base config's, from `--set`).
    Raises ConfigError naming the key for unknown keys, a missing task list, `tasks` that is not a list of distinct
    names, no held-out cluster, a `bigbench` folder holding no BIG-bench task, or a BIG-bench task's name in `tasks`
    that no `bigbench` folder imports."""
    import task_registry
    from t2t_mtl.evaluation import EvalSettings

    section = dict(cfg.evaluation or {})
    unknown = sorted(set(section) - set(EVALUATION_KEYS))
    if unknown:
        raise ConfigError(f"evaluation: unknown key(s) {unknown}; valid keys: {', '.join(EVALUATION_KEYS)}")
    evaluation_every(cfg)
    held_out, tasks = section.pop("held_out", None), section.pop("tasks", None)
    bigbench = section.pop("bigbench", None)
    bigbench_folders(bigbench)  # (its shape, before the section is found off)
    if held_out is not None and not isinstance(held_out, bool):  # a string ("false", a typo) would count as true
        raise ConfigError(f"evaluation.held_out must be true or false, got {held_out!r}")
    held_out = bool(held_out)
    if not held_out and not tasks and not bigbench:
        if section and not evaluation_off(cfg):
            raise ConfigError("evaluation: set held_out: true, tasks: [..] or bigbench: DIR to say what to evaluate "
                              "(or held_out: false to turn the section off)")
        return [], None
    section.pop("every", None)  # when to evaluate, not how
    task_registry.load_builtin_tasks()
    if tasks is not None and not isinstance(tasks, (list, tuple)):
        raise ConfigError(f"evaluation.tasks must be a list of task names such as [rte, cb] "
                          f"(`--set evaluation.tasks=[rte]`), got {tasks!r}")
    names = [str(t) for t in (tasks or [])]
    repeated = repeated_items(names)
    if repeated:
        raise ConfigError(f"evaluation.tasks names {', '.join(repeated)} more than once; each task is evaluated once")
    if held_out:
        if not cfg.data.held_out_clusters:
            instead = ("set evaluation.held_out: false to score evaluation.tasks alone" if tasks else
                       "set evaluation.held_out: false to score evaluation.bigbench's tasks alone" if bigbench else
                       "list evaluation.tasks")
            raise ConfigError(f"evaluation.held_out is true but data.held_out_clusters is empty: name the clusters "
                              f"to hold out, or {instead}")
        refuse_unknown_held_out_clusters(cfg.data.held_out_clusters)
        for cluster in cfg.data.held_out_clusters:
            names.extend(n for n in task_registry.list_tasks(cluster=cluster) if n not in names)
    imported = import_bigbench_tasks(bigbench)  # (before the names are checked: evaluation.tasks may name them)
    registered = task_registry.list_tasks()
    for name in names:
        if name not in registered:
            check_bigbench_task_name(name, imported)
            raise task_registry.UnknownTaskError(name, registered, where="evaluation.tasks")
    names.extend(n for n in imported if n not in names)
    bounded = "max_new_tokens" in section  # (given, not the default from data.max_target_length)
    section.setdefault("max_input_length", cfg.data.max_input_length)
    section.setdefault("max_new_tokens", cfg.data.max_target_length)
    section.setdefault("seed", cfg.training.seed)
    if not bounded and section.get("scoring", EvalSettings.scoring) != "rank":
        _check_default_generation_length(cfg.data.max_target_length)
    try:
        settings = EvalSettings(**section)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"evaluation.{err}") from None
    if settings.length_normalize and settings.scoring == "generate":  # (as `t2t-mtl eval` refuses them)
        raise ConfigError("evaluation.length_normalize changes how answer choices are ranked; it has no effect with "
                          "evaluation.scoring: generate")
    if settings.num_beams > 1 and settings.scoring == "rank":
        raise ConfigError("evaluation.num_beams sets the beam width of generation; it has no effect with "
                          "evaluation.scoring: rank")
    if bounded and settings.scoring == "rank":
        raise ConfigError("evaluation.max_new_tokens limits generation; it has no effect with evaluation.scoring: "
                          "rank")
    if settings.original_task_only:  # a task left with no template is found now, not after training
        from t2t_mtl.evaluation.selection import evaluated_templates

        for name in names:
            try:
                evaluated_templates(task_registry.get_task(name), settings)
            except ValueError as err:
                raise ConfigError(f"evaluation.original_task_only: {err}") from None
    if settings.scoring == "rank":  # a template rank classification cannot score is found now, not after training
        refuse_unrankable_templates(names, settings)
    for name in names if settings.split is not None else ():  # found now, not after training
        splits = list(task_registry.get_task(name).splits)
        if settings.split not in splits:
            raise ConfigError(f"evaluation.split {settings.split!r}: task {name!r} has splits {splits}")
    if settings.num_shots:  # the demonstrations' split too
        from t2t_mtl.evaluation.few_shot import demonstration_split
        from t2t_mtl.evaluation.selection import default_split

        for name in names:
            task = task_registry.get_task(name)
            try:
                demonstration_split(task, settings.split or default_split(task), settings.shots_split)
            except ValueError as err:
                raise ConfigError(f"evaluation.shots_split: {err}") from None
    elif settings.shots_split is not None:
        raise ConfigError("evaluation.shots_split names the split of k-shot demonstrations: set evaluation.num_shots "
                          "too, or drop it")
    return names, settings


def refuse_unrankable_templates(names: Sequence[str], settings: Any) -> None:
    """A ConfigError naming each evaluated task (`names`) whose templates, as `settings` select them, include one
    without `answer_choices`: `evaluation.scoring: rank` cannot score it, and the runner would refuse it only after
    training (a base config's `scoring: rank`, as the quickstart's, applies to the tasks a layer adds)."""
    from t2t_mtl.evaluation.selection import unrankable_message

    problem = unrankable_message(names, settings, "evaluation.scoring rank",
                                 "set evaluation.scoring: auto (rank where a template has choices, generation "
                                 "elsewhere) or generate (a base config's scoring applies too: the quickstart's is "
                                 "rank)")
    if problem:
        raise ConfigError(problem)


def zero_shot_evaluation(engine: Any, tokenizer: Any, cfg: Config, env: DistEnv, out_dir: Path,
                         progress: bool = True, plots: bool = True, *,
                         plan: Optional[Tuple[List[str], Any]] = None) -> Optional[Dict[str, Any]]:
    """Run the `evaluation:` section on the model as it is; rank 0 writes report.json/report.md (and with
    `plots` a PNG per task) to `out_dir`. Returns {"tasks": {task: median score 0-100}, "macro_average",
    "chance" (`summarize`'s: of the same tasks as the macro average, or None), "report": path} (every rank) or None
    when the section is empty. Each rank scores its shard of the examples and the outputs are gathered
    (`evaluate_tasks`); under ZeRO-3 with several ranks the ranks run in lockstep (partitioned parameters need the
    same forward passes on all ranks). `plan`: the run's `evaluation_plan(cfg)`, when the caller has it (a
    training run evaluating every `evaluation.every` steps works it out once); else it is worked out here."""
    from t2t_mtl.evaluation import evaluate_tasks, write_report
    from t2t_mtl.evaluation.aggregate import summarize

    names, settings = plan if plan is not None else evaluation_plan(cfg)
    if not names:
        return None
    with evaluation_mode(engine.module), logging_redirect_tqdm():  # (warnings on lines of their own, not the bar's)
        report = evaluate_tasks(engine.module, tokenizer, names, settings, name=str(cfg.training.output_dir),
                                rank=env.rank, world_size=env.world_size, progress=progress and env.is_main,
                                lockstep=_lockstep(engine, env))
    if env.is_main:
        write_report(report, out_dir, plots=plots)
    summary = summarize(report)
    return {"tasks": {t: s.median for t, s in summary["tasks"].items()}, "macro_average": summary["macro_average"],
            "chance": summary["chance"], "report": Path(out_dir) / "report.json"}
