"""The weights an export reads from a trainer checkpoint (`engine.export`): the tied names of one parameter all take
the value stored under its first name; and the decoding its folder is saved with."""
from __future__ import annotations

import torch

from t2t_mtl.engine.export import _tied_aliases
from t2t_mtl.model import build_model


def test_every_name_of_a_tied_parameter_takes_the_value_of_its_first_name():
    model = build_model({"dims": {"d_model": 8, "d_kv": 4, "d_ff": 16, "num_layers": 1, "num_heads": 2}},
                        vocab_size=12)
    names = [name for name, p in model.named_parameters(remove_duplicate=False) if p is model.shared.weight]
    assert names[0] == "shared.weight" and {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"} <= set(names)
    master, stale = torch.ones(12, 8), torch.zeros(12, 8)
    state = _tied_aliases(model, {"shared.weight": master, "encoder.embed_tokens.weight": stale, "other": stale})
    assert all(state[name] is master for name in names) and state["other"] is stale
    # a state without the first name (a sub-network's) leaves the aliases it has as they are
    assert _tied_aliases(model, {"encoder.embed_tokens.weight": stale}) == {"encoder.embed_tokens.weight": stale}


def test_an_exported_folder_generates_with_the_runs_decoding_and_its_beam_search_stops_early(tmp_path):
    # a plain generate() of the folder answers as predict of the run does: evaluation's max_new_tokens and num_beams,
    # else data.max_target_length and greedy; beam search stopping when its beams end, as evaluation's generate does
    from transformers import GenerationConfig

    from t2t_mtl.engine.export import _answer_as_the_run

    model = build_model({"dims": {"d_model": 8, "d_kv": 4, "d_ff": 16, "num_layers": 1, "num_heads": 2}},
                        vocab_size=12)
    untouched = model.generation_config.to_dict()
    _answer_as_the_run(model, {})  # (a folder from elsewhere: no run config)
    assert model.generation_config.to_dict() == untouched
    for config, expected in (({"evaluation": {"num_beams": 3, "max_new_tokens": 7}, "data": {"max_target_length": 9}},
                              (7, 3, True)), ({"data": {"max_target_length": 9}}, (9, 1, False))):
        _answer_as_the_run(model, {"config": config})
        model.generation_config.save_pretrained(tmp_path)
        saved = GenerationConfig.from_pretrained(tmp_path)
        assert (saved.max_new_tokens, saved.num_beams, saved.early_stopping) == expected


def test_an_exported_folder_answers_once_per_input_whatever_its_pretrained_folders_generation_config_asked(tmp_path):
    # was: a run fine-tuned from a folder whose generation_config.json held num_beams 2 and num_return_sequences: 2
    # kept them, so exporting it with the run's greedy decoding failed ("Greedy methods ... do not support
    # num_return_sequences different than 1 ... Fix these issues to save the configuration"); one with
    # return_dict_in_generate: true wrote a folder whose plain generate() returned an output object, not ids
    from transformers import GenerationConfig

    from t2t_mtl.engine.export import _answer_as_the_run

    model = build_model({"dims": {"d_model": 8, "d_kv": 4, "d_ff": 16, "num_layers": 1, "num_heads": 2}},
                        vocab_size=12)
    model.generation_config.update(num_beams=2, num_return_sequences=2, return_dict_in_generate=True)
    _answer_as_the_run(model, {"config": {"data": {"max_target_length": 9}}})
    model.generation_config.save_pretrained(tmp_path)
    saved = GenerationConfig.from_pretrained(tmp_path)
    assert (saved.num_beams, saved.num_return_sequences, saved.return_dict_in_generate) == (1, 1, False)
