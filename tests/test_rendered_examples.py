"""A template's rows rendered into the examples evaluation scores (`t2t_mtl.evaluation.rendered_examples`)."""
from __future__ import annotations

import random
from types import SimpleNamespace

import task_registry
from t2t_mtl.evaluation.rendered_examples import render_examples


def test_a_drawn_part_of_a_split_renders_each_row_as_it_renders_in_the_whole_split():
    # the rendering seed is the row's index in its split (`row_ids`), as BIG-bench's drawn examples need: seeding by
    # the position in the part passed the suite, whose parts were all the split's first rows
    template = task_registry.Template("t", "{{ range(1000) | list | choice }} {{ q }} ||| {{ a }}")
    split = [{"q": f"q{i}", "a": "x"} for i in range(8)]
    task = SimpleNamespace(name="t", group_by=None)
    whole = {e.row_index: e.inputs for e in render_examples(task, template, split, seed=3).examples}
    assert [whole[i] for i in range(8)] == [
        f"{random.Random(f'3:{i}').choice(range(1000))} q{i}" for i in range(8)]  # (the seed "evaluation:row")
    drawn = [6, 1, 4]
    part = render_examples(task, template, [split[i] for i in drawn], seed=3, row_ids=drawn).examples
    assert [(e.row_index, e.inputs) for e in part] == [(i, whole[i]) for i in drawn]
