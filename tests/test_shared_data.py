"""Evaluated tasks that read the data a trained task trains on (`t2t_mtl.evaluation.shared_data`): a user's task over
glue/rte makes the built-in held-out glue_rte's score not a held-out one, whatever the tasks are called."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import task_registry
import task_registry.sources
from t2t_mtl.cli import main as cli_main
from t2t_mtl.engine.trainer import train
from t2t_mtl.evaluation.shared_data import repeated_data_warnings, shared_data_warnings
from task_registry import HFSource, LocalFileSource, Task, Template

from engine_helpers import tiny_config, train_tiny_tokenizer, write_yaml_task

TEMPLATE = Template("plain", "{{ premise }} ||| {{ label }}")
FIX = "leave it out of the evaluation"


@pytest.fixture(autouse=True)
def _hub_ids_read_from_the_hub(monkeypatch):
    """Hub ids resolve to the hub here, not to a data dir that $T2T_MTL_DATA_DIR names where the tests run."""
    monkeypatch.delenv(task_registry.sources.DATA_DIR_ENV, raising=False)


def _register(name: str, source) -> None:
    task_registry.register_task(Task(name, source, TEMPLATE, cluster="mine"))


def test_a_task_over_the_hub_dataset_a_held_out_task_reads_makes_its_score_not_held_out():
    with task_registry.isolated_registry():
        task_registry.load_builtin_tasks()
        _register("my_rte", HFSource("glue", "rte"))
        _register("my_cb", HFSource("super_glue", "cb"))
        assert shared_data_warnings(["glue_rte", "super_glue_copa"], ["my_rte", "my_cb"], FIX) == [
            "evaluated task 'glue_rte' reads hub dataset glue/rte, which trained task 'my_rte' trains on: the model "
            "has seen that data, so its score is not a held-out one; leave it out of the evaluation"]
        # (another config of the same hub dataset, a task trained itself, a name no task has: nothing shared)
        _register("my_wnli", HFSource("glue", "wnli"))
        assert shared_data_warnings(["glue_rte", "my_wnli", "unknown"], ["my_wnli", "gone"], FIX) == []


def test_a_task_over_the_data_dirs_file_of_a_held_out_tasks_split_makes_its_score_not_held_out(tmp_path):
    # the data dir holds glue/rte as <hub path>/<config>/<split>.jsonl: a task listing its train file under `files:`
    # reads what glue_rte's train split reads
    train = tmp_path / "data" / "glue" / "rte" / "train.jsonl"
    train.parent.mkdir(parents=True)
    train.write_text('{"premise": "a", "label": 0}\n')
    before = task_registry.get_data_dir()
    task_registry.set_data_dir(tmp_path / "data")
    try:
        with task_registry.isolated_registry():
            task_registry.load_builtin_tasks()
            _register("my_rte", LocalFileSource({"train": os.path.relpath(train)}))
            _register("other", LocalFileSource({"train": str(tmp_path / "data" / "other.jsonl")}))
            assert shared_data_warnings(["glue_rte"], ["other", "my_rte"], FIX) == [
                f"evaluated task 'glue_rte' reads file {train} (its train split), which trained task 'my_rte' trains "
                f"on: the model has seen that data, so its score is not a held-out one; {FIX}"]
            # a task training on glue_rte's validation file: the very rows glue_rte scores
            validation = train.with_name("validation.jsonl")
            _register("on_validation", LocalFileSource({"train": str(validation), "validation": str(train)}))
            assert shared_data_warnings(["glue_rte"], ["on_validation"], FIX) == [
                f"evaluated task 'glue_rte' reads file {validation} (its validation split), which trained task "
                f"'on_validation' trains on: the model has seen that data, so its score is not a held-out "
                f"one; {FIX}"]
    finally:
        task_registry.set_data_dir(before)


def test_a_file_readers_data_files_and_a_local_files_source_share_a_file_and_a_generator_shares_nothing(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"premise": "a", "label": 0}\n')
    with task_registry.isolated_registry():
        task_registry.load_builtin_tasks()
        _register("read_by_json", HFSource("json", data_files={"train": str(rows), "validation": str(rows)}))
        _register("listed", LocalFileSource(str(rows)))  # (one file for every split)
        assert shared_data_warnings(["listed", "compare_numbers"], ["read_by_json", "count_word"], FIX) == [
            f"evaluated task 'listed' reads file {rows} (its train split), which trained task 'read_by_json' trains "
            f"on: the model has seen that data, so its score is not a held-out one; {FIX}"]


def test_tasks_reading_other_data_files_of_one_hub_dataset_share_nothing_and_the_same_file_is_named():
    # a hub dataset's data_files choose some files of its repo: two tasks reading different ones share no rows
    with task_registry.isolated_registry():
        _register("first", HFSource("org/collection", data_files={"train": "a/train.jsonl"}))
        _register("second", HFSource("org/collection", data_files={"train": "b/train.jsonl",
                                                                   "validation": "b/validation.jsonl"}))
        _register("again", HFSource("org/collection", data_files={"train": "b/dev.jsonl",
                                                                  "validation": "a/train.jsonl"}))
        _register("whole", HFSource("org/collection"))
        assert shared_data_warnings(["second"], ["first"], FIX) == []
        assert shared_data_warnings(["again"], ["first"], FIX) == [
            f"evaluated task 'again' reads file a/train.jsonl of hub dataset org/collection (its validation split), "
            f"which trained task 'first' trains on: the model has seen that data, so its score is not a held-out "
            f"one; {FIX}"]
        # the dataset read whole holds every file of it, either way round
        assert shared_data_warnings(["whole"], ["second"], FIX) == [
            f"evaluated task 'whole' reads hub dataset org/collection, which trained task 'second' trains on: the "
            f"model has seen that data, so its score is not a held-out one; {FIX}"]
        assert shared_data_warnings(["second"], ["whole"], FIX) == [
            f"evaluated task 'second' reads file b/train.jsonl of hub dataset org/collection (its train split), which "
            f"trained task 'whole' trains on: the model has seen that data, so its score is not a held-out one; {FIX}"]


def _held_out_run(tmp_path: Path, tasks: Path) -> Path:
    """tmp_path/run: one step trained on the YAML task 'mine' of the folder `tasks`, its cluster 'theirs' scored
    held out (two examples a task) after it."""
    run = tmp_path / "run"
    cfg = tiny_config(run, train_tiny_tokenizer(tmp_path / "tok"), tmp_path / "cache", training={"steps": 1},
                      data={"tasks": ["mine"], "tasks_dir": str(tasks), "held_out_clusters": ["theirs"]},
                      evaluation={"held_out": True, "max_examples": 2})
    with task_registry.isolated_registry():
        train(cfg, evaluate_held_in=False)
    return run


def test_a_run_training_on_its_held_out_tasks_data_is_warned_at_training_and_by_eval_held_out(tmp_path, capsys):
    # was: a run training 'mine' and scoring 'theirs' held out, both over mine.jsonl, printed the held-out zero-shot
    # score without a word, and so did `eval --held-out` of it
    tasks = write_yaml_task(tmp_path / "tasks", "mine")
    (tasks / "theirs.yaml").write_text((tasks / "mine.yaml").read_text().replace("name: mine", "name: theirs").replace(
        "cluster: yaml_tasks", "cluster: theirs").replace("held_out: false", "held_out: true"))
    run = _held_out_run(tmp_path, tasks)
    warning = (f"warning: evaluated task 'theirs' reads file {tasks / 'mine.jsonl'} (its train split), which trained "
               f"task 'mine' trains on: the model has seen that data, so its score is not a held-out one; ")
    assert (f"{warning}drop it from the evaluation section (or its cluster from data.held_out_clusters), or that "
            f"task from the training\n") in capsys.readouterr().out
    with task_registry.isolated_registry():
        code = cli_main(["eval", "--checkpoint", str(run), "--held-out", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0 and f"{warning}choose the held-out tasks with --held-out-clusters or --tasks\n" in err, err


def test_two_evaluated_tasks_reading_one_dataset_are_warned_of_as_counted_twice():
    # was: a user's ps_rte (promptsource's templates over glue/rte) in the held-out nli cluster beside the built-in
    # glue_rte: RTE scored twice and counted twice in the decaScore and macro average, without a word
    with task_registry.isolated_registry():
        task_registry.load_builtin_tasks()
        _register("my_rte", HFSource("glue", "rte"))
        _register("my_copa", HFSource("super_glue", "copa"))
        evaluated = ["glue_rte", "super_glue_cb", "my_rte", "compare_numbers", "alphabetical_order", "unknown",
                     "my_copa", "super_glue_copa", "glue_rte"]
        assert repeated_data_warnings(evaluated, FIX) == [
            "evaluated tasks 'glue_rte' and 'my_rte' both read hub dataset glue/rte: the decaScore and macro average "
            f"count that data once for each; {FIX}",
            "evaluated tasks 'my_copa' and 'super_glue_copa' both read hub dataset super_glue/copa: the decaScore and "
            f"macro average count that data once for each; {FIX}"]
        # (other configs of one hub dataset, generated tasks, a task named twice: nothing repeated)
        assert repeated_data_warnings(["glue_rte", "glue_wnli", "compare_numbers", "compare_lengths", "glue_rte"],
                                      FIX) == []


def test_a_run_scoring_two_held_out_tasks_over_one_file_is_warned_at_training_and_by_eval_held_out(tmp_path, capsys):
    tasks = write_yaml_task(tmp_path / "tasks", "mine")
    for name in ("theirs", "again"):  # two held-out tasks of one cluster, both over another file
        (tasks / f"{name}.yaml").write_text((tasks / "mine.yaml").read_text().replace("name: mine", f"name: {name}")
                                            .replace("cluster: yaml_tasks", "cluster: theirs")
                                            .replace("held_out: false", "held_out: true")
                                            .replace("mine.jsonl", "theirs.jsonl"))
    (tasks / "theirs.jsonl").write_text((tasks / "mine.jsonl").read_text())
    run = _held_out_run(tmp_path, tasks)
    warning = (f"warning: evaluated tasks 'again' and 'theirs' both read file {tasks / 'theirs.jsonl'}: the decaScore "
               f"and macro average count that data once for each; ")
    out = capsys.readouterr().out
    assert (f"{warning}give one of them another cluster, or name the tasks to score in evaluation.tasks with "
            f"held_out: false\n") in out, out
    with task_registry.isolated_registry():
        code = cli_main(["eval", "--checkpoint", str(run), "--held-out", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0 and f"{warning}choose the tasks with --tasks\n" in err, err
    with task_registry.isolated_registry():  # both named: the user's choice
        code = cli_main(["eval", "--checkpoint", str(run), "--tasks", "again,theirs", "--no-progress"])
    assert code == 0 and "both read" not in capsys.readouterr().err


def test_a_file_read_through_a_symlink_is_the_file_it_links_to(tmp_path):
    # was: compared by absolute path, 'link/rows.jsonl' (link -> real) and 'real/rows.jsonl' were two files
    rows = tmp_path / "real" / "rows.jsonl"
    rows.parent.mkdir()
    rows.write_text('{"premise": "a", "label": 0}\n')
    (tmp_path / "link").symlink_to(rows.parent)
    linked = tmp_path / "link" / "rows.jsonl"
    with task_registry.isolated_registry():
        _register("trained", LocalFileSource({"train": str(linked)}))
        _register("evaluated", HFSource("json", data_files={"validation": str(rows)}))
        _register("linked", LocalFileSource({"validation": str(linked)}))
        assert shared_data_warnings(["evaluated", "linked"], ["trained"], FIX) == [
            f"evaluated task '{name}' reads file {path} (its validation split), which trained task 'trained' trains "
            f"on: the model has seen that data, so its score is not a held-out one; {FIX}"
            for name, path in [("evaluated", rows), ("linked", linked)]]  # (each as it names the file)


def test_the_splits_of_a_folder_saved_by_save_to_disk_are_its_split_folders(tmp_path):
    # was: every split read 'folder saved', so the validation split a task scores and the train split another
    # trains on shared data, and the train split read as a folder of its own ('saved/train') shared nothing with it
    import datasets

    rows = datasets.Dataset.from_list([{"premise": "a", "label": 0}, {"premise": "b", "label": 1}])
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": rows.select([0]), "validation": rows.select([1])}).save_to_disk(str(saved))
    with task_registry.isolated_registry():
        _register("trained", LocalFileSource(str(saved)))
        task_registry.register_task(Task("scored", LocalFileSource(str(saved)), TEMPLATE, splits=["validation"]))
        _register("its_train", LocalFileSource({"validation": str(saved / "train")}))
        assert shared_data_warnings(["scored", "its_train"], ["trained"], FIX) == [
            f"evaluated task 'its_train' reads folder {saved / 'train'} (its validation split), which trained task "
            f"'trained' trains on: the model has seen that data, so its score is not a held-out one; {FIX}"]


def test_a_local_folder_read_whole_holds_the_files_in_it(tmp_path, monkeypatch):
    # was: HFSource('./data') read 'folder data' and a task over data/rows.jsonl 'file data/rows.jsonl', two things
    rows = tmp_path / "data" / "rows.jsonl"
    rows.parent.mkdir()
    rows.write_text('{"premise": "a", "label": 0}\n')
    with task_registry.isolated_registry():
        _register("folder", HFSource(str(rows.parent)))
        _register("file", LocalFileSource(str(rows)))
        _register("beside", LocalFileSource(str(tmp_path / "data.jsonl")))  # (not in the folder, named alike)
        assert shared_data_warnings(["file", "beside"], ["folder"], FIX) == [
            f"evaluated task 'file' reads file {rows} (its train split), which trained task 'folder' trains on: the "
            f"model has seen that data, so its score is not a held-out one; {FIX}"]
        assert shared_data_warnings(["folder"], ["file"], FIX) == [
            f"evaluated task 'folder' reads folder {rows.parent} (its train split), which trained task 'file' trains "
            f"on: the model has seen that data, so its score is not a held-out one; {FIX}"]
        monkeypatch.setenv("HOME", str(tmp_path))  # (load_dataset reads '~/data' in the home folder)
        _register("home", HFSource("~/data"))
        assert len(shared_data_warnings(["file"], ["home"], FIX)) == 1


def test_a_local_folder_given_data_files_reads_those_files_in_it(tmp_path):
    # was: HFSource('./data', data_files=...) read the whole folder, whichever files it named (load_dataset reads them
    # in the folder), so a task evaluated on data/b.jsonl was warned of sharing data/a.jsonl another task trains on
    a, b = tmp_path / "data" / "a.jsonl", tmp_path / "data" / "sub" / "b.jsonl"
    b.parent.mkdir(parents=True)
    for path in (a, b):
        path.write_text('{"premise": "a", "label": 0}\n')
    with task_registry.isolated_registry():
        _register("on_a", LocalFileSource({"train": str(a)}))
        _register("on_b", HFSource(str(a.parent), data_files={"train": "a.jsonl", "validation": "sub/*.jsonl"}))
        _register("in_sub", HFSource(str(a.parent), data_dir="sub", data_files={"validation": "b.jsonl"}))
        assert shared_data_warnings(["on_b", "in_sub"], ["on_a"], FIX) == [
            f"evaluated task 'on_b' reads file {a} (its train split), which trained task 'on_a' trains on: the model "
            f"has seen that data, so its score is not a held-out one; {FIX}"]
        _register("on_sub", LocalFileSource({"train": str(b)}))
        assert shared_data_warnings(["in_sub"], ["on_sub"], FIX) == [
            f"evaluated task 'in_sub' reads file {b} (its validation split), which trained task 'on_sub' trains on: "
            f"the model has seen that data, so its score is not a held-out one; {FIX}"]
        assert task_registry.get_task("in_sub").load_rows("validation")["premise"] == ["a"]  # (load_dataset reads it)


def test_a_hub_datasets_data_dir_is_the_folder_of_its_repo_it_reads_and_other_load_arguments_read_the_same_data(
        tmp_path):
    # was: HFSource('org/x', data_dir='a') and HFSource('org/x', data_dir='b') both read 'hub dataset org/x'
    with task_registry.isolated_registry():
        _register("local_a", HFSource(str(tmp_path), data_dir="a"))  # (a local folder's data_dir: a folder in it)
        _register("local_b", LocalFileSource(str(tmp_path / "b" / "rows.jsonl")))
        assert shared_data_warnings(["local_b"], ["local_a"], FIX) == []
        _register("in_a", HFSource("org/x", data_dir="a"))
        _register("in_b", HFSource("org/x", data_dir="b/"))
        _register("file_in_a", HFSource("org/x", data_files={"validation": "a/dev.jsonl"}))
        _register("dev_of_a", HFSource("org/x", data_dir="a", data_files={"train": "dev.jsonl"}))  # (in data_dir)
        _register("revision", HFSource("org/x", data_dir="b", revision="v2", trust_remote_code=False))
        assert shared_data_warnings(["in_b", "file_in_a"], ["in_a"], FIX) == [
            f"evaluated task 'file_in_a' reads file a/dev.jsonl of hub dataset org/x (its validation split), which "
            f"trained task 'in_a' trains on: the model has seen that data, so its score is not a held-out one; {FIX}"]
        assert shared_data_warnings(["file_in_a"], ["dev_of_a"], FIX) == [
            f"evaluated task 'file_in_a' reads file a/dev.jsonl of hub dataset org/x (its validation split), which "
            f"trained task 'dev_of_a' trains on: the model has seen that data, so its score is not a held-out one; "
            f"{FIX}"]
        # (another revision of the data, read with other arguments: the same data)
        assert shared_data_warnings(["revision"], ["in_b"], FIX) == [
            f"evaluated task 'revision' reads folder b of hub dataset org/x (its train split), which trained task "
            f"'in_b' trains on: the model has seen that data, so its score is not a held-out one; {FIX}"]


def test_a_hub_datasets_data_files_pattern_holds_the_files_of_its_repo_it_matches():
    # was: 'data/train-*' and 'data/train-00000.parquet' of one hub dataset were compared as two files
    with task_registry.isolated_registry():
        _register("shards", HFSource("org/x", data_files={"train": "data/train-*"}))
        _register("one_shard", HFSource("org/x", data_files={"validation": "data/train-00000.parquet"}))
        _register("nested", HFSource("org/x", data_files={"validation": "data/train-0/x.parquet"}))  # (`*`: one folder)
        _register("deep", HFSource("org/x", data_files={"train": "**/train.jsonl"}))
        _register("deep_one", HFSource("org/x", data_files={"validation": "a/b/train.jsonl"}))
        assert shared_data_warnings(["one_shard", "nested"], ["shards"], FIX) == [
            f"evaluated task 'one_shard' reads file data/train-00000.parquet of hub dataset org/x (its validation "
            f"split), which trained task 'shards' trains on: the model has seen that data, so its score is not a "
            f"held-out one; {FIX}"]
        assert len(shared_data_warnings(["deep_one"], ["deep"], FIX)) == 1


@pytest.mark.parametrize("pattern, path, held", [
    ("data/train-?.parquet", "data/train-0.parquet", True),
    ("data?train.parquet", "data/train.parquet", False),  # (`?`, as `*`, within one folder)
    ("data/train-[01].parquet", "data/train-1.parquet", True),  # (a character set alone makes a pattern)
    ("data/train-[01].parquet", "data/train-2.parquet", False),
    ("data/train-[!0].parquet", "data/train-1.parquet", True),  # (`[!...]`: none of them)
    ("data/train-[!0].parquet", "data/train-0.parquet", False),
])
def test_a_hub_datasets_data_files_pattern_holds_a_file_as_datasets_globs_it(pattern, path, held):
    from task_registry.data_reads import DataRead

    read, file = DataRead.hub("org/x", pattern), DataRead.hub("org/x", path)
    assert (read.shares(file), file.shares(read)) == (held, held)
    assert not DataRead.hub("org/y", path).shares(read)  # (another dataset's file)


def test_a_hub_datasets_file_in_its_data_dir_written_with_a_dot_is_the_same_file():
    with task_registry.isolated_registry():
        _register("in_dir", HFSource("org/x", data_dir="./sub", data_files={"train": "a.parquet"}))
        _register("plain", HFSource("org/x", data_files={"validation": "sub/a.parquet"}))
        assert len(shared_data_warnings(["plain"], ["in_dir"], FIX)) == 1


def test_a_file_readers_data_dir_is_the_folder_it_reads_its_files_in(tmp_path):
    # was: HFSource('json', data_dir=d) read nothing, and its data_files were looked for in the working directory
    rows = tmp_path / "d" / "rows.jsonl"
    rows.parent.mkdir()
    rows.write_text('{"premise": "a", "label": 0}\n')
    with task_registry.isolated_registry():
        _register("whole_dir", HFSource("json", data_dir=str(rows.parent)))
        _register("named", HFSource("json", data_dir=str(rows.parent), data_files={"validation": "rows.jsonl"}))
        _register("listed", LocalFileSource({"train": str(rows)}))
        assert shared_data_warnings(["listed"], ["whole_dir"], FIX) == [
            f"evaluated task 'listed' reads file {rows} (its train split), which trained task 'whole_dir' trains on: "
            f"the model has seen that data, so its score is not a held-out one; {FIX}"]
        assert shared_data_warnings(["named"], ["listed"], FIX) == [
            f"evaluated task 'named' reads file {rows} (its validation split), which trained task 'listed' trains "
            f"on: the model has seen that data, so its score is not a held-out one; {FIX}"]


def test_a_file_readers_data_dir_left_unset_or_null_is_the_working_directory_for_its_files_alone(tmp_path, monkeypatch):
    # load_dataset('json') without data_files reads nothing (it asks for them): the working directory is no folder
    # it reads; data_dir: null is no data_dir, not a folder named 'None'
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rows.jsonl").write_text('{"premise": "a", "label": 0}\n')
    with task_registry.isolated_registry():
        _register("bare", HFSource("json"))
        _register("null_dir", HFSource("json", data_dir=None, data_files={"validation": "rows.jsonl"}))
        _register("listed", LocalFileSource({"train": "rows.jsonl"}))
        assert shared_data_warnings(["listed"], ["bare"], FIX) == []
        assert shared_data_warnings(["null_dir"], ["listed"], FIX) == [
            f"evaluated task 'null_dir' reads file {tmp_path / 'rows.jsonl'} (its validation split), which trained "
            f"task 'listed' trains on: the model has seen that data, so its score is not a held-out one; {FIX}"]


def test_a_local_path_is_no_pattern_though_it_holds_a_glob_character(tmp_path):
    # a local file's path is the file: 'data[1]/rows.jsonl' is no character set matching 'data1/rows.jsonl'
    from task_registry.data_reads import DataRead

    bracketed = DataRead.local(tmp_path / "data[1]" / "rows.jsonl")
    plain = DataRead.local(tmp_path / "data1" / "rows.jsonl")
    assert not bracketed.shares(plain) and not plain.shares(bracketed)


@pytest.mark.parametrize("trained, evaluated, shared", [
    ("**/train-*.parquet", "en/*.parquet", True),  # (both match en/train-0.parquet)
    ("data/train-*", "data/*-00000.parquet", True),
    ("data/train-?.parquet", "data/*-[0-4].parquet", True),
    ("data/train-[0-4].parquet", "data/train-[5-9].parquet", False),
    ("data/*.jsonl", "data/*.parquet", False),
    ("data/*/train.jsonl", "data/train.jsonl", False),  # (`*` is one folder's name, never none)
    ("**/train.jsonl", "train.jsonl", True),  # (`**/`: no folder too)
    ("data/\U0010ffff*", "data/*", True),  # (the last character of Unicode: none follows it)
])
def test_two_data_files_patterns_of_a_hub_dataset_that_match_a_file_in_common_share_it(trained, evaluated, shared):
    # was: two patterns were compared as a pattern and a file's path, so 'en/*.parquet' evaluated after training on
    # '**/train-*.parquet' (both reading en/train-0.parquet) was not warned of, neither pattern matching the other
    from task_registry.data_reads import DataRead

    first, second = DataRead.hub("org/x", trained), DataRead.hub("org/x", evaluated)
    assert (first.shares(second), second.shares(first)) == (shared, shared)


def test_a_data_files_pattern_shares_the_folder_of_a_hub_dataset_whose_files_it_may_match():
    from task_registry.data_reads import DataRead

    pattern = DataRead.hub("org/x", "*/train.jsonl")
    assert DataRead.hub("org/x", "en", folder=True).shares(pattern)
    assert not DataRead.hub("org/x", "en/sub", folder=True).shares(pattern)
    with task_registry.isolated_registry():
        _register("all_train", HFSource("org/x", data_files={"train": "**/train-*.parquet"}))
        _register("english", HFSource("org/x", data_files={"validation": "en/*.parquet"}))
        _register("english_dir", HFSource("org/x", data_dir="en"))
        assert shared_data_warnings(["english", "english_dir"], ["all_train"], FIX) == [
            f"evaluated task {name!r} reads {what} of hub dataset org/x{split}, which trained task 'all_train' trains "
            f"on: the model has seen that data, so its score is not a held-out one; {FIX}"
            for name, what, split in (("english", "file en/*.parquet", " (its validation split)"),
                                      ("english_dir", "folder en", " (its train split)"))]


def _glob_regex(pattern: str) -> re.Pattern:
    """The paths a data_files glob `pattern` matches, as datasets reads one: `**/` no folder or folders, `**` any
    characters, `*` and `?` within a folder, `[...]` (`[!...]`) a character of (not of) a set."""
    wildcards = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    parts = re.split(r"(\*\*/|\*\*|\*|\?|\[!?[^]]+\])", pattern)
    return re.compile("".join(wildcards.get(part, part.replace("[!", "[^", 1)) if index % 2 else re.escape(part)
                              for index, part in enumerate(parts)), re.DOTALL)


def test_two_patterns_overlap_where_a_path_of_few_characters_matches_both():
    # the reference: every path of up to 6 of the characters a, b, c and / that each pattern's regex matches; the
    # patterns' overlap is found without such a list
    import itertools
    import random

    from task_registry.data_reads import DataRead

    parts = ["a", "b", "/", "*", "**", "**/", "?", "[ab]", "[!a]", "[b-c]"]
    rng = random.Random(0)
    reads = {DataRead.hub("org/x", "".join(rng.choice(parts) for _ in range(rng.randint(1, 4)))) for _ in range(30)}
    paths = ["".join(chars) for size in range(7) for chars in itertools.product("ab/c", repeat=size)]
    matched = {read: set(filter(_glob_regex(read.path).fullmatch, paths)) for read in reads}
    for first, second in itertools.combinations(sorted(reads, key=str), 2):
        assert first.shares(second) == bool(matched[first] & matched[second]), (first.path, second.path)


def test_a_task_reading_what_two_earlier_evaluated_tasks_read_is_warned_of_once_beside_the_first():
    # three evaluated tasks over glue/rte: each later one is named once, beside the first that reads it (not the third
    # a second time beside the second)
    with task_registry.isolated_registry():
        task_registry.load_builtin_tasks()
        _register("my_rte", HFSource("glue", "rte"))
        _register("ps_rte", HFSource("glue", "rte"))
        assert repeated_data_warnings(["glue_rte", "my_rte", "ps_rte"], FIX) == [
            f"evaluated tasks 'glue_rte' and {name!r} both read hub dataset glue/rte: the decaScore and macro average "
            f"count that data once for each; {FIX}" for name in ("my_rte", "ps_rte")]


def test_the_split_reading_the_trained_file_itself_is_named_before_a_pattern_matching_it():
    # the evaluated task's train pattern matches the trained file too: the warning names the split that reads the file
    with task_registry.isolated_registry():
        _register("trained", HFSource("org/x", data_files={"train": "a/validation.jsonl"}))
        _register("evaluated", HFSource("org/x", data_files={"train": "**/*.jsonl",
                                                             "validation": "a/validation.jsonl"}))
        assert shared_data_warnings(["evaluated"], ["trained"], FIX) == [
            f"evaluated task 'evaluated' reads file a/validation.jsonl of hub dataset org/x (its validation split), "
            f"which trained task 'trained' trains on: the model has seen that data, so its score is not a held-out "
            f"one; {FIX}"]


@pytest.mark.parametrize("first, second, shared", [
    ("data/train-[0-2].parquet", "data/train-[!02].parquet", True),  # ('1' alone: a character neither names)
    ("data/[!!-\U0010ffff].jsonl", "data/?.jsonl", True),  # (a character before every one either names: ' ')
    ("data/[!!-\U0010ffff].jsonl", "data/[!\x00- ].jsonl", False),
])
def test_two_patterns_overlap_on_a_character_that_neither_of_them_writes(first, second, shared):
    from task_registry.data_reads import DataRead

    one, other = DataRead.hub("org/x", first), DataRead.hub("org/x", second)
    assert (one.shares(other), other.shares(one)) == (shared, shared)


def test_a_hub_datasets_folder_holds_the_files_of_its_subfolders():
    from task_registry.data_reads import DataRead

    folder = DataRead.hub("org/x", "en", folder=True)
    for path in ("en/sub/train.jsonl", "en/a/b/*.parquet"):
        assert folder.shares(DataRead.hub("org/x", path)) and DataRead.hub("org/x", path).shares(folder)
    assert not folder.shares(DataRead.hub("org/x", "english/train.jsonl"))
