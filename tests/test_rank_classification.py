"""Rank classification against a brute-force reference (one full forward per choice), on a tiny T5."""
from __future__ import annotations

import contextlib

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from t2t_mtl.evaluation.errors import NoAnswerChoicesError
from t2t_mtl.evaluation.generation import generate_texts
from t2t_mtl.evaluation.rank_classification import rank_classify, score_choices
from t2t_mtl.model.moe import UNSEEN_TASK_ID, convert_to_moe, moe_blocks, routing_task_id

from conftest import REPO_ROOT

INPUTS = ["Is the sky blue? Answer yes or no.", "premise: a cat sleeps. hypothesis: an animal rests.",
          "short", "Which is larger, 7 or 12?", "count the words in this sentence please"]
CHOICES = [["yes", "no"], ["entailment", "neutral", "contradiction"], ["", "a b c d", "x", "long answer here"],
           ["7", "12"], ["five", "six", "seven", "eight"]]


@pytest.fixture(scope="module")
def tokenizer(t5_tokenizer):
    return t5_tokenizer


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2,
                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return T5ForConditionalGeneration(config)  # left in train mode on purpose: scoring must switch dropout off


def brute_force_scores(model, tokenizer, inputs, choices, length_normalize=False, task_id=None):
    """Reference: a full encoder-decoder forward for every (input, choice) pair, one pair at a time."""
    model.eval()
    out = []
    routing = {} if task_id is None else {"task_ids": torch.tensor([task_id])}
    with torch.no_grad():
        for text, options in zip(inputs, choices):
            row = []
            for option in options:
                enc = tokenizer([text], return_tensors="pt")
                labels = tokenizer(text_target=[option], return_tensors="pt").input_ids
                logits = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, labels=labels,
                               **routing).logits
                log_probs = torch.log_softmax(logits[0], -1)
                total = sum(log_probs[t, labels[0, t]].item() for t in range(labels.shape[1]))
                row.append(total / labels.shape[1] if length_normalize else total)
            out.append(row)
    model.train()
    return out


@pytest.mark.parametrize("length_normalize", [False, True])
def test_scores_equal_one_forward_per_choice(model, tokenizer, length_normalize):
    reference = brute_force_scores(model, tokenizer, INPUTS, CHOICES, length_normalize)
    scores = score_choices(model, tokenizer, INPUTS, CHOICES, batch_size=2, max_choice_rows=3,
                           length_normalize=length_normalize)
    assert model.training, "the model's mode is restored"
    for got, want in zip(scores, reference):
        assert got == pytest.approx(want, abs=1e-4)
    chosen, _ = rank_classify(model, tokenizer, INPUTS, CHOICES, batch_size=3, length_normalize=length_normalize)
    assert chosen == [max(range(len(row)), key=row.__getitem__) for row in reference]



def test_scores_do_not_depend_on_the_side_the_tokenizer_pads(model, tokenizer):
    # was: the choices were padded by the tokenizer, so one that pads on the left (a tokenizer saved with
    # padding_side="left", or set so for a decoder-only model) gave a shorter choice's decoder pad tokens before its
    # own, and scored another sequence
    reference = brute_force_scores(model, tokenizer, INPUTS, CHOICES)  # one unpadded row at a time
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        scores = score_choices(model, tokenizer, INPUTS, CHOICES, batch_size=2)
    finally:
        tokenizer.padding_side = side
    for got, want in zip(scores, reference):
        assert got == pytest.approx(want, abs=1e-4)


def test_the_eval_benchmarks_reencoding_baseline_scores_as_one_forward_per_choice_whatever_side_pads(model, tokenizer):
    # was: benchmarks/eval.py's baseline let the tokenizer pad the choices, so under padding_side="left" a shorter
    # choice scored another sequence (its -100 labels in front of its tokens): the baseline, checked equal to
    # score_choices before it is timed, failed that check
    import importlib.util

    spec = importlib.util.spec_from_file_location("benchmark_eval", REPO_ROOT / "benchmarks" / "eval.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    reference = brute_force_scores(model, tokenizer, INPUTS, CHOICES)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        scores = benchmark.score_choices_reencoding(model, tokenizer, INPUTS, CHOICES, batch_size=2)
    finally:
        tokenizer.padding_side = side
    for got, want in zip(scores, reference):
        assert got == pytest.approx(want, abs=1e-4)


def test_a_model_in_eval_mode_is_left_in_eval_mode(model, tokenizer):
    model.eval()
    try:
        score_choices(model, tokenizer, INPUTS[:1], CHOICES[:1])
        assert not model.training
        generate_texts(model, tokenizer, INPUTS[:1], max_new_tokens=2)
        assert not model.training
    finally:
        model.train()

def test_long_choices_are_scored_in_full(model, tokenizer):
    stem = " ".join(f"w{i}" for i in range(100))  # ~300 tokens: choices that differ only at their end
    choices = [[stem + " so the answer is yes", stem + " so the answer is no", "short"]]
    scores = score_choices(model, tokenizer, INPUTS[:1], choices)
    assert scores[0] == pytest.approx(brute_force_scores(model, tokenizer, INPUTS[:1], choices)[0], rel=1e-5)
    assert scores[0][0] != scores[0][1]


def test_encoder_runs_once_per_batch_of_examples(model, tokenizer):
    calls = []
    handle = model.get_encoder().register_forward_hook(lambda module, args, output: calls.append(1))
    try:
        score_choices(model, tokenizer, INPUTS, CHOICES, batch_size=2, max_choice_rows=2)
    finally:
        handle.remove()
    assert len(calls) == 3  # ceil(5 / 2) encoder passes for 16 answer choices


@pytest.mark.parametrize("min_passes, expected", [(0, [2, 1]), (2, [2, 2]), (3, [3, 3])])
def test_min_decoder_passes_pads_each_encoder_batch_without_changing_the_scores(model, tokenizer, min_passes,
                                                                                 expected):
    # ZeRO-3 ranks in lockstep: a batch with fewer choices runs extra (discarded) decoder passes
    inputs, choices = INPUTS[:3], CHOICES[:3]  # batches of 2 + 3 then 4 choices: 2 then 1 pass at 4 rows a pass
    calls = []  # "e" per encoder pass, "d" per decoder pass
    hooks = [model.get_encoder().register_forward_hook(lambda *_: calls.append("e")),
             model.get_decoder().register_forward_hook(lambda *_: calls.append("d"))]
    try:
        scores = score_choices(model, tokenizer, inputs, choices, batch_size=2, max_choice_rows=4,
                               min_decoder_passes=min_passes)
    finally:
        for hook in hooks:
            hook.remove()
    assert [len(run) for run in "".join(calls).split("e")[1:]] == expected
    assert scores == score_choices(model, tokenizer, inputs, choices, batch_size=2, max_choice_rows=4)


@contextlib.contextmanager
def _lm_head_favouring(model, tokenizer, word: str):
    """The model's lm_head adds 50 to the logit of `word` (one token) while the block runs."""
    favoured = tokenizer(word, add_special_tokens=False).input_ids
    assert len(favoured) == 1
    bias = torch.zeros(model.config.vocab_size)
    bias[favoured[0]] = 50.0
    handle = model.lm_head.register_forward_hook(lambda module, args, output: output + bias)
    try:
        yield
    finally:
        handle.remove()


def test_picks_the_choice_a_biased_lm_head_favours(model, tokenizer):
    options = [["yes", "no"], ["no", "yes", "maybe"], ["maybe", "yes", "no"]]
    with _lm_head_favouring(model, tokenizer, "no"):
        chosen, scores = rank_classify(model, tokenizer, INPUTS[:3], options, batch_size=2)
    assert chosen == [1, 0, 2]
    assert all(row[c] > max(s for i, s in enumerate(row) if i != c) + 10 for row, c in zip(scores, chosen))


def test_a_repeated_choice_ties_exactly_and_the_tie_goes_to_its_first_position(model, tokenizer):
    options = [["maybe", "no", "a much longer answer with many words", "maybe"]] * 3
    # two choice rows per decoder pass: the copies are scored in passes padded to different lengths
    with _lm_head_favouring(model, tokenizer, "maybe"):
        chosen, scores = rank_classify(model, tokenizer, INPUTS[:3], options, batch_size=1, max_choice_rows=2)
        reference = brute_force_scores(model, tokenizer, INPUTS[:3], options)
    for row, want in zip(scores, reference):
        assert row == pytest.approx(want, abs=1e-4)
    assert [row[3] for row in scores] == [row[0] for row in scores]  # exactly: a tie, not two roundings
    assert chosen == [0, 0, 0]


def test_a_repeated_choice_takes_its_first_rows_score_where_the_decoder_rows_differ_in_the_last_bits(
        model, tokenizer, monkeypatch):
    # on this CPU the copies' rows score equal bits anyway; on a GPU rows padded differently need not: a stand-in
    # adds a tiny offset growing with the row, so that only taking the first occurrence's score ties them
    from t2t_mtl.evaluation import rank_classification

    scored, rows_before = rank_classification.shared_encoder_log_likelihoods, [0]

    def drifting(model, labels, *args, **kwargs):
        offsets = 1e-3 * torch.arange(rows_before[0] + 1, rows_before[0] + labels.shape[0] + 1)
        rows_before[0] += labels.shape[0]
        return scored(model, labels, *args, **kwargs) + offsets

    monkeypatch.setattr(rank_classification, "shared_encoder_log_likelihoods", drifting)
    options = [["maybe", "no", "maybe", "no"]]
    with _lm_head_favouring(model, tokenizer, "maybe"):
        chosen, scores = rank_classify(model, tokenizer, INPUTS[:1], options, max_choice_rows=2)
    assert scores[0][2] == scores[0][0] and scores[0][3] == scores[0][1]
    assert chosen == [0]


def test_examples_without_answer_choices_are_refused_with_a_pointer_to_generation(model, tokenizer):
    with pytest.raises(NoAnswerChoicesError, match="example 1 has no answer choices.*generation"):
        score_choices(model, tokenizer, ["a", "b"], [["x"], []])


def test_greedy_generation_matches_a_manual_argmax_decode(model, tokenizer):
    texts = generate_texts(model, tokenizer, INPUTS[:2], max_new_tokens=4, batch_size=2)
    model.eval()
    with torch.no_grad():
        for text, expected_source in zip(texts, INPUTS[:2]):
            enc = tokenizer([expected_source], return_tensors="pt")
            decoded = torch.tensor([[model.config.decoder_start_token_id]])
            for _ in range(4):
                logits = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                               decoder_input_ids=decoded).logits
                next_id = logits[0, -1].argmax().view(1, 1)
                decoded = torch.cat([decoded, next_id], dim=1)
                if next_id.item() == model.config.eos_token_id:
                    break
            assert text == tokenizer.decode(decoded[0], skip_special_tokens=True).strip()
    model.train()
    beams = generate_texts(model, tokenizer, INPUTS[:2], num_beams=3, max_new_tokens=4)
    assert len(beams) == 2 and all(isinstance(b, str) for b in beams)


# ------------------------------------------------------------------------------ task-routed MoE models
MOE_TASKS = ["nli", "qa"]


@pytest.fixture(scope="module")
def task_moe(model):
    """The tiny T5 with task-routed MoE FFNs: nli → experts {0, 1}, qa → {2, 3}, unseen (mean) → {0, 2}."""
    torch.manual_seed(1)
    moe = convert_to_moe(model, {"num_experts": 4, "top_k": 2, "every": 1, "routing": "task",
                                 "task_names": MOE_TASKS, "upcycle": False})
    for _, block in moe_blocks(moe):
        with torch.no_grad():
            block.task_gate.weight.copy_(torch.tensor([[5., 4., 0, 0], [0, 0, 5., 4.]]))
    return moe


def _record_task_ids(model) -> tuple[set, list]:
    seen: set = set()
    handles = [block.register_forward_pre_hook(lambda mod, args: seen.update(mod.task_ids.tolist()))
               for _, block in moe_blocks(model)]
    return seen, handles


def test_routing_task_id_of_trained_unseen_and_task_free_models(model, task_moe):
    assert routing_task_id(task_moe, "qa") == 1 and routing_task_id(task_moe, "glue_rte") == UNSEEN_TASK_ID
    assert routing_task_id(model, "qa") is None
    token = convert_to_moe(model, {"num_experts": 2, "every": 1, "task_names": MOE_TASKS})
    assert routing_task_id(token, "qa") is None  # token routing takes no task ids


def test_task_routed_moe_scores_with_the_given_task_ids(task_moe, tokenizer):
    inputs, choices = INPUTS[:3], CHOICES[:3]
    by_id = {}
    for task_id in (UNSEEN_TASK_ID, 1, 0):
        seen, handles = _record_task_ids(task_moe)
        try:
            by_id[task_id] = score_choices(task_moe, tokenizer, inputs, choices, batch_size=2, max_choice_rows=3,
                                           task_ids=[task_id] * len(inputs))
        finally:
            for handle in handles:
                handle.remove()
        assert seen == {task_id}  # the encoder (run once per batch) and the decoder are routed by the ids
    for task_id in (UNSEEN_TASK_ID, 1):
        reference = brute_force_scores(task_moe, tokenizer, inputs, choices, task_id=task_id)
        for got, want, other in zip(by_id[task_id], reference, by_id[0]):
            assert got == pytest.approx(want, abs=1e-4)
            assert got != pytest.approx(other, abs=1e-4)  # another task's route scores differently
    with pytest.raises(ValueError, match="3 inputs but 1 task ids"):
        score_choices(task_moe, tokenizer, inputs, choices, task_ids=[0])



def test_examples_of_several_tasks_in_one_batch_are_each_scored_with_their_own_task(task_moe, tokenizer):
    # every other test gave all examples one task id, so a decoder routed by the first example's id passed
    inputs, choices, task_ids = INPUTS[:3], CHOICES[:3], [1, UNSEEN_TASK_ID, 0]
    scores = score_choices(task_moe, tokenizer, inputs, choices, batch_size=3, max_choice_rows=4, task_ids=task_ids)
    for i, task_id in enumerate(task_ids):
        want = brute_force_scores(task_moe, tokenizer, inputs[i:i + 1], choices[i:i + 1], task_id=task_id)[0]
        assert scores[i] == pytest.approx(want, abs=1e-4)

def test_task_routed_moe_generates_with_the_given_task_ids(task_moe, tokenizer):
    seen, handles = _record_task_ids(task_moe)
    try:
        texts = generate_texts(task_moe, tokenizer, INPUTS[:2], num_beams=2, max_new_tokens=4,
                               task_ids=[UNSEEN_TASK_ID, UNSEEN_TASK_ID])
    finally:
        for handle in handles:
            handle.remove()
    assert seen == {UNSEEN_TASK_ID}
    enc = tokenizer(INPUTS[:2], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = task_moe.eval().generate(**enc, task_ids=torch.full((2,), UNSEEN_TASK_ID), num_beams=2,
                                       max_new_tokens=4, early_stopping=True)
    assert texts == [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]
