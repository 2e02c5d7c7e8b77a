"""`training.precision: auto` on both kinds of CPU host, whichever this one is: bf16 where the CPU runs it natively
(AVX512-BF16 or AMX, oneDNN allowed to use them), fp32 elsewhere. The detection `resolve_precision` reads (torch.cpu's
two probes and `onednn_runs_bf16`) is patched, so every host runs both cases; the rest of the suite pins
training.precision where it is not the subject."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from types import SimpleNamespace
from typing import Optional

import pytest
import torch

from t2t_mtl.config import ConfigError, config_from_dict
from t2t_mtl.engine import deepspeed_config, host_precision
from t2t_mtl.engine.checkpoint import CheckpointError
from t2t_mtl.engine.deepspeed_config import build_deepspeed_config
from t2t_mtl.engine.host_precision import auto_precision_reason, resolve_precision
from t2t_mtl.engine.trainer import train

from conftest import REPO_ROOT
from engine_helpers import subprocess_env, tiny_config, train_tiny_tokenizer

HOSTS = ["fp32", "bf16"]  # what auto resolves to on an AVX2-only CPU and on one with AVX512-BF16/AMX


def as_host(monkeypatch: pytest.MonkeyPatch, precision: str) -> None:
    """Make this process a CPU host on which `auto` resolves to `precision` ("bf16": AMX that oneDNN may use,
    "fp32": neither AVX512-BF16 nor AMX)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: precision == "bf16")
    monkeypatch.setattr(host_precision, "onednn_runs_bf16", lambda: precision == "bf16")


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


def _auto_run(tmp_path, tok, steps: int, deepspeed: Optional[dict] = None) -> dict:
    return tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": steps, "precision": "auto"},
                       **({"deepspeed": deepspeed} if deepspeed else {}))


@pytest.mark.parametrize("host", HOSTS)
def test_auto_trains_and_records_the_hosts_precision(tmp_path, tok, monkeypatch, host):
    as_host(monkeypatch, host)
    train(_auto_run(tmp_path, tok, 2), evaluate_held_in=False)
    meta = json.loads((tmp_path / "run" / "checkpoints" / "step-00000002" / "meta.json").read_text())
    assert meta["precision"] == host


@pytest.mark.parametrize("host", HOSTS)
def test_deepspeed_sections_left_to_auto_follow_the_host(tmp_path, monkeypatch, host):
    # deepspeed.extra's bf16 switch must agree with what auto trains in here; a JSON's "auto" is filled with it
    as_host(monkeypatch, host)
    other = "fp32" if host == "bf16" else "bf16"
    base = {"data": {"mixture": "m"}, "model": {"dims": {"d_model": 8}}, "training": {"precision": "auto"}}
    agreeing = config_from_dict({**base, "deepspeed": {"extra": {"bf16": {"enabled": host == "bf16"}}}})
    assert build_deepspeed_config(agreeing, world_size=1)["bf16"] == {"enabled": host == "bf16"}
    contradicting = config_from_dict({**base, "deepspeed": {"extra": {"bf16": {"enabled": other == "bf16"}}}})
    with pytest.raises(ConfigError) as refused:
        build_deepspeed_config(contradicting, world_size=1)
    assert str(refused.value) == (f"deepspeed.extra trains in {other}, but training.precision is auto ({host} here): "
                                  f"set training.precision: {other} instead, and remove the bf16/fp16 'enabled' key "
                                  f"from deepspeed.extra")
    user = tmp_path / "ds.json"
    user.write_text(json.dumps({"optimizer": {"type": "AdamW", "params": {}}, "bf16": {"enabled": "auto"}}))
    from_json = config_from_dict({**base, "deepspeed": {"config": str(user)}})
    assert build_deepspeed_config(from_json, world_size=1)["bf16"] == {"enabled": host == "bf16"}


@pytest.mark.parametrize("on_gpu", [False, True])
@pytest.mark.parametrize("native", [False, True])
def test_the_reason_given_for_autos_choice_names_the_precision_auto_resolves_to_and_the_device(monkeypatch, on_gpu,
                                                                                                 native):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: native)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(host_precision, "onednn_runs_bf16", lambda: True)
    reason = auto_precision_reason(on_gpu)
    assert reason.startswith(f"{resolve_precision('auto', on_gpu)} on this {'GPU' if on_gpu else 'CPU'}, "), reason


def test_auto_is_fp32_where_onednn_is_held_below_bf16(tmp_path):
    # was: ONEDNN_MAX_CPU_ISA=AVX2 on a CPU with AMX makes oneDNN emulate bf16 matmuls (a bf16 linear ~9x slower
    # than fp32), as on a CPU without AMX, and auto still chose bf16 there. A fresh process: oneDNN reads it once
    code = ("from t2t_mtl.engine.host_precision import auto_precision_reason, resolve_precision\n"
            "print(resolve_precision('auto', on_gpu=False)); print(auto_precision_reason(on_gpu=False))")
    env = {**subprocess_env(), "ONEDNN_MAX_CPU_ISA": "AVX2"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    precision, reason = proc.stdout.splitlines()
    assert precision == "fp32" and reason.startswith("fp32 on this CPU, "), proc.stdout


@pytest.mark.parametrize("trained_on, resumed_on, json_auto", [("bf16", "fp32", None), ("fp32", "bf16", None),
                                                               ("bf16", "fp32", "bf16"), ("bf16", "fp32", "bfloat16")])
def test_an_auto_run_resumed_on_the_other_kind_of_host_is_told_to_name_its_precision(tmp_path, tok, monkeypatch,
                                                                                       trained_on, resumed_on,
                                                                                       json_auto):
    # was: "... written with training.precision = 'bf16', this run has 'fp32': resume with the same precision",
    # of a run whose config says auto on both machines; the message says why and which setting resumes it. So for
    # a deepspeed.config JSON whose bf16 (or its old name bfloat16) enabled "auto" auto fills (was: the first
    # message; mutation testing: reading bf16 alone passed every test), which the resume reads once, as the checks
    # build the run's DeepSpeed config (was: read and merged again for the refusal, and read again for the
    # warnings of a resume that goes on)
    deepspeed = None
    if json_auto:
        (tmp_path / "ds.json").write_text(json.dumps({"optimizer": {"type": "AdamW", "params": {"lr": "auto"}},
                                                      json_auto: {"enabled": "auto"}}))
        deepspeed = {"config": str(tmp_path / "ds.json")}
    with monkeypatch.context() as patch:
        as_host(patch, trained_on)
        train(_auto_run(tmp_path, tok, 2, deepspeed), evaluate_held_in=False)
    as_host(monkeypatch, resumed_on)
    why = {"fp32": "fp32 on this CPU, which has neither AVX512-BF16 nor AMX (bf16 would be emulated, ~12× slower)",
           "bf16": "bf16 on this CPU, which runs it natively (AVX512-BF16 or AMX)"}[resumed_on]
    reads = []
    read = deepspeed_config.read_deepspeed_json
    monkeypatch.setattr(deepspeed_config, "read_deepspeed_json", lambda path: reads.append(path) or read(path))
    with pytest.raises(CheckpointError) as refused:
        train(_auto_run(tmp_path, tok, 4, deepspeed), resume="auto", evaluate_held_in=False)
    assert reads == ([tmp_path / "ds.json"] if json_auto else [])
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000002"
    assert str(refused.value) == (
        f"checkpoint {ckpt} was written with training.precision = {trained_on!r}, this run has {resumed_on!r} "
        f"(training.precision auto: {why}): set training.precision: {trained_on} to resume it here, or set "
        f"training.output_dir to a new directory to start a new run")
    named = _auto_run(tmp_path, tok, 4, deepspeed)  # what the message says: the precision, named, resumes it here
    named["training"]["precision"] = trained_on
    reads.clear()
    assert train(named, resume="auto", evaluate_held_in=False).step == 4
    assert reads == ([tmp_path / "ds.json"] if json_auto else [])


@pytest.mark.parametrize("host", HOSTS)
def test_the_real_data_zero_shot_benchmark_trains_in_the_hosts_precision(tmp_path, monkeypatch, host):
    # was: benchmarks/zeroshot_real.py asked for bf16, which an AVX2-only CPU emulates (~12x slower than fp32)
    spec = importlib.util.spec_from_file_location("zeroshot_real", REPO_ROOT / "benchmarks" / "zeroshot_real.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    args = SimpleNamespace(model=None, steps=60, batch_size=16, lr=1e-3, run_dir=tmp_path / "run")
    as_host(monkeypatch, host)
    ds = build_deepspeed_config(config_from_dict(benchmark.run_config(args)), world_size=1)
    assert ds["bf16"] == {"enabled": host == "bf16"}


@pytest.mark.parametrize("avx512_bf16, amx, onednn, expected", [
    (True, False, True, "bf16"), (False, True, True, "bf16"), (True, True, True, "bf16"),
    (False, False, True, "fp32"), (True, True, False, "fp32")])
def test_auto_is_bf16_on_a_cpu_with_either_instruction_set_that_onednn_may_use(monkeypatch, avx512_bf16, amx, onednn,
                                                                              expected):
    # mutation testing: a CPU with AVX512-BF16 alone read as without bf16 passed every test, which compare the reason
    # with resolve_precision (both read the same detection) or patch AMX alone
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(host_precision, "onednn_runs_bf16", lambda: onednn)
    assert resolve_precision("auto", on_gpu=False) == expected


@pytest.mark.parametrize("gpu_bf16", [False, True])
def test_auto_on_a_gpu_follows_the_gpus_bf16_support_not_the_cpus(monkeypatch, gpu_bf16):
    # mutation testing: native_bf16 asking the CPU on a GPU too passed every test, whose GPU and CPU agreed
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: gpu_bf16)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: not gpu_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: not gpu_bf16)
    monkeypatch.setattr(host_precision, "onednn_runs_bf16", lambda: True)
    expected = "bf16" if gpu_bf16 else "fp32"
    assert resolve_precision("auto", on_gpu=True) == expected
    assert auto_precision_reason(on_gpu=True).startswith(f"{expected} on this GPU, ")


@pytest.mark.parametrize("precision, host, json_config", [("bf16", "fp32", False), ("bf16", "fp32", True),
                                                          ("bf16", "fp32", "auto"), ("auto", "fp32", False),
                                                          ("bf16", "bf16", False)])
def test_a_run_in_bf16_on_a_cpu_that_emulates_it_is_warned_once(tmp_path, tok, monkeypatch, capsys, precision, host,
                                                                 json_config):
    # was: an explicit bf16 on a CPU without AVX512-BF16 or AMX trained ~12x slower than fp32 without a word; a JSON
    # whose bf16 enabled is "auto" already (training.precision chose bf16) was told to set it to "auto"
    as_host(monkeypatch, host)
    cfg = _auto_run(tmp_path, tok, 2)
    cfg["training"]["precision"] = precision
    if json_config:  # (bf16 named by the JSON's own section: True; left to training.precision: "auto")
        (tmp_path / "ds.json").write_text(json.dumps({"optimizer": {"type": "AdamW", "params": {"lr": "auto"}},
                                                      "bf16": {"enabled": json_config}}))
        cfg["deepspeed"] = {"config": str(tmp_path / "ds.json")}
    capsys.readouterr()
    train(cfg, evaluate_held_in=False)
    out = capsys.readouterr().out
    warned = [line for line in out.splitlines() if "emulated" in line]
    if (precision, host) != ("bf16", "fp32"):  # (auto trains in fp32 there; a bf16 host runs it natively)
        assert warned == [], out
        return
    fix = ("set the deepspeed.config JSON's bf16 enabled to \"auto\" with training.precision: auto (fp32 on this CPU), "
           "or to false" if json_config is True else "set training.precision: auto (fp32 on this CPU) or fp32")
    assert warned == ["warning: training in bf16 on this CPU, which has neither AVX512-BF16 nor AMX: bf16 is emulated "
                      f"here, about 12× slower than fp32; {fix}"], out


def test_a_bf16_checkpoint_resumed_on_a_cpu_that_emulates_bf16_is_not_told_to_train_in_fp32(tmp_path, tok,
                                                                                            monkeypatch, capsys):
    # was: "...; set training.precision: auto (fp32 on this CPU) or fp32", which the resume refuses (its checkpoint
    # was written in bf16), after the resume refusal on this host had said to set training.precision: bf16
    with monkeypatch.context() as patch:
        as_host(patch, "bf16")
        train(_auto_run(tmp_path, tok, 2), evaluate_held_in=False)
    as_host(monkeypatch, "fp32")
    told = _auto_run(tmp_path, tok, 4)  # the old advice: auto (fp32 here), refused by the resume
    with pytest.raises(CheckpointError, match="written with training.precision = 'bf16', this run has 'fp32'"):
        train(told, resume="auto", evaluate_held_in=False)
    named = _auto_run(tmp_path, tok, 4)
    named["training"]["precision"] = "bf16"
    capsys.readouterr()
    assert train(named, resume="auto", evaluate_held_in=False).step == 4
    warned = [line for line in capsys.readouterr().out.splitlines() if "emulated" in line]
    assert warned == ["warning: training in bf16 on this CPU, which has neither AVX512-BF16 nor AMX: bf16 is emulated "
                      "here, about 12× slower than fp32; a bf16 checkpoint resumes in bf16 only: resume it on a "
                      "machine that runs bf16 natively, or start a new run in fp32 (training.precision: auto, and a "
                      "new training.output_dir)"]


@pytest.mark.parametrize("avx512_bf16, amx, onednn, on_gpu, why", [
    (False, False, True, False, "which has neither AVX512-BF16 nor AMX"),
    (False, True, False, False, "whose oneDNN is held below bf16 (ONEDNN_MAX_CPU_ISA)"),
    (True, False, True, False, None), (False, True, True, False, None), (False, False, False, True, None)])
def test_the_emulated_bf16_warning_names_why_the_cpu_emulates_it(monkeypatch, avx512_bf16, amx, onednn, on_gpu, why):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(host_precision, "onednn_runs_bf16", lambda: onednn)
    warning = host_precision.emulated_bf16_warning("bf16", on_gpu)
    assert warning == (None if why is None else f"training in bf16 on this CPU, {why}: bf16 is emulated here, about "
                       f"12× slower than fp32; set training.precision: auto (fp32 on this CPU) or fp32")
    assert host_precision.emulated_bf16_warning("fp32", on_gpu) is None


@pytest.mark.parametrize("precision, json_bf16, extra", [
    ("named", None, False),  # training.precision fp32, then bf16
    ("auto", False, False),  # a deepspeed.config JSON's bf16 enabled false, then true
    ("auto", "auto", True),  # deepspeed.extra's bf16 enabled false, then true, over a JSON's "auto"
])
def test_a_run_whose_precision_auto_did_not_choose_is_told_to_resume_with_the_same_precision(tmp_path, tok, monkeypatch,
                                                                                           precision, json_bf16,
                                                                                           extra):
    # mutation testing: giving auto's reason (set training.precision: ... to resume it here) where the run names its
    # precision, where a JSON's bf16 enabled is true, or where deepspeed.extra's explicit bf16 is laid over a JSON's
    # "auto", passed every test; the config names the precision each time, so the message is the one any changed
    # precision gets
    as_host(monkeypatch, "bf16")

    def run(steps: int, bf16: bool) -> dict:
        cfg = _auto_run(tmp_path, tok, steps)
        if precision == "named":
            cfg["training"]["precision"] = "bf16" if bf16 else "fp32"
            return cfg
        (tmp_path / "ds.json").write_text(json.dumps({"optimizer": {"type": "AdamW", "params": {"lr": "auto"}},
                                                      "bf16": {"enabled": bf16 if json_bf16 is False else json_bf16}}))
        cfg["deepspeed"] = {"config": str(tmp_path / "ds.json"), **({"extra": {"bf16": {"enabled": bf16}}}
                                                                   if extra else {})}
        return cfg

    train(run(2, bf16=False), evaluate_held_in=False)
    with pytest.raises(CheckpointError) as refused:
        train(run(4, bf16=True), resume="auto", evaluate_held_in=False)
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000002"
    assert str(refused.value) == (
        f"checkpoint {ckpt} was written with training.precision = 'fp32', this run has 'bf16': resume with the same "
        f"precision, or set training.output_dir to a new directory to start a new run")


def test_an_auto_run_whose_deepspeed_json_gives_bf16_as_null_resumes(tmp_path, tok, monkeypatch):
    # mutation testing: precision_left_to_auto reading a JSON's bf16 section as a mapping whatever it is passed every
    # test; null, which DeepSpeed reads as a section left out (and the run's checks allow), then ended the resume in
    # a raw AttributeError. The JSON names no precision, so auto chooses (fp32 on this host) and the run resumes
    as_host(monkeypatch, "fp32")
    (tmp_path / "ds.json").write_text(json.dumps({"optimizer": {"type": "AdamW", "params": {"lr": "auto"}},
                                                  "bf16": None}))
    deepspeed = {"config": str(tmp_path / "ds.json")}
    train(_auto_run(tmp_path, tok, 2, deepspeed), evaluate_held_in=False)
    assert train(_auto_run(tmp_path, tok, 4, deepspeed), resume="auto", evaluate_held_in=False).step == 4


def test_a_resumed_run_whose_deepspeed_json_chose_bf16_is_not_told_to_change_the_json(monkeypatch):
    # mutation testing: the JSON's advice (its bf16 enabled "auto" with training.precision: auto, or false) given
    # before the resume's passed its tests; a resume of a bf16 checkpoint refuses either, as it refuses fp32 named
    # in training.precision (test_a_bf16_checkpoint_resumed_on_a_cpu_that_emulates_bf16_...: the refusal)
    as_host(monkeypatch, "fp32")
    resumed = host_precision.emulated_bf16_warning("bf16", False, chosen_by="deepspeed.config", resumed=True)
    assert resumed == host_precision.emulated_bf16_warning("bf16", False, chosen_by=None, resumed=True)
    assert resumed.endswith("; a bf16 checkpoint resumes in bf16 only: resume it on a machine that runs bf16 "
                            "natively, or start a new run in fp32 (training.precision: auto, and a new "
                            "training.output_dir)")


@pytest.mark.parametrize("json_bf16", [None, "auto"])
def test_a_run_whose_deepspeed_extra_chose_emulated_bf16_is_told_to_change_deepspeed_extra(tmp_path, tok,
                                                                                          monkeypatch, capsys,
                                                                                          json_bf16):
    # was: over a JSON whose bf16 enabled is "auto", "set the deepspeed.config JSON's bf16 enabled to \"auto\" ... or
    # to false" (it is "auto" already; either leaves deepspeed.extra's true in force); without a JSON, "set
    # training.precision: auto ... or fp32", which check_extra_precision refuses beside deepspeed.extra's true. The
    # advice given is followed below: the run then trains in fp32 without the warning
    as_host(monkeypatch, "fp32")

    def run(extra_bf16: bool, precision: str) -> dict:
        cfg = _auto_run(tmp_path / f"{extra_bf16}", tok, 2)
        cfg["training"]["precision"] = precision
        cfg["deepspeed"] = {"extra": {"bf16": {"enabled": extra_bf16}}}
        if json_bf16 is not None:
            (tmp_path / "ds.json").write_text(json.dumps({"optimizer": {"type": "AdamW", "params": {"lr": "auto"}},
                                                          "bf16": {"enabled": json_bf16}}))
            cfg["deepspeed"]["config"] = str(tmp_path / "ds.json")
        return cfg

    capsys.readouterr()
    train(run(True, "bf16" if json_bf16 is None else "auto"), evaluate_held_in=False)
    warned = [line for line in capsys.readouterr().out.splitlines() if "emulated" in line]
    assert warned == ["warning: training in bf16 on this CPU, which has neither AVX512-BF16 nor AMX: bf16 is emulated "
                      "here, about 12× slower than fp32; set deepspeed.extra.bf16.enabled (which chose bf16) to "
                      "false, with training.precision: auto (fp32 on this CPU) or fp32"]
    for precision in ("auto", "fp32"):
        train(run(False, precision), evaluate_held_in=False)
        assert [line for line in capsys.readouterr().out.splitlines() if "emulated" in line] == []
        meta = tmp_path / "False" / "run" / "checkpoints" / "step-00000002" / "meta.json"
        assert json.loads(meta.read_text())["precision"] == "fp32"
        shutil.rmtree(tmp_path / "False")


@pytest.mark.parametrize("key", ["bf16", "bfloat16"])
def test_the_emulated_bf16_warning_names_the_deepspeed_extra_section_as_the_config_spells_it(monkeypatch, key):
    # mutation testing: naming deepspeed.extra.bf16 whatever section enabled bf16 passed every test; a config
    # spelling it bfloat16 (DeepSpeed's other name, which the checks take) was told to change a key it does not have
    as_host(monkeypatch, "fp32")
    cfg = config_from_dict({"model": {"dims": {"d_model": 8}}, "tokenizer": {"path": "tok"},
                            "data": {"tasks": ["parity"]}, "training": {"precision": "bf16"},
                            "deepspeed": {"extra": {key: {"enabled": True}}}})
    chosen_by = deepspeed_config.build_deepspeed(cfg, world_size=1).autos.precision_chosen_by
    assert chosen_by == f"deepspeed.extra.{key}"
    assert host_precision.emulated_bf16_warning("bf16", False, chosen_by).endswith(
        f"; set deepspeed.extra.{key}.enabled (which chose bf16) to false, with training.precision: auto (fp32 on "
        f"this CPU) or fp32")


@pytest.mark.parametrize("major, expected", [(7, "fp32"), (8, "bf16"), (9, "bf16")])
def test_auto_on_a_gpu_that_emulates_bf16_is_fp32(monkeypatch, major, expected):
    # was: torch.cuda.is_bf16_supported() counts emulation (a bf16 tensor can be made), so auto trained a V100 or
    # T4 (compute capability 7.x) in bf16 without tensor cores; torch's own probe runs here on a faked device
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(major=major, minor=0))
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True, raising=False)
    assert resolve_precision("auto", on_gpu=True) == expected
    reason = auto_precision_reason(on_gpu=True)
    assert reason == ("bf16 on this GPU, which supports it" if expected == "bf16" else
                      "fp32 on this GPU, which would emulate bf16 (its compute capability is below 8.0)")


def test_a_gpu_machine_training_on_its_cpu_takes_the_cpus_precision(tmp_path, tok, monkeypatch):
    # was: DS_ACCELERATOR=cpu makes a GPU machine train on its CPU (init_distributed), but auto asked the GPU: bf16,
    # emulated on a CPU without AVX512-BF16 or AMX, with a warning telling the run to set the auto it had; and a
    # JSON's fp16 passed the config's check, which said fp16 needs a GPU, to fail in DeepSpeed's CPU accelerator
    as_host(monkeypatch, "fp32")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    train(_auto_run(tmp_path, tok, 2), evaluate_held_in=False)
    meta = json.loads((tmp_path / "run" / "checkpoints" / "step-00000002" / "meta.json").read_text())
    assert meta["precision"] == "fp32"
    base = {"data": {"mixture": "m"}, "model": {"dims": {"d_model": 8}}, "training": {"precision": "auto"}}
    assert build_deepspeed_config(config_from_dict(base), world_size=1)["bf16"] == {"enabled": False}
    user = tmp_path / "ds.json"
    user.write_text(json.dumps({"optimizer": {"type": "AdamW", "params": {}}, "fp16": {"enabled": True}}))
    with pytest.raises(ConfigError, match=f"deepspeed.config {user} enables fp16, which needs a GPU"):
        build_deepspeed_config(config_from_dict({**base, "deepspeed": {"config": str(user)}}), world_size=1)
    monkeypatch.setenv("DS_ACCELERATOR", "cuda")  # (the GPU trains: auto asks it)
    assert build_deepspeed_config(config_from_dict(base), world_size=1)["bf16"] == {"enabled": True}


@pytest.mark.parametrize("major, chosen_by, fix", [
    (7, None, "set training.precision: auto (fp32 on this GPU) or fp32"),
    (7, "deepspeed.extra.bf16", "set deepspeed.extra.bf16.enabled (which chose bf16) to false, with "
                                "training.precision: auto (fp32 on this GPU) or fp32"),
    (8, None, None)])
def test_an_explicit_bf16_on_a_gpu_that_emulates_it_is_warned_of(monkeypatch, major, chosen_by, fix):
    # was: the warning of an emulated bf16 was for CPUs alone, so training.precision: bf16 on a V100 or T4 (compute
    # capability 7.x, no bf16 tensor cores) trained emulating it without a word
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(major=major, minor=0))
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True, raising=False)
    warning = host_precision.emulated_bf16_warning("bf16", True, chosen_by)
    assert warning == (None if fix is None else "training in bf16 on this GPU, whose compute capability is below 8.0 "
                       f"(no bf16 tensor cores): bf16 is emulated here; {fix}")
    assert host_precision.emulated_bf16_warning("fp32", True, chosen_by) is None


def test_an_explicit_bf16_a_deepspeed_json_chose_on_a_gpu_that_emulates_it_names_the_gpu(monkeypatch):
    # kills a mutant of emulated_bf16_warning that its tests let live (their GPU cases were chosen by
    # training.precision or deepspeed.extra): the JSON's advice saying auto trains in fp32 "on this CPU" on a GPU
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(major=7, minor=5))
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True, raising=False)
    assert host_precision.emulated_bf16_warning("bf16", True, "deepspeed.config") == (
        "training in bf16 on this GPU, whose compute capability is below 8.0 (no bf16 tensor cores): bf16 is emulated "
        "here; set the deepspeed.config JSON's bf16 enabled to \"auto\" with training.precision: auto (fp32 on this "
        "GPU), or to false")


@pytest.mark.parametrize("accelerator, pinned", [("cpu", False), ("cuda", True)])
def test_a_gpu_machine_training_on_its_cpu_offloads_to_unpinned_memory(monkeypatch, accelerator, pinned):
    # kills a mutant of build_deepspeed that the tests let live (pin_memory asked of torch.cuda.is_available again):
    # a GPU machine training on its CPU (DS_ACCELERATOR=cpu) pinned the offloaded states' host memory, a CUDA
    # allocation for a run that uses no GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("DS_ACCELERATOR", accelerator)
    cfg = config_from_dict({"data": {"mixture": "m"}, "model": {"dims": {"d_model": 8}},
                            "training": {"precision": "fp32"},
                            "deepspeed": {"zero_stage": 3, "offload_optimizer": True, "offload_param": True}})
    zero = build_deepspeed_config(cfg, world_size=1)["zero_optimization"]
    assert zero["offload_optimizer"] == zero["offload_param"] == {"device": "cpu", "pin_memory": pinned}
