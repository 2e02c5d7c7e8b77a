"""How to evaluate (`EvalSettings`): the split, the examples and templates scored, the scoring mode and its limits,
k-shot demonstrations, each checked when built; `EvalSettings.from_run` takes a run's own."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

from t2t_mtl.evaluation.errors import EvaluationError
from t2t_mtl.evaluation.generation_sizes import check_generation_sizes

SCORING_MODES = ("auto", "rank", "generate")


@dataclass
class EvalSettings:
    """How to evaluate. `split=None` picks validation, else test, else the task's last split.

    `max_examples` keeps N rows of the split, the same for every template: the first N, or those the task's
    benchmark draws (its `EvalProtocol.example_rows`: BIG-bench's seeded draw). `num_shots` > 0
    puts that many solved demonstrations of the same template in front of every input (k-shot; from
    `shots_split`, default train — see `t2t_mtl.evaluation.few_shot`); 0 is zero-shot. `templates` ({task: names})
    picks a task's templates; `original_task_only` keeps those whose promptsource metadata marks `original_task`
    (T0 evaluated only those: a template that asks for another task, as writing a paraphrase, is not scored).
    """

    split: Optional[str] = None
    max_examples: Optional[int] = None
    scoring: str = "auto"
    length_normalize: bool = False
    num_beams: int = 1
    max_new_tokens: int = 64
    batch_size: int = 16
    max_input_length: int = 512
    templates: Optional[Mapping[str, Sequence[str]]] = None
    keep_predictions: bool = False
    seed: int = 0
    num_shots: int = 0
    shots_split: Optional[str] = None
    original_task_only: bool = False

    def __post_init__(self) -> None:
        if self.scoring not in SCORING_MODES:
            raise EvaluationError(f"scoring must be one of {SCORING_MODES}, got {self.scoring!r}")
        for key in ("max_examples", "num_beams", "max_new_tokens", "batch_size", "max_input_length"):
            value = getattr(self, key)
            if (value is not None or key != "max_examples") and (
                    isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise EvaluationError(f"{key} must be an integer >= 1, got {value!r}")
        if self.scoring != "rank":  # (rank scoring generates nothing: a run's data.max_target_length default is unused)
            check_generation_sizes(self.num_beams, self.max_new_tokens)
        if isinstance(self.num_shots, bool) or not isinstance(self.num_shots, int) or self.num_shots < 0:
            raise EvaluationError(f"num_shots must be an integer >= 0, got {self.num_shots!r}")
        if self.num_shots > self.max_input_length:  # (drawn row by row: 10**12 would render every row per input)
            raise EvaluationError(f"num_shots (--shots, evaluation.num_shots) {self.num_shots} is more than "
                                  f"max_input_length, {self.max_input_length}: each demonstration takes at least one "
                                  f"of a prompt's tokens, so no more fit; give at most {self.max_input_length} shots")
        for key in ("split", "shots_split"):
            if getattr(self, key) is not None and not isinstance(getattr(self, key), str):
                raise EvaluationError(f"{key} must be a split name, got {getattr(self, key)!r}")
        for key in ("length_normalize", "keep_predictions", "original_task_only"):
            if not isinstance(getattr(self, key), bool):
                raise EvaluationError(f"{key} must be true or false, got {getattr(self, key)!r}")

    def to_dict(self) -> dict[str, Any]:
        """Every setting as plain data (mappings copied to dicts)."""
        return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_run(cls, run: Union[str, os.PathLike, Mapping[str, Any]]) -> EvalSettings:
        """The settings `t2t-mtl eval --checkpoint RUN` scores with when given no option: the run's own evaluation
        settings (its config's `evaluation` section, `data.max_input_length` / `max_target_length`, `training.seed`),
        derived as the command derives them (`t2t_mtl.evaluation.run_settings`). `run`: a run folder, one of
        its checkpoints, a folder exported from it, or the meta `load_trained_model` returns for one. A folder that
        is no checkpoint is a `CheckpointError` naming it; one (or a meta) without a run's config, as a plain Hugging
        Face folder, is an `EvaluationError` saying to use `EvalSettings(...)`. Change a setting with
        `dataclasses.replace`."""
        from t2t_mtl.evaluation.checkpoint import checkpoint_meta
        from t2t_mtl.evaluation.run_settings import settings_of_run

        meta = run if isinstance(run, Mapping) else checkpoint_meta(run)
        if not meta.get("config"):
            where = "this meta" if isinstance(run, Mapping) else f"{os.fspath(run)!r}"
            raise EvaluationError(f"EvalSettings.from_run: {where} holds no t2t-mtl run's config (a model folder from "
                                  f"elsewhere, or meta without its 'config'), so there are no run settings to take; "
                                  f"give a run folder, one of its checkpoints or a folder exported from it, or build "
                                  f"EvalSettings(...) with the settings you want")
        return settings_of_run(meta)
