"""t2t_mtl.model_folder: a model folder is one holding a config.json file, whatever else it holds."""
from __future__ import annotations

from t2t_mtl.model_folder import is_model_folder


def test_a_model_folder_holds_a_config_json_file(tmp_path):
    model, run, odd = tmp_path / "model", tmp_path / "run", tmp_path / "odd"
    (model / "config.json").parent.mkdir()
    (model / "config.json").write_text("{}")
    (run / "checkpoints").mkdir(parents=True)
    (odd / "config.json").mkdir(parents=True)  # a folder of that name is no model's config
    assert is_model_folder(model) and is_model_folder(str(model))
    assert not is_model_folder(run) and not is_model_folder(odd) and not is_model_folder(tmp_path / "missing")
