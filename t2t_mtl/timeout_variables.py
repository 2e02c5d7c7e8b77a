"""Process-group timeouts the environment sets in whole minutes (DeepSpeed's `DEEPSPEED_TIMEOUT`, t2t-mtl's
`T2T_MTL_WAIT_TIMEOUT`), read without torch or DeepSpeed, so a bad one is refused naming it before anything loads
them: DeepSpeed reads its variable as it is imported, where a value that is no number was its raw ValueError."""
from __future__ import annotations

import os

DEEPSPEED_TIMEOUT_VARIABLE = "DEEPSPEED_TIMEOUT"
#: DeepSpeed's default for it: the timeout of the process group's rendezvous and collectives
DEFAULT_DEEPSPEED_MINUTES = 10
#: the longest timeout taken, a year: a longer one is a typo, and far longer ones no timedelta can hold
MAX_TIMEOUT_MINUTES = 365 * 24 * 60


def minutes_variable(name: str, default: int, meaning: str) -> int:
    """Environment variable `name` (`default` where unset) as a whole number of minutes from 1 to
    `MAX_TIMEOUT_MINUTES`; a LaunchEnvironmentError naming it, with `meaning` (what it times and its default), for
    any other value."""
    text = os.environ.get(name, str(default))
    if not text.strip().isdecimal() or not 1 <= int(text) <= MAX_TIMEOUT_MINUTES:  # (isdigit takes ², int() not)
        from t2t_mtl.config_errors import LaunchEnvironmentError

        raise LaunchEnvironmentError(
            f"environment variable {name} must be a whole number of minutes, at least 1 ({meaning}), at most "
            f"{MAX_TIMEOUT_MINUTES} (a year), got {text!r}")
    return int(text)


def deepspeed_timeout_minutes() -> int:
    """`DEEPSPEED_TIMEOUT` (10 unless set), checked as `minutes_variable` checks one: to be called before DeepSpeed is
    first imported, which reads it with `int()`."""
    return minutes_variable(DEEPSPEED_TIMEOUT_VARIABLE, DEFAULT_DEEPSPEED_MINUTES,
                            f"DeepSpeed's timeout of the process group's rendezvous and collectives; unset: "
                            f"{DEFAULT_DEEPSPEED_MINUTES}")
