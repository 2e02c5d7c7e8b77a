"""`t2t-mtl mixture show`: the rates table and plot for a registered (nested) mixture."""
from __future__ import annotations

import re

import numpy as np
import pytest

import task_registry
from task_registry import GeneratorSource, Mixture, Task, Template
from t2t_mtl.cli import main

SIZES = {"cli_big": 900, "cli_mid": 100, "cli_small": 16}


def rows(split, num_rows, seed):
    return ({"x": str(i)} for i in range(num_rows))


@pytest.fixture()
def mixture():
    templates = [Template("t1", "{{x}} ||| {{x}}"), Template("t2", "say {{x}} ||| {{x}}")]
    task_registry.load_builtin_tasks()  # the CLI resolves built-in names beside these
    with task_registry.isolated_registry():
        for name, size in SIZES.items():
            task_registry.register_task(Task(name, GeneratorSource(rows, num_rows={"train": size}),
                                             templates, splits=("train",)))
        inner = Mixture("cli_inner", ["cli_mid", "cli_small"])
        task_registry.register_mixture(Mixture("cli_mix", [("cli_big", 1.0), (inner, 1.0)]))
        yield "cli_mix"


def parse(output):
    table = {}
    for line in output.splitlines():
        fields = line.split()
        if fields and fields[0] in SIZES:
            table[fields[0]] = [float(v) for v in fields[1:]]
    return table


def test_show_temperature_rates_and_plot(mixture, tmp_path, capsys):
    plot = tmp_path / "rates.png"
    assert main(["mixture", "show", mixture, "--sampler", "temperature", "--alpha", "2", "--plot", str(plot)]) == 0
    table = parse(capsys.readouterr().out)
    n = np.array([900, 100, 16], dtype=float)
    expected = np.sqrt(n) / np.sqrt(n).sum()
    for (task, values), p in zip(table.items(), expected):
        assert values[0] == SIZES[task]
        assert values[1] == pytest.approx(p, abs=1e-4)
        assert values[2] == pytest.approx(p, abs=0.01)  # realised share of 100k draws
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_show_schedule_over_epochs(mixture, capsys):
    assert main(["mixture", "show", mixture, "--sampler", "annealed", "--epochs", "3", "--draws", "0"]) == 0
    table = parse(capsys.readouterr().out)
    n = np.array([900, 100, 16], dtype=float)
    for epoch, alpha in enumerate([1.0, 1 / 0.6, 5.0]):
        expected = n ** (1 / alpha) / (n ** (1 / alpha)).sum()
        got = [table[t][1 + epoch] for t in SIZES]
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_show_explicit_flattens_nested_rates(mixture, capsys):
    assert main(["mixture", "show", mixture, "--draws", "0"]) == 0
    table = parse(capsys.readouterr().out)
    assert [table[t][1] for t in SIZES] == pytest.approx([0.5, 0.25, 0.25])


def test_show_template_caps(mixture, capsys):
    # 2 templates each, T0 dataset cap 200 -> per-template cap 100: n = 2*min(rows, 100)
    assert main(["mixture", "show", mixture, "--sampler", "proportional", "--dataset-cap", "200",
                 "--draws", "0"]) == 0
    table = parse(capsys.readouterr().out)
    expected = np.array([200, 200, 32]) / 432
    assert [table[t][1] for t in SIZES] == pytest.approx(expected, abs=1e-4)


def test_show_errors(mixture, capsys):
    assert main(["mixture", "show", "cli_mixx"]) == 2
    assert "cli_mix" in capsys.readouterr().err
    assert main(["mixture", "show", mixture, "--sampler", "temperature", "--set", "alpah=2"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"unknown parameter 'alpah'.*'alpha'", err)
    assert main(["mixture", "show", "parity,count_word,parity", "--draws", "0"]) == 2  # was: shown once, silently
    assert "'parity,count_word,parity' names parity more than once" in capsys.readouterr().err


def test_show_without_draws_has_no_realised_columns_and_refuses_a_set_without_a_value(mixture, capsys):
    # mutation testing: the header's 'real e=' columns printed for --draws 0 (no shares drawn) and a --set KEY
    # without '=' taken as the empty string passed every test
    assert main(["mixture", "show", mixture, "--sampler", "annealed", "--epochs", "2", "--draws", "0"]) == 0
    header = capsys.readouterr().out.splitlines()[2]
    assert header.split() == ["task", "rows", "p", "e=1", "p", "e=2"], header
    assert main(["mixture", "show", mixture, "--sampler", "temperature", "--set", "alpha"]) == 2
    assert capsys.readouterr().err == "error: --set expects KEY=VALUE, got 'alpha'\n"

def test_an_unknown_sampler_is_named_with_the_module_path_that_registers_one_intact(mixture, capsys):
    # was: "... becomes a strategy through t2t_mtl.--set register_sampler": the rewriting of the sampler's config
    # keys (sampling.alpha) as options took the module path's 'sampling.register_sampler' for one
    assert main(["mixture", "show", mixture, "--sampler", "temperatur", "--alpha", "2", "--draws", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown sampling strategy 'temperatur'. Did you mean 'temperature'"), err
    assert "through t2t_mtl.sampling.register_sampler, in a module" in err and "--set" not in err, err

@pytest.mark.parametrize("options, option, sampler", [(["--alpha", "2"], "--alpha", "explicit (the default"),
                                                     (["--sampler", "uniform", "--cap", "50"], "--cap", "uniform")])
def test_a_parameter_option_the_sampler_lacks_is_named_with_the_samplers_that_take_it(mixture, capsys, options, option,
                                                                                     sampler):
    # was: "unknown parameter 'alpha' for sampling strategy 'explicit'. Valid parameters: block_size, mode, rates,
    # strategy." — neither the option nor the samplers that take it
    from t2t_mtl.sampling import STRATEGIES

    assert main(["mixture", "show", mixture, "--draws", "0", *options]) == 2
    err = capsys.readouterr().err
    takers = [name for name, cls in STRATEGIES.items() if option[2:] in cls.PARAMS]
    assert err.startswith(f"error: {option} is a parameter of --sampler ") and f"--sampler {sampler}" in err, err
    assert "temperature" in takers and all(name in err for name in takers) and err.count("\n") == 1


def test_show_plot_into_a_new_folder_and_bad_parameter_values(mixture, tmp_path, capsys):
    plot = tmp_path / "new" / "folder" / "rates.png"
    assert main(["mixture", "show", mixture, "--draws", "0", "--plot", str(plot)]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["mixture", "show", mixture, "--draws", "0", "--plot", str(tmp_path)]) == 2  # a folder
    assert f"--plot {tmp_path} is a folder; give a file name" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert main(["mixture", "show", mixture, "--draws", "0", "--plot", str(tmp_path / "afile" / "r.png")]) == 2
    assert "afile exists and is not a folder" in capsys.readouterr().err
    # was matplotlib's "Format 'txt' is not supported" ValueError traceback, after the rates were computed
    assert main(["mixture", "show", mixture, "--draws", "0", "--plot", str(tmp_path / "rates.txt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --plot {tmp_path / 'rates.txt'}: a .txt file cannot hold a plot; end the name "
                          f"with .png (or one of ") and ".svg" in err and err.count("\n") == 1
    assert not (tmp_path / "rates.txt").exists()
    assert main(["mixture", "show", mixture, "--draws", "0", "--plot", str(tmp_path / "rates.PDF")]) == 0
    capsys.readouterr()
    # was: written to rates.png by matplotlib, while the command said "plot written to .../rates"
    assert main(["mixture", "show", mixture, "--draws", "0", "--plot", str(tmp_path / "rates")]) == 0
    assert capsys.readouterr().out.endswith(f"plot written to {tmp_path / 'rates'}\n")
    assert (tmp_path / "rates").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not (tmp_path / "rates.png").exists()
    assert main(["mixture", "show", mixture, "--sampler", "bandit_softmax", "--set", "tau=abc"]) == 2
    assert "'tau' must be a number, got 'abc'" in capsys.readouterr().err
    assert main(["mixture", "show", mixture, "--sampler", "proportional", "--cap", "-5"]) == 2
    assert "cap must be >= 0" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, expected", [
    ("--draws", "-5", "--draws must be >= 0, got -5"),  # was "cannot draw a negative number of tasks (-5)"
    ("--epochs", "0", "--epochs must be >= 1, got 0"),  # was "epochs must be >= 1": no such key or flag
    ("--seed", "-1", "--seed must be >= 0, got -1"),  # was "the sampling seed (training.seed)": not this command's
])
def test_show_bad_counts_name_the_flag(mixture, capsys, flag, value, expected):
    assert main(["mixture", "show", mixture, "--sampler", "annealed", flag, value]) == 2
    assert capsys.readouterr().err.strip() == f"error: {expected}"


@pytest.mark.parametrize("options, expected", [
    # was "sampling.alpha (the temperature) must be > 0, ...": a config key, not the option typed
    (["--sampler", "temperature", "--alpha", "0"], "--alpha (the temperature) must be > 0, got 0.0"),
    (["--sampler", "temperature", "--alpha", "2", "--set", "alpha=-1"], "--set alpha (the temperature) must be > 0"),
    (["--sampler", "proportional", "--scale", "0"], "--scale must be > 0, got 0.0"),
    (["--sampler", "temperature", "--template-cap", "3", "--dataset-cap", "4"],
     "give either --template-cap or --dataset-cap, not both"),  # was: bare template_cap / dataset_cap
    (["--sampler", "temperature", "--dataset-cap", "1"], "raise --dataset-cap to at least 2 (or give --template-cap)"),
    (["--sampler", "dynamic_temperature", "--set", "alpha_0=0"], "needs --set alpha_0 and --set alpha_max > 0"),
    # its hint was "sampling.strategy uniform", written here as "--set strategy uniform", which sets nothing
    (["--sampler", "dynamic_temperature", "--set", "alpha_max=inf"],
     "--set alpha_max > 0 and finite, got 1.0, inf (for a uniform mixture, use the uniform strategy)"),
    (["--sampler", "bandit_softmax", "--set", "tau=0"], "--set tau must be > 0, got 0"),
])
def test_a_bad_parameter_value_names_the_option_that_set_it(mixture, capsys, options, expected):
    assert main(["mixture", "show", mixture, "--draws", "0", *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and "sampling." not in err, err


def test_show_yaml_tasks_from_a_tasks_dir(mixture, tmp_path, capsys):
    # was: no --tasks-dir, so the rates of a YAML task could not be shown; NAME may list task names
    from engine_helpers import write_yaml_task

    tasks_dir = write_yaml_task(tmp_path / "tasks", "yaml_rows", rows=20)
    assert main(["mixture", "show", "yaml_rows,cli_small", "--tasks-dir", str(tasks_dir), "--sampler",
                 "proportional", "--draws", "0"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith(("yaml_", "cli_"))}
    assert rows["yaml_rows"] == ["20", "0.5556"] and rows["cli_small"] == ["16", "0.4444"]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.yaml").write_text("name: [x]\n")
    assert main(["mixture", "show", "yaml_rows", "--tasks-dir", str(tmp_path / "bad")]) == 2
    assert "broken.yaml:1:" in capsys.readouterr().err


def test_show_drops_held_out_clusters_as_training_does(capsys):
    # `mixture show procedural` showed the held-out comparison tasks at 1/15 each, while the quickstart trains the
    # other 12 tasks at 1/12: the shares a run draws could not be read before training
    task_registry.load_builtin_tasks()
    procedural = task_registry.get_mixture("procedural").flatten()
    kept = [t for t in procedural if task_registry.get_task(t).cluster != "comparison"]
    assert len(procedural) == 15 and len(kept) == 12
    assert main(["mixture", "show", "procedural", "--draws", "0", "--held-out-clusters", "comparison"]) == 0
    out = capsys.readouterr().out
    shown = {fields[0]: float(fields[2]) for fields in map(str.split, out.splitlines()) if fields[:1]
             and fields[0] in procedural}
    assert shown == pytest.approx(dict.fromkeys(kept, 1 / 12), abs=1e-4) and "flagged held_out" not in out
    assert main(["mixture", "show", "procedural", "--draws", "0"]) == 0
    assert "flagged held_out: compare_numbers, compare_lengths, alphabetical_order — a run drops them" in (
        capsys.readouterr().out)
    assert main(["mixture", "show", "procedural", "--held-out-clusters", "comparsion"]) == 2
    assert "--held-out-clusters: no registered task is in cluster 'comparsion'; did you mean 'comparison'?" in (
        capsys.readouterr().err)


def test_show_names_the_tasks_a_held_out_cluster_keeps_out_of_the_table(tmp_path, capsys):
    # was: `mixture show my_task,parity --held-out-clusters sentiment` left my_task out of the table without a word,
    # as if the name had been ignored, and so did --config for its data.held_out_clusters
    import yaml

    task_registry.load_builtin_tasks()
    comparison = [t for t in task_registry.get_mixture("procedural").flatten()
                  if task_registry.get_task(t).cluster == "comparison"]
    assert main(["mixture", "show", "procedural", "--draws", "0", "--held-out-clusters", "comparison"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"held out with their cluster (comparison), never drawn: {', '.join(comparison)}"
    assert main(["mixture", "show", "parity,compare_numbers,sort_words", "--draws", "0", "--held-out-clusters",
                 "comparison,lists"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[3:-1]] == ["parity"]
    assert out[-1] == "held out with their cluster (comparison, lists), never drawn: compare_numbers, sort_words"
    assert main(["mixture", "show", "procedural", "--draws", "0"]) == 0
    assert "never drawn" not in capsys.readouterr().out
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": {"dims": {"d_model": 8}},
                                      "data": {"mixture": None, "tasks": ["parity", "procedural_held_out"],
                                               "held_out_clusters": ["comparison"], "max_examples_per_task": 20}}))
    assert main(["mixture", "show", "--config", str(config), "--draws", "0"]) == 0
    held_out = [t for t in task_registry.get_mixture("procedural_held_out").flatten() if t in comparison]
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"held out with their cluster (comparison), never drawn: {', '.join(held_out)}")


def test_show_names_only_the_held_out_clusters_tasks_of_a_mixture_that_data_tasks_picks_from(tmp_path, capsys):
    # (mutation testing left it unkilled, M12: --config's note naming every task of the mixture the run does not
    # train, those data.tasks did not pick too, passed every test)
    import yaml

    task_registry.load_builtin_tasks()
    comparison = [t for t in task_registry.get_mixture("procedural").flatten()
                  if task_registry.get_task(t).cluster == "comparison"]
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": {"dims": {"d_model": 8}},
                                      "data": {"mixture": "procedural", "tasks": ["parity", "sort_words"],
                                               "held_out_clusters": ["comparison"], "max_examples_per_task": 20}}))
    assert main(["mixture", "show", "--config", str(config), "--draws", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[3:-1]] == ["parity", "sort_words"]
    assert out[-1] == f"held out with their cluster (comparison), never drawn: {', '.join(comparison)}"


def test_show_config_names_the_held_out_clusters_tasks_where_data_tasks_lists_only_trained_ones(tmp_path, capsys):
    # was: `data.tasks: [parity, sort_words]` with `held_out_clusters: [comparison]` (data.tasks may not name a
    # held-out cluster's task) showed no held-out line, though the run never draws those tasks and its held-out
    # evaluation scores them
    import yaml

    from t2t_mtl.config import load_config
    from t2t_mtl.engine.validation import evaluation_plan

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": {"dims": {"d_model": 8}},
                                      "data": {"mixture": None, "tasks": ["parity", "sort_words"],
                                               "held_out_clusters": ["comparison"], "max_examples_per_task": 20},
                                      "evaluation": {"held_out": True}}))
    assert main(["mixture", "show", "--config", str(config), "--draws", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[3:-1]] == ["parity", "sort_words"]
    scored = evaluation_plan(load_config(str(config)))[0]  # the reference: what its held-out evaluation scores
    assert len(scored) == 3
    assert out[-1] == f"held out with their cluster (comparison), never drawn: {', '.join(scored)}"


def test_show_the_mixture_and_sampler_of_a_training_config(mixture, tmp_path, capsys):
    # was: only NAME and sampler options, so what a config trains on had to be retyped as options (or read from the
    # start of a run); the sizes are the train rows capped at data.max_examples_per_task, as training caps them
    import yaml

    config = tmp_path / "run.yaml"
    model = {"dims": {"d_model": 8}}
    config.write_text(yaml.safe_dump({"model": model, "data": {"mixture": mixture, "max_examples_per_task": 400},
                                      "sampling": {"strategy": "temperature", "alpha": 2.0}}))
    assert main(["mixture", "show", "--config", str(config), "--draws", "0"]) == 0
    out = capsys.readouterr().out
    assert f"mixture '{mixture} of {config}', sampler " in out
    roots = {"cli_big": 400 ** 0.5, "cli_mid": 100 ** 0.5, "cli_small": 16 ** 0.5}  # p ∝ n^(1/2), n capped at 400
    table = parse(out)
    assert {name: row[0] for name, row in table.items()} == {"cli_big": 400, "cli_mid": 100, "cli_small": 16}
    for name, root in roots.items():
        assert table[name][1] == pytest.approx(root / sum(roots.values()), abs=5e-5)
    config.write_text(yaml.safe_dump({"model": model, "data": {"tasks": {"cli_big": 3.0, "cli_small": 1.0}},
                                      "sampling": {"strategy": "explicit"}}))
    assert main(["mixture", "show", "--config", str(config), "--draws", "0"]) == 0
    table = parse(capsys.readouterr().out)  # the config's own rates, not the registered mixture's
    assert {name: row[1] for name, row in table.items()} == {"cli_big": 0.75, "cli_small": 0.25}


def test_show_config_warns_as_train_does_of_rates_the_sampler_does_not_draw_by(mixture, tmp_path, capsys):
    # was: silent, so `data.tasks: {my_webq: 3, ...}` under the default temperature sampler showed other rates than
    # those written, with no word why (train warns; unused_mixture_rates' own warning points to `mixture show`)
    import yaml

    config = tmp_path / "run.yaml"
    model = {"dims": {"d_model": 8}}
    written = {"data": {"tasks": {"cli_big": 3.0, "cli_small": 1.0}}, "sampling": {"strategy": "temperature"}}
    for data, sampling, unused in ((written["data"], written["sampling"], "data.tasks gives rates"),
                                   ({"mixture": mixture}, {"strategy": "uniform"}, f"data.mixture {mixture!r} gives"),
                                   (written["data"], {"strategy": "explicit"}, None)):
        config.write_text(yaml.safe_dump({"model": model, "data": data, "sampling": sampling}))
        assert main(["mixture", "show", "--config", str(config), "--draws", "0"]) == 0
        shown = capsys.readouterr().err
        assert main(["train", str(config), "--print-config"]) == 0
        trained = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
        assert shown.splitlines() == trained  # the reference: train's own warnings of the config
        assert (unused is None) == (shown == "")
        assert unused is None or shown.startswith(f"warning: {unused}") and "they go unused" in shown


def test_show_a_config_with_all_templates_counts_examples_of_each_template(mixture, tmp_path, capsys):
    # data.all_templates trains each row in each template: the sizes are rows x templates, and the column said
    # "rows" all the same (121228 "rows" for glue_sst2's 60614 rows in t0_lora)
    import yaml

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": {"dims": {"d_model": 8}},
                                      "data": {"mixture": mixture, "max_examples_per_task": 400,
                                               "all_templates": True},
                                      "sampling": {"strategy": "temperature", "alpha": 2.0}}))
    assert main(["mixture", "show", "--config", str(config), "--draws", "0"]) == 0
    out = capsys.readouterr().out
    rows = {"cli_big": 400, "cli_mid": 100, "cli_small": 16}  # capped at 400; t1 and t2 each
    header = next(line for line in out.splitlines() if line.startswith("task"))
    assert header.split()[:3] == ["task", "examples", "p"]
    table = parse(out)
    assert {name: row[0] for name, row in table.items()} == {name: 2 * n for name, n in rows.items()}
    t0 = {name: 2 * n ** 0.5 for name, n in rows.items()}  # one seqio task a template
    assert {name: row[1] for name, row in table.items()} == pytest.approx(
        {name: rate / sum(t0.values()) for name, rate in t0.items()}, abs=5e-5)


def test_show_a_config_with_all_templates_counts_and_rates_a_skipping_template_at_its_own_examples(mixture, tmp_path,
                                                                                                   capsys):
    # was: a task's size was its rows times its templates whatever they rendered, and each template was rated at
    # that mean; training counts the examples it renders, and T0 rated each template at its own
    import yaml

    templates = [Template("t1", "{{x}} ||| {{x}}"), Template("odd", "{{x}} ||| {% if x | int % 2 %}{{x}}{% endif %}")]
    task_registry.register_task(Task("cli_odd", GeneratorSource(rows, num_rows={"train": 50}), templates,
                                     splits=("train",)))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": {"dims": {"d_model": 8}},
                                      "data": {"tasks": ["cli_mid", "cli_odd"], "all_templates": True},
                                      "sampling": {"strategy": "temperature", "alpha": 2.0}}))
    assert main(["mixture", "show", "--config", str(config), "--draws", "0"]) == 0
    table = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()
             if line.startswith("cli_")}
    assert {name: int(row[0]) for name, row in table.items()} == {"cli_mid": 2 * 100, "cli_odd": 50 + 25}
    hand = {"cli_mid": 2 * 100 ** 0.5, "cli_odd": 50 ** 0.5 + 25 ** 0.5}  # the odd numbers below 50: 25
    assert {name: float(row[1]) for name, row in table.items()} == pytest.approx(
        {name: rate / sum(hand.values()) for name, rate in hand.items()}, abs=5e-5)


def test_show_config_names_the_held_out_tasks_it_trains_as_trained_deliberately(tmp_path, capsys):
    # was: "a run drops them with their cluster (...; --held-out-clusters here)", an option --config refuses, for
    # tasks the config's run trains because its data.train_held_out names them
    import yaml

    config = tmp_path / "run.yaml"
    data = {"tasks": ["parity", "compare_numbers"], "held_out_clusters": [], "train_held_out": ["compare_numbers"],
            "max_examples_per_task": 50}
    config.write_text(yaml.safe_dump({"model": {"dims": {"d_model": 8}}, "data": data}))
    assert main(["mixture", "show", "--config", str(config), "--draws", "0"]) == 0
    note = capsys.readouterr().out.splitlines()[-1]
    assert note == ("flagged held_out: compare_numbers — trained deliberately, as the config's data.train_held_out "
                    "says")


@pytest.mark.parametrize("arguments, problem", [
    (["cli_mix", "--config", "quickstart"], "drop NAME"),
    (["--config", "quickstart", "--sampler", "uniform", "--alpha", "2"], "drop --sampler, --alpha"),
    (["--config", "quickstart", "--held-out-clusters", "x", "--set", "a=1"], "drop --held-out-clusters, --set"),
    (["--config", "quickstart", "--tasks-dir", "t", "--task-module", "m"], "drop --tasks-dir, --task-module "),
    (["--config", "quickstart", "--split", "validation"], "drop --split "),  # (mutation testing: was untested)
    ([], "give a mixture NAME (or --config CFG"),
])
def test_show_with_a_config_refuses_what_the_config_sets(mixture, capsys, arguments, problem):
    assert main(["mixture", "show", *arguments]) == 2
    assert problem in capsys.readouterr().err


FLAT_SAMPLER = """
import numpy as np

from t2t_mtl.sampling import MixtureSampler, register_sampler


@register_sampler
class FlatForCli(MixtureSampler):
    strategy = "flat_for_cli"

    def _compute_probabilities(self):
        return np.ones(len(self.tasks))
"""


def test_show_a_sampler_that_a_task_module_registers(mixture, tmp_path, capsys):
    # was: --sampler took only the shipped strategies (argparse's choices, read before any --task-module was
    # imported), so a registered strategy was "invalid choice"
    import sys

    from t2t_mtl.sampling import STRATEGIES

    module = tmp_path / "flat_for_cli_module.py"
    module.write_text(FLAT_SAMPLER)
    saved = dict(STRATEGIES)  # (restored below, as the module's import)
    try:
        assert main(["mixture", "show", mixture, "--sampler", "flat_for_cli", "--task-module", str(module),
                     "--draws", "0"]) == 0
        assert [row[1] for row in parse(capsys.readouterr().out).values()] == pytest.approx([1 / 3] * 3, abs=1e-4)
        assert main(["mixture", "show", mixture, "--sampler", "flat_for_cl", "--draws", "0"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: unknown sampling strategy 'flat_for_cl'. Did you mean 'flat_for_cli'?"), err
        assert "; registered: flat_for_cli." in err
    finally:
        STRATEGIES.clear()
        STRATEGIES.update(saved)
        sys.modules.pop(module.stem, None)


def test_show_config_warns_of_every_sampling_warning_train_gives_with_or_without_all_templates(mixture, tmp_path,
                                                                                                capsys):
    # `mixture show --config` prints train's warnings of the sampling: both of them (unused rates, tchebycheff over
    # one-task micro-batches), for a config counting examples of each template (data.all_templates) as for rows
    import yaml

    config = tmp_path / "run.yaml"
    for all_templates in (False, True):
        config.write_text(yaml.safe_dump({"model": {"dims": {"d_model": 8}},
                                          "data": {"tasks": {"cli_big": 3.0, "cli_small": 1.0},
                                                   "all_templates": all_templates},
                                          "sampling": {"strategy": "temperature"},
                                          "weighting": {"method": "tchebycheff"}}))
        assert main(["mixture", "show", "--config", str(config), "--draws", "0"]) == 0
        shown = capsys.readouterr().err
        assert main(["train", str(config), "--print-config"]) == 0
        trained = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
        assert shown.splitlines() == trained, all_templates  # the reference: train's own warnings of the config
        assert len(trained) == 2 and "data.tasks gives rates" in trained[0] and "tchebycheff" in trained[1]


def test_show_config_warns_as_train_does_of_the_data_its_held_out_evaluation_reads(tmp_path, capsys):
    # was: silent, where train warns that held-out 'seen' reads the file trained task 'mine' trains on, and that
    # held-out 'theirs' and 'again' read one file (a user's ps_cb beside the built-in super_glue_cb: CB scored twice);
    # test_shared_data has train print these lines
    import yaml

    from engine_helpers import write_yaml_task

    tasks = write_yaml_task(tmp_path / "tasks", "mine")
    (tasks / "theirs.jsonl").write_text((tasks / "mine.jsonl").read_text())
    for name, rows in (("theirs", "theirs"), ("again", "theirs"), ("seen", "mine")):  # held out, cluster theirs
        (tasks / f"{name}.yaml").write_text((tasks / "mine.yaml").read_text().replace("name: mine", f"name: {name}")
                                            .replace("cluster: yaml_tasks", "cluster: theirs")
                                            .replace("held_out: false", "held_out: true")
                                            .replace("mine.jsonl", f"{rows}.jsonl"))
    config = tmp_path / "run.yaml"
    data = {"mixture": None, "tasks": ["mine"], "tasks_dir": str(tasks), "held_out_clusters": ["theirs"]}
    for evaluation, repeated in (({"held_out": True}, True), ({"tasks": ["seen", "theirs", "again"]}, False)):
        config.write_text(yaml.safe_dump({"model": {"dims": {"d_model": 8}}, "data": data,
                                          "evaluation": evaluation}))
        with task_registry.isolated_registry():
            assert main(["mixture", "show", "--config", str(config), "--draws", "0"]) == 0
        assert capsys.readouterr().err.splitlines() == [
            f"warning: evaluated task 'seen' reads file {tasks / 'mine.jsonl'} (its train split), which trained task "
            f"'mine' trains on: the model has seen that data, so its score is not a held-out one; drop it from the "
            f"evaluation section (or its cluster from data.held_out_clusters), or that task from the training",
            *[f"warning: evaluated tasks 'again' and 'theirs' both read file {tasks / 'theirs.jsonl'}: the decaScore "
              f"and macro average count that data once for each; give one of them another cluster, or name the tasks "
              f"to score in evaluation.tasks with held_out: false"] * repeated]  # (tasks it names: the user's choice)
