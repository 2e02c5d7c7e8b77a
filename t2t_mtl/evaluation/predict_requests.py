"""Requests to `predict` and its answers, without torch or transformers: `PredictRequest` (an input, its optional
answer choices and task), `Prediction` (its answer, as a JSON object by `to_dict`) and `read_requests`, which parses
plain lines or JSON lines in the rendered-dataset schema (see `t2t_mtl.evaluation.predict`), so that `t2t-mtl
predict` refuses unusable input before loading a model."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

from t2t_mtl.evaluation.errors import EvaluationError

OUTPUT_KEYS = ("prediction", "scores")  # what a Prediction adds to its request's JSON object


class PredictInputError(EvaluationError):
    """A request is not usable; the message names the source and the line (a line read) or the field (a
    `PredictRequest` built in Python)."""


@dataclass
class PredictRequest:
    """One input; `answer_choices` (None or [], as the rendered-dataset schema writes none: generate) and `task`
    (None: no task routing) are optional."""

    inputs: str
    answer_choices: Optional[list[str]] = None
    task: Optional[str] = None
    row: dict[str, Any] = field(default_factory=dict)  # the JSON line as read (no earlier answer), echoed in order

    def __post_init__(self) -> None:
        """Refuse fields of the wrong type (a string of choices would be scored character by character); a tuple
        of choices becomes a list."""
        if not isinstance(self.inputs, str):
            raise PredictInputError(f"PredictRequest: inputs must be the input text (a string), got {self.inputs!r}")
        choices = self.answer_choices
        if isinstance(choices, str):
            listed = [c.strip() for c in choices.split("|||")]
            raise PredictInputError(f"PredictRequest: answer_choices must be a list of strings, got the string "
                                    f"{choices!r}: write {listed!r}")
        if choices is not None:
            if not isinstance(choices, (list, tuple)) or not all(isinstance(c, str) for c in choices):
                raise PredictInputError(f"PredictRequest: answer_choices must be a list of strings, got {choices!r}")
            self.answer_choices = list(choices)
        if self.task is not None and not isinstance(self.task, str):
            raise PredictInputError(f"PredictRequest: task must be a task name (a string) or None, got {self.task!r}")


@dataclass
class Prediction:
    """What the model answered: the decoded text (its task's postprocess of it, the decoded text in `output`), or
    the best choice with every choice's log-likelihood."""

    request: PredictRequest
    prediction: str
    scores: Optional[list[float]] = None
    output: Optional[str] = None  # the decoded text, where `prediction` is its task's postprocess of it

    def to_dict(self) -> dict[str, Any]:
        """The output JSON object: the request's JSON line, its keys in their order (a text input: `inputs`), with
        `answer_choices` and `task` when set (given ones after its keys, as with --choices), then `prediction`,
        then `scores` when ranked."""
        out = dict(self.request.row) if self.request.row else {"inputs": self.request.inputs}
        if self.request.answer_choices is not None:
            out["answer_choices"] = self.request.answer_choices
        if self.request.task is not None:
            out["task"] = self.request.task
        out["prediction"] = self.prediction
        if self.scores is not None:
            out["scores"] = self.scores
        return out


def _parse_json_line(text: str, where: str) -> PredictRequest:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as error:
        raise PredictInputError(f"{where}: not a JSON object ({error.msg}); give one object per line with an "
                                f"\"inputs\" string, or read plain text lines") from None
    if not isinstance(row, dict) or not isinstance(row.get("inputs"), str):
        raise PredictInputError(f"{where}: a JSON line needs an \"inputs\" string, got {text[:80]!r}")
    for answer in OUTPUT_KEYS:  # an earlier predict's answer (its output is valid input): this run writes its own
        row.pop(answer, None)
    choices, task = row.get("answer_choices"), row.get("task")
    if choices is not None and (not isinstance(choices, list) or not all(isinstance(c, str) for c in choices)):
        raise PredictInputError(f"{where}: \"answer_choices\" must be a list of strings, got {choices!r}")
    if choices is not None and len(choices) == 1 and "|||" in choices[0]:  # --choices' form, in one list item
        raise PredictInputError(f"{where}: \"answer_choices\" is one choice holding '|||' ({choices[0]!r}), so "
                                f"it would always be the answer; list the choices apart, e.g. "
                                f"{json.dumps([c.strip() for c in choices[0].split('|||')])}")
    if task is not None and not isinstance(task, str):
        raise PredictInputError(f"{where}: \"task\" must be a task name, got {task!r}")
    return PredictRequest(row["inputs"], choices, task, row=row)


def check_requests(requests: Any) -> None:
    """Refuse `requests` that are not a sequence of `PredictRequest`, saying how to write them."""
    if isinstance(requests, str):
        raise PredictInputError(f"predict: requests must be a list of PredictRequest objects, got the string "
                                f"{requests[:80]!r}: write [PredictRequest({requests[:80]!r})]")
    if isinstance(requests, PredictRequest):
        raise PredictInputError(f"predict: requests must be a list of PredictRequest objects, got one PredictRequest "
                                f"({requests.inputs[:80]!r}): put it in a list, [request]")
    if not isinstance(requests, Sequence):  # (a generator would be used up by the checks and has no length)
        got = f"a {type(requests).__name__}" if isinstance(requests, Iterable) else repr(requests)
        remedy = ": write list(requests)" if isinstance(requests, Iterable) else ""
        raise PredictInputError(f"predict: requests must be a list of PredictRequest objects, got {got}{remedy}")
    for number, request in enumerate(requests, 1):
        if not isinstance(request, PredictRequest):
            example = f"PredictRequest({request[:80]!r})" if isinstance(request, str) else "a PredictRequest"
            raise PredictInputError(f"predict: request {number} is a {type(request).__name__}, not a PredictRequest: "
                                    f"write {example}")


def read_requests(lines: Iterable[str], *, jsonl: bool, source: str) -> list[PredictRequest]:
    """Requests from `lines`: each a JSON object when `jsonl` (blank lines skipped: objects carry their own
    keys), else the input text — every line, a blank one included, so the k-th output answers the k-th line.
    A file that is not UTF-8 text is a `PredictInputError` naming `source`."""
    requests = []
    try:
        for number, line in enumerate(lines, start=1):
            text = line.rstrip("\n")
            if jsonl and not text.strip():
                continue
            requests.append(_parse_json_line(text, f"{source}:{number}") if jsonl else PredictRequest(text))
    except UnicodeDecodeError as error:  # raised while reading the lines of a file opened as UTF-8
        raise PredictInputError(f"{source}: not UTF-8 text ({error}); save it as UTF-8") from None
    if not any(r.inputs.strip() for r in requests):
        raise PredictInputError(f"{source}: no input (give input texts, or lines in the file)")
    return requests
