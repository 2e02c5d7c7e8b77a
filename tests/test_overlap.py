"""Train/evaluation overlap (`task_registry.overlap`, `t2t-mtl mixture overlap`): against a brute-force search
for shared word windows over word tuples (no hashing), on planted overlaps and on the shared GLUE data."""
from __future__ import annotations

import json
import random
import re

import task_registry
from t2t_mtl.cli import main as cli_main
from t2t_mtl.datasets_progress_bars import hidden_datasets_progress_bars
from task_registry.overlap import find_overlap, normalized_words, row_grams


def _brute_force_overlaps(eval_rows, train_rows, n=13, min_words=8):
    """Indices of eval rows sharing an n-word window (or, for short fields, the whole field) with a train row: the
    window's words in a row in any training field."""
    def fields(row):
        out = []
        for value in row.values():
            values = value if isinstance(value, list) else [value]
            out += [re.sub(r"[^0-9a-z]+", " ", v.lower()).split() for v in values if isinstance(v, str)]
        return out

    def windows(words):
        if len(words) >= n:
            return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}
        return {tuple(words)} if len(words) >= min_words else set()

    seen = set()
    for row in train_rows:
        for words in fields(row):
            seen |= {tuple(words[i:i + k]) for k in range(min_words, n + 1) for i in range(len(words) - k + 1)}
    return [i for i, row in enumerate(eval_rows) if any(windows(words) & seen for words in fields(row))]


def _local_task(tmp_path, name, splits):
    files = {}
    for split, rows in splits.items():
        path = tmp_path / f"{name}_{split}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        files[split] = str(path)
    return task_registry.Task(name, task_registry.LocalFileSource(files),
                              [task_registry.Template("t", "{{ text }} ||| {{ label }}")], splits=tuple(files))


def test_words_are_compared_after_unicode_case_and_punctuation_normalisation():
    assert normalized_words("Hello,  WORLD! It’s ﬁne—really") == ["hello", "world", "it", "s", "fine", "really"]


def test_letters_and_digits_of_every_script_are_words():
    # were turned into spaces: "café" became "caf", and Cyrillic or Greek text had no words at all (never overlapped)
    assert normalized_words("Café naïve GRÖSSE x² Москва, Ἀθῆναι_2") == ["café", "naïve", "grösse", "x2", "москва",
                                                                         "ἀθῆναι", "2"]
    text = "Москва является столицей России и крупнейшим городом страны по численности населения"
    assert len(row_grams({"text": text}, n=13, min_words=8)) == 1


def test_planted_overlaps_are_found_exactly_as_a_brute_force_search_finds_them(tmp_path):
    rng = random.Random(0)
    vocabulary = [f"w{i}" for i in range(40)]

    def text(length):
        return " ".join(rng.choice(vocabulary) for _ in range(length))

    train_a = [{"text": text(rng.randint(5, 40)), "label": "x", "extra": [text(9)]} for _ in range(60)]
    train_b = [{"text": text(rng.randint(5, 40)), "label": "y"} for _ in range(60)]
    evaluation = []
    for i in range(80):
        row = {"text": text(rng.randint(5, 40)), "label": "z"}
        if i % 4 == 0:  # a 13-word window of a training row, in other case and punctuation
            words = rng.choice(train_a + train_b)["text"].split()
            if len(words) >= 13:
                start = rng.randrange(len(words) - 12)
                row["text"] += " ... " + ", ".join(words[start:start + 13]).upper() + "!"
        if i % 7 == 0:  # a short training field, whole
            row["note"] = rng.choice(train_a)["extra"][0]
        if i % 9 == 0:  # 12 words of a window in a longer field: not enough
            row["text"] = text(20) + " " + " ".join(rng.choice(train_b)["text"].split()[:12])
        if i % 11 == 0:  # a short field whose words a longer training field holds (was never found)
            words = rng.choice([r for r in train_a + train_b if len(r["text"].split()) >= 20])["text"].split()
            row["short"] = " ".join(words[5:15])
        evaluation.append(row)
    tasks = [_local_task(tmp_path, "a", {"train": train_a}), _local_task(tmp_path, "b", {"train": train_b})]
    evaluated = _local_task(tmp_path, "e", {"validation": evaluation})
    report, = find_overlap([(evaluated, "validation")], tasks)
    expected = _brute_force_overlaps(evaluation, train_a + train_b)
    assert report.rows == 80 and report.overlapping == len(expected) > 20
    assert report.examples == expected[:5]
    for name, rows in (("a", train_a), ("b", train_b)):
        assert report.training_tasks.get(name, 0) == len(_brute_force_overlaps(evaluation, rows))
    assert find_overlap([(evaluated, "validation")], tasks, n=30)[0].overlapping < report.overlapping
    shorts = [i for i, row in enumerate(evaluation) if "short" in row]
    assert set(shorts) <= set(expected) and shorts  # every planted short field is found


def test_wnli_and_rte_validation_rows_reuse_training_sentences(shared_data_dir):
    task_registry.set_data_dir(shared_data_dir)
    try:
        task_registry.load_builtin_tasks()
        for name in ("glue_wnli", "glue_rte"):
            task = task_registry.get_task(name)
            report, = find_overlap([(task, "validation")], [task])
            rows = list(task.load_rows("validation"))
            expected = _brute_force_overlaps(rows, list(task.load_rows("train")))
            assert (report.rows, report.overlapping) == (len(rows), len(expected))
        # WNLI's validation pairs are built from its training sentences (94%, by the search above)
        assert report.overlapping > 0 and find_overlap([(task_registry.get_task("glue_wnli"), "validation")],
                                                       [task_registry.get_task("glue_wnli")])[0].share > 0.9
    finally:
        task_registry.set_data_dir(None)


def test_the_overlap_command_prints_and_writes_the_report(tmp_path, shared_data_dir, capsys):
    out = tmp_path / "overlap.json"
    assert cli_main(["mixture", "overlap", "glue_wnli", "--eval", "glue_wnli,glue_cola", "--data-dir",
                     str(shared_data_dir), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"glue_wnli\s+validation\s+71\s+67\s+94.4%\s+glue_wnli 67", printed)
    assert re.search(r"glue_cola\s+validation\s+1043\s+0\s+0.0%\s+-", printed)
    report = json.loads(out.read_text())
    assert [t["overlapping"] for t in report["tasks"]] == [67, 0] and report["n"] == 13
    assert cli_main(["mixture", "overlap", "glue_wnli", "--eval", "glue_wnlii", "--data-dir",
                     str(shared_data_dir)]) == 2
    assert "glue_wnli" in capsys.readouterr().err  # the close match
    assert cli_main(["mixture", "overlap", "glue_wnli", "--held-out", "--n", "0"]) == 2
    assert "--n must be >= 1" in capsys.readouterr().err
    # was "(e.g. .../rates.png)", the example of mixture show's --plot
    assert cli_main(["mixture", "overlap", "glue_wnli", "--held-out", "--json", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"error: --json {tmp_path} is a folder; give a file name (e.g. "
                                       f"{tmp_path / 'overlap.json'})\n")


def test_a_training_split_of_one_gram_is_matched(tmp_path):
    # one 13-word row: its index holds a single gram, which the identical evaluation row shares
    text = "one two three four five six seven eight nine ten eleven twelve thirteen"
    train = _local_task(tmp_path, "one_gram_train", {"train": [{"text": text, "label": 0}]})
    evaluated = _local_task(tmp_path, "one_gram_eval", {"validation": [{"text": text, "label": 0},
                                                                       {"text": "unrelated words", "label": 1}]})
    report, = find_overlap([(evaluated, "validation")], [train])
    assert (report.rows, report.overlapping, report.examples) == (2, 1, [0])


def _yaml_task(folder, name, splits):
    """A YAML task `name` in `folder` whose rows (each split's) are written to local jsonl files beside it."""
    for split, rows in splits.items():
        (folder / f"{name}_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    files = ", ".join(f"{split}: {name}_{split}.jsonl" for split in splits)
    (folder / f"{name}.yaml").write_text(f"name: {name}\nsplits: [{', '.join(splits)}]\nsource:\n"
                                         f"  files: {{{files}}}\ntemplates:\n"
                                         "  - {name: t, jinja: \"{{ text }} ||| {{ label }}\"}\n")


def test_the_overlap_command_says_on_stderr_which_split_it_reads_indexes_and_compares(tmp_path, capsys):
    # it printed nothing until its report: on the shared data about a CPU-minute with no output (once datasets'
    # progress bars were hidden), which looked hung
    words = [f"w{i}" for i in range(60)]
    train = [{"text": " ".join(words[14 * i:14 * i + 14]), "label": i} for i in range(3)]  # 2 grams of 13 each
    evaluation = [{"text": " ".join(words[:13]), "label": 0}, {"text": " ".join(words[40:53]), "label": 1}]
    _yaml_task(tmp_path, "ov_train", {"train": train})
    _yaml_task(tmp_path, "ov_eval", {"validation": evaluation})
    with task_registry.isolated_registry():
        assert cli_main(["mixture", "overlap", "ov_train", "--eval", "ov_eval", "--tasks-dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    progress = ["read ov_eval/validation: 2 rows", "indexed ov_train/train: 3 rows, 6 grams",
                "comparing 1 evaluated split with 1 training split"]
    assert [line for line in err.splitlines() if line in progress] == progress, err
    assert out == ("rows sharing a 13-word sequence (normalised; whole fields of 8+ words when shorter) with the "
                   "train rows of 'ov_train'\n"
                   "task     split          rows  overlap   share  training tasks\n"
                   "ov_eval  validation        2        1   50.0%  ov_train 1\n")


def test_the_overlap_report_lists_the_training_tasks_most_overlapped_first_and_writes_each_share(tmp_path, capsys):
    # mutation testing: the training tasks listed least overlapped first and the JSON report without each task's
    # share passed every test, whose reports overlapped one training task and were not read back
    words = [f"w{i}" for i in range(60)]
    _yaml_task(tmp_path, "ov_a", {"train": [{"text": " ".join(words[:14]), "label": 0}]})
    _yaml_task(tmp_path, "ov_b", {"train": [{"text": " ".join(words[14 * i:14 * i + 14]), "label": i}
                                             for i in (1, 2)]})
    evaluation = [{"text": " ".join(words[14 * i:14 * i + 13]), "label": i} for i in range(3)] + [
        {"text": " ".join(words[45:58]), "label": 3}]
    _yaml_task(tmp_path, "ov_eval", {"validation": evaluation})
    report = tmp_path / "overlap.json"
    with task_registry.isolated_registry():
        assert cli_main(["mixture", "overlap", "ov_a,ov_b", "--eval", "ov_eval", "--tasks-dir", str(tmp_path),
                         "--json", str(report)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "ov_eval  validation        4        3   75.0%  ov_b 2, ov_a 1"
    written = json.loads(report.read_text(encoding="utf-8"))
    assert [(task["task"], task["rows"], task["overlapping"], task["share"]) for task in written["tasks"]] == [
        ("ov_eval", 4, 3, 0.75)]

def test_find_overlap_prints_nothing_unless_given_a_progress_callback(tmp_path, capsys):
    text = "one two three four five six seven eight nine ten eleven twelve thirteen"
    train = _local_task(tmp_path, "quiet_train", {"train": [{"text": text, "label": 0}]})
    evaluated = _local_task(tmp_path, "quiet_eval", {"validation": [{"text": text, "label": 0}]})
    with hidden_datasets_progress_bars():  # (datasets' own 'Generating ... split' bars are not find_overlap's)
        report, = find_overlap([(evaluated, "validation")], [train])
    assert report.overlapping == 1 and capsys.readouterr() == ("", "")
    lines = []
    find_overlap([(evaluated, "validation")], [train], progress=lines.append)
    assert lines == ["read quiet_eval/validation: 1 row", "indexed quiet_train/train: 1 row, 1 gram",
                     "comparing 1 evaluated split with 1 training split"]  # (was '1 rows, 1 grams', 'split(s)')
