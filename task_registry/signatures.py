"""Whether a call binds to a callable's signature, read before the call is made, so that a callable that could never
be called is named where it is given: a step or a postprocess, a generator source's function, and in t2t_mtl a
registered class's constructor, a registered metric, a DeepSpeed scheduler's params."""
from __future__ import annotations

import inspect
from typing import Any, Callable, Optional, Tuple


def binding_error(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Optional[Tuple[inspect.Signature, TypeError]]:
    """`fn`'s signature and the TypeError that binding `args` and `kwargs` to it raises; None when they bind, or when
    Python cannot read its signature (a builtin without one: found when called)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(*args, **kwargs)
    except TypeError as error:
        return signature, error
    return None
