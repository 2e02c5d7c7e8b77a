"""Validation and evaluation sharded over data-parallel ranks: each rank scores its shard of the rows, the
results are combined over the ranks, and every rank gets the numbers of one process scoring every row —
checked against a row-by-row reference (one forward and one generation per row) in one process with simulated
ranks, and with two real processes (gloo) under ZeRO-2 and ZeRO-3 (lockstep: the same forward passes on every
rank)."""
from __future__ import annotations

import copy
import json
import os
from types import SimpleNamespace

import pytest
import torch

from t2t_mtl.config import config_from_dict
from t2t_mtl.engine.distributed import DistEnv
from t2t_mtl.engine.validation import PeriodicValidator, held_in_exact_match
from t2t_mtl.evaluation.sharding import shard_batches

from engine_helpers import TASKS, free_port, spawn_ranks, tiny_config, train_tiny_tokenizer

ROWS = 5  # odd, and more than a batch: the two ranks' shards differ in rows and in batches
BATCH = 2
HELD_IN_ROWS = 3
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


class _Engine:
    """What the validators read of a DeepSpeed engine, for a plain model in one process."""

    def __init__(self, module):
        self.module = module

    def zero_optimization_stage(self) -> int:
        return 0


def _config(tok_dir, root, stage: int = 0):
    return config_from_dict(tiny_config(root / "run", tok_dir, root / "cache", deepspeed={"zero_stage": stage},
                                        data={"validation_examples": HELD_IN_ROWS},
                                        evaluation={"tasks": TASKS, "max_examples": ROWS, "batch_size": BATCH,
                                                    "max_new_tokens": 4}))


def _model(cfg, tokenizer):
    from t2t_mtl.model import build_model

    torch.manual_seed(0)
    return build_model(cfg.model, vocab_size=len(tokenizer)).eval()


def _validator(tokenizer, cfg, env, targets=None) -> PeriodicValidator:
    validator = PeriodicValidator(tokenizer, TASKS, cfg, env, ROWS, batch_size=BATCH)
    for name, task_targets in (targets or {}).items():
        validator.rows[name]["targets"] = task_targets
        validator.rows[name]["references"] = [[target] for target in task_targets]
    return validator


@torch.no_grad()
def _row_by_row(model, tokenizer, validator):
    """Per task, per row: (the model's own mean token loss of the row (`labels=`), whether its greedy decode
    equals the target, the decode) — one forward and one generation per row."""
    data = validator.cfg.data
    scored = {}
    for name in TASKS:
        rows = validator.rows[name]
        scored[name] = []
        for x, y in zip(rows["inputs"], rows["targets"]):
            enc = tokenizer([x], max_length=validator.max_input_length, truncation=True, return_tensors="pt")
            labels = tokenizer(text_target=[y], max_length=data.max_target_length, truncation=True,
                               return_tensors="pt")["input_ids"]
            out = model.generate(**enc, do_sample=False, num_beams=1, max_new_tokens=data.max_target_length)
            text = tokenizer.decode(out[0], skip_special_tokens=True).strip()
            scored[name].append((float(model(**enc, labels=labels).loss), float(text == y), text))
    return scored


def _sums(scored, rows):
    """[tasks, 2]: per task, the sums of the row-by-row losses and matches of `rows`."""
    return torch.tensor([[sum(scored[name][i][k] for i in rows) for k in (0, 1)] for name in TASKS],
                        dtype=torch.float64)


def _reachable_targets(validator, scored):
    """The gold targets with every second one replaced by the model's own generation, so that exact match is
    neither 0 nor 1 (a randomly initialised model matches no gold target)."""
    return {name: [row[2] if i % 2 else gold for i, (gold, row) in
                   enumerate(zip(validator.rows[name]["targets"], scored[name]))] for name in TASKS}


@pytest.fixture(scope="module")
def reference(tok_dir, tmp_path_factory):
    """(cfg, tokenizer, model, targets, row-by-row scores, val_loss, val_score) on one process."""
    from t2t_mtl.tokenizer import load_tokenizer

    cfg = _config(tok_dir, tmp_path_factory.mktemp("ref"))
    tokenizer = load_tokenizer(str(tok_dir))
    model = _model(cfg, tokenizer)
    validator = _validator(tokenizer, cfg, DistEnv(0, 1, 0, CPU, "gloo"))
    targets = _reachable_targets(validator, _row_by_row(model, tokenizer, validator))
    scored = _row_by_row(model, tokenizer, _validator(tokenizer, cfg, validator.env, targets))
    means = _sums(scored, range(ROWS)) / ROWS
    val_loss = {name: float(means[t, 0]) for t, name in enumerate(TASKS)}
    val_score = {name: float(means[t, 1]) for t, name in enumerate(TASKS)}
    assert all(0 < s < 1 for s in val_score.values()), val_score
    return cfg, tokenizer, model, targets, scored, val_loss, val_score


@pytest.mark.parametrize("rows, world", [(5, 2), (7, 3), (1, 2), (0, 2), (4, 1)])
def test_shards_are_disjoint_cover_every_row_and_lockstep_evens_the_batch_counts(rows, world):
    free = [shard_batches(rows, BATCH, r, world) for r in range(world)]
    counted = sorted(i for batches in free for b in batches for i in b.rows)
    assert counted == list(range(rows))
    assert all(b.counted and len(b.rows) <= BATCH for batches in free for b in batches)
    lockstep = [shard_batches(rows, BATCH, r, world, lockstep=True) for r in range(world)]
    assert len({len(batches) for batches in lockstep}) == 1
    assert len(lockstep[0]) == -(-(-(-rows // world)) // BATCH)
    for own, padded in zip(free, lockstep):
        assert padded[:len(own)] == own and all(b.rows == [0] and not b.counted for b in padded[len(own):])


def test_shard_batches_refuses_a_rank_outside_the_world():
    with pytest.raises(ValueError, match="rank=2, world_size=2"):
        shard_batches(5, BATCH, 2, 2)


def test_each_shard_scores_its_rows_and_the_shards_add_up_to_the_row_by_row_scores(reference):
    cfg, tokenizer, model, targets, scored, val_loss, val_score = reference
    one = _validator(tokenizer, cfg, DistEnv(0, 1, 0, CPU, "gloo"), targets)
    loss, score = one(_Engine(model))
    assert loss == pytest.approx(val_loss, rel=1e-5) and score == val_score
    for rank in range(2):  # rank r of 2 scores rows r, r + 2, ...
        local = _validator(tokenizer, cfg, DistEnv(rank, 2, rank, CPU, "gloo"), targets).local_sums(_Engine(model))
        expected = _sums(scored, range(rank, ROWS, 2))
        assert local[:, 1].tolist() == expected[:, 1].tolist()
        assert local[:, 0].tolist() == pytest.approx(expected[:, 0].tolist(), rel=1e-5)


def test_the_validation_loss_does_not_depend_on_the_side_the_tokenizer_pads(reference):
    # was: the targets were padded by the tokenizer, so one that pads on the left (saved with padding_side="left")
    # gave a shorter target's decoder pad tokens before its own, and val_loss was another sequence's loss
    cfg, tokenizer, model, targets, scored, val_loss, val_score = reference
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        loss, score = _validator(tokenizer, cfg, DistEnv(0, 1, 0, CPU, "gloo"), targets)(_Engine(model))
    finally:
        tokenizer.padding_side = side
    assert loss == pytest.approx(val_loss, rel=1e-5) and score == val_score


def test_a_generation_matching_another_gold_answer_counts_as_an_exact_match(reference):
    # was: validation compared generations with the row's target only, so a task with several gold answers
    # (`references`: WebQuestions, XQuAD) was scored stricter than the evaluation that reports it
    cfg, tokenizer, model, targets, scored, val_loss, val_score = reference
    validator = _validator(tokenizer, cfg, DistEnv(0, 1, 0, CPU, "gloo"))
    for name in TASKS:
        rows = validator.rows[name]
        rows["references"] = [[gold, own[2]] for gold, own in zip(rows["targets"], scored[name])]
    loss, score = validator(_Engine(model))
    assert score == {name: 1.0 for name in TASKS}
    assert loss == pytest.approx(_validator(tokenizer, cfg, validator.env)(_Engine(model))[0], rel=1e-6)


def _passes(model) -> tuple:
    """(a list that gets "e" for each encoder pass and "d" for each decoder pass of `model` from now on, the
    hook handles)."""
    calls: list = []
    return calls, [model.get_encoder().register_forward_pre_hook(lambda *_: calls.append("e")),
                   model.get_decoder().register_forward_pre_hook(lambda *_: calls.append("d"))]


STAGES = (2, 3)


def _rank_worker(rank: int, port: int, tok_dir: str, root: str, targets: dict) -> None:
    """One of two ranks: for each of STAGES, a ZeRO-stage DeepSpeed engine on the reference's model; writes its
    validation and zero-shot evaluation numbers, and the encoder and decoder passes its model ran for each, into
    `root`/zero<stage> (one process pair for every stage: spawning costs more than scoring)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), DS_ACCELERATOR="cpu")
    from pathlib import Path

    import task_registry
    from t2t_mtl.engine.deepspeed_config import build_deepspeed_config
    from t2t_mtl.engine.distributed import init_distributed, shut_down_process_group
    from t2t_mtl.engine.deepspeed_engine import initialize_deepspeed
    from t2t_mtl.engine.validation import zero_shot_evaluation
    from t2t_mtl.tokenizer import load_tokenizer

    task_registry.load_builtin_tasks()
    env = init_distributed(num_threads=1)
    tokenizer = load_tokenizer(tok_dir)
    for stage in STAGES:
        folder = Path(root) / f"zero{stage}"
        folder.mkdir(exist_ok=True)  # (by each rank: rank 0's evaluation creates it, rank 1 may write first)
        cfg = _config(Path(tok_dir), folder, stage)
        engine = initialize_deepspeed(_model(cfg, tokenizer), build_deepspeed_config(cfg, 2), cfg)
        passes, _ = _passes(engine.module)
        val_loss, val_score = _validator(tokenizer, cfg, env, targets)(engine)
        held_in = held_in_exact_match(engine, tokenizer, TASKS, cfg, env, batch_size=BATCH)
        validation_passes = "".join(passes)
        passes.clear()
        evaluation = zero_shot_evaluation(engine, tokenizer, cfg, env, folder / "eval", progress=False, plots=False)
        with open(folder / f"rank{rank}.json", "w") as f:
            json.dump({"val_loss": val_loss, "val_score": val_score, "held_in": held_in,
                       "zero_shot": evaluation["tasks"], "validation_passes": validation_passes,
                       "evaluation_passes": "".join(passes)}, f)
        engine.destroy()
    shut_down_process_group()  # (left to the interpreter's teardown, a gloo rank may abort after its work)


@pytest.fixture(scope="module")
def two_ranks(reference, tok_dir, tmp_path_factory):
    """The folder `_rank_worker`'s two spawned ranks wrote their numbers of each of STAGES into."""
    targets = reference[3]
    root = tmp_path_factory.mktemp("two_ranks")
    port = free_port()
    # (a rank still running at the timeout, or waiting for one that failed, is killed: none outlives the test)
    assert spawn_ranks(_rank_worker, [(r, port, str(tok_dir), str(root), targets) for r in range(2)],
                       timeout=240) == [0, 0]
    return root


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_two_ranks_get_the_one_process_numbers(reference, two_ranks, stage):
    """Validation, held-in exact match and the zero-shot evaluation (rank classification and generation) of 5
    rows in batches of 2: rank 0 scores 3 rows in 2 batches, rank 1 2 rows in 1 batch (ZeRO-3: and a padding
    batch)."""
    from t2t_mtl.engine.validation import evaluation_plan
    from t2t_mtl.evaluation import EvalReport, evaluate_tasks

    cfg, tokenizer, model, targets, _, val_loss, val_score = reference
    folder = two_ranks / f"zero{stage}"
    ranks = [json.loads((folder / f"rank{r}.json").read_text()) for r in range(2)]
    for key in ("val_loss", "val_score", "held_in", "zero_shot"):
        assert ranks[0][key] == ranks[1][key], key  # bit-identical on every rank
    assert ranks[0]["val_loss"] == pytest.approx(val_loss, rel=1e-5)
    assert ranks[0]["val_score"] == val_score
    env = DistEnv(0, 1, 0, CPU, "gloo")
    calls, hooks = _passes(model)
    _validator(tokenizer, cfg, env, targets)(_Engine(model))
    one = held_in_exact_match(_Engine(model), tokenizer, TASKS, cfg, env, batch_size=BATCH)
    one_process = {"validation_passes": "".join(calls)}
    calls.clear()
    names, settings = evaluation_plan(cfg)
    single = evaluate_tasks(model, tokenizer, names, settings, progress=False)
    one_process["evaluation_passes"] = "".join(calls)
    for hook in hooks:
        hook.remove()
    assert ranks[0]["held_in"] == list(one)
    written = EvalReport.from_dict(json.loads((folder / "eval" / "report.json").read_text()))
    assert {r.scoring for r in single.results} == {"rank", "generate"}
    assert [(r.template, r.num_examples, r.metrics) for r in written.results] == \
        [(r.template, r.num_examples, r.metrics) for r in single.results]
    # encoder passes: 5 rows in batches of 2 are 3 batches in one process, 2 on rank 0 and 1 on rank 1 (ZeRO-3: and
    # a padding one); the 3 held-in rows 2, 1 and 1. Validation runs a forward and a generation per batch.
    lockstep = stage == 3
    tasks, templates, rank1 = len(TASKS), len(single.results), 2 if lockstep else 1
    expected = {"validation_passes": (tasks * (3 * 2 + 2), [tasks * (2 * 2 + 1), tasks * (rank1 * 2 + 1)]),
                "evaluation_passes": (3 * templates, [2 * templates, rank1 * templates])}
    for phase, (alone, per_rank) in expected.items():
        passes = [r[phase] for r in ranks]
        assert one_process[phase].count("e") == alone and [p.count("e") for p in passes] == per_rank, phase
        if lockstep:  # rank 1's shorter shards run padding batches and decoder passes
            assert passes[0] == passes[1], phase


def test_the_held_in_macro_average_is_the_mean_of_the_task_scores(tok_dir, tmp_path, monkeypatch):
    """By hand: the first batch (2 of the first task's 3 rows) all right, every other one wrong: that task scores
    2/3, the others 0, and the macro average is their mean, 2/3 / len(TASKS)."""
    from t2t_mtl.engine import validation
    from t2t_mtl.tokenizer import load_tokenizer

    batches = []

    def only_the_first_batch_right(model, tokenizer, enc, inputs, *args):
        batches.append(len(inputs))
        return len(inputs) if len(batches) == 1 else 0

    monkeypatch.setattr(validation, "_exact_matches", only_the_first_batch_right)
    cfg, tokenizer = _config(tok_dir, tmp_path), load_tokenizer(tok_dir)
    per_task, macro, _ = held_in_exact_match(_Engine(_model(cfg, tokenizer)), tokenizer, TASKS, cfg,
                                             DistEnv(0, 1, 0, CPU, "gloo"), batch_size=BATCH)
    assert batches[:2] == [BATCH, HELD_IN_ROWS - BATCH]
    assert per_task == pytest.approx({TASKS[0]: 2 / 3, **{task: 0.0 for task in TASKS[1:]}})
    assert macro == pytest.approx(2 / 3 / len(TASKS))


def test_held_in_validation_never_scores_a_tasks_training_rows(tok_dir, tmp_path):
    # with no validation split it read the task's last split: for a task with only train, the training rows
    import task_registry
    from task_registry.registry import isolated_registry
    from t2t_mtl.config import ConfigError
    from t2t_mtl.engine.validation import held_in_split
    from t2t_mtl.tokenizer import load_tokenizer

    splits = {("validation", "train"): "validation", ("train", "test"): "test", ("train", "dev"): "dev",
              ("dev", "train"): "dev", ("train",): None}
    for task_splits, expected in splits.items():
        assert held_in_split(SimpleNamespace(splits=task_splits)) == expected, task_splits
    task_registry.load_builtin_tasks()
    rows = tmp_path / "train.jsonl"
    rows.write_text("".join(json.dumps({"x": f"word {i}"}) + "\n" for i in range(4)))
    cfg, tokenizer = _config(tok_dir, tmp_path), load_tokenizer(tok_dir)
    model, env = _Engine(_model(cfg, tokenizer)), DistEnv(0, 1, 0, CPU, "gloo")
    with isolated_registry():
        task_registry.register_task(task_registry.Task(
            "train_only", task_registry.LocalFileSource({"train": str(rows)}),
            [task_registry.Template("echo", "{{ x }} ||| {{ x }}")], splits=("train",)))
        per_task, macro, chance = held_in_exact_match(model, tokenizer, TASKS + ["train_only"], cfg, env)
        assert (per_task, macro, chance) == held_in_exact_match(model, tokenizer, TASKS, cfg, env)
        assert held_in_exact_match(model, tokenizer, ["train_only"], cfg, env) == ({}, None, None)
        with pytest.raises(ConfigError, match="task 'train_only' has only a train split.*validate_every: 0"):
            PeriodicValidator(tokenizer, TASKS + ["train_only"], cfg, env, ROWS)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_with_lengths_each_rank_batches_its_own_rows_longest_first_ties_in_row_order(world):
    # was: rows were batched in row order, so a short input padded to the longest of a random batch
    lengths = [3, 9, 1, 9, 5, 2, 7, 3]
    for rank in range(world):
        own = list(range(rank, len(lengths), world))
        by_length = sorted(own, key=lambda row: (-lengths[row], row))  # the order, by hand
        batches = shard_batches(len(lengths), BATCH, rank, world, lengths=lengths)
        assert [b.rows for b in batches] == [by_length[i:i + BATCH] for i in range(0, len(own), BATCH)]
        lockstep = shard_batches(len(lengths), BATCH, rank, world, lockstep=True, lengths=lengths)
        assert lockstep[:len(batches)] == batches and all(not b.counted for b in lockstep[len(batches):])
    with pytest.raises(ValueError, match="3 lengths for 8 rows"):
        shard_batches(8, BATCH, 0, 1, lengths=[1, 2, 3])


def _capacity_reference(model, top_k: int, factor: float):
    """(counts, hooks): forward pre-hooks that add up, for every MoE layer's forward, its real tokens' (token, slot)
    choices and those over capacity: each token's top-1 expert by the router, counted per expert, against the
    capacity ceil(N·k/E·f) (at least min_capacity 1, at most N)."""
    import math

    from t2t_mtl.model.moe import moe_blocks

    counts = {"dropped": 0, "choices": 0}

    def reference(block, args):
        x = args[0].reshape(-1, args[0].shape[-1])
        if block.token_mask is not None:
            x = x[block.token_mask[:, -args[0].shape[1]:].reshape(-1).ne(0)]
        experts = block.router.weight.shape[0]
        per_expert = torch.bincount((x.float() @ block.router.weight.float().t()).argmax(-1), minlength=experts)
        capacity = min(max(math.ceil(len(x) * top_k / experts * factor), 1), len(x))
        counts["dropped"] += int((per_expert - capacity).clamp(min=0).sum())
        counts["choices"] += len(x) * top_k

    return counts, [block.register_forward_pre_hook(reference) for _, block in moe_blocks(model)]


def test_validation_counts_the_moe_choices_dropped_over_capacity(reference):
    # was: training logged moe.dropped and eval/predict counted their drops, but periodic validation of a token-routed
    # MoE with a capacity said nothing of the tokens its layers dropped under eval_capacity_factor
    from t2t_mtl.engine.validation import validation_drop_figures
    from t2t_mtl.model.moe import convert_to_moe

    cfg, tokenizer, model, targets, *_ = reference
    torch.manual_seed(0)
    moe = convert_to_moe(copy.deepcopy(model), {"num_experts": 4, "top_k": 1, "every": 1, "upcycle": False,
                                                "task_names": ["a"], "eval_capacity_factor": 0.5,
                                                "min_capacity": 1}).eval()
    validator = _validator(tokenizer, cfg, DistEnv(0, 1, 0, CPU, "gloo"), targets)
    expected, hooks = _capacity_reference(moe, top_k=1, factor=0.5)
    try:
        validator(_Engine(moe))
    finally:
        for hook in hooks:
            hook.remove()
    drops = validator.moe_drops
    assert (drops.dropped, drops.choices) == (expected["dropped"], expected["choices"]) and drops.dropped > 0
    assert validation_drop_figures(drops) == {"val_dropped": drops.dropped / drops.choices,
                                              "val_num_dropped": drops.dropped, "val_choices": drops.choices}
    validator(_Engine(model))  # a dense model has no capacity: nothing counted
    assert validator.moe_drops is None


def test_the_end_of_run_held_in_exact_match_counts_the_moe_choices_dropped_over_capacity(reference, capsys):
    # was: periodic validation, eval and predict counted the MoE drops, the end-of-run held-in exact match did not: a
    # token-routed MoE with a capacity scored its held-in generations with tokens dropped, and said nothing of them
    from t2t_mtl.engine.final_evaluation import score_held_in
    from t2t_mtl.model.moe import convert_to_moe

    cfg, tokenizer, model, *_ = reference
    torch.manual_seed(0)
    moe = convert_to_moe(copy.deepcopy(model), {"num_experts": 4, "top_k": 1, "every": 1, "upcycle": False,
                                                "task_names": ["a"], "eval_capacity_factor": 0.5,
                                                "min_capacity": 1}).eval()
    env, result = DistEnv(0, 1, 0, CPU, "gloo"), SimpleNamespace()
    expected, hooks = _capacity_reference(moe, top_k=1, factor=0.5)
    try:
        score_held_in(_Engine(moe), tokenizer, TASKS, cfg, env, False, result)
    finally:
        for hook in hooks:
            hook.remove()
    drops = result.held_in_moe_drops
    assert (drops.dropped, drops.choices) == (expected["dropped"], expected["choices"]) and drops.dropped > 0
    assert (f"held-in exact match: the MoE layers dropped {drops.dropped} of the {drops.choices} (token, slot) "
            f"choices they routed over expert capacity") in capsys.readouterr().out
    score_held_in(_Engine(model), tokenizer, TASKS, cfg, env, False, result)  # a dense model has no capacity
    assert result.held_in_moe_drops is None


def test_validation_scores_a_model_whose_folders_generation_config_asks_for_other_outputs(reference):
    # was: a pretrained folder's generation_config.json with return_dict_in_generate: true (which the run's model
    # keeps from from_pretrained) crashed the run's validation on `.tolist()` of a GenerateOutput, and one with
    # num_beams 2, num_return_sequences: 2 on transformers' refusal of two sequences from greedy decoding
    cfg, tokenizer, model, targets, _, val_loss, val_score = reference
    model = copy.deepcopy(model)
    model.generation_config.update(num_beams=2, num_return_sequences=2, return_dict_in_generate=True)
    loss, score = _validator(tokenizer, cfg, DistEnv(0, 1, 0, CPU, "gloo"), targets)(_Engine(model))
    assert loss == pytest.approx(val_loss, rel=1e-5) and score == val_score
    per_task, _, _ = held_in_exact_match(_Engine(model), tokenizer, TASKS, cfg, DistEnv(0, 1, 0, CPU, "gloo"),
                                         batch_size=BATCH)
    reference_engine = _Engine(reference[2])
    assert per_task == held_in_exact_match(reference_engine, tokenizer, TASKS, cfg, DistEnv(0, 1, 0, CPU, "gloo"),
                                           batch_size=BATCH)[0]
