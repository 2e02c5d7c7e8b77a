"""Loading a run's checkpoint builds a model from dims without a random init (`t2t_mtl.model.t5.unfilled`): the
strict load fills every tensor, so the model equals, bit for bit, the one built with random weights and then loaded,
for a dense, a bf16 (stage-0 fp32 masters), a task-routed MoE, a per-task LoRA and a task-embedding run."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from t2t_mtl.engine import export
from t2t_mtl.engine.trainer import train
from t2t_mtl.model import accepts_task_ids

from engine_helpers import nan_filled_to_empty, pretrained_folder, subprocess_env, tiny_config, train_tiny_tokenizer

RUNS = {
    "dense": {},
    "bf16": {"training": {"precision": "bf16"}},
    "moe": {"model": {"moe": {"num_experts": 4, "top_k": 2, "every": 1, "routing": "task"}}},
    "lora_per_task": {"model": {"lora": {"r": 2, "alpha": 4, "targets": ["q", "v", "wo"], "per_task": True}}},
    "task_embeddings": {"model": {"task_embeddings": True}},
}


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


def _logits(model, ids):
    extra = {"task_ids": torch.tensor([0, 1])} if accepts_task_ids(model) else {}
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids), decoder_input_ids=ids[:, :5], **extra).logits


@pytest.mark.parametrize("name", list(RUNS))
def test_a_checkpoint_loads_into_a_model_built_without_random_init(tmp_path, tok, name, monkeypatch):
    sections = RUNS[name]
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": 2, **sections.get("training", {})})
    cfg["model"] = {**cfg["model"], **sections.get("model", {})}
    train(cfg)

    monkeypatch.setattr(torch.nn.Module, "to_empty", nan_filled_to_empty(torch.nn.Module.to_empty))
    rng = torch.get_rng_state()
    model, _, _ = export.load_trained_model(tmp_path / "run")
    assert torch.equal(torch.get_rng_state(), rng), "the load drew random numbers"
    monkeypatch.undo()

    monkeypatch.setattr(export, "unfilled", lambda build: build())  # the reference: random init, then the load
    reference, _, _ = export.load_trained_model(tmp_path / "run")
    state, expected = model.state_dict(), reference.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in expected), [k for k in expected
                                                                       if not torch.equal(state[k], expected[k])]
    assert model.get_input_embeddings().weight is model.lm_head.weight or not model.config.tie_word_embeddings
    ids = torch.randint(2, 50, (2, 9))
    assert torch.equal(_logits(model, ids), _logits(reference, ids))


def test_an_old_runs_model_grows_for_its_task_tokens_without_random_init(monkeypatch):
    # (a checkpoint written before runs recorded vocab_size is sized by model.dims, here smaller than its tokenizer
    # with TE⊕ENC's task tokens): was a RuntimeError, transformers' mean resizing of the new rows reading the old
    # rows' values (.item()) on the meta device; the reference is the same build with random init
    from t2t_mtl.config import config_from_dict

    cfg = config_from_dict({"model": {"dims": {"d_model": 8, "d_ff": 16, "num_layers": 1, "num_heads": 1, "d_kv": 8,
                                               "vocab_size": 32}, "task_embeddings": True},
                            "data": {"tasks": ["parity"]}})
    tokenizer = type("Tok", (), {"__len__": lambda self: 40, "pad_token_id": 0, "eos_token_id": 1})()
    rng = torch.get_rng_state()
    model = export._run_model(cfg, {}, tokenizer)
    assert torch.equal(torch.get_rng_state(), rng), "the build drew random numbers"
    monkeypatch.setattr(export, "unfilled", lambda build: build())
    reference = export._run_model(cfg, {}, tokenizer)
    shapes = {k: v.shape for k, v in reference.state_dict().items()}
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes
    assert model.get_input_embeddings().weight.shape[0] == 40 and not model.get_input_embeddings().weight.is_meta
    assert model.get_input_embeddings().weight is model.lm_head.weight


@pytest.mark.parametrize("generation_file", [True, False])
@pytest.mark.parametrize("moe", [False, True])
def test_a_pretrained_folder_built_without_its_weights_has_the_generation_config_from_pretrained_gives(
        tmp_path, generation_file, moe):
    # was: the model's config's generation config, without the folder's generation_config.json (a resume builds a
    # pretrained run's model so, its weights filled by the checkpoint)
    import json

    from transformers import T5Config, T5ForConditionalGeneration

    from t2t_mtl.model.moe import convert_to_moe, load_t5_or_moe

    model = T5ForConditionalGeneration(T5Config(vocab_size=40, d_model=8, d_kv=4, d_ff=16, num_layers=1,
                                                num_heads=2, decoder_start_token_id=0))
    if moe:
        model = convert_to_moe(model, {"num_experts": 2, "top_k": 1, "every": 1, "routing": "token"})
    model.save_pretrained(tmp_path)
    path = tmp_path / "generation_config.json"
    if generation_file:
        path.write_text(json.dumps({**json.loads(path.read_text()), "no_repeat_ngram_size": 3, "max_length": 7}))
    else:
        path.unlink()
    with torch.device("meta"):
        built = load_t5_or_moe(str(tmp_path), weights=False)
    assert built.generation_config.to_dict() == load_t5_or_moe(str(tmp_path)).generation_config.to_dict()
    assert built.generation_config.no_repeat_ngram_size == (3 if generation_file else None)


@pytest.mark.parametrize("lora, precision, own_head, reads", [
    (True, "fp32", False, False), (False, "bf16", False, False), (True, "bf16", False, True),
    (False, "fp32", True, False)])
def test_a_pretrained_runs_checkpoint_loads_without_its_folders_weights_unless_half_precision_froze_some(
        tmp_path, tok, monkeypatch, lora, precision, own_head, reads):
    # was: every pretrained run's model was read from its folder (from_pretrained) and then overwritten by the load;
    # the checkpoint holds every weight in fp32 but frozen ones trained in half precision (their rounding alone). A
    # folder's own LM head stays its own (unfilled tied it to the embedding again)
    from transformers import T5ForConditionalGeneration

    model = {"name_or_path": str(pretrained_folder(tmp_path, tok, own_head)), "dims": None, "task_embeddings": True}
    if lora:
        model["lora"] = {"r": 2, "alpha": 4, "targets": ["q", "v", "wo"]}
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", model=model,
                      training={"steps": 2, "precision": precision}, deepspeed={"zero_stage": 1})
    train(cfg, evaluate_held_in=False)

    real_from_pretrained, read = T5ForConditionalGeneration.from_pretrained, []

    def from_pretrained(*args, **kwargs):
        read.append(args)
        return real_from_pretrained(*args, **kwargs)

    monkeypatch.setattr(T5ForConditionalGeneration, "from_pretrained", from_pretrained)
    monkeypatch.setattr(torch.nn.Module, "to_empty", nan_filled_to_empty(torch.nn.Module.to_empty))
    loaded, _, _ = export.load_trained_model(tmp_path / "run")
    assert bool(read) == reads
    monkeypatch.undo()

    real_build = export.build_model  # the reference: built from the folder's weights, then the load
    monkeypatch.setattr(export, "unfilled", lambda build: build())
    monkeypatch.setattr(export, "build_model", lambda *args, **kwargs: real_build(*args, **{**kwargs, "weights": True}))
    reference, _, _ = export.load_trained_model(tmp_path / "run")
    state, expected = loaded.state_dict(), reference.state_dict()
    assert state.keys() == expected.keys()
    assert [k for k in expected if not torch.equal(state[k], expected[k])] == []
    assert (loaded.lm_head.weight is not loaded.shared.weight) == own_head


def test_unfilled_gives_the_model_storage_on_the_device_asked_for():
    # mutation testing: unfilled putting the model on the CPU whatever its device passed every test (all on the CPU);
    # the meta device, which every machine has, tells the two apart
    from transformers import T5Config, T5ForConditionalGeneration

    from t2t_mtl.model.t5 import unfilled

    def build():
        return T5ForConditionalGeneration(T5Config(vocab_size=32, d_model=8, d_ff=16, d_kv=4, num_heads=2,
                                                   num_layers=1))

    assert {p.device.type for p in unfilled(build, device="meta").parameters()} == {"meta"}
    assert {p.device.type for p in unfilled(build).parameters()} == {"cpu"}


def _as_cached_hub_model(folder, tmp_path, monkeypatch, name="t2t-test/tiny"):
    """Make model folder `folder` the hub model `name` of this test's hub cache (the tests run offline) and return
    `name`."""
    import shutil

    from huggingface_hub import constants

    repo = tmp_path / "hub" / f"models--{name.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    shutil.copytree(folder, repo / "snapshots" / ("0" * 40))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return name


@pytest.mark.parametrize("own_head", [False, True])
def test_a_hub_model_built_without_its_weights_has_the_parameters_from_pretrained_gives(tmp_path, monkeypatch,
                                                                                        own_head):
    # was: only a local folder's weights were asked whether the model has an LM head of its own, so a hub model's
    # weightless build (a resumed run's model, and the model export, eval and predict load a run's checkpoint into)
    # tied a T5 v1.1 / Flan-T5 / mT5 head to its embedding, and the load put both matrices in the one tensor
    from transformers import T5Config, T5ForConditionalGeneration

    from t2t_mtl.model.moe import load_t5_or_moe
    from t2t_mtl.model.t5 import check_t5_checkpoint

    model = T5ForConditionalGeneration(T5Config(vocab_size=40, d_model=8, d_kv=4, d_ff=16, num_layers=1,
                                                num_heads=2, decoder_start_token_id=0))
    if own_head:
        model.set_output_embeddings(torch.nn.Linear(8, 40, bias=False))
    model.save_pretrained(tmp_path / "folder")
    name = _as_cached_hub_model(tmp_path / "folder", tmp_path, monkeypatch)
    with torch.device("meta"):
        built = load_t5_or_moe(name, saved=check_t5_checkpoint(name), weights=False)
    reference = T5ForConditionalGeneration.from_pretrained(name)
    assert [name for name, _ in built.named_parameters()] == [name for name, _ in reference.named_parameters()]
    assert (built.lm_head.weight is not built.shared.weight) == own_head


def test_a_run_from_a_hub_model_with_its_own_head_loads_with_its_trained_head(tmp_path, tok, monkeypatch):
    # was: the run's model, built without the hub model's weights, had its head tied to the embedding, so the
    # checkpoint's trained head was dropped (export, eval and predict computed with the embedding as the head)
    name = _as_cached_hub_model(pretrained_folder(tmp_path, tok, own_head=True), tmp_path, monkeypatch)
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", model={"name_or_path": name, "dims": None},
                      training={"steps": 2})
    train(cfg, evaluate_held_in=False)
    loaded, _, _ = export.load_trained_model(tmp_path / "run")
    real_build = export.build_model  # the reference: built from the hub model's weights, then the load
    monkeypatch.setattr(export, "unfilled", lambda build: build())
    monkeypatch.setattr(export, "build_model", lambda *args, **kwargs: real_build(*args, **{**kwargs, "weights": True}))
    reference, _, _ = export.load_trained_model(tmp_path / "run")
    assert reference.lm_head.weight is not reference.shared.weight
    state, expected = loaded.state_dict(), reference.state_dict()
    assert [k for k in expected if not torch.equal(state[k], expected[k])] == []


@pytest.mark.parametrize("index", ["[]", "{"])
def test_a_folder_whose_weights_index_cannot_be_read_is_refused_naming_it(tmp_path, index):
    # was: a safetensors index that is no JSON object (or no JSON) ended the weightless build (the run's checks) in a
    # raw AttributeError (JSONDecodeError); then it built a tied head, which a model filled by a run's checkpoint
    # (no other file read) kept silently
    from transformers import T5Config, T5ForConditionalGeneration

    from t2t_mtl.model.t5 import ModelBuildError, build_model

    T5ForConditionalGeneration(T5Config(vocab_size=40, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2,
                                        decoder_start_token_id=0)).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "model.safetensors.index.json").write_text(index)
    with torch.device("meta"), pytest.raises(ModelBuildError) as refused:
        build_model({"name_or_path": str(tmp_path)}, weights=False)
    assert str(refused.value).startswith(
        f"model.name_or_path '{tmp_path}' could not be loaded: {tmp_path / 'model.safetensors.index.json'} cannot be "
        f"read as a weights index, a JSON object ("), refused.value
    if index == "{":  # (the load of one that is no JSON object fails deep in transformers)
        with pytest.raises(ModelBuildError, match=f"model.name_or_path '{tmp_path}' could not be loaded: "):
            build_model({"name_or_path": str(tmp_path)})


@pytest.mark.parametrize("index, what", [({"metadata": {}}, "it has none"),
                                         ({"weight_map": []}, "its weight_map is a list")])
def test_a_weights_index_whose_weight_map_is_no_mapping_is_refused_naming_it(tmp_path, index, what):
    # was: read as a model without a head of its own (a tied head built, which a model filled by a run's checkpoint
    # kept silently), though from_pretrained cannot load the folder (KeyError 'weight_map', AttributeError)
    import json

    from transformers import T5Config, T5ForConditionalGeneration

    from t2t_mtl.model.t5 import ModelBuildError, build_model

    T5ForConditionalGeneration(T5Config(vocab_size=40, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2,
                                        decoder_start_token_id=0)).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises((KeyError, AttributeError)):  # (the reference: transformers cannot load it either)
        T5ForConditionalGeneration.from_pretrained(str(tmp_path))
    with torch.device("meta"), pytest.raises(ModelBuildError) as refused:
        build_model({"name_or_path": str(tmp_path)}, weights=False)
    assert str(refused.value) == (
        f"model.name_or_path '{tmp_path}' could not be loaded: {tmp_path / 'model.safetensors.index.json'} cannot be "
        f"read as a weights index, a JSON object whose weight_map maps each tensor name to its file ({what})")


def test_a_folder_with_weights_and_an_index_builds_without_them_as_from_pretrained_loads_the_weights(tmp_path):
    # was: the index was asked first, while from_pretrained loads model.safetensors where a folder holds both (an
    # index left by an earlier sharded save): the weightless build then had another head than the loaded model
    import json

    from transformers import T5Config, T5ForConditionalGeneration

    from t2t_mtl.model.moe import load_t5_or_moe

    model = T5ForConditionalGeneration(T5Config(vocab_size=40, d_model=8, d_kv=4, d_ff=16, num_layers=1,
                                                num_heads=2, decoder_start_token_id=0))
    model.set_output_embeddings(torch.nn.Linear(8, 40, bias=False))
    model.save_pretrained(tmp_path)
    stale = {name: "model-00001-of-00001.safetensors" for name in model.state_dict() if name != "lm_head.weight"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": stale}))
    with torch.device("meta"):
        built = load_t5_or_moe(str(tmp_path), weights=False)
    loaded = load_t5_or_moe(str(tmp_path))
    assert [name for name, _ in built.named_parameters()] == [name for name, _ in loaded.named_parameters()]
    assert loaded.lm_head.weight is not loaded.shared.weight


@pytest.mark.parametrize("weights", ["safetensors", "sharded", "bin"])
@pytest.mark.parametrize("own_head", [False, True])
def test_a_pretrained_folder_built_without_its_weights_has_an_lm_head_of_its_own_where_from_pretrained_gives_one(
        tmp_path, weights, own_head):
    # mutation testing: reading a sharded folder's index, or a pytorch_model.bin folder's config, as no own head passed
    # every test, whose folders were one model.safetensors; from_pretrained's model is the reference
    from transformers import T5Config, T5ForConditionalGeneration

    from t2t_mtl.model.moe import load_t5_or_moe
    from t2t_mtl.model.t5 import has_own_head

    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=40, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2,
                                                decoder_start_token_id=0))
    if own_head:  # as T5 v1.1 / Flan-T5 folders hold it, their config saying so
        model.set_output_embeddings(torch.nn.Linear(8, 40, bias=False))
        model.config.tie_word_embeddings = False
    if weights == "bin":  # (as older transformers wrote it: save_pretrained now writes safetensors alone)
        model.config.save_pretrained(tmp_path)
        model.generation_config.save_pretrained(tmp_path)
        torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    else:
        model.save_pretrained(tmp_path, **({"max_shard_size": "4KB"} if weights == "sharded" else {}))
    assert (tmp_path / "model.safetensors.index.json").is_file() == (weights == "sharded")
    reference = load_t5_or_moe(str(tmp_path))
    with torch.device("meta"):
        built = load_t5_or_moe(str(tmp_path), weights=False)
    assert has_own_head(reference) == own_head
    assert has_own_head(built) == own_head


@pytest.mark.parametrize("weights_cached", [True, False])
def test_a_hub_models_build_without_its_weights_has_its_own_lm_head_as_from_pretrained_gives(tmp_path,
                                                                                              weights_cached):
    # was: only a local folder's own LM head was read, so a hub name (google/flan-t5-base) was built with the head tied
    # to the embedding where from_pretrained (the reference) gives it its own: a resume of such a run builds its model
    # so. A hub cache (offline) holding the model, its weights or, as where they were never fetched, its config alone
    snapshot = tmp_path / "hub" / "models--acme--t5-own" / "snapshots" / "abc123"
    code = (f"import sys, torch\n"
            f"from transformers import T5Config, T5ForConditionalGeneration\n"
            f"from t2t_mtl.model.moe import load_t5_or_moe\n"
            f"from t2t_mtl.model.t5 import has_own_head\n"
            f"model = T5ForConditionalGeneration(T5Config(vocab_size=40, d_model=8, d_kv=4, d_ff=16, num_layers=1,\n"
            f"                                            num_heads=2, decoder_start_token_id=0))\n"
            f"model.set_output_embeddings(torch.nn.Linear(8, 40, bias=False))\n"
            f"model.config.tie_word_embeddings = False\n"
            f"model.save_pretrained({str(snapshot)!r})\n"
            f"reference = has_own_head(load_t5_or_moe('acme/t5-own'))\n"
            f"if not {weights_cached}:\n"
            f"    (__import__('pathlib').Path({str(snapshot)!r}) / 'model.safetensors').unlink()\n"
            f"with torch.device('meta'):\n"
            f"    print(reference, has_own_head(load_t5_or_moe('acme/t5-own', weights=False)))\n")
    (snapshot.parents[1] / "refs").mkdir(parents=True)
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    env = {**subprocess_env(), "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["True", "True"]


def test_a_head_untied_without_its_weights_stays_its_own_where_transformers_ties_weights_again(tmp_path):
    # mutation testing: untie_head leaving lm_head in transformers' map of tied weights passed every test; the tying
    # transformers does itself from that map (tie_weights(recompute_mapping=False), as its init_weights calls it) then
    # tied it to the embedding again, where it keeps from_pretrained's own head (the reference)
    from transformers import T5Config, T5ForConditionalGeneration

    from t2t_mtl.model.moe import load_t5_or_moe
    from t2t_mtl.model.t5 import has_own_head

    model = T5ForConditionalGeneration(T5Config(vocab_size=40, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2,
                                                decoder_start_token_id=0))
    model.set_output_embeddings(torch.nn.Linear(8, 40, bias=False))
    model.save_pretrained(tmp_path)
    for built in (load_t5_or_moe(str(tmp_path)), load_t5_or_moe(str(tmp_path), weights=False)):
        built.tie_weights(recompute_mapping=False)
        assert has_own_head(built)


@pytest.mark.parametrize("own_head", [False, True])
def test_a_hub_model_cached_without_safetensors_builds_without_its_weights_as_from_pretrained_gives(
        tmp_path, monkeypatch, own_head):
    # mutation testing: taking the hub cache's marker of a file the hub lacks (huggingface_hub's _CACHED_NO_EXIST,
    # which try_to_load_from_cache returns where an earlier download found no such file) for a cached file passed every
    # test; a hub model of pytorch_model.bin alone (T5 v1.1's hub files) is cached so once from_pretrained has asked
    # for model.safetensors and its index, and from_pretrained's model is the reference
    from transformers import T5Config, T5ForConditionalGeneration

    from t2t_mtl.model.moe import load_t5_or_moe
    from t2t_mtl.model.t5 import has_own_head

    model = T5ForConditionalGeneration(T5Config(vocab_size=40, d_model=8, d_kv=4, d_ff=16, num_layers=1,
                                                num_heads=2, decoder_start_token_id=0))
    if own_head:  # (as the hub's T5 v1.1 configs say)
        model.set_output_embeddings(torch.nn.Linear(8, 40, bias=False))
        model.config.tie_word_embeddings = False
    model.config.save_pretrained(tmp_path / "folder")
    torch.save(model.state_dict(), tmp_path / "folder" / "pytorch_model.bin")
    name = _as_cached_hub_model(tmp_path / "folder", tmp_path, monkeypatch)
    no_exist = tmp_path / "hub" / f"models--{name.replace('/', '--')}" / ".no_exist" / ("0" * 40)
    no_exist.mkdir(parents=True)
    for missing in ("model.safetensors", "model.safetensors.index.json"):
        (no_exist / missing).touch()
    reference = T5ForConditionalGeneration.from_pretrained(name)
    with torch.device("meta"):
        built = load_t5_or_moe(name, weights=False)
    assert has_own_head(reference) == own_head
    assert has_own_head(built) == own_head


def test_a_pytorch_model_bin_folder_whose_config_does_not_say_tie_word_embeddings_builds_with_a_tied_head(tmp_path):
    # mutation testing: reading a pytorch_model.bin folder's config as an own head unless it says
    # tie_word_embeddings: true passed every test, whose configs all named it; an original T5 config (t5-small's on the
    # hub) leaves it out, and T5Config's default ties the head, as from_pretrained's model (the reference) shows
    import json

    from transformers import T5Config, T5ForConditionalGeneration

    from t2t_mtl.model.moe import load_t5_or_moe
    from t2t_mtl.model.t5 import has_own_head

    model = T5ForConditionalGeneration(T5Config(vocab_size=40, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2,
                                                decoder_start_token_id=0))
    model.config.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["tie_word_embeddings"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    reference = load_t5_or_moe(str(tmp_path))
    with torch.device("meta"):
        built = load_t5_or_moe(str(tmp_path), weights=False)
    assert not has_own_head(reference)
    assert not has_own_head(built)


def test_a_run_from_a_folder_whose_weights_file_was_damaged_since_is_not_loaded_with_a_guessed_head(tmp_path, tok):
    # was: load_trained_model (export, eval, predict, merge), which builds the run's model without the folder's
    # weights and fills it from the checkpoint, read a model.safetensors it could not open as a folder without an LM
    # head of its own, so the checkpoint's trained head and embedding went into one tensor and the run's model was
    # silently another (its head the embedding); the folder's file is named instead, as its load names it
    from t2t_mtl.engine.checkpoint import CheckpointError

    folder = pretrained_folder(tmp_path, tok, own_head=True)
    train(tiny_config(tmp_path / "run", tok, tmp_path / "cache", model={"name_or_path": str(folder), "dims": None},
                      training={"steps": 1}), evaluate_held_in=False)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # (cut short, as by a full disk)
    with pytest.raises(CheckpointError) as refused:
        export.load_trained_model(tmp_path / "run")
    assert (f"the run's model cannot be rebuilt (model.name_or_path '{folder}' could not be loaded: {weights} cannot "
            f"be read (") in str(refused.value), refused.value


def test_unfilled_gives_an_own_lm_head_storage_on_the_device_asked_for():
    # mutation testing: untie_head building the model's own head on torch's default device (the CPU), not its
    # embedding's, passed every test (all on the CPU): a model built unfilled on a GPU had its head alone on the CPU;
    # the meta device, which every machine has, tells the two apart
    from transformers import T5Config, T5ForConditionalGeneration

    from t2t_mtl.model.t5 import has_own_head, unfilled

    def build():
        model = T5ForConditionalGeneration(T5Config(vocab_size=32, d_model=8, d_ff=16, d_kv=4, num_heads=2,
                                                    num_layers=1))
        model.set_output_embeddings(torch.nn.Linear(8, 32, bias=False))  # (as a T5 v1.1 folder's weights give it)
        return model

    model = unfilled(build, device="meta")
    assert has_own_head(model)
    assert {p.device.type for p in model.parameters()} == {"meta"}
