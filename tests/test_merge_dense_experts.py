"""`t2t-mtl merge` of folders that `export --task` wrote of a task-routed MoE run (meta `dense_from_experts`): their
feed-forward units are experts of the run, side by side in the route's order, so a merge goes ahead only where every
folder's layers hold the same experts in the same order (gates, folded into wo, may differ; the same dense layers are
then zero-padded); otherwise it is refused naming the folder, the layer and the experts."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from t2t_mtl.cli import main as cli_main
from t2t_mtl.model.moe import convert_to_moe, moe_blocks

TASKS = ["alpha", "beta", "gamma"]
#: each task's gate row in every MoE layer: alpha and gamma pick experts 0 then 1 (with other gates), beta 2 then 3
GATE_ROWS = [[5.0, 4.0, 0.0, 0.0], [0.0, 0.0, 5.0, 4.0], [6.0, 3.0, 0.0, 0.0]]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, t5_tokenizer):
    """{task: the folder `export --task` wrote of a top-2, every-2 task-routed MoE of TASKS}."""
    root = tmp_path_factory.mktemp("dense")
    torch.manual_seed(0)
    dense = T5ForConditionalGeneration(T5Config(vocab_size=len(t5_tokenizer), d_model=16, d_ff=24, d_kv=8,
                                                num_heads=2, num_layers=3, num_decoder_layers=2, pad_token_id=0,
                                                eos_token_id=1, decoder_start_token_id=0))
    moe = convert_to_moe(dense, {"num_experts": 4, "top_k": 2, "every": 2, "routing": "task", "upcycle": False},
                         task_names=TASKS)
    with torch.no_grad():
        for _, block in moe_blocks(moe):
            block.task_gate.weight[:len(TASKS)] = torch.tensor(GATE_ROWS)
    moe.save_pretrained(root / "moe")
    t5_tokenizer.save_pretrained(root / "moe")
    for task in TASKS:
        assert cli_main(["export", str(root / "moe"), "--task", task, "--out", str(root / task)]) == 0
    return {task: root / task for task in TASKS}


def _fine_tune_of(folder, out, meta):
    """A copy of `folder` with its weights changed and t2t_mtl_meta.json `meta`."""
    shutil.copytree(folder, out)
    model = T5ForConditionalGeneration.from_pretrained(out)
    with torch.no_grad():
        model.encoder.block[1].layer[-1].DenseReluDense.wo.weight.add_(1.0)
    model.save_pretrained(out)
    (out / "t2t_mtl_meta.json").write_text(json.dumps(meta))
    return out


def test_folders_of_tasks_routed_to_other_experts_are_refused_by_folder_layer_and_experts(exported, tmp_path, capsys):
    # was: merged, each feed-forward unit of alpha's experts 0 and 1 averaged with one of beta's experts 2 and 3
    capsys.readouterr()
    assert cli_main(["merge", str(exported["alpha"]), str(exported["beta"]), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert (f"{exported['beta']}: its decoder.1 holds experts [2, 3] of the MoE run, the base's experts [0, 1] "
            f"({exported['alpha']}): each feed-forward unit would be merged with another expert's") in err
    assert not (tmp_path / "o").exists()


def test_a_plain_t5_and_a_folder_of_experts_are_refused_either_way(exported, tmp_path, capsys):
    plain = tmp_path / "plain"
    T5ForConditionalGeneration(T5ForConditionalGeneration.from_pretrained(exported["alpha"]).config
                               ).save_pretrained(plain)  # (same architecture: d_ff 48, no experts)
    shutil.copy(exported["alpha"] / "tokenizer.json", plain)
    shutil.copy(exported["alpha"] / "tokenizer_config.json", plain)
    capsys.readouterr()
    for base, model, which in ((plain, exported["alpha"], "it holds experts"),
                               (exported["alpha"], plain, "the base holds experts")):
        assert cli_main(["merge", str(base), str(model), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert f"{model}: {which} of a task-routed MoE run in its feed-forward layers" in err, err


def test_folders_holding_the_same_experts_merge_and_the_merge_says_which_it_holds(exported, tmp_path, capsys):
    # gamma's gates differ from alpha's (6:3 against 5:4) but its slots hold the same experts 0 and 1
    out = tmp_path / "merged"
    assert cli_main(["merge", str(exported["alpha"]), str(exported["gamma"]), "--out", str(out)]) == 0
    alpha = json.loads((exported["alpha"] / "t2t_mtl_meta.json").read_text())
    meta = json.loads((out / "t2t_mtl_meta.json").read_text())
    assert (meta["dense_from_experts"], meta["zero_padding"]) == (alpha["dense_from_experts"], alpha["zero_padding"])
    # a run fine-tuned from a folder holds its experts (model.name_or_path), as does a merge of such folders
    tuned = _fine_tune_of(exported["alpha"], tmp_path / "tuned", {"config": {"model": {"name_or_path":
                                                                                         str(exported["alpha"])}}})
    assert cli_main(["merge", str(exported["alpha"]), str(tuned), str(out), "--out", str(tmp_path / "m2")]) == 0
    capsys.readouterr()
    assert cli_main(["merge", str(exported["beta"]), str(tuned), "--out", str(tmp_path / "m3")]) == 2
    err = capsys.readouterr().err
    assert f"{tuned}: its decoder.1 holds experts [0, 1] of the MoE run, the base's experts [2, 3]" in err


def test_a_fine_tune_from_a_relative_name_or_path_is_found_through_its_initialisation_record(
        exported, tmp_path, monkeypatch, capsys):
    # was: refused ('the base holds experts ... and it does not'): the fine-tune's config names the folder relative to
    # where it trained, which merge read from its own working directory; the run's initialised_from records the path
    tuned = _fine_tune_of(exported["alpha"], tmp_path / "tuned", {
        "config": {"model": {"name_or_path": "alpha"}}, "initialised_from": {"path": str(exported["alpha"])}})
    monkeypatch.chdir(tmp_path)
    assert cli_main(["merge", str(exported["alpha"]), str(tuned), "--out", str(tmp_path / "merged")]) == 0
    capsys.readouterr()
    assert cli_main(["merge", str(exported["beta"]), str(tuned), "--out", str(tmp_path / "m2")]) == 2
    assert f"{tuned}: its decoder.1 holds experts [0, 1] of the MoE run" in capsys.readouterr().err


def test_folders_exported_before_top_k_routes_give_their_one_expert_per_layer(exported, tmp_path, capsys):
    # was: KeyError 'experts', a raw traceback: t2t-mtl before top_k > 1 exports wrote each layer's route as
    # {"expert": ID, "gate": G} (top-1 only), which such folders' t2t_mtl_meta.json still holds
    def old_export(out, expert):
        meta = json.loads((exported["alpha"] / "t2t_mtl_meta.json").read_text())
        meta["dense_from_experts"] = {layer: {"expert": expert, "gate": 0.5} for layer in meta["dense_from_experts"]}
        del meta["zero_padding"]
        return _fine_tune_of(exported["alpha"], out, meta)

    first, same, other = old_export(tmp_path / "e0", 0), old_export(tmp_path / "e0b", 0), old_export(tmp_path / "e2", 2)
    assert cli_main(["merge", str(first), str(same), "--out", str(tmp_path / "o")]) == 0
    capsys.readouterr()
    assert cli_main(["merge", str(first), str(other), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert f"{other}: its decoder.1 holds experts [2] of the MoE run, the base's experts [0] ({first})" in err, err


def test_a_merge_based_on_a_fine_tune_records_the_experts_its_layers_hold(exported, tmp_path, capsys):
    # was: the merge's t2t_mtl_meta.json took dense_from_experts / zero_padding from the base's own meta only, so a
    # merge based on a run fine-tuned from alpha (whose config names alpha relative to where it trained) held none and
    # a later merge based on it was refused as holding no experts ('the base holds experts ... and it does not' of
    # beta) instead of naming the experts that differ
    tuned = _fine_tune_of(exported["alpha"], tmp_path / "tuned", {
        "config": {"model": {"name_or_path": "alpha"}}, "initialised_from": {"path": str(exported["alpha"])}})
    merged = tmp_path / "merged"
    assert cli_main(["merge", str(tuned), str(exported["gamma"]), "--out", str(merged)]) == 0
    alpha = json.loads((exported["alpha"] / "t2t_mtl_meta.json").read_text())
    meta = json.loads((merged / "t2t_mtl_meta.json").read_text())
    assert (meta["dense_from_experts"], meta["zero_padding"]) == (alpha["dense_from_experts"], alpha["zero_padding"])
    capsys.readouterr()
    assert cli_main(["merge", str(merged), str(exported["beta"]), "--out", str(tmp_path / "m2")]) == 2
    err = capsys.readouterr().err
    assert (f"{exported['beta']}: its decoder.1 holds experts [2, 3] of the MoE run, the base's experts [0, 1] "
            f"({merged})") in err, err


def test_the_experts_are_found_up_a_chain_of_fine_tunes_and_not_through_an_unreadable_meta(exported, tmp_path):
    # mutation testing: following at most two folders back, or letting a t2t_mtl_meta.json on the way that is no JSON
    # object or no JSON out (a raw AttributeError or JSONDecodeError), passed every test
    from t2t_mtl.model.merging import _expert_layout

    alpha = json.loads((exported["alpha"] / "t2t_mtl_meta.json").read_text())
    parent = exported["alpha"]
    for generation in range(3):  # a fine-tune of a fine-tune of a fine-tune of alpha
        folder = tmp_path / f"tune{generation}"
        folder.mkdir()
        (folder / "t2t_mtl_meta.json").write_text(json.dumps({"initialised_from": {"path": str(parent)}}))
        parent = folder
    run = {"config": {"model": {"name_or_path": str(parent)}}}
    assert _expert_layout(run) == {layer: route["experts"] for layer, route in alpha["dense_from_experts"].items()}
    for text in ("[1, 2]", "{not json"):
        (tmp_path / "tune0" / "t2t_mtl_meta.json").write_text(text)
        assert _expert_layout(run) is None, text
