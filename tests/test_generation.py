"""Generation decoding (`t2t_mtl.evaluation.generation`): special tokens removed, a span-corruption input's
sentinels kept in the form its targets are written in, checked through `generate_texts` with a model whose
output is fixed."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from t2t_mtl.evaluation.generation import decode_generated, generate_texts

SPANS = "<extra_id_0> quick brown <extra_id_1> fox, jumps <extra_id_2> dog."
CORRUPTED = "The <extra_id_0> fox <extra_id_1> over the lazy <extra_id_2>"


class FixedOutput(nn.Module):
    """A model whose `generate` returns the same ids for every input row."""

    def __init__(self, ids: list[int]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.ids = ids

    def generate(self, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.tensor([self.ids] * input_ids.shape[0])


def _generated(tokenizer, text: str) -> list[int]:
    """What generate returns for `text`: the decoder start (pad), its ids, </s>, padding."""
    return [tokenizer.pad_token_id, *tokenizer(text).input_ids, tokenizer.pad_token_id, tokenizer.pad_token_id]


def test_a_perfect_span_corruption_prediction_decodes_to_its_target(t5_tokenizer):
    ids = _generated(t5_tokenizer, SPANS)
    assert t5_tokenizer.decode(ids, skip_special_tokens=True) != SPANS  # the sentinels would be lost
    assert generate_texts(FixedOutput(ids), t5_tokenizer, [CORRUPTED, CORRUPTED]) == [SPANS, SPANS]


def test_outside_span_corruption_every_special_token_is_removed(t5_tokenizer):
    ids = _generated(t5_tokenizer, "<extra_id_0> positive")
    assert decode_generated(t5_tokenizer, torch.tensor([ids]), ["sst2 sentence: fine"]) == ["positive"]
    spans = _generated(t5_tokenizer, SPANS)
    mixed = torch.tensor([ids + [t5_tokenizer.pad_token_id] * (len(spans) - len(ids)), spans])
    assert decode_generated(t5_tokenizer, mixed, ["review: ok", CORRUPTED]) == ["positive", SPANS]


def test_whitespace_pieces_around_a_generation_are_stripped(t5_tokenizer):
    # T5 decodes a generated lone "▁" piece as a space: a prediction "yes  " (or " yes") was kept so, with or without
    # a span-corruption input, by a decode that left out the strip, and no test had such a generation
    space, sentinel = t5_tokenizer.convert_tokens_to_ids("▁"), t5_tokenizer.convert_tokens_to_ids("<extra_id_0>")
    yes, words = (t5_tokenizer(text, add_special_tokens=False).input_ids for text in ("yes", "a b"))
    pad, eos = t5_tokenizer.pad_token_id, t5_tokenizer.eos_token_id
    plain, spans = [pad, space, *yes, space, space, eos], [pad, sentinel, *words, space, eos]
    assert t5_tokenizer.decode(plain, skip_special_tokens=True) != "yes"  # (the pieces are written as spaces)
    width = max(len(plain), len(spans)) + 1
    rows = torch.tensor([row + [pad] * (width - len(row)) for row in (plain, spans)])
    out = decode_generated(t5_tokenizer, rows, ["review: ok", CORRUPTED])
    assert out == ["yes", "<extra_id_0> a b"]


@pytest.mark.parametrize("folder_settings", [{"return_dict_in_generate": True, "output_scores": True},
                                             {"num_return_sequences": 2}])
def test_a_model_folders_generation_config_asking_for_other_outputs_still_gives_one_text_per_input(
        t5_tokenizer, folder_settings):
    # was: a folder's generation_config.json (which from_pretrained gives the model, and so every run fine-tuned
    # from it) with return_dict_in_generate: true crashed predict, eval and validation on `.tolist()` of a
    # GenerateOutput; with num_beams 2 and num_return_sequences: 2, each input's beams were decoded in turn as the
    # next inputs' answers (predict printed input 0's second beam as input 1's answer)
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=len(t5_tokenizer), d_model=32, d_kv=8, d_ff=64,
                                                num_layers=2, num_heads=2, decoder_start_token_id=0)).eval()
    inputs = ["sort_words: pear apple fig", "parity: 1 0 1 1"]
    with torch.no_grad():  # one input at a time, the model's generation config as T5's config implies it
        alone = [t5_tokenizer.decode(model.generate(**t5_tokenizer([text], return_tensors="pt"), num_beams=2,
                                                    max_new_tokens=4)[0], skip_special_tokens=True).strip()
                 for text in inputs]
    assert alone[0] != alone[1]  # (a prediction given to the wrong input shows)
    model.generation_config.update(num_beams=2, **folder_settings)  # (as a folder's generation_config.json gives it)
    assert generate_texts(model, t5_tokenizer, inputs, num_beams=2, max_new_tokens=4, batch_size=2) == alone
