"""What checkpoints save of the templates a run trains with (`engine.training_templates`): their names in order,
and a render digest per name that tells a template edited under its name."""
from __future__ import annotations

from task_registry import Template

from t2t_mtl.engine.training_templates import template_digests_of, template_names_of


def test_a_selection_is_saved_as_its_names_in_order_and_their_render_digests():
    first, second = Template("b", "{{x}} ||| {{y}}"), Template("a", "{{x}}! ||| {{y}}")
    selection = {"task": [first, second]}
    assert template_names_of(selection) == {"task": ["b", "a"]}
    assert template_digests_of(selection) == {"task": {"b": first.render_digest(), "a": second.render_digest()}}
    edited = Template("b", "{{x}}? ||| {{y}}")  # the same name, another text
    assert template_digests_of({"task": [edited]})["task"]["b"] != template_digests_of(selection)["task"]["b"]
