"""Built-in denoising tasks: T5's span-corruption objective over the text of a shared dataset, so a multitask
run can mix in pre-training-style self-supervision (T5's "multi-task + pre-training" mixtures).

``ag_news_span_corruption`` corrupts the AG News article texts (cut into chunks of at most 64 words, each its
own row, so that the corrupted input and its spans fit 128 / 64 T5 tokens — all but 61 inputs and 24 targets
of the 10,094 training chunks, which hold HTML entities that tokenize long and are truncated, counted);
cluster ``denoising``.
"""
from __future__ import annotations

from typing import List

from ..sources import HFSource
from ..span_corruption import SpanCorruption
from ..task import Task
from ..template import Template

CHUNK_WORDS = 64


def denoising_tasks() -> List[Task]:
    """The built-in span-corruption tasks (fresh `Task` objects)."""
    return [
        Task("ag_news_span_corruption", HFSource("ag_news"),
             [Template("span_corruption", "{{ corrupted }} ||| {{ spans }}")],
             preprocessors=[SpanCorruption("text", max_words=CHUNK_WORDS)], task_type="span_corruption",
             cluster="denoising", splits=("train", "test"),
             description=f"T5 span corruption of AG News texts (chunks of at most {CHUNK_WORDS} words)."),
    ]
