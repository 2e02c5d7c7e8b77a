"""The weights an export reads from a trainer checkpoint (`engine.export`): the tied names of one parameter all take
the value stored under its first name."""
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
