"""Errors raised by the task-relatedness analyses; each names what is wrong and what to do."""
from __future__ import annotations


class AffinityError(ValueError):
    """Base class of every task-relatedness error."""


class StudyConfigError(AffinityError):
    """A transfer study was asked for with unusable settings (too few tasks, seeds, steps, bad shard)."""


class StudyMismatchError(AffinityError):
    """A study directory already holds a study with other tasks/steps/config than the one requested."""


class RunResultError(AffinityError):
    """A stored run result is unreadable or lacks a score for a task it was trained on."""


class GradientLogError(AffinityError):
    """A run directory has no usable per-task gradient cosine log."""


class TaskEmbeddingError(AffinityError):
    """Task tokens are missing, duplicated or inconsistent with the model/tokenizer/batch."""
