"""A run folder that already holds another run's checkpoints is refused (`refuse_occupied_run_dir`, from the paths
alone, before the run starts anything): two runs' logs and checkpoints would interleave in one folder."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from t2t_mtl.engine.checkpoint import CheckpointError, latest_checkpoint, resolve_checkpoint, resumes_in_place


def refuse_other_run(run_dir: Path, resume_from: Optional[Path]) -> None:
    """Refuse to start (or to resume `resume_from`) in a run folder that already holds another run's checkpoints:
    two runs' logs and checkpoints would interleave in one folder."""
    existing = latest_checkpoint(run_dir)
    if existing is None:
        return
    how = "resume it with --resume auto (from Python: train(..., resume=\"auto\"))" if resume_from is None else \
        f"resume {resume_from} into a new training.output_dir"
    raise CheckpointError(
        f"training.output_dir {run_dir} already holds a run (latest checkpoint {existing.name}): {how}, or set "
        f"training.output_dir to a new folder (or remove {run_dir}) to start over")


def refuse_occupied_run_dir(run_dir: Path, resume: Union[str, Path, None]) -> None:
    """`refuse_other_run` for `--resume` as given (None, `auto`, a run dir or a checkpoint dir), from the paths
    alone, so a run can be refused before it starts anything: a resume in place is never refused here; a resume
    from elsewhere resolves its checkpoint (a CheckpointError for a path that is neither)."""
    if resume and resumes_in_place(resume, run_dir):
        return
    refuse_other_run(Path(run_dir), resolve_checkpoint(resume, run_dir) if resume else None)
