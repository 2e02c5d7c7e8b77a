"""training_state: what a checkpoint holds of the loop keeps the keys older checkpoints were written with."""
import torch

from t2t_mtl.engine.training_state import LoopParts, Progress, trainer_state


class _Part:
    def __init__(self, name):
        self.name = name

    def state_dict(self):
        return {"of": self.name}


def test_trainer_state_keys_and_values_match_the_saved_format():
    parts = LoopParts(sampler=_Part("sampler"), task_streams=_Part("streams"), builder=_Part("builder"),
                      weighting=_Part("weighting"), weighting_optimizer=None, surgery=_Part("surgery"),
                      best_validation=None)
    progress = Progress(step=7, skipped=2, bad_in_a_row=1, examples_trained={"a": 12}, seen_examples=30.0,
                        pending_evaluation=6, weighting_stats={"kpi": {"a": 0.5}})
    state = trainer_state(progress, parts, log_window={"w": 1})
    assert state == {"step": 7, "skipped_steps": 2, "bad_in_a_row": 1, "sampler": {"of": "sampler"},
                     "examples_trained": {"a": 12}, "seen_examples": 30.0, "weighting": {"of": "weighting"},
                     "weighting_stats": {"kpi": {"a": 0.5}}, "weighting_optimizer": None,
                     "gradient_surgery": {"of": "surgery"}, "best_validation": None, "pending_evaluation": 6,
                     "log_window": {"w": 1}}
    state["examples_trained"]["a"] = 0  # a copy: the saved state does not move with the run
    assert progress.examples_trained == {"a": 12}


class _Loaded(_Part):
    """A part that records the states loaded into it, in order."""

    def __init__(self, name):
        super().__init__(name)
        self.loaded = []

    def load_state_dict(self, state):
        self.loaded.append(state)


def test_restore_gives_back_the_progress_and_every_parts_state_a_checkpoint_saved(monkeypatch):
    # the round trip trainer_state / rank_state -> restore, the checkpoint's files replaced by the dicts themselves:
    # every counter of the loop comes back as saved (a resume that zeroed one would go on from another streak of bad
    # steps, epoch clock or per-task count), and every part gets its own state, this rank's draws last
    from t2t_mtl.engine import checkpoint_loading, rng_states
    from t2t_mtl.engine.distributed import DistEnv
    from t2t_mtl.engine.training_state import rank_state, restore

    saved = LoopParts(sampler=_Loaded("sampler"), task_streams=_Loaded("streams"), builder=_Loaded("builder"),
                      weighting=_Loaded("weighting"), weighting_optimizer=_Loaded("optimizer"),
                      surgery=_Loaded("surgery"), best_validation=_Loaded("best"))
    progress = Progress(step=9, skipped=3, bad_in_a_row=2, examples_trained={"a": 12, "b": 5}, seen_examples=41.5,
                        pending_evaluation=8, weighting_stats={"kpi": {"a": 0.25}})
    monkeypatch.setattr(rng_states, "rng_state", lambda: {"python": "rng"})
    own = rank_state(saved)
    own["sampler"] = {"of": "this rank's sampler"}
    checkpoint = (trainer_state(progress, saved, log_window={"w": 2}), own, {"world_size": 1})
    monkeypatch.setattr(checkpoint_loading, "load_checkpoint", lambda engine, path, env, universal: checkpoint)
    rngs = []
    monkeypatch.setattr(rng_states, "set_rng_state", rngs.append)
    parts = LoopParts(**{name: _Loaded(name) for name in vars(saved)})
    env = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend="gloo")
    restored, log_window = restore(None, "ckpt", parts, env, universal=False)
    assert restored == progress and log_window == {"w": 2}
    assert parts.sampler.loaded == [{"of": "sampler"}, {"of": "this rank's sampler"}]
    for name in ("task_streams", "builder", "weighting", "weighting_optimizer", "surgery", "best_validation"):
        assert getattr(parts, name).loaded == [{"of": getattr(saved, name).name}], name
    assert rngs == [{"python": "rng"}]
