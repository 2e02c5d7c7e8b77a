"""`t2t-mtl train --print-config` says which tokenizer a run uses where its tokenizer.train section goes unread: a run
initialised from a model folder loads the folder's own tokenizer, one with tokenizer.path that one (as
`t2t_mtl.config.tokenizer_source` decides for the run); the printed YAML still loads as the config."""
from __future__ import annotations

import pytest
import yaml

from t2t_mtl.cli import main as cli_main
from t2t_mtl.config import load_config

from engine_helpers import tiny_config, train_tiny_tokenizer


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A dense tiny T5 saved with its tokenizer, as `export` writes one."""
    from t2t_mtl.model import build_model
    from t2t_mtl.tokenizer import load_tokenizer

    root = tmp_path_factory.mktemp("folder")
    tokenizer = load_tokenizer(str(train_tiny_tokenizer(root / "tok")))
    dims = tiny_config(root, root, root)["model"]["dims"]
    build_model({"dims": dims}, vocab_size=len(tokenizer)).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return root


def _printed(tmp_path, capsys, **sections) -> str:
    """`train --print-config` of the tiny config with `sections` (exit 0), its stdout."""
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path / "run", tmp_path / "tok", tmp_path / "cache", **sections)))
    capsys.readouterr()
    assert cli_main(["train", str(path), "--print-config"]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_print_config_of_a_run_from_a_model_folder_marks_tokenizer_train_unused(model_folder, tmp_path, capsys):
    # was: the tokenizer section printed tokenizer.train (vocab_size 512, ...) with nothing saying the run loads the
    # folder's own tokenizer and trains none
    folder = model_folder / "model"
    out = _printed(tmp_path, capsys, model={"name_or_path": str(folder), "dims": None}, tokenizer={"path": None})
    lines = out.splitlines()
    at = lines.index("tokenizer:")
    assert lines[at - 1] == (f"# the run loads the tokenizer of model.name_or_path ({folder}) and trains none: "
                             f"tokenizer.train is unused")
    assert lines[at + 1:at + 3] == ["  path: null", "  train:"]
    printed = tmp_path / "printed.yaml"
    printed.write_text(out)
    assert load_config(printed).to_dict()["tokenizer"] == {"path": None, "train": {"vocab_size": 512,
                                                                                    "max_examples_per_task": 2000}}
    tok = str(model_folder / "tok")  # tokenizer.path: that one, whatever the model
    lines = _printed(tmp_path, capsys, tokenizer={"path": tok}).splitlines()
    assert lines[lines.index("tokenizer:") - 1] == (f"# the run loads the tokenizer of tokenizer.path ({tok}) and "
                                                    f"trains none: tokenizer.train is unused")


def test_print_config_of_a_run_training_its_tokenizer_has_no_tokenizer_note(tmp_path, capsys):
    out = _printed(tmp_path, capsys, tokenizer={"path": None, "train": {"vocab_size": 128}})
    assert "tokenizer.train is unused" not in out and "\ntokenizer:\n  path: null\n  train:\n" in out
