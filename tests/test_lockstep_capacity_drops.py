"""The MoE capacity drops that evaluation counts leave out the passes a ZeRO-3 rank runs only to stay in step with
the other ranks (their results discarded): a rank's count is that of its own examples' passes, as if it ran alone."""
from __future__ import annotations

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from t2t_mtl.evaluation.generation import generate_texts
from t2t_mtl.evaluation.rank_classification import score_choices
from t2t_mtl.model.moe import capacity_drops, convert_to_moe

INPUTS = ["Is the sky blue? Answer yes or no.", "premise: a cat sleeps. hypothesis: an animal rests.", "short"]
CHOICES = [["yes", "no"], ["entailment", "neutral", "contradiction"], ["a b c d", "x"]]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def moe(t5_tokenizer):
    """A tiny token-routed MoE T5 whose experts drop choices over capacity in eval mode."""
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(t5_tokenizer), d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2,
                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return convert_to_moe(T5ForConditionalGeneration(config), {
        "num_experts": 4, "top_k": 1, "every": 1, "upcycle": False, "task_names": ["a"],
        "eval_capacity_factor": 0.5, "min_capacity": 1, "backend": "reference"}).eval()


def _decoder_passes(model) -> tuple[list, object]:
    calls: list = []
    return calls, model.get_decoder().register_forward_pre_hook(lambda *_: calls.append(1))


def _a_peer_still_decoding(monkeypatch, passes: int) -> None:
    """transformers' synced generation asks the ranks, before each decoding pass, whether any is still decoding (an
    all-reduce of their flags): another rank answers yes for its first `passes` asks, as a rank with longer outputs."""
    import transformers.generation.utils as generation_utils

    asked = []

    def all_reduce(flag, op=None):
        asked.append(1)
        if len(asked) <= passes:
            flag += 1.0

    monkeypatch.setattr(generation_utils.dist, "all_reduce", all_reduce)


@pytest.mark.parametrize("num_beams", [1, 2])
def test_synced_generation_counts_the_drops_of_this_ranks_own_passes(moe, t5_tokenizer, monkeypatch, num_beams):
    # was: the passes a rank ran after its own rows were done, while another rank's were not (synced_gpus under
    # ZeRO-3), were counted with its drops: eval's num_moe_dropped / num_moe_choices over-counted
    options = dict(num_beams=num_beams, max_new_tokens=4, batch_size=len(INPUTS))
    calls, hook = _decoder_passes(moe)
    try:
        with capacity_drops(moe) as alone:
            texts = generate_texts(moe, t5_tokenizer, INPUTS, **options)
        own_passes = len(calls)
        calls.clear()
        _a_peer_still_decoding(monkeypatch, passes=own_passes + 5)
        with capacity_drops(moe) as synced:
            assert generate_texts(moe, t5_tokenizer, INPUTS, synced_gpus=True, **options) == texts
    finally:
        hook.remove()
    assert len(calls) > own_passes  # (it ran the peer's extra passes)
    assert alone.dropped > 0 and (synced.dropped, synced.choices) == (alone.dropped, alone.choices)
    assert not moe.lockstep_padding


def test_rank_classifications_padding_decoder_passes_count_no_drops(moe, t5_tokenizer):
    # was: the decoder passes that keep a batch with fewer answer choices in step with another rank's (min decoder
    # passes under ZeRO-3) were counted with the batch's drops
    with capacity_drops(moe) as alone:
        scores = score_choices(moe, t5_tokenizer, INPUTS, CHOICES, batch_size=len(INPUTS))
    calls, hook = _decoder_passes(moe)
    try:
        with capacity_drops(moe) as padded:
            assert score_choices(moe, t5_tokenizer, INPUTS, CHOICES, batch_size=len(INPUTS),
                                 min_decoder_passes=3) == scores
    finally:
        hook.remove()
    assert len(calls) == 3  # one pass of its own, two padding ones
    assert alone.dropped > 0 and (padded.dropped, padded.choices) == (alone.dropped, alone.choices)
    assert not moe.lockstep_padding
