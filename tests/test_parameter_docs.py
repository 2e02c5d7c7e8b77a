"""Every config key of a shipped sampling strategy and loss weighting is documented in its class's docstring (or a
base's), and `t2t-mtl list samplers` / `list weightings` print each one's keys with their types, defaults and
meanings, registered ones included."""
from __future__ import annotations

import uuid

import pytest

from t2t_mtl.cli import main as cli_main
from t2t_mtl.param_types import keyword_parameters
from t2t_mtl.parameter_docs import ParameterDoc, documented_meanings, parameter_docs, summary
from t2t_mtl.sampling import STRATEGIES, MixtureSampler
from t2t_mtl.sampling.registry import COMMON_PARAMS, SHIPPED_STRATEGIES
from t2t_mtl.weighting import METHODS
from t2t_mtl.weighting.registry import SHIPPED_METHODS

#: sampler constructor keywords a build passes itself, not config keys
BUILD_KEYWORDS = {"seed", "rank", "world_size"}
SAMPLER_COMMON = tuple(key for key in COMMON_PARAMS if key != "strategy")


@pytest.mark.parametrize("kind", ["sampler", "weighting"])
def test_every_config_key_of_a_shipped_class_is_a_documented_constructor_keyword(kind):
    # a class that grows a keyword must list it among its config keys (PARAMS) and document it under Args:
    table, shipped = (STRATEGIES, SHIPPED_STRATEGIES) if kind == "sampler" else (METHODS, SHIPPED_METHODS)
    common = SAMPLER_COMMON if kind == "sampler" else ()
    for name in sorted(shipped):
        cls = table[name]
        keywords = set(keyword_parameters(cls)) - BUILD_KEYWORDS
        assert keywords == set(cls.PARAMS) | set(common), name
        assert summary(cls), name
        undocumented = [doc.name for doc in parameter_docs(cls, (*common, *cls.PARAMS)) if not doc.meaning]
        assert undocumented == [], (name, undocumented)


def test_an_args_section_is_read_entry_by_entry_with_its_continuation_lines():
    class Base:
        """Base.

        Args:
            shared: from the base.
            overridden: the base's meaning.
        """

    class Child(Base):
        """Child: one line.

        More text: not an entry.

        Args:
            first: a meaning that goes on
                over two lines.
            a, b: both at once.
            overridden: the child's meaning.

        Returns nothing: the section ended at the blank line.
        """

        def __init__(self, *, first: int, a: float = 1.5, b=None, overridden: str = "x") -> None:
            pass

    assert summary(Child) == "Child: one line."
    assert documented_meanings(Child) == {"first": "a meaning that goes on over two lines.", "a": "both at once.",
                                          "b": "both at once.", "overridden": "the child's meaning.",
                                          "shared": "from the base."}
    assert parameter_docs(Child, ["first", "a", "b", "overridden", "shared"]) == [
        ParameterDoc("first", "int", "required", "a meaning that goes on over two lines."),
        ParameterDoc("a", "float", "1.5", "both at once."),
        ParameterDoc("b", "", "None", "both at once."),
        ParameterDoc("overridden", "str", "'x'", "the child's meaning."),
        ParameterDoc("shared", "", "?", "from the base.")]  # (no signature takes it)


def test_list_samplers_prints_every_strategy_with_its_parameters_registered_ones_too(tmp_path, capsys,
                                                                                      restored_component_tables):
    module = tmp_path / f"strategies_{uuid.uuid4().hex[:8]}.py"
    module.write_text('''
import numpy as np

from t2t_mtl.sampling import MixtureSampler, register_sampler


@register_sampler
class Tilted(MixtureSampler):
    """p_t ∝ 1 + tilt · t.

    Args:
        tilt: how much more each next task is drawn.
    """

    strategy = "tilted"
    PARAMS = ("tilt", "spare")

    def __init__(self, task_sizes, *, tilt: float = 0.5, spare: int = 3, **common):
        super().__init__(task_sizes, **common)
        self.tilt = tilt

    def _compute_probabilities(self):
        return 1 + self.tilt * np.arange(len(self.tasks))
''')
    assert cli_main(["list", "samplers", "--task-module", str(module)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sampling.strategy: one of these, with its parameters as the section's other keys; every "
                          "strategy also takes mode and block_size:\n  mode (str, default 'homogeneous'): homogeneous")
    assert "\ntemperature: p_t ∝ min(n_t, K)^(1/alpha): alpha 1 is proportional, alpha → ∞ uniform.\n  alpha (float, " \
           "default 1.0): the temperature (> 0)" in out
    assert "\nannealed: " in out and "\n  epochs (int, required): " in out
    assert "\nuniform: p_t = 1/M.\n  (no parameters)\n" in out
    for name in SHIPPED_STRATEGIES:
        assert f"\n{name}: " in out, name
    assert (f"\ntilted (registered: {module.stem}.Tilted): p_t ∝ 1 + tilt · t.\n"
            "  tilt (float, default 0.5): how much more each next task is drawn.\n"
            "  spare (int, default 3): (undocumented)\n") in out


def test_list_weightings_prints_every_method_with_its_parameters(capsys):
    assert cli_main(["list", "weightings"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("weighting.method: one of these, with its parameters as the section's other keys:\n")
    for name in SHIPPED_METHODS:
        assert f"\n{name}: " in out, name
    assert "\n  gamma (float, default 2.0): γ >= 0, the focusing exponent.\n" in out


def test_list_without_a_subcommand_prints_its_help(capsys):
    assert cli_main(["list"]) == 2
    assert capsys.readouterr().out.startswith("usage: t2t-mtl list [-h] SUBCOMMAND")


def test_list_names_a_task_module_it_cannot_import(tmp_path, capsys):
    assert cli_main(["list", "weightings", "--task-module", str(tmp_path / "missing.py")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: ") and "missing.py" in captured.err


def test_a_class_without_a_docstring_of_its_own_has_no_summary_not_its_bases():
    class Bare(MixtureSampler):
        strategy = "bare"

    assert summary(MixtureSampler) and summary(Bare) == ""
