"""Model merging (`t2t-mtl merge`): TIES against an element-by-element transcription of the paper's three
steps, task arithmetic and mean against their formulas, the command on saved folders, and refusals."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from transformers import T5ForConditionalGeneration

from t2t_mtl.cli import main as cli_main
from t2t_mtl.model import build_model, t5_config_from_dims
from t2t_mtl.model.merging import MergeError, merge_models, merge_state_dicts, merge_task_vectors

DIMS = {"d_model": 16, "d_kv": 8, "d_ff": 24, "num_layers": 1, "num_heads": 2}


def _textbook_ties(taus, density):
    """Trim, elect, disjoint merge, one entry at a time, as Yadav et al. (2023) describe them: each model's task
    vector `taus[i]` ({key: tensor}) flattened whole, its ceil(density·n) largest magnitudes kept."""
    keys = list(taus[0])
    flat = [[v for key in keys for v in tau[key].flatten().tolist()] for tau in taus]
    n = len(flat[0])
    keep = -(-int(round(density * n * 1e6)) // 1_000_000)  # ceil(density·n) without float noise
    trimmed = []
    for values in flat:
        threshold = sorted((abs(v) for v in values), reverse=True)[keep - 1]
        trimmed.append([v if abs(v) >= threshold else 0.0 for v in values])
    merged = []
    for j in range(n):
        column = [t[j] for t in trimmed]
        total = sum(column)
        sign = (total > 0) - (total < 0)
        agreeing = [v for v in column if v != 0 and ((v > 0) - (v < 0)) == sign]
        merged.append(sum(agreeing) / len(agreeing) if agreeing else 0.0)
    out, start = {}, 0
    for key in keys:
        shape = taus[0][key].shape
        out[key] = torch.tensor(merged[start:start + shape.numel()], dtype=torch.float64).reshape(shape)
        start += shape.numel()
    return out


@pytest.mark.parametrize("density", [0.2, 0.5, 1.0])
def test_ties_follows_trim_elect_and_disjoint_merge(density):
    g = torch.Generator().manual_seed(0)
    taus = [torch.randn(6, 5, generator=g, dtype=torch.float64) for _ in range(3)]
    taus[1][0, :3] = taus[1][0, 3]  # equal magnitudes at the threshold are kept together
    taus[2][1] = -taus[0][1]  # opposite signs that cancel in the election
    merged = merge_state_dicts({"w": torch.zeros(6, 5, dtype=torch.float64)}, [{"w": t} for t in taus],
                               method="ties", density=density)["w"]
    expected = _textbook_ties([{"w": t} for t in taus], density)["w"]
    torch.testing.assert_close(merged, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("density", [0.05, 0.2, 0.5])
def test_ties_trims_the_whole_task_vector_at_once(density):
    """The paper's trim keeps the largest magnitudes of the whole flattened task vector (was: of each tensor, so a
    tensor of small changes kept as many entries as one of large changes); a tensor held under two keys (tied
    weights) counts once."""
    g = torch.Generator().manual_seed(2)
    base = {"w": torch.randn(6, 5, generator=g, dtype=torch.float64), "b": torch.randn(20, generator=g,
                                                                                       dtype=torch.float64)}
    base["w_tied"] = base["w"]
    models, taus = [], []
    for i in range(3):
        tau = {"w": 0.01 * torch.randn(6, 5, generator=g, dtype=torch.float64),
               "b": torch.randn(20, generator=g, dtype=torch.float64) * torch.logspace(-3, 1, 20, dtype=torch.float64)}
        taus.append(tau)
        model = {key: base[key] + tau[key] for key in ("w", "b")}
        models.append({**model, "w_tied": model["w"]})
    merged = merge_state_dicts(base, models, method="ties", density=density, scale=0.7)
    expected = _textbook_ties(taus, density)
    for key in ("w", "b"):
        torch.testing.assert_close(merged[key], base[key] + 0.7 * expected[key], rtol=0, atol=1e-12)
    torch.testing.assert_close(merged["w_tied"], merged["w"], rtol=0, atol=0)
    # models read one at a time, each twice (the sign election, then the disjoint mean)
    loads = []
    merge_task_vectors(base, lambda i: loads.append(i) or models[i], 3, method="ties", density=density)
    assert loads == [0, 1, 2, 0, 1, 2]


def test_task_arithmetic_and_mean_follow_their_formulas():
    g = torch.Generator().manual_seed(1)
    base = {"w": torch.randn(4, 3, generator=g), "step": torch.tensor([7])}
    models = [{"w": base["w"] + torch.randn(4, 3, generator=g), "step": torch.tensor([7])} for _ in range(3)]
    taus = [m["w"].double() - base["w"].double() for m in models]
    summed = merge_state_dicts(base, models, method="task_arithmetic", scale=0.4)
    torch.testing.assert_close(summed["w"], (base["w"].double() + 0.4 * sum(taus)).float())
    mean = merge_state_dicts(base, models, method="mean")
    torch.testing.assert_close(mean["w"], torch.stack([m["w"] for m in models]).mean(0))  # a model soup
    assert torch.equal(summed["step"], base["step"]) and summed["w"].dtype == torch.float32


@pytest.mark.parametrize("models,settings,message", [
    ([{"w": torch.zeros(2, 2)}], {"method": "slerp"}, "unknown merge method 'slerp'"),
    ([{"w": torch.zeros(2, 2)}], {"method": "ties", "density": 0.0}, r"density 0.0 must lie in \(0, 1\]"),
    ([], {}, "at least one fine-tuned model"),
    ([{"w": torch.zeros(3, 2)}], {}, r"model 1: w is of shape \(3, 2\), the base's is \(2, 2\)"),
    ([{"v": torch.zeros(2, 2)}], {}, "model 1: w is missing"),
    ([{"w": torch.zeros(2, 2), "extra": torch.zeros(1)}], {}, "weights the base lacks \\(extra\\)"),
])
def test_bad_merges_are_refused_by_name(models, settings, message):
    with pytest.raises(MergeError, match=message):
        merge_state_dicts({"w": torch.zeros(2, 2)}, models, **settings)
    with pytest.raises(MergeError, match=r"n \(a torch.int64 tensor\) differs between the models"):
        merge_state_dicts({"n": torch.tensor([1])}, [{"n": torch.tensor([2])}])
    for scale in (float("nan"), float("inf")):  # was: accepted, every weight non-finite
        with pytest.raises(MergeError, match="must be a finite number"):
            merge_state_dicts({"w": torch.zeros(2)}, [{"w": torch.ones(2)}], scale=scale)
    with pytest.raises(MergeError, match="overflow torch.float16"):
        merge_state_dicts({"w": torch.zeros(2, dtype=torch.float16)}, [{"w": torch.ones(2, dtype=torch.float16)}],
                          scale=1e8)
    # density only matters to TIES (was: refused for task arithmetic too)
    merge_state_dicts({"w": torch.zeros(2)}, [{"w": torch.ones(2)}], density=5.0)


def test_ties_keeps_exactly_the_density_share_despite_float_noise():
    # 0.07 · 100 is 7.000000000000001 in floats: was an 8th entry kept
    tau = torch.arange(1.0, 101.0, dtype=torch.float64)
    merged = merge_state_dicts({"w": torch.zeros(100, dtype=torch.float64)}, [{"w": tau}], method="ties", density=0.07)
    assert int((merged["w"] != 0).sum()) == 7


@pytest.mark.parametrize("density", [1e-3, 1e-8, 1e-12])
def test_ties_keeps_at_least_the_largest_entry_of_a_tiny_density(density):
    # ceil(density·n) >= 1 for any density > 0: was nothing kept (the base returned) once density·n rounded to 0
    tau = torch.tensor([0.5, -3.0, 2.0, 1.0], dtype=torch.float64)
    merged = merge_state_dicts({"w": torch.zeros(4, dtype=torch.float64)}, [{"w": tau}], method="ties",
                               density=density)
    assert merged["w"].tolist() == [0.0, -3.0, 0.0, 0.0]


def _save(model, tokenizer, folder):
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_the_merge_command_writes_the_merged_model(tmp_path, t5_tokenizer):
    torch.manual_seed(0)
    base = T5ForConditionalGeneration(t5_config_from_dims(DIMS, len(t5_tokenizer)))
    folders, states = [_save(base, t5_tokenizer, tmp_path / "base")], []
    for i in range(2):  # two "fine-tunes": the base with its own changes to a few tensors
        tuned = T5ForConditionalGeneration.from_pretrained(folders[0])
        with torch.no_grad():
            tuned.encoder.block[0].layer[0].SelfAttention.q.weight.add_(torch.randn(16, 16))
            tuned.decoder.block[0].layer[-1].DenseReluDense.wo.weight.mul_(1.5 + i)
        tuned.config.use_cache = bool(i)  # settings that change no weight may differ (was: refused)
        tuned.config.task_specific_params = {"summarize": {"prefix": "summarize: "}} if i else None
        folders.append(_save(tuned, t5_tokenizer, tmp_path / f"ft{i}"))
        states.append({k: v.clone() for k, v in tuned.state_dict().items()})
    base_state = base.state_dict()
    params = [name for name, _ in base.named_parameters()]  # each tied tensor once
    for method, options in (("task_arithmetic", ["--scale", "0.5"]), ("ties", ["--density", "0.02"])):
        out = tmp_path / method
        assert cli_main(["merge", *folders, "--out", str(out), "--method", method, *options]) == 0
        merged = T5ForConditionalGeneration.from_pretrained(str(out)).state_dict()
        taus = [{key: s[key].double() - base_state[key].double() for key in params} for s in states]
        ties = _textbook_ties(taus, 0.02) if method == "ties" else None
        for key in ("encoder.block.0.layer.0.SelfAttention.q.weight",
                    "decoder.block.0.layer.2.DenseReluDense.wo.weight", "shared.weight"):
            expected = (base_state[key].double() + 0.5 * sum(tau[key] for tau in taus) if method == "task_arithmetic"
                        else base_state[key].double() + ties[key])
            torch.testing.assert_close(merged[key], expected.float(), rtol=1e-6, atol=1e-6)
        recipe = json.loads((out / "t2t_mtl_meta.json").read_text())["merge"]
        assert (recipe["method"], recipe["scale"], recipe["density"]) == (
            (method, 0.5, None) if method == "task_arithmetic" else (method, 1.0, 0.02))  # density: TIES's only
        assert recipe["models"] == [str(Path(folder).resolve()) for folder in folders[1:]]
        assert (out / "tokenizer_config.json").exists()


def test_the_merge_command_refuses_other_architectures_and_task_conditioned_models(tmp_path, t5_tokenizer, capsys):
    base = _save(T5ForConditionalGeneration(t5_config_from_dims(DIMS, len(t5_tokenizer))), t5_tokenizer, tmp_path / "b")
    wider = _save(T5ForConditionalGeneration(t5_config_from_dims({**DIMS, "d_ff": 32}, len(t5_tokenizer))),
                  t5_tokenizer, tmp_path / "w")
    moe = build_model({"dims": DIMS, "moe": {"num_experts": 2, "top_k": 1, "every": 1, "backend": "reference"}},
                      vocab_size=len(t5_tokenizer), task_names=["a"])
    moe_dir = _save(moe, t5_tokenizer, tmp_path / "m")
    half = _save(T5ForConditionalGeneration.from_pretrained(base).to(torch.bfloat16), t5_tokenizer, tmp_path / "h")
    other_vocab = tmp_path / "v"
    T5ForConditionalGeneration.from_pretrained(base).save_pretrained(other_vocab)
    t5_tokenizer.save_pretrained(other_vocab)
    vocab = json.loads((other_vocab / "tokenizer.json").read_text())
    vocab["model"]["vocab"][5][0] = "▁swapped"  # one token's text changed: ids would mean other things
    (other_vocab / "tokenizer.json").write_text(json.dumps(vocab))
    capsys.readouterr()
    refusals = {wider: r"its architecture differs from the base's \(.*\): d_ff 32 \(base 24\)",
                moe_dir: r"task-conditioned model .*MoE models cannot be merged",
                half: r"its weights are torch.bfloat16, the base's torch.float32",
                str(other_vocab): "its tokenizer's vocabulary differs from the base's",
                str(tmp_path / "missing"): "does not exist"}
    for model, message in refusals.items():
        assert cli_main(["merge", base, model, "--out", str(tmp_path / "o")]) == 2
        assert re.search(message, capsys.readouterr().err), model
    assert not (tmp_path / "o").exists()
    for out in (base, tmp_path / "b" / "sub"):  # was: the base overwritten by the merge
        assert cli_main(["merge", base, wider, "--out", str(out)]) == 2
        assert "is, or lies inside, the model" in capsys.readouterr().err


def test_an_out_that_is_or_lies_inside_a_merged_run_or_its_checkpoints_is_refused(tmp_path):
    # (checked before anything is loaded: the checkpoint need not exist)
    run = tmp_path / "run"
    step = run / "checkpoints" / "step-00000010"
    for out in (run, run / "checkpoints" / "merged", step / "merged", step):
        with pytest.raises(MergeError, match="is, or lies inside, the model .* being merged"):
            merge_models(str(tmp_path / "base"), [str(step)], out)


def test_density_without_ties_is_refused(tmp_path, capsys):
    # --density only trims TIES task vectors: was accepted and silently ignored by task_arithmetic / mean
    for method in ("task_arithmetic", "mean"):
        assert cli_main(["merge", "b", "m", "--out", str(tmp_path / "o"), "--method", method,
                         "--density", "0.5"]) == 2
        err = capsys.readouterr().err
        assert "--density" in err and "--method ties" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("options, message", [
    (["--method", "ties", "--density", "1.5"], "--density must lie in (0, 1]"),
    (["--method", "ties", "--density", "0"], "--density must lie in (0, 1]"),
    (["--scale", "nan"], "--scale must be a finite number"),
    (["--scale", "inf"], "--scale must be a finite number"),  # (mutation testing: refusing NaN alone passed)
])
def test_a_bad_density_or_scale_is_named_as_the_option(options, message, tmp_path, capsys):
    # was: "density 1.5 must lie in (0, 1]", the keyword of merge_models, after BASE and MODEL were looked up
    assert cli_main(["merge", "b", "m", "--out", str(tmp_path / "o"), *options]) == 2
    assert capsys.readouterr().err.startswith(f"error: {message}")


@pytest.mark.parametrize("options, density", [([], 0.2), (["--density", "1"], 1.0), (["--density", "0.05"], 0.05)])
def test_the_merge_command_gives_ties_its_density(options, density, tmp_path, monkeypatch, capsys):
    # mutation testing: another default than the 0.2 --help states, and --density 1 (keep every entry) refused,
    # passed every test, none of which merged by ties without --density or with the whole task vectors
    import t2t_mtl.model.merging as merging

    given = {}
    monkeypatch.setattr(merging, "merge_models", lambda base, models, out, **kwargs: given.update(kwargs) or out)
    assert cli_main(["merge", "b", "m", "--out", str(tmp_path / "o"), "--method", "ties", *options]) == 0
    assert given == {"method": "ties", "scale": 1.0, "density": density}, capsys.readouterr().err

@pytest.mark.parametrize("method,loads", [("task_arithmetic", 1), ("ties", 2)])
def test_models_are_merged_one_at_a_time(tmp_path, t5_tokenizer, monkeypatch, method, loads):
    import gc
    import weakref

    from t2t_mtl.evaluation import checkpoint

    torch.manual_seed(0)
    base = T5ForConditionalGeneration(t5_config_from_dims(DIMS, len(t5_tokenizer)))
    folders = [_save(base, t5_tokenizer, tmp_path / "base")]
    for i in range(3):
        with torch.no_grad():
            for parameter in base.parameters():
                parameter.add_(0.01 * torch.randn_like(parameter))
        folders.append(_save(base, t5_tokenizer, tmp_path / f"ft{i}"))
    load_checkpoint, calls, alive = checkpoint.load_checkpoint, [], []

    def tracked(path, *args, **kwargs):
        gc.collect()
        held = sum(ref() is not None for ref in alive)
        assert held == 0, f"{held} fine-tuned model(s) still held when loading {path}"
        loaded = load_checkpoint(path, *args, **kwargs)
        if path != folders[0]:
            calls.append(path)
            alive.append(weakref.ref(loaded[0].shared.weight))
        return loaded

    monkeypatch.setattr(checkpoint, "load_checkpoint", tracked)
    merge_models(folders[0], folders[1:], tmp_path / "out", method=method, density=0.5)
    assert calls == folders[1:] * loads  # TIES: the sign election, then the disjoint mean
    expected = merge_state_dicts(T5ForConditionalGeneration.from_pretrained(folders[0]).state_dict(),
                                 [T5ForConditionalGeneration.from_pretrained(f).state_dict() for f in folders[1:]],
                                 method=method, density=0.5)
    merged = T5ForConditionalGeneration.from_pretrained(str(tmp_path / "out")).state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(merged[key], value, rtol=0, atol=0)


@pytest.mark.parametrize("method", ["task_arithmetic", "mean", "ties"])
def test_non_finite_weights_are_refused_by_model_and_key(method):
    """A diverged fine-tune (NaN/inf weights): TIES silently dropped its NaN entries (|NaN| >= threshold is false)
    and merged the rest; the other methods blamed the scale ('overflow ... use a smaller scale', which no scale
    fixes); a non-finite base was blamed on the scale too."""
    base = {"w": torch.zeros(10), "b": torch.zeros(3)}
    good = {"w": torch.arange(1.0, 11.0), "b": torch.ones(3)}
    for bad_value in (float("nan"), float("inf")):
        bad = {"w": good["w"].clone(), "b": good["b"].clone()}
        bad["b"][1] = bad_value
        with pytest.raises(MergeError, match=r"model 2: b holds non-finite weights \(NaN or inf\)"):
            merge_state_dicts(base, [good, bad], method=method, density=0.5)
        with pytest.raises(MergeError, match=r"the base's w holds non-finite weights"):
            merge_state_dicts({**base, "w": bad["b"].repeat(4)[:10]}, [good, good], method=method, density=0.5)
    # a genuine overflow still says so
    with pytest.raises(MergeError, match="overflow torch.float16"):
        merge_state_dicts({"w": torch.zeros(2, dtype=torch.float16)},
                          [{"w": torch.full((2,), 6e4, dtype=torch.float16)}], method=method, scale=2.0, density=1.0)


@pytest.mark.parametrize("method", ["task_arithmetic", "ties"])
def test_each_model_is_checked_once(method, monkeypatch):
    # was: TIES checked each model's keys, shapes and finiteness again on its second read (the disjoint mean)
    from t2t_mtl.model import merging

    checked = []
    monkeypatch.setattr(merging, "_non_finite_key",
                        lambda state, real=merging._non_finite_key: checked.append(state) or real(state))
    base = {"w": torch.zeros(4), "b": torch.zeros(2)}
    models = [{"w": torch.arange(1.0, 5.0) * sign, "b": torch.ones(2)} for sign in (1, -1, 1)]
    merged = merge_state_dicts(base, models, method=method, density=0.5)
    assert len(checked) == 1 + len(models)  # the base, then each model once
    expected = (_textbook_ties(models, 0.5) if method == "ties"
                else {key: sum(model[key].double() for model in models) for key in base})
    for key, value in expected.items():  # (the base is zero: the task vectors are the models)
        torch.testing.assert_close(merged[key], value.float())


def _two_models(tmp_path, tokenizer):
    torch.manual_seed(0)
    base = T5ForConditionalGeneration(t5_config_from_dims(DIMS, len(tokenizer)))
    folders = [_save(base, tokenizer, tmp_path / "base")]
    with torch.no_grad():
        base.shared.weight.add_(1.0)
    folders.append(_save(base, tokenizer, tmp_path / "ft"))
    return folders


def test_an_out_that_holds_the_inputs_is_written_beside_them_and_leaves_them_as_they_were(tmp_path, t5_tokenizer):
    folders = _two_models(tmp_path, t5_tokenizer)
    before = {path: path.read_bytes() for folder in folders for path in Path(folder).iterdir()}
    assert cli_main(["merge", *folders, "--out", str(tmp_path), "--method", "mean"]) == 0
    assert {path: path.read_bytes() for path in before} == before
    merged = T5ForConditionalGeneration.from_pretrained(str(tmp_path)).shared.weight
    base = T5ForConditionalGeneration.from_pretrained(folders[0]).shared.weight
    torch.testing.assert_close(merged, base + 1.0)  # the one model's task vector (+1), its mean


def test_an_out_that_cannot_be_written_is_a_one_line_error(tmp_path, t5_tokenizer, capsys, locked_folder):
    # was: the PermissionError's traceback and exit code 1, found only after every model was loaded and merged
    folders = _two_models(tmp_path, t5_tokenizer)
    out = tmp_path / locked_folder / "merged"
    capsys.readouterr()
    assert cli_main(["merge", *folders, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--out {out}: the merged model could not be written" in err and "Permission denied" in err
    assert "Traceback" not in err and not (tmp_path / "locked").exists()


def test_the_merged_folder_is_written_whole_or_not_at_all(tmp_path, t5_tokenizer, capsys, monkeypatch):
    """A write that fails part-way (a full disk) left --out holding the new config and weights without the tokenizer
    or the recipe; over an earlier merge, its weights replaced under the old recipe. The folder is now written
    next to --out and moved into place once complete."""
    folders = _two_models(tmp_path, t5_tokenizer)
    out = tmp_path / "merged"
    assert cli_main(["merge", *folders, "--out", str(out), "--scale", "0.5"]) == 0
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    real_save = T5ForConditionalGeneration.save_pretrained

    def save_then_fill_the_disk(self, folder, *args, **kwargs):
        real_save(self, folder, *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(T5ForConditionalGeneration, "save_pretrained", save_then_fill_the_disk)
    capsys.readouterr()
    for target in (out, tmp_path / "fresh"):
        assert cli_main(["merge", *folders, "--out", str(target), "--scale", "2"]) == 1  # the work failed (README)
        assert "No space left on device" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before  # the earlier merge, untouched
    assert not (tmp_path / "fresh").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "ft", "merged"]  # no staging folder left
    monkeypatch.undo()
    # an existing folder is filled in place (other files kept); a stale weight shard of an earlier save is removed
    (out / "model-00001-of-00002.safetensors").write_bytes(b"stale")
    (out / "notes.txt").write_text("mine")
    assert cli_main(["merge", *folders, "--out", str(out), "--scale", "2"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and not (out / "model-00001-of-00002.safetensors").exists()
    merged = T5ForConditionalGeneration.from_pretrained(str(out))
    torch.testing.assert_close(merged.shared.weight,
                               T5ForConditionalGeneration.from_pretrained(folders[0]).shared.weight + 2.0)
    assert json.loads((out / "t2t_mtl_meta.json").read_text())["merge"]["scale"] == 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "ft", "merged"]
    assert not [p.name for p in out.iterdir() if p.name.endswith(".partial")]
    # --out . (the current folder, empty): filled in place
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert cli_main(["merge", *folders, "--out", "."]) == 0
    assert sorted(p.name for p in here.iterdir()) == sorted(before)


def test_a_merged_folder_is_evaluated_and_predicted_as_its_base_run_is(tmp_path, t5_tokenizer, capsys):
    # was: the merged folder's t2t_mtl_meta.json held the recipe alone, so `eval` and `predict` of it fell back to
    # the model-folder defaults (scoring auto, greedy, 512 input / 64 new tokens, the held_out-flagged tasks) where
    # the base run's config said otherwise; now the base's config travels with the merge, and with --scale 0 (the
    # base's weights) the merged folder gives the base's report and predictions exactly
    from t2t_mtl.config import config_from_dict
    from t2t_mtl.engine.export import META_FILE

    torch.manual_seed(0)
    base = T5ForConditionalGeneration(t5_config_from_dims(DIMS, len(t5_tokenizer)))
    base_dir = tmp_path / "base"
    _save(base, t5_tokenizer, base_dir)
    config = config_from_dict({"model": {"dims": DIMS},
                               "data": {"tasks": ["sort_words"], "held_out_clusters": ["arithmetic"],
                                        "max_input_length": 12,
                                        "max_target_length": 3},
                               "evaluation": {"scoring": "generate", "num_beams": 2}}).to_dict()
    (base_dir / META_FILE).write_text(json.dumps({"config": config, "run_dir": "runs/base"}))  # as export writes
    tuned = T5ForConditionalGeneration.from_pretrained(str(base_dir))
    with torch.no_grad():
        tuned.encoder.block[0].layer[0].SelfAttention.q.weight.add_(1.0)
    tuned_dir = _save(tuned, t5_tokenizer, tmp_path / "ft")
    merged_dir = tmp_path / "merged"
    assert cli_main(["merge", str(base_dir), tuned_dir, "--out", str(merged_dir), "--scale", "0"]) == 0
    meta = json.loads((merged_dir / META_FILE).read_text())
    assert meta["config"] == config and meta["merge"]["base"] == str(base_dir.resolve())
    reports, predictions = {}, {}
    for name, folder in (("base", base_dir), ("merged", merged_dir)):
        out = tmp_path / f"eval-{name}"
        assert cli_main(["eval", "--checkpoint", str(folder), "--held-out", "--max-examples", "2", "--name", "m",
                         "--no-progress", "--out", str(out)]) == 0
        reports[name] = json.loads((out / "report.json").read_text())
        capsys.readouterr()
        assert cli_main(["predict", "--checkpoint", str(folder), " ".join(["word"] * 40)]) == 0
        predictions[name] = capsys.readouterr().out
    settings = reports["merged"]["settings"]
    assert (settings["scoring"], settings["num_beams"], settings["max_input_length"],
            settings["max_new_tokens"]) == ("generate", 2, 12, 3)
    assert {r["task"] for r in reports["merged"]["results"]} == {"count_word", "parity", "word_problem"}
    assert reports["merged"] == reports["base"] and predictions["merged"] == predictions["base"]


@pytest.mark.parametrize("models,what", [({"w": torch.zeros(2)}, "dict"), (5, "int"), (None, "NoneType")])
def test_merge_state_dicts_needs_a_list_of_models(models, what):
    # one state dict in place of the list was a raw KeyError 0; an int an AttributeError
    with pytest.raises(MergeError, match=rf"models must be a list of fine-tuned state dicts, got {what} "
                                         r"\(one model: pass \[state_dict\]\)"):
        merge_state_dicts({"w": torch.ones(2)}, models)
    merged = merge_state_dicts({"w": torch.ones(2)}, [{"w": torch.zeros(2)}, {"w": torch.full((2,), 3.0)}])
    torch.testing.assert_close(merged["w"], torch.ones(2) + (-1.0 + 2.0))  # base + Σ (model - base)


def test_the_merge_command_names_a_diverged_model_or_base_by_its_path(tmp_path, t5_tokenizer, capsys):
    # was: "model 2: ... holds non-finite weights" and "the base's ... holds non-finite weights", the only merge
    # errors that named no input, the model by its place among the arguments
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(t5_config_from_dims(DIMS, len(t5_tokenizer)))
    base, tuned = _save(model, t5_tokenizer, tmp_path / "base"), _save(model, t5_tokenizer, tmp_path / "ft")
    with torch.no_grad():
        model.encoder.block[0].layer[0].SelfAttention.q.weight[0, 0] = float("nan")
    diverged = _save(model, t5_tokenizer, tmp_path / "diverged")
    key = re.escape("encoder.block.0.layer.0.SelfAttention.q.weight")
    for inputs, message in (([base, tuned, diverged], rf"{re.escape(diverged)}: {key} holds non-finite weights"),
                            ([diverged, tuned], rf"{re.escape(diverged)}: the base's {key} holds non-finite weights")):
        capsys.readouterr()
        assert cli_main(["merge", *inputs, "--out", str(tmp_path / "o")]) == 2
        assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "o").exists()
    with pytest.raises(MergeError, match=r"^a: n \(a torch.int64 tensor\) differs"):
        merge_task_vectors({"n": torch.tensor([1])}, lambda i: {"n": torch.tensor([2])}, 1, model_names=["a"])
    with pytest.raises(MergeError, match="model_names names 2 models, not the 1 merged"):
        merge_task_vectors({"w": torch.zeros(1)}, lambda i: {"w": torch.ones(1)}, 1, model_names=["a", "b"])


@pytest.mark.parametrize("method", ["task_arithmetic", "mean", "ties"])
def test_a_tensor_held_under_several_keys_is_merged_once(method, monkeypatch):
    """A T5's embedding is also encoder/decoder.embed_tokens and lm_head: four keys of one tensor, its largest. Was:
    merged under each key, so its float64 accumulators (and TIES's signs and counts) were held four times — merging
    three fine-tunes of a d_model-512 4-layer T5 peaked at ~8× its float32 size (TIES ~11×) where the README says
    ~4× (5×). Now it is merged once (peaks ~5×, TIES ~8×), as the base holds it, and the merged state dict holds
    that one tensor under its four keys."""
    from t2t_mtl.model import merging

    g = torch.Generator().manual_seed(3)
    base = {"emb": torch.randn(8, 4, generator=g), "w": torch.randn(5, generator=g)}
    base.update(head=base["emb"], embed_tokens=base["emb"])
    models = []
    for _ in range(3):
        model = {"emb": base["emb"] + torch.randn(8, 4, generator=g), "w": base["w"] + torch.randn(5, generator=g)}
        models.append({**model, "head": model["emb"], "embed_tokens": model["emb"]})
    accumulated = []
    monkeypatch.setattr(merging, "_add", lambda into, key, value, real=merging._add: (
        accumulated.append(key) if key not in into else None, real(into, key, value))[-1])
    merged = merge_state_dicts(base, models, method=method, scale=0.5, density=0.4)
    assert sorted(set(accumulated)) == ["emb", "w"]
    assert merged["head"] is merged["emb"] and merged["embed_tokens"] is merged["emb"]
    taus = [{key: model[key].double() - base[key].double() for key in ("emb", "w")} for model in models]
    expected = (_textbook_ties(taus, 0.4) if method == "ties"
                else {key: sum(tau[key] for tau in taus) / (3 if method == "mean" else 1) for key in ("emb", "w")})
    for key in ("emb", "w"):
        torch.testing.assert_close(merged[key], (base[key].double() + 0.5 * expected[key]).float())
    untied = {**models[0], "head": models[0]["emb"] + 1}  # one tensor in the base, two in the model
    with pytest.raises(MergeError, match="model 1: head and emb are one tensor in the base .* but differ here"):
        merge_state_dicts(base, [untied], method=method, density=0.4)
