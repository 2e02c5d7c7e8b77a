"""How zero-shot evaluation treats a task's examples where the task's benchmark has its own rule.

The default (`EvalProtocol()`) is the project's, which is T0's and seqio's: an input longer than the input limit is
cut at its end, so the model sees its beginning (T0's evaluation tokenizes with `truncation=True`, Hugging Face's
default `truncation_side="right"`; seqio trims a feature to its first tokens), and `max_examples` N scores the
first N rows, and rank classification picks the first of the answer choices that tie for the highest score. A task
built for a benchmark whose own harness does otherwise is given its protocol
(`Task(..., eval_protocol=...)`): BIG-bench JSON tasks (`task_registry.bigbench.BigBenchEvalProtocol`) keep the end
of an over-long input, as BIG-bench's model wrapper does, score the N examples BIG-bench draws and break a tie as
BIG-bench's `multiple_choice_grade` does.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence, Tuple

from .errors import TaskDefinitionError

#: what the model sees of an over-long input cut from each truncation side
KEPT_PARTS = {"right": "beginning", "left": "end"}
TRUNCATION_SIDES = tuple(KEPT_PARTS)


@dataclass(frozen=True)
class EvalProtocol:
    """`truncation_side`: the side an over-long input is cut from, as Hugging Face tokenizers name it — "right" keeps
    its beginning (the default), "left" its end; either way the tokenizer's own special tokens (T5: the final EOS)
    stay, and the input holds at most the limit's tokens."""

    truncation_side: str = "right"
    #: the fields of an example's source row that `pick` reads (the runner hands it those only)
    pick_fields: ClassVar[Tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        if self.truncation_side not in TRUNCATION_SIDES:
            raise TaskDefinitionError(f"eval protocol: truncation_side must be one of {TRUNCATION_SIDES} (the side "
                                      f"an over-long input is cut from), got {self.truncation_side!r}")

    def example_rows(self, count: int, max_examples: int) -> Sequence[int]:
        """The rows (indices, ascending) of a split of `count` rows that `max_examples` keeps: its first ones."""
        return range(min(count, max_examples))

    def pick(self, scores: Sequence[float], row: Mapping[str, Any]) -> int:
        """The answer choice rank classification picks for the example whose listed choices score `scores`
        (log-likelihoods), `row` holding its source row's `pick_fields`: the first of the highest."""
        return max(range(len(scores)), key=scores.__getitem__)  # (max keeps the first of equal keys)

    @property
    def kept_part(self) -> str:
        """What the model sees of an over-long input, for people ("beginning", "end"; a benchmark's protocol may say
        whose rule that is)."""
        return KEPT_PARTS[self.truncation_side]


def tie_rule_fields() -> dict[str, str]:
    """{field: the name of the `EvalProtocol` class whose `pick` reads it} over the protocol classes defined so far,
    BIG-bench's (`task_registry.bigbench`, imported here) among them: the fields of a ranked example's row that say
    its task breaks ties by a rule of its own, where its protocol is not at hand."""
    importlib.import_module("task_registry.bigbench")  # (the shipped tie rule; a module's own is known once imported)
    fields, classes = {}, [EvalProtocol]
    while classes:
        cls = classes.pop()
        classes.extend(cls.__subclasses__())
        fields.update((name, cls.__name__) for name in cls.pick_fields if name not in fields)
    return fields
