"""The warning of a task's inputs that are longer than the input limit: one line per task, naming each template that
truncated inputs with its count, and the limit that holds the longest of them whole."""
from __future__ import annotations

import dataclasses
import logging
from typing import Optional

from t2t_mtl.wording import counted


@dataclasses.dataclass
class TruncatedInputs:
    """The truncated inputs of one task's templates, gathered as they are scored (`add`) and warned of together
    (`warn`). `stated_limit` is the limit as the user set it ("max_input_length=512 tokens", with the task token
    that comes on top said), `kept_part` what the model sees of an over-long input (`EvalProtocol.kept_part`), and
    `longest` the length, in tokens of the stated limit, that holds every truncated input whole."""

    task: str
    stated_limit: str = ""
    kept_part: str = ""
    longest: int = 0
    counts: list[tuple[str, int, int]] = dataclasses.field(default_factory=list)  # (template, truncated, inputs)

    def add(self, template: str, truncated: int, inputs: int, longest: int, stated_limit: str, kept_part: str
            ) -> None:
        """Count `truncated` of the `inputs` of `template` (none: nothing is counted), `longest` the length that holds
        its longest input whole."""
        if not truncated:
            return
        self.counts.append((template, truncated, inputs))
        self.longest = max(self.longest, longest)
        self.stated_limit, self.kept_part = stated_limit, kept_part

    def message(self) -> Optional[str]:
        """The warning's one line, None when no input was truncated."""
        if not self.counts:
            return None
        each = ", ".join(f"{template!r} {count} of {total}" for template, count, total in self.counts)
        needed = self.longest
        return (f"task {self.task!r}: inputs longer than {self.stated_limit} are truncated (the model sees only "
                f"their {self.kept_part}) in {counted(len(self.counts), 'template')}: "
                f"{each}; to score them whole, raise the limit to the longest, {needed} tokens (t2t-mtl eval "
                f"--max-input-length {needed}; evaluation.max_input_length in a config; "
                f"EvalSettings(max_input_length={needed}) from Python)")

    def warn(self, logger: logging.Logger) -> None:
        """Log `message` as a warning on `logger`, when any input was truncated."""
        message = self.message()
        if message is not None:
            logger.warning("%s", message)
