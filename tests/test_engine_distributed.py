"""Several processes (torchrun, gloo, CPU): ZeRO-2 / ZeRO-3 with 2 ranks reproduce the 1-process loss curve
for the same global batch; two simulated nodes train together, write one checkpoint, and the run resumes on
one node with another world size through DeepSpeed's universal checkpoint."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from t2t_mtl.config import config_from_dict
from t2t_mtl.engine import trainer as trainer_mod
from t2t_mtl.engine.checkpoint import CheckpointError, latest_checkpoint, read_meta
from t2t_mtl.engine.export import export_model, load_trained_model
from t2t_mtl.engine.logging import read_held_out
from t2t_mtl.engine.trainer import train
from t2t_mtl.engine.validation import evaluation_plan
from t2t_mtl.evaluation import evaluate_tasks
from t2t_mtl.evaluation.aggregate import summarize

from cluster_helpers import private_slurm, private_sshd
from engine_helpers import CTRL_C_NOTICE, REPO, cli_ranks, forked_ranks, free_port, nan_filled_to_empty, run_checked, \
    pretrained_folder, shut_down_worker, spawn_ranks, step_losses, step_records, subprocess_env, tiny_config, \
    torchrun_command, train_command, train_tiny_tokenizer, write_config

pytestmark = pytest.mark.slow
STEPS = 8
ZERO_SHOT = {"held_out": True, "max_examples": 2, "batch_size": 8}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    tok = train_tiny_tokenizer(root / "tok")
    # 1 process, micro-batch 8 = the global batch of 2 ranks x micro-batch 4
    one = tiny_config(root / "one", tok, root / "cache", training={"steps": STEPS, "micro_batch_size": 8})
    reference = train(one, evaluate_held_in=False)
    return root, tok, reference


def assert_same_curve(run_dir, ref_dir):
    got, ref = step_losses(run_dir), step_losses(ref_dir)
    assert sorted(got) == list(range(1, STEPS + 1))
    for s in ref:
        assert got[s] == pytest.approx(ref[s], rel=2e-4), (s, got, ref)


def test_zero3_two_processes_match_one_process(work):
    """Also with activation checkpointing and zero-shot evaluations during training, neither of which may change
    the curve; the evaluations (each rank its shard of the examples, in lockstep) score the gathered model."""
    root, tok, reference = work
    model_cfg = tiny_config(root, tok, root)["model"]
    cfg = tiny_config(root / "z3", tok, root / "cache", training={"steps": STEPS}, deepspeed={"zero_stage": 3},
                      model={**model_cfg, "activation_checkpointing": True},
                      data={"held_out_clusters": ["comparison"]}, evaluation=dict(ZERO_SHOT, every=STEPS // 2))
    run_checked(torchrun_command(write_config(cfg, root / "z3.yaml"), 2))
    assert_same_curve(root / "z3", root / "one")
    evaluations = read_held_out(root / "z3" / "logs")
    assert [r["step"] for r in evaluations] == [STEPS // 2, STEPS]
    assert read_meta(latest_checkpoint(root / "z3"))["world_size"] == 2
    # export gathers the ZeRO-3 shards; the 1-process run's weights are the reference
    out = export_model(root / "z3", root / "z3_hf")
    from transformers import T5ForConditionalGeneration

    sharded = T5ForConditionalGeneration.from_pretrained(out).eval()
    single, _, _ = load_trained_model(root / "one")
    x = torch.tensor([[5, 9, 12, 1], [7, 3, 1, 0]])
    dec = torch.tensor([[0, 4, 6], [0, 8, 2]])
    with torch.no_grad():
        a = sharded(input_ids=x, attention_mask=(x > 0).long(), decoder_input_ids=dec).logits
        b = single(input_ids=x, attention_mask=(x > 0).long(), decoder_input_ids=dec).logits
    assert torch.allclose(a, b, rtol=1e-3, atol=1e-4)
    # the last evaluation is the exported (gathered) model's, scored in this one process
    names, settings = evaluation_plan(config_from_dict(cfg))
    model, tokenizer, _ = load_trained_model(out)
    summary = summarize(evaluate_tasks(model, tokenizer, names, settings, progress=False))
    assert evaluations[-1]["tasks"] == {task: s.median for task, s in summary["tasks"].items()}


def test_two_nodes_zero2_then_resume_on_one_node(work):
    root, tok, reference = work
    cfg = tiny_config(root / "nodes", tok, root / "cache", training={"steps": STEPS}, deepspeed={"zero_stage": 2})
    path = write_config(cfg, root / "nodes.yaml")
    port = free_port()
    procs = [subprocess.Popen(torchrun_command(path, 1, nnodes=2, node_rank=rank, port=port), env=subprocess_env(),
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    for rank, proc in enumerate(procs):
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"node {rank} failed:\n{out[-5000:]}"
    assert_same_curve(root / "nodes", root / "one")
    ckpt = latest_checkpoint(root / "nodes")
    assert ckpt.name == f"step-{STEPS:08d}" and read_meta(ckpt)["world_size"] == 2
    assert sorted(p.name for p in ckpt.glob("rank_*.pt")) == ["rank_00000.pt", "rank_00001.pt"]

    # DeepSpeed's own consolidation of the ZeRO-2 shards is the reference for our export
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    ds_state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag="ds")
    exported, _, _ = load_trained_model(root / "nodes")
    for name, p in exported.named_parameters():
        assert torch.equal(p.detach(), ds_state[name]), name

    # resume with world size 1 (universal checkpoint): no step left → weights must be the checkpoint's
    same = dict(cfg, training={**cfg["training"], "output_dir": str(root / "resumed0")})
    result = train(same, resume=str(ckpt), evaluate_held_in=False)
    assert result.step == STEPS
    reloaded, _, _ = load_trained_model(root / "resumed0")
    assert read_meta(latest_checkpoint(root / "resumed0"))["world_size"] == 1
    for name, p in reloaded.named_parameters():
        assert torch.equal(p.detach(), ds_state[name]), name
    # and training continues: the step count and the sampler's task sequence go on
    longer = dict(cfg, training={**cfg["training"], "steps": STEPS + 4, "output_dir": str(root / "resumed")})
    more = train(longer, resume=str(ckpt), evaluate_held_in=False)
    uninterrupted = train(dict(cfg, training={**cfg["training"], "steps": STEPS + 4, "micro_batch_size": 8,
                                              "output_dir": str(root / "long")}), evaluate_held_in=False)
    assert more.step == STEPS + 4
    assert more.task_sequence == uninterrupted.task_sequence[STEPS:]
    losses = step_losses(root / "resumed")
    assert losses[STEPS + 1] < step_losses(root / "one")[1] - 0.3  # it continued from trained weights


def test_tchebycheff_on_two_ranks_resumes_as_if_uninterrupted(work):
    """Each rank took its own first losses as Tchebycheff's references, and a checkpoint keeps rank 0's: after a
    resume rank 1 weighted its tasks differently than the uninterrupted run did."""
    root, tok, _ = work

    def config(name):  # (the uninterrupted run's half-way checkpoint is the interrupted run's)
        return tiny_config(root / name, tok, root / "cache", weighting={"method": "tchebycheff"},
                           training={"steps": STEPS, "schedule": "constant", "checkpoint_every": STEPS // 2})

    run_checked(torchrun_command(write_config(config("tch"), root / "tch.yaml"), 2))
    half = root / "tch" / "checkpoints" / f"step-{STEPS // 2:08d}"
    run_checked(torchrun_command(write_config(config("tch_resumed"), root / "tch_resumed.yaml"), 2,
                                 "--resume", str(half)))
    got, expected = step_records(root / "tch_resumed"), step_records(root / "tch")
    assert sorted(got) == list(range(STEPS // 2 + 1, STEPS + 1))
    for step in range(STEPS // 2 + 1, STEPS + 1):
        assert got[step]["weighted_loss"] == pytest.approx(expected[step]["weighted_loss"], rel=1e-5), step
        assert got[step]["loss"] == pytest.approx(expected[step]["loss"], rel=1e-5), step


@pytest.mark.parametrize("stage", [1, 3])
def test_zero_checkpoint_of_two_ranks_resumes_on_one(work, stage, monkeypatch):
    """ZeRO-1 and ZeRO-3 (ZeRO-2: above) checkpoints of 2 ranks resume on 1 rank through DeepSpeed's universal
    format: the weights are exactly DeepSpeed's own consolidation of the shards, and training goes on. The model is
    built without its random init (every tensor NaN until the load fills it, `resumed_model`)."""
    root, tok, reference = work
    cfg = tiny_config(root / f"u{stage}", tok, root / "cache", training={"steps": STEPS},
                      deepspeed={"zero_stage": stage})
    run_checked(torchrun_command(write_config(cfg, root / f"u{stage}.yaml"), 2), timeout=400)
    ckpt = latest_checkpoint(root / f"u{stage}")
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    ds_state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag="ds")
    on_one = dict(cfg, training={**cfg["training"], "micro_batch_size": 8, "output_dir": str(root / f"u{stage}_1")})
    real_to_empty, built = nan_filled_to_empty(torch.nn.Module.to_empty), []

    def to_empty(module, **kwargs):
        built.append(module)
        return real_to_empty(module, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(torch.nn.Module, "to_empty", to_empty)
        assert train(on_one, resume=str(ckpt), evaluate_held_in=False).step == STEPS  # nothing left: only reload
    assert built, "the resume built its model with its random init"
    reloaded, _, _ = load_trained_model(root / f"u{stage}_1")
    assert read_meta(latest_checkpoint(root / f"u{stage}_1"))["world_size"] == 1
    for name, p in reloaded.named_parameters():
        assert torch.equal(p.detach(), ds_state[name]), name
    # DeepSpeed loads a universal checkpoint into neither ZeRO stage 0 nor to or from ZeRO-3 (was: its error, reported
    # as a corrupt checkpoint to remove)
    other = 0 if stage == 1 else 2
    with pytest.raises(CheckpointError, match=rf"deepspeed.zero_stage = {stage}, this run has {other}"):
        train(dict(on_one, deepspeed={"zero_stage": other},
                   training={**on_one["training"], "output_dir": str(root / f"u{stage}_z{other}")}),
              resume=str(ckpt), evaluate_held_in=False)
    longer = dict(on_one, training={**on_one["training"], "steps": STEPS + 2,
                                    "output_dir": str(root / f"u{stage}_more")})
    assert train(longer, resume=str(ckpt), evaluate_held_in=False).step == STEPS + 2
    assert sorted(step_losses(root / f"u{stage}_more")) == [STEPS + 1, STEPS + 2]
    assert step_losses(root / f"u{stage}_more")[STEPS + 1] < step_losses(root / "one")[1] - 0.3


@pytest.mark.parametrize("cut_on, resumed_on", [(2, 1), (1, 2)])
def test_a_run_resumed_on_another_number_of_ranks_goes_on_with_the_examples_left(work, cut_on, resumed_on):
    """A run cut half-way and resumed on another number of ranks with the same global batch (2 x micro-batch 4 or
    1 x 8) continues the global data order: its later losses are the 1-process run's. (Was: every task restarted
    at its next epoch, the rest of the interrupted one never trained, and the losses left the reference.)"""
    root, tok, _ = work

    def run(out, ranks, steps, resume=None):
        cfg = tiny_config(root / out, tok, root / "cache", deepspeed={"zero_stage": 2},
                          training={"steps": steps, "micro_batch_size": 8 // ranks})
        if ranks == 1:
            train(cfg, resume=resume, evaluate_held_in=False)
        else:
            run_checked(torchrun_command(write_config(cfg, root / f"{out}.yaml"), 2,
                                         *(["--resume", resume] if resume else [])))

    cut, resumed = f"cut{cut_on}", f"resumed{cut_on}to{resumed_on}"
    run(cut, cut_on, STEPS // 2)
    run(resumed, resumed_on, STEPS, resume=str(root / cut))
    got, ref = step_losses(root / resumed), step_losses(root / "one")
    assert sorted(got) == list(range(STEPS // 2 + 1, STEPS + 1))
    for s in got:
        assert got[s] == pytest.approx(ref[s], rel=2e-4), (s, got, ref)


def test_a_lora_zero3_checkpoint_resumes_on_another_number_of_ranks_with_its_own_frozen_weights(work, monkeypatch):
    """A LoRA run at ZeRO-3 (every parameter partitioned) cut on 2 ranks resumes on 1, and that one on 2 again,
    through DeepSpeed's universal format, with its frozen base weights from the checkpoint (the old ranks' partitions
    joined, each new rank writing its own), though its model.name_or_path folder was re-saved with other weights
    since; the 1-rank resume builds the model unfilled. (Was: the base weights were the folder's new ones.)"""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from transformers import T5ForConditionalGeneration

    root, tok, _ = work
    folder = pretrained_folder(root / "lora3", tok)
    original = T5ForConditionalGeneration.from_pretrained(folder).state_dict()
    partitioned = {"zero_stage": 3, "extra": {"zero_optimization": {"stage3_param_persistence_threshold": 0}}}

    def config(out, ranks, steps):
        return tiny_config(root / out, tok, root / "cache", deepspeed=partitioned,
                           training={"steps": steps, "micro_batch_size": 8 // ranks},
                           model={"name_or_path": str(folder), "dims": None,
                                  "lora": {"r": 2, "alpha": 4, "targets": ["q", "v", "wo"]}})

    def frozen_weights_changed(run):
        ckpt = latest_checkpoint(root / run)
        frozen = torch.load(ckpt / "ds" / "zero_pp_rank_0_mp_rank_00_model_states.pt",
                            weights_only=False)["frozen_param_shapes"]
        saved = get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag="ds")  # (DeepSpeed's own consolidation)
        assert "shared.weight" in frozen
        return [name for name in frozen if not torch.equal(saved[name], original[name])]

    run_checked(torchrun_command(write_config(config("lora3_cut", 2, 2), root / "lora3_cut.yaml"), 2), timeout=400)
    changed = T5ForConditionalGeneration.from_pretrained(folder)
    with torch.no_grad():
        for param in changed.parameters():
            param.add_(0.5)
    changed.save_pretrained(folder)
    real_to_empty, real_restore = nan_filled_to_empty(torch.nn.Module.to_empty), trainer_mod.restore
    built, trained = [], []

    def to_empty(module, **kwargs):
        built.append(module)
        return real_to_empty(module, **kwargs)

    def restore(engine, *args, **kwargs):
        trained.append(engine.module)
        return real_restore(engine, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(torch.nn.Module, "to_empty", to_empty)
        patch.setattr(trainer_mod, "restore", restore)
        assert train(config("lora3_cut", 1, 3), resume="auto", evaluate_held_in=False).step == 3
    assert any(module is trained[0] for module in built), "the resume built its model with its random init"
    assert frozen_weights_changed("lora3_cut") == []
    run_checked(torchrun_command(write_config(config("lora3_cut", 2, 4), root / "lora3_more.yaml"), 2, "--resume",
                                 "auto"), timeout=400)
    assert read_meta(latest_checkpoint(root / "lora3_cut"))["world_size"] == 2
    assert frozen_weights_changed("lora3_cut") == []


def test_a_new_best_of_a_run_resumed_on_one_rank_is_loaded_for_the_evaluation(work):
    """A 2-rank run resumed on 1 rank loads its checkpoint through DeepSpeed's universal format; a new best it then
    writes (`training.keep_best`, before its last step) is an ordinary 1-rank checkpoint, loaded for the
    after-training evaluation. (Was: loaded as a universal one too — 'optimizer_state.pt ... is missing', the run
    failing after training with its new best reported as corrupt.)"""
    root, tok, _ = work
    cfg = tiny_config(root / "best2", tok, root / "cache", deepspeed={"zero_stage": 2},
                      training={"steps": 4, "validate_every": 4, "validate_examples": 2, "keep_best": "val_loss"})
    run_checked(torchrun_command(write_config(cfg, root / "best2.yaml"), 2))
    assert latest_checkpoint(root / "best2").name == "step-00000004"
    on_one = dict(cfg, training={**cfg["training"], "micro_batch_size": 8, "steps": 7, "validate_every": 2,
                                 "output_dir": str(root / "best1")})
    result = train(on_one, resume=str(root / "best2"), evaluate_held_in=False)
    assert result.best_checkpoint.resolve().name == "step-00000006" and result.step == 7
    assert read_meta(result.best_checkpoint)["world_size"] == 1
    assert result.evaluated_step == 6


def test_deepspeed_launcher_two_ranks_match_one_process(work):
    """The README's `deepspeed --num_gpus 2 --module t2t_mtl train cfg.yaml` (the launcher passes
    `--local_rank=N` before the command): ZeRO-2 over 2 ranks reproduces the 1-process curve."""
    root, tok, reference = work
    cfg = tiny_config(root / "dsl", tok, root / "cache", training={"steps": STEPS}, deepspeed={"zero_stage": 2})
    path = write_config(cfg, root / "dsl.yaml")
    run_checked([sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port",
                 str(free_port()), "--module", "t2t_mtl", "train", str(path)], timeout=400)
    assert_same_curve(root / "dsl", root / "one")
    assert read_meta(latest_checkpoint(root / "dsl"))["world_size"] == 2


def test_deepspeed_hostfile_two_hosts_over_ssh_match_one_process(work):
    """The README's multi-node line, `deepspeed --hostfile HOSTFILE --num_nodes 2 --module t2t_mtl train`:
    DeepSpeed's runner ssh-es (pdsh) into two "hosts" of the hostfile — 127.0.0.1 and localhost, both this
    machine, through a private sshd — and starts one rank on each with the node rank pdsh gives it; the
    environment reaches the remote shells only through a DeepSpeed env file. ZeRO-2 over the 2 nodes
    reproduces the 1-process curve."""
    root, tok, reference = work
    cfg = tiny_config(root / "hosts", tok, root / "cache", training={"steps": STEPS}, deepspeed={"zero_stage": 2})
    path = write_config(cfg, root / "hosts.yaml")
    (root / "hostfile").write_text("127.0.0.1 slots=1\nlocalhost slots=1\n")
    env = subprocess_env()
    env_file = root / "deepspeed_env"  # what ~/.deepspeed_env holds on a cluster; pdsh's shells see only this
    env_file.write_text("".join(f"{k}={env[k]}\n" for k in ("DS_ACCELERATOR", "OMP_NUM_THREADS", "HF_HUB_OFFLINE",
                                                            "HF_DATASETS_OFFLINE", "TOKENIZERS_PARALLELISM",
                                                            "PATH")))  # (the ranks build DeepSpeed's op with its ninja)
    with private_sshd(root / "sshd") as ssh_options:
        env.update(DS_ENV_FILE=str(env_file), PDSH_SSH_ARGS_APPEND=ssh_options)
        cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--hostfile", str(root / "hostfile"),
               "--num_nodes", "2", "--launcher", "pdsh", "--no_ssh_check", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), "--module", "t2t_mtl", "train", str(path)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400, cwd=REPO)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert "127.0.0.1: " in proc.stdout + proc.stderr and "localhost: " in proc.stdout + proc.stderr  # pdsh's
    assert_same_curve(root / "hosts", root / "one")
    assert read_meta(latest_checkpoint(root / "hosts"))["world_size"] == 2


def test_slurm_sbatch_two_nodes_sigterm_and_requeue_continue_the_run(work):
    """The packaged `sbatch t2t_mtl/configs/launch/slurm.sbatch cfg.yaml` on a private two-node SLURM: srun
    starts one rank per node and the engine takes RANK/WORLD_SIZE/LOCAL_RANK from SLURM_PROCID/NTASKS/LOCALID.
    A SIGTERM to the job's ranks (what the script's `--signal=TERM@120` sends before the time limit) makes them
    checkpoint and exit 75 (the job's code), and the resubmitted job (`--resume auto`) continues: the two jobs'
    losses are exactly those of one uninterrupted job. (Was `--signal=B:TERM`, to the batch shell, i.e. to srun,
    which answers SIGTERM by killing the step: no checkpoint.)"""
    root, tok, reference = work
    steps = 120  # long enough that the SIGTERM after step 3 always lands mid-run
    cfg = tiny_config(root / "slurm_full", tok, root / "cache", training={"steps": steps},
                      deepspeed={"zero_stage": 2})
    script = REPO / "t2t_mtl" / "configs" / "launch" / "slurm.sbatch"
    with private_slurm(root / "slurm") as slurm_env:
        env = {k: v for k, v in subprocess_env().items() if not k.startswith("SLURM_")}
        env.update(slurm_env, MASTER_ADDR="127.0.0.1", VENV=sys.prefix)  # node names t2t-n1/2 do not resolve

        def sbatch(run: str, *options: str) -> str:
            path = write_config(dict(cfg, training={**cfg["training"], "output_dir": str(root / run)}),
                                root / f"{run}.yaml")
            cmd = ["sbatch", "--parsable", "--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=1",
                   "--gpus-per-node=0", "--time=10", f"--output={root / run}-%j.out", *options, str(script),
                   str(path)]
            proc = subprocess.run(cmd, env={**env, "MASTER_PORT": str(free_port())}, capture_output=True,
                                  text=True, timeout=300, cwd=REPO)
            job = proc.stdout.strip().split(";")[0]
            output = (root / f"{run}-{job}.out")
            assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stderr}\n" + \
                (output.read_text()[-5000:] if output.exists() else "")
            return job

        def job_field(job: str, name: str) -> str:
            shown = subprocess.run(["scontrol", "show", "job", job], env=env, capture_output=True, text=True).stdout
            return next(w.split("=", 1)[1] for w in shown.split() if w.startswith(f"{name}="))

        def job_state(job: str) -> str:
            return job_field(job, "JobState")

        sbatch("slurm_full", "--wait")
        job = sbatch("slurm_cut")
        deadline = time.monotonic() + 240
        while last_logged_step(root / "slurm_cut") < 3:
            assert job_state(job) in ("PENDING", "RUNNING") and time.monotonic() < deadline, \
                (root / f"slurm_cut-{job}.out").read_text()[-5000:]
            time.sleep(0.2)
        subprocess.run(["scancel", "--signal=TERM", job], env=env, check=True)
        while job_state(job) in ("PENDING", "RUNNING", "COMPLETING"):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        out = (root / f"slurm_cut-{job}.out").read_text()
        # every rank's 75, srun's too: a rank terminated by --kill-on-bad-exit while exiting would have made it 143
        assert (job_state(job), job_field(job, "ExitCode")) == ("FAILED", "75:0"), out[-5000:]
        assert "interrupted (checkpoint saved)" in out, out[-5000:]
        cut = latest_checkpoint(root / "slurm_cut")
        assert read_meta(cut)["world_size"] == 2 and read_meta(cut)["step"] < steps
        sbatch("slurm_cut", "--wait")  # the requeued job: same command, --resume auto
    full, resumed = step_losses(root / "slurm_full"), step_losses(root / "slurm_cut")
    assert sorted(full) == sorted(resumed) == list(range(1, steps + 1))
    assert resumed == full
    for s in range(1, STEPS + 1):  # and 2 SLURM ranks train as one process does
        assert full[s] == pytest.approx(step_losses(root / "one")[s], rel=2e-4)


def test_ctrl_c_on_torchrun_saves_a_checkpoint_of_every_rank(work):
    """Ctrl-C reaches torchrun (its ranks run in sessions of their own), which sends every rank one SIGINT: as
    with SIGTERM, the ranks finish the step, agree on it through the step's all-reduce, save and exit. (Was: a
    KeyboardInterrupt in each rank, nothing saved since the last checkpoint.)"""
    root, tok, _ = work
    steps = 400  # long enough that the SIGINT after step 3 always lands mid-run
    path = write_config(tiny_config(root / "ctrl_c", tok, root / "cache", training={"steps": steps}),
                        root / "ctrl_c.yaml")
    proc = subprocess.Popen(torchrun_command(path, 2), env=subprocess_env(), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while last_logged_step(root / "ctrl_c") < 3:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-5000:]
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGINT)  # (what the terminal sends torchrun's process group)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    cut = latest_checkpoint(root / "ctrl_c")
    assert cut is not None, err[-5000:]
    step = read_meta(cut)["step"]
    assert read_meta(cut)["world_size"] == 2 and 3 <= step < steps
    assert (cut / "rank_00000.pt").exists() and (cut / "rank_00001.pt").exists()
    # the step is named once the ranks' stop vote decided it (torchrun's SIGINT may reach rank 1 in time for a step's
    # vote and rank 0 just after it cast its own), rank 0's notice names none
    assert out.count("SIGTERM, SIGUSR1 or an interrupt (Ctrl-C): saving a checkpoint") == 1, out[-3000:]
    assert f"SIGTERM, SIGUSR1 or an interrupt (Ctrl-C): saving a checkpoint at step {step} and stopping\n" in out, \
        out[-3000:]
    assert err.count(CTRL_C_NOTICE + "\n") == 1, err[-5000:]  # rank 0 only
    assert last_logged_step(root / "ctrl_c") == step


def test_a_rank_refused_before_the_job_joins_stops_the_other_ranks_at_once(work):
    """Two ranks on two "nodes" (RANK/WORLD_SIZE set as each node's launcher sets them), the second started with a
    --data-dir its node lacks. Launchers that watch only their own node (two-node torchrun, pdsh, srun without
    --kill-on-bad-exit) leave the first rank alone: it stops within seconds, naming rank 1, exit 2 as a config
    error. (Was: it waited out DeepSpeed's 10-minute rendezvous timeout, then a DistStoreError traceback.)"""
    root, tok, _ = work
    path = write_config(tiny_config(root / "refused", tok, root / "cache"), root / "refused.yaml")
    port = free_port()
    envs = [{"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
             "MASTER_PORT": str(port)} for rank in (0, 1)]
    codes, errs = cli_ranks([train_command(path), train_command(path, "--data-dir", str(root / "missing"))], envs)
    assert codes == [2, 2], errs
    assert f"error: --data-dir {root / 'missing'} does not exist" in errs[1]
    assert "error: rank 1 of 2 stopped before training began (see its error" in errs[0], errs[0][-3000:]
    assert "Traceback" not in errs[0] and latest_checkpoint(root / "refused") is None


def _unreadable_data_worker(rank: int, port: int, config: dict, out: str) -> None:
    from pathlib import Path

    from t2t_mtl.engine import trainer

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    if rank == 1:  # its node's copy of the data is unreadable; rank 0 tokenizes from its own
        def unreadable(*args, **kwargs):
            raise OSError("rank 1 cannot read train.jsonl")

        trainer.build_task_streams = unreadable
    try:
        trainer.train(config, evaluate_held_in=False)
        result = "trained"
    except Exception as err:  # noqa: BLE001 (what each rank ended with is the result)
        result = f"{type(err).__name__}: {err}"
    Path(f"{out}.{rank}").write_text(result)


def test_a_rank_that_cannot_read_its_training_data_stops_the_others_at_once(work):
    """Rank 1 fails reading the training data after rank 0 tokenized it, under no launcher that would stop rank 0
    (two-node torchrun, pdsh, srun without --kill-on-bad-exit): rank 0 stops too, naming rank 1. (Was: rank 0 went
    on into DeepSpeed's start and waited there for rank 1 until the 10-minute timeout.)"""
    root, tok, _ = work
    config = tiny_config(root / "unreadable", tok, root / "cache")
    out = str(root / "unreadable_result")
    port = free_port()
    forked_ranks(_unreadable_data_worker, [(rank, port, config, out) for rank in range(2)], timeout=150)
    results = [open(f"{out}.{rank}").read() if os.path.exists(f"{out}.{rank}") else "still waiting" for rank in (0, 1)]
    assert results == ["ConfigError: rank 1 of 2 could not read the training data (see its error); every rank must "
                       "see the same data: data.data_dir, data.cache_dir and task files on a filesystem all nodes "
                       "share", "OSError: rank 1 cannot read train.jsonl"]


def _bad_micro_batch_worker(rank: int, port: int, runs: list) -> None:
    """Rank `rank` of each of `runs` ((config, bad calls per rank, out) each, one after the other in this process:
    one process start a rank)."""
    import json
    import math
    from pathlib import Path

    from t2t_mtl.engine import trainer

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    real = trainer.forward_losses
    for config, bad_calls, out in runs:
        calls = {"n": 0}

        def forward(*args, **kwargs):  # this run's forwards on this rank numbered from 1; the listed ones get NaN
            calls["n"] += 1
            per_task, aux = real(*args, **kwargs)
            if calls["n"] in bad_calls[str(rank)]:
                per_task = {task: value * math.nan for task, value in per_task.items()}
            return per_task, aux

        trainer.forward_losses = forward
        Path(f"{out}.{rank}").write_text(json.dumps(trainer.train(config, evaluate_held_in=False).skipped_steps))


def test_a_bad_micro_batch_on_one_rank_skips_the_step_on_both(tmp_path):
    """Rank 1's middle micro-batch of step 2 is bad, rank 0's are all good: the step is skipped on both ranks
    (the check is read once a step, not before each backward; only rank 1's loss is NaN, and DeepSpeed's overflow
    check at ZeRO-2 sees the NaN its gradient reduction brings to rank 0), so the run goes on as one whose step 2
    was bad on every micro-batch of both ranks."""
    import json

    tok = train_tiny_tokenizer(tmp_path / "tok")
    bad = {"one_bad": {"0": [], "1": [5]}, "all_bad": {"0": [4, 5, 6], "1": [4, 5, 6]}}
    runs = [(tiny_config(tmp_path / name, tok, tmp_path / "cache", training={"steps": 4, "grad_accum": 3},
                         deepspeed={"zero_stage": 2}), bad_calls, str(tmp_path / f"{name}_skipped"))
            for name, bad_calls in bad.items()]
    port = free_port()
    assert spawn_ranks(_bad_micro_batch_worker, [(rank, port, runs) for rank in range(2)], timeout=300) == [0, 0]
    for name in bad:
        assert [json.loads(open(f"{tmp_path / name}_skipped.{rank}").read()) for rank in (0, 1)] == [1, 1], name
    one_bad, all_bad = step_records(tmp_path / "one_bad"), step_records(tmp_path / "all_bad")
    assert all_bad[2]["loss"] is None and one_bad[2]["loss"] is not None
    for step in (1, 3, 4):
        assert one_bad[step]["loss"] == pytest.approx(all_bad[step]["loss"], rel=1e-6), step
    assert one_bad[4]["skipped_steps"] == all_bad[4]["skipped_steps"] == 1


def last_logged_step(run_dir) -> int:
    """The last step in the run's metrics log (0 before the first record)."""
    return max(step_losses(run_dir), default=0) if (run_dir / "logs" / "metrics.jsonl").exists() else 0


# the SLURM variables as SLURM 22.05 sets them (two one-task nodes): in the batch script, and in a step srun starts
SLURM_BATCH_STEP = {"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0", "SLURM_NPROCS": "2",
                    "SLURM_JOB_NODELIST": "t2t-n[1-2]"}
SLURM_SRUN_STEP = {**SLURM_BATCH_STEP, "SLURM_PROCID": "1", "SLURM_STEP_ID": "0", "SLURM_STEPID": "0",
                   "SLURM_STEP_NUM_TASKS": "2"}


@pytest.mark.parametrize("slurm, world_size, rank", [(SLURM_SRUN_STEP, "2", "1"), (SLURM_BATCH_STEP, "1", "0")])
def test_slurm_ranks_come_from_srun_steps_only(monkeypatch, slurm, world_size, rank):
    """A rank srun starts takes its rank and world size from SLURM; a command of the sbatch script itself (SLURM_PROCID
    0 and the job's SLURM_NTASKS, but no SLURM_STEP_ID) is one process — it waited for ranks that never came."""
    from t2t_mtl.engine.distributed import fill_env_from_launcher

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT", "SLURM_STEP_ID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr("t2t_mtl.engine.distributed._first_slurm_host", lambda nodelist: "t2t-n1")
    fill_env_from_launcher()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"]) == (rank, world_size)
    assert os.environ["MASTER_ADDR"] == ("t2t-n1" if world_size == "2" else "127.0.0.1")


@pytest.mark.parametrize("world_size, left_initialized", [(2, "False"), (1, "True")])
def test_a_job_of_several_ranks_ends_its_process_group_before_exit_and_one_process_keeps_it(
        tmp_path, world_size, left_initialized):
    # a 2-rank CPU train once aborted in the interpreter's teardown of the group it left behind
    port = free_port()
    assert spawn_ranks(shut_down_worker, [(rank, world_size, port, str(tmp_path / "initialized"))
                                          for rank in range(world_size)], timeout=120) == [0] * world_size
    assert [(tmp_path / f"initialized.{rank}").read_text() for rank in range(world_size)] == \
        [left_initialized] * world_size
