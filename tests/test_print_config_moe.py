"""`t2t-mtl train --print-config` names the `model.moe` keys a config leaves unset and the defaults the run takes for
them (the README's: eval capacity, minimum capacity, dropless, ...), which the printed section does not hold; the
printed YAML still loads as the config."""
from __future__ import annotations

import yaml

from t2t_mtl.cli import main as cli_main
from t2t_mtl.config import load_config

from engine_helpers import tiny_config


def _printed(tmp_path, capsys, moe) -> str:
    """`train --print-config` of the tiny config with `model.moe` (exit 0) and a tokenizer to train, its stdout."""
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path / "run", tmp_path / "tok", tmp_path / "cache",
                                               model={"moe": moe}, tokenizer={"path": None})))
    capsys.readouterr()
    assert cli_main(["train", str(path), "--print-config"]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_print_config_names_the_moe_defaults_the_run_takes(tmp_path, capsys):
    # was: the moe section printed the keys given alone, so the eval capacity factor (2.0), the minimum capacity, ...
    # the run took were nowhere in the resolved config
    moe = {"num_experts": 4, "top_k": 1, "every": 1, "capacity_factor": 0.5, "score": "softmax"}
    out = _printed(tmp_path, capsys, moe)
    lines = out.splitlines()
    at = lines.index("  moe:")
    assert lines[at - 1] == ("  # model.moe keys left unset, at their defaults: layers both, eval_capacity_factor 2.0, "
                             "min_capacity 4, dropless false, routing token, renormalize null (so false: top_k 1), "
                             "aux_loss_coef 0.01, z_loss_coef 0.001, upcycle true, backend auto; unused under routing "
                             "token: unseen_task_routing")
    printed = tmp_path / "printed.yaml"
    printed.write_text(out)
    assert load_config(printed).to_dict()["model"]["moe"] == moe
    top_2 = _printed(tmp_path, capsys, {**moe, "top_k": 2})
    assert "renormalize null (so true: top_k 2)" in top_2


def test_print_config_of_a_dense_model_has_no_moe_note(tmp_path, capsys):
    assert "model.moe keys left unset" not in _printed(tmp_path, capsys, None)


def test_print_config_notes_top_k_at_its_default_where_unset_and_nothing_where_every_key_is_set(tmp_path, capsys):
    # renormalize's null decides by the top_k the run takes (2 unless set); a section setting every key has no note
    # (an empty 'keys left unset' line said nothing)
    unset_top_k = _printed(tmp_path, capsys, {"num_experts": 4, "every": 1})
    assert "at their defaults: top_k 2, " in unset_top_k and "renormalize null (so true: top_k 2)" in unset_top_k
    every = {"num_experts": 4, "top_k": 1, "every": 1, "layers": "both", "capacity_factor": 0.5,
             "eval_capacity_factor": 2.0, "min_capacity": 4, "dropless": False, "routing": "token", "score": "softmax",
             "renormalize": False, "aux_loss_coef": 0.01, "z_loss_coef": 0.001, "unseen_task_routing": "mean",
             "upcycle": True, "backend": "auto"}
    assert "model.moe keys left unset" not in _printed(tmp_path, capsys, every)


def test_print_config_names_the_moe_keys_the_routing_leaves_unread_apart_from_the_defaults_it_takes(tmp_path, capsys):
    # was: under routing task the note listed capacity_factor 1.25, eval_capacity_factor 2.0, min_capacity 4, dropless
    # false and backend auto among the defaults the run takes, though task routing has no capacity and no kernel (the
    # idle-settings warning says so of the same keys set)
    task = _printed(tmp_path, capsys, {"num_experts": 4, "top_k": 1, "every": 1, "routing": "task"})
    assert ("  # model.moe keys left unset, at their defaults: layers both, score softmax, renormalize null (so false: "
            "top_k 1), aux_loss_coef 0.01, z_loss_coef 0.001, unseen_task_routing mean, upcycle true; unused under "
            "routing task: capacity_factor, eval_capacity_factor, min_capacity, dropless, backend\n  moe:\n") in task
    dropless = _printed(tmp_path, capsys, {"num_experts": 4, "top_k": 1, "every": 1, "layers": "both",
                                           "dropless": True, "score": "softmax", "renormalize": False,
                                           "aux_loss_coef": 0.01, "z_loss_coef": 0.001, "upcycle": True})
    assert ("  # model.moe keys left unset, at their defaults: routing token, backend auto; unused under dropless: "
            "capacity_factor, eval_capacity_factor, min_capacity; unused under routing token: unseen_task_routing\n"
            "  moe:\n") in dropless
    unread_alone = _printed(tmp_path, capsys, {"num_experts": 4, "top_k": 1, "every": 1, "layers": "both",
                                               "routing": "hybrid", "dropless": True, "score": "softmax",
                                               "renormalize": False, "aux_loss_coef": 0.01, "z_loss_coef": 0.001,
                                               "unseen_task_routing": "mean", "upcycle": True, "backend": "auto"})
    assert ("  # model.moe keys left unset, unused under dropless: capacity_factor, eval_capacity_factor, "
            "min_capacity\n  moe:\n") in unread_alone
