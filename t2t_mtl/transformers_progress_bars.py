"""The progress bars Hugging Face `transformers` draws while it loads or saves a model folder ('Loading weights',
'Writing model shards'), hidden for one command or run and left as they were found after it."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

#: huggingface_hub's switch, read when it is imported: transformers' bars start hidden under 1, and its functions
#: cannot show them then
HUB_SWITCH = "HF_HUB_DISABLE_PROGRESS_BARS"


@contextlib.contextmanager
def hidden_transformers_progress_bars(hide: bool = True) -> Iterator[None]:
    """Hide transformers' progress bars inside the block (`hide` false: leave them as they are) and, on leaving it,
    show them again if they were shown on entering, with huggingface_hub's (which transformers' switch also sets)
    as they were. With HUB_SWITCH set, the user's switch decides and nothing is changed. Imports transformers."""
    if not hide or os.environ.get(HUB_SWITCH) is not None:
        yield
        return
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars
    from transformers.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    shown, hub_hidden = is_progress_bar_enabled(), are_progress_bars_disabled()
    disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            enable_progress_bar()
            if hub_hidden:
                disable_progress_bars()
