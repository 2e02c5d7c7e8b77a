"""training_state: what a checkpoint holds of the loop keeps the keys older checkpoints were written with."""
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
