"""Mixtures, the global registry and the held-out protocol hook `training_rates`."""
from __future__ import annotations

import numpy as np
import pytest

import task_registry
from task_registry import (
    DuplicateRegistrationError,
    EvalOnlyTaskError,
    GeneratorSource,
    HeldOutTaskError,
    Mixture,
    Task,
    TaskDefinitionError,
    Template,
    normalize,
    rate_num_examples,
)

ECHO = Template("echo", "echo {{x}} ||| {{x}}")


def _rows(split, num_rows, seed):
    for i in range(num_rows):
        yield {"x": f"{split}-{seed}-{i}"}


def _task(name, cluster="c", rows=10, **kwargs):
    return Task(name, GeneratorSource(_rows, num_rows=rows), [ECHO], cluster=cluster, **kwargs)


@pytest.fixture()
def registry():
    with task_registry.isolated_registry():
        yield


def test_register_get_list_and_duplicates(registry):
    a = task_registry.register_task(_task("mx_a", cluster="mx_nli", task_type="mx_nli"))
    task_registry.register_task(_task("mx_b", cluster="mx_qa", task_type="mx_qa"))
    assert task_registry.get_task("mx_a") is a
    assert {"mx_a", "mx_b"} <= set(task_registry.list_tasks())
    assert task_registry.list_tasks(cluster="mx_nli") == ["mx_a"]
    assert task_registry.list_tasks(task_type="mx_qa", cluster="mx_qa") == ["mx_b"]
    assert task_registry.list_tasks(task_type="mx_qa", cluster="mx_nli") == []
    with pytest.raises(DuplicateRegistrationError, match="mx_a.*overwrite=True"):
        task_registry.register_task(_task("mx_a"))
    replacement = task_registry.register_task(_task("mx_a", cluster="other"), overwrite=True)
    assert task_registry.get_task("mx_a") is replacement
    task_registry.register_mixture(Mixture("mx_m", ["mx_a"]))
    with pytest.raises(DuplicateRegistrationError):
        task_registry.register_mixture(Mixture("mx_m", ["mx_b"]))
    task_registry.register_mixture(Mixture("mx_m", ["mx_b"]), overwrite=True)
    assert task_registry.get_mixture("mx_m").member_names == ["mx_b"]


def test_a_definition_registered_again_as_a_notebook_cell_run_twice_replaces_itself(registry):
    # was: running a cell that registers a task or mixture a second time raised DuplicateRegistrationError ("a task
    # named 'mx_cell' is already registered ...; pass overwrite=True") though nothing in it had changed
    def cell(**changes):
        definition = {"templates": [Template("t", "q {{y}} ||| {{y}}", answer_choices="a ||| b")],
                      "preprocessors": [task_registry.Rename({"x": "y"})], "metrics": ["accuracy"], "cluster": "c",
                      "held_out": True, **changes}
        task = task_registry.register_task(Task("mx_cell", GeneratorSource(_rows, num_rows=10), **definition))
        mixture = task_registry.register_mixture(Mixture("mx_cell_mix", {task: rate_num_examples(maximum=8),
                                                                          "mx_b": 2}))
        return task, mixture

    task_registry.register_task(_task("mx_b"))
    for _ in range(2):
        task, mixture = cell()
        assert task_registry.get_task("mx_cell") is task and task_registry.get_mixture("mx_cell_mix") is mixture
    for changes in ({"held_out": False}, {"cluster": "d"}, {"metrics": ["f1"]}, {"description": "edited"},
                    {"templates": [Template("t", "q: {{y}} ||| {{y}}", answer_choices="a ||| b")]}):
        with pytest.raises(DuplicateRegistrationError, match="'mx_cell' is already registered.*overwrite=True"):
            cell(**changes)
    for members in ({"mx_cell": rate_num_examples(maximum=9), "mx_b": 2}, {"mx_cell": 1.0, "mx_b": 3}, ["mx_b"]):
        with pytest.raises(DuplicateRegistrationError, match="'mx_cell_mix' is already registered"):
            task_registry.register_mixture(Mixture("mx_cell_mix", members))


def test_a_mixture_keeps_its_task_when_the_task_s_cell_is_run_again(registry):
    # was: a task's cell run again (its equal definition replacing the registered task) left a mixture of the first
    # Task object, registered from another cell, refused at flatten: "its task 'mx_again' is not the registered task
    # of that name ...; register it with overwrite=True or give it another name", though nothing had changed
    def task_cell():
        return task_registry.register_task(Task("mx_again", GeneratorSource(_rows, num_rows=10), [ECHO]))

    mixture = task_registry.register_mixture(Mixture("mx_again_mix", {task_cell(): 1.0, "mx_b": 3.0}))
    task_registry.register_task(_task("mx_b"))
    task_cell()
    assert mixture.flatten() == {"mx_again": 1.0, "mx_b": 3.0}
    task_registry.register_task(Task("mx_again", GeneratorSource(_rows, num_rows=11), [ECHO]), overwrite=True)
    with pytest.raises(TaskDefinitionError, match="'mx_again' is not the registered task of that name"):
        mixture.flatten()  # (another definition: its rate would train the other task)


def test_a_cell_run_again_with_a_changed_evaluation_rule_or_mixture_is_refused(registry):
    # the cell's mixture names its Task itself, as a notebook's does: a changed mixture is refused for its change, not
    # because a name stands where the registered one held a Task
    from task_registry import EvalProtocol
    from task_registry.bigbench import BigBenchFewShotFormat

    def rows(split, num_rows, seed, scale):
        return _rows(split, num_rows * scale, seed)

    def task(scale=1, **rules):  # (describe() leaves a generator's gen_kwargs out; definition_digest() holds them)
        source = GeneratorSource(rows, num_rows=10, gen_kwargs={"scale": scale})
        return task_registry.register_task(Task("mx_rules", source, [ECHO], **rules))

    def mixture(members, description=""):
        return task_registry.register_mixture(Mixture("mx_rules_mix", members, description=description))

    task_registry.register_task(_task("mx_b"))
    rules = {"few_shot_format": BigBenchFewShotFormat(task_prefix="Q: "), "eval_protocol": EvalProtocol("left")}
    cell = task(**rules)
    assert task(**rules) is task_registry.get_task("mx_rules")  # (the same rules: taken again)
    for changed in ({"few_shot_format": BigBenchFewShotFormat(task_prefix="A: ")}, {"eval_protocol": EvalProtocol()},
                    {"scale": 2}):
        with pytest.raises(DuplicateRegistrationError, match="'mx_rules' is already registered"):
            task(**{**rules, **changed})
    nested = Mixture("mx_rules_inner", {cell: 1.0})
    members = {cell: rate_num_examples(maximum=8), nested: 2.0}
    mixture(members, "both")
    assert mixture(members, "both") is task_registry.get_mixture("mx_rules_mix")
    for changed, description in (({cell: rate_num_examples(maximum=9), nested: 2.0}, "both"),
                                 ({cell: rate_num_examples(maximum=8), nested: 3.0}, "both"),
                                 ({cell: rate_num_examples(maximum=8), nested: 2.0, "mx_b": 1.0}, "both"),
                                 ({cell: rate_num_examples(maximum=8), Mixture("mx_rules_inner", ["mx_b"]): 2.0},
                                  "both"),
                                 (members, "edited")):
        with pytest.raises(DuplicateRegistrationError, match="'mx_rules_mix' is already registered"):
            mixture(changed, description)


def test_decorator_registers_a_generator_task(registry):
    @task_registry.task("mx_decorated", templates=[ECHO], num_rows={"train": 4, "validation": 2}, cluster="lists")
    def rows(split, num_rows, seed):
        for i in range(num_rows):
            yield {"x": str(i)}

    registered = task_registry.get_task("mx_decorated")
    assert registered.cluster == "lists" and registered.num_rows("train") == 4
    assert registered.to_dataset("validation")["targets"] == ["0", "1"]
    assert list(rows("train", 1, 0)) == [{"x": "0"}]  # the function itself is returned unchanged


def test_flatten_nested_mixtures_by_weight(registry):
    for name, rows in (("mx_a", 10), ("mx_b", 30), ("mx_c", 60)):
        task_registry.register_task(_task(name, rows=rows))
    inner = task_registry.register_mixture(Mixture("mx_inner", {"mx_b": 1.0, "mx_c": 3.0}))
    outer = Mixture("mx_outer", [("mx_a", 2.0), (inner, 6.0), ("mx_c", 1.0)])
    # the inner mixture contributes 6 · 1/4 to b and 6 · 3/4 to c; c also has its own rate 1
    assert outer.flatten() == pytest.approx({"mx_a": 2.0, "mx_b": 1.5, "mx_c": 5.5})
    proportional = Mixture("mx_prop", ["mx_a", "mx_b", "mx_c"], default_rate=rate_num_examples(maximum=40))
    assert proportional.flatten() == {"mx_a": 10.0, "mx_b": 30.0, "mx_c": 40.0}
    assert task_registry.normalize(proportional.flatten()) == pytest.approx({"mx_a": 0.125, "mx_b": 0.375, "mx_c": 0.5})


def test_mixture_cycles_and_bad_rates_are_errors(registry):
    task_registry.register_task(_task("mx_a"))
    task_registry.register_mixture(Mixture("mx_x", ["mx_a", "mx_y"]))
    task_registry.register_mixture(Mixture("mx_y", ["mx_x"]))
    with pytest.raises(TaskDefinitionError, match="cycle"):
        task_registry.get_mixture("mx_x").flatten()
    with pytest.raises(TaskDefinitionError, match="rate of 'mx_a'"):
        Mixture("bad", {"mx_a": -1})
    with pytest.raises(TaskDefinitionError, match="no members"):
        Mixture("empty", [])


def test_training_rates_hold_out_clusters(registry):
    task_registry.register_task(_task("mx_train", cluster="lists"))
    task_registry.register_task(_task("mx_nli", cluster="nli", held_out=True))
    task_registry.register_task(_task("mx_copa", cluster="commonsense", held_out=True))
    task_registry.register_task(_task("mx_bigbench", cluster="bigbench", eval_only=True))
    task_registry.register_mixture(Mixture("mx_all", {"mx_train": 1, "mx_nli": 2, "mx_copa": 3}))
    rates = task_registry.training_rates("mx_all", held_out_clusters=("nli", "commonsense"))
    assert rates == {"mx_train": 1.0}
    with pytest.raises(HeldOutTaskError) as info:
        task_registry.training_rates("mx_all", held_out_clusters=("nli",))
    assert (info.value.task, info.value.cluster) == ("mx_copa", "commonsense")
    assert "mx_copa" in str(info.value) and "commonsense" in str(info.value)
    assert task_registry.training_rates("mx_all", held_out_clusters=("nli",), force=True) == {
        "mx_train": 1.0, "mx_copa": 3.0}
    with_bigbench = Mixture("mx_bb", ["mx_train", "mx_bigbench"])
    with pytest.raises(EvalOnlyTaskError, match="mx_bigbench"):
        task_registry.training_rates(with_bigbench, force=True)
    assert task_registry.training_rates(with_bigbench, held_out_clusters=["bigbench"]) == {"mx_train": 1.0}
    with pytest.raises(TaskDefinitionError, match="no task left"):
        task_registry.training_rates("mx_all", held_out_clusters=("nli", "commonsense", "lists"))
    assert task_registry.training_rates("mx_train") == {"mx_train": 1.0}  # a single task name works too


def test_builtin_tasks_load_idempotently():
    first = task_registry.load_builtin_tasks()
    assert first and task_registry.load_builtin_tasks() == first
    procedural = task_registry.get_mixture("procedural").flatten()
    assert len(procedural) >= 10


def test_a_rate_function_on_a_nested_mixture_is_a_clear_error(registry):
    # was a raw AttributeError ('Mixture' object has no attribute 'num_rows') from inside rate_num_examples
    task_registry.register_task(_task("mx_fa"))
    task_registry.register_task(_task("mx_fb"))
    task_registry.register_mixture(Mixture("mx_inner", ["mx_fa"]))
    outer = Mixture("mx_outer", ["mx_inner", "mx_fb"], default_rate=rate_num_examples(5))
    with pytest.raises(TaskDefinitionError, match=r"rate_num_examples\(maximum=5, split='train', scale=1.0\) rates "
                                                  r"tasks by their size, not the mixture 'mx_inner'; give the mixture "
                                                  r"a number"):
        outer.flatten()
    assert Mixture("mx_outer", [("mx_inner", 5.0), ("mx_fb", rate_num_examples(5))]).flatten() == {
        "mx_fa": 5.0, "mx_fb": 5.0}


def test_an_unknown_member_names_the_mixtures_that_lead_to_it(registry):
    # was: "unknown task 'mx_bb' ..." alone, not saying which mixture (here: one nested in another) names it
    task_registry.register_task(_task("mx_a"))
    task_registry.register_task(_task("mx_b"))
    task_registry.register_mixture(Mixture("mx_inner", ["mx_a", "mx_bb"]))
    with pytest.raises(task_registry.UnknownTaskError) as raised:
        Mixture("mx_outer", {"mx_inner": 1.0, "mx_a": 2.0}).flatten()
    assert str(raised.value).startswith("mixture 'mx_outer' → 'mx_inner': unknown task or mixture 'mx_bb'; did you "
                                        "mean 'mx_b'")
    assert raised.value.name == "mx_bb" and isinstance(raised.value, KeyError)


def test_a_task_member_must_be_the_registered_task_of_its_name(registry):
    # the flattened rates name tasks, which training resolves through the registry: a Task member of the name of
    # another registered task had that other task trained in its place, silently
    registered = task_registry.register_task(_task("mx_a", rows=10))
    other = _task("mx_a", rows=99)
    with pytest.raises(TaskDefinitionError, match=r"^mixture 'mx_m': its task 'mx_a' is not the registered task of "
                                                  r"that name"):
        Mixture("mx_m", [other]).flatten()
    with pytest.raises(TaskDefinitionError, match=r"^mixture 'mx_outer' → 'mx_inner': task 'mx_z' is not registered"):
        Mixture("mx_outer", [Mixture("mx_inner", [_task("mx_z")])]).flatten()
    assert Mixture("mx_m", [registered]).flatten() == {"mx_a": 1.0}


@pytest.mark.parametrize("maximum", [0, -5])
def test_rate_num_examples_refuses_a_cap_that_is_not_positive(maximum):
    # was: maximum=0 gave every task rate 0 (seqio reads a cap of 0 as no cap), failing later as an empty mixture
    with pytest.raises(TaskDefinitionError, match=f"maximum must be a positive number of examples .*got {maximum}"):
        rate_num_examples(maximum=maximum)


@pytest.mark.parametrize("rates,match", [
    # were scaled into "probabilities" -1 and 2 (and all NaN)
    ({"a": -1.0, "b": 2.0}, r"rate of 'a' must be a finite number >= 0, got -1.0"),
    ({"a": float("nan"), "b": 2.0}, r"rate of 'a' must be a finite number >= 0, got nan"),
    ({"a": 1.0, "b": float("inf")}, r"rate of 'b' must be a finite number >= 0, got inf"),
    ({"a": "1", "b": 2.0}, r"rate of 'a' must be a finite number >= 0, got '1'"),
])
def test_normalize_refuses_rates_that_are_not_weights(rates, match):
    with pytest.raises(TaskDefinitionError, match=match):
        normalize(rates)


def test_normalize_scales_to_one():
    assert normalize({"a": 1, "b": 3, "c": 0}) == {"a": 0.25, "b": 0.75, "c": 0.0}
    assert normalize({"a": np.int64(1), "b": np.float32(1)}) == {"a": 0.5, "b": 0.5}


def test_a_mixture_of_examples_proportional_rates_pickles(registry):
    # rate_num_examples returned a closure renamed "rate_num_examples(...)", which pickle could not find: the
    # built-in real_train and real_train_denoising mixtures could not be pickled
    import pickle

    for name, rows in (("mx_a", 10), ("mx_b", 30), ("mx_c", 60)):
        task_registry.register_task(_task(name, rows=rows))
    mixture = pickle.loads(pickle.dumps(Mixture("mx_prop", ["mx_a", "mx_b", "mx_c"],
                                                default_rate=rate_num_examples(maximum=40, scale=0.5))))
    assert mixture.flatten() == {"mx_a": 5.0, "mx_b": 15.0, "mx_c": 30.0}  # min(0.5 · rows, 40)
    assert repr(rate_num_examples(40)) == "rate_num_examples(maximum=40, split='train', scale=1.0)"


@pytest.mark.parametrize("args,match", [
    # were raw TypeError ('int' object is not iterable) and AttributeError ('NoneType' object has no attribute)
    (("mx_m", 5), r"held_out_clusters must be a cluster name or a list of them, got 5"),
    ((None,), r"training_rates takes a mixture or task \(or its name\), got None"),
    ((["mx_a"],), r"training_rates takes a mixture or task \(or its name\), got \['mx_a'\]"),
])
def test_training_rates_names_arguments_of_the_wrong_type(registry, args, match):
    task_registry.register_task(_task("mx_a"))
    task_registry.register_mixture(Mixture("mx_m", ["mx_a"]))
    with pytest.raises(TaskDefinitionError, match=match):
        task_registry.training_rates(*args)
    assert task_registry.training_rates("mx_m", ("qa",)) == {"mx_a": 1.0}


def test_a_mixture_whose_rates_are_all_zero_is_refused():
    # was accepted: training_rates then gave every task rate 0, refused later by the explicit sampler without
    # naming the mixture, and drawn by size under the other strategies
    with pytest.raises(TaskDefinitionError, match="mixture 'm': every rate is 0; give at least one member a rate > 0"):
        Mixture("m", {"a": 0, "b": 0.0})
    assert Mixture("m", {"a": 0, "b": 1}).member_names == ["a", "b"]
    assert Mixture("m", {"a": 0, "b": rate_num_examples()}).member_names == ["a", "b"]  # a function's rate is unknown


def test_a_task_reached_directly_before_a_nested_mixture_gets_the_sum(registry):
    for name in ("mx_b", "mx_c"):
        task_registry.register_task(_task(name))
    inner = Mixture("mx_inner", {"mx_b": 1.0, "mx_c": 3.0})
    # c: its own rate 1, then 6 · 3/4 from the inner mixture
    assert Mixture("mx_outer", [("mx_c", 1.0), (inner, 6.0)]).flatten() == pytest.approx({"mx_b": 1.5, "mx_c": 5.5})


def test_a_nested_mixture_whose_rate_functions_give_zero_is_named(registry):
    for name in ("mx_a", "mx_b"):
        task_registry.register_task(_task(name))
    zero = Mixture("mx_zero", ["mx_a"], default_rate=lambda task: 0.0)
    with pytest.raises(TaskDefinitionError, match="mixture 'mx_zero' \\(inside 'mx_outer'\\) has total rate 0"):
        Mixture("mx_outer", [(zero, 1.0), ("mx_b", 1.0)]).flatten()


@pytest.mark.parametrize("entry,match", [
    (("mx_a", float("inf")), "rate of 'mx_a' must be a finite number"),
    (("mx_a", float("nan")), "rate of 'mx_a' must be a finite number"),
    (("mx_a", 1.0, 2.0), "expected \\(member, rate\\) pairs"),
])
def test_a_member_entry_that_is_not_a_finite_rate_pair_is_refused(entry, match):
    with pytest.raises(TaskDefinitionError, match=match):
        Mixture("bad", [entry])


def test_a_selection_is_split_on_commas_with_spaces_and_a_shared_name_resolves_to_the_mixture(registry):
    a = task_registry.register_task(_task("mx_a"))
    task_registry.register_task(_task("mx_b"))
    assert task_registry.resolve_selection(" mx_a , mx_b ").member_names == ["mx_a", "mx_b"]
    assert task_registry.resolve_selection("mx_a") is a
    shared = task_registry.register_mixture(Mixture("mx_a", ["mx_b"]))  # a mixture first, then a task
    assert task_registry.resolve("mx_a") is shared


def test_a_preprocessor_entry_with_two_kinds_is_refused():
    from task_registry.preprocessors import from_config

    with pytest.raises(TaskDefinitionError, match="expected one of .* as the only key"):
        from_config({"filter": "x > 1", "rename": {"a": "b"}})


def test_rate_num_examples_scales_before_the_cap_as_seqio(registry):
    # seqio's mixing_rate_num_examples: rate = n · scale, then min(rate, maximum); scaling a capped count would
    # give a big task scale · maximum (here 2 · 40 = 80) and let a cap be exceeded
    for name, rows in (("sc_small", 10), ("sc_big", 100)):
        task_registry.register_task(_task(name, rows=rows))
    up = Mixture("sc_up", ["sc_small", "sc_big"], default_rate=rate_num_examples(maximum=40, scale=2.0))
    assert up.flatten() == {"sc_small": 20.0, "sc_big": 40.0}
    down = Mixture("sc_down", ["sc_small", "sc_big"], default_rate=rate_num_examples(maximum=40, scale=0.25))
    assert down.flatten() == {"sc_small": 2.5, "sc_big": 25.0}  # 0.25 · 100 is under the cap


def test_rate_num_examples_takes_seqios_temperature_after_the_cap(registry):
    # seqio's mixing_rate_num_examples(maximum, scale, temperature): min(n · scale, maximum) ** (1 / T); the
    # temperature was not accepted (TypeError), so a mixture could not be defined with T5's T = 2 rates
    for name, rows in (("tp_small", 9), ("tp_mid", 100), ("tp_big", 400)):
        task_registry.register_task(_task(name, rows=rows))
    names = ["tp_small", "tp_mid", "tp_big"]
    flat = Mixture("tp_t2", names, default_rate=rate_num_examples(temperature=2)).flatten()
    assert flat == pytest.approx({"tp_small": 3.0, "tp_mid": 10.0, "tp_big": 20.0})
    capped = Mixture("tp_cap", names, default_rate=rate_num_examples(maximum=128, scale=0.5, temperature=4)).flatten()
    assert capped == pytest.approx({"tp_small": 4.5 ** 0.25, "tp_mid": 50 ** 0.25, "tp_big": 128 ** 0.25})  # 200 capped
    assert normalize(flat) == pytest.approx({"tp_small": 3 / 33, "tp_mid": 10 / 33, "tp_big": 20 / 33})
    assert repr(rate_num_examples(5, temperature=2)) == ("rate_num_examples(maximum=5, split='train', scale=1.0, "
                                                         "temperature=2.0)")
    for temperature in (0, -1.0, float("inf"), True, "2"):
        with pytest.raises(TaskDefinitionError, match="temperature must be a finite number > 0"):
            rate_num_examples(temperature=temperature)
