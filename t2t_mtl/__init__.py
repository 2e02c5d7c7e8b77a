"""t2t-mtl: text-to-text unified multitask learning.

Every task is an instructed seq2seq example; this package holds the framework around the task registry:
data pipeline, mixture samplers, loss weighting, models, the DeepSpeed engine, gradient surgery,
evaluation, analysis and the command line.

The names a Python user starts from are importable from here (`from t2t_mtl import load_config, train`); each is
the object of the module it is defined in, which is imported on first use, so `import t2t_mtl` loads no torch.
"""
from __future__ import annotations

from t2t_mtl.lazy_package import lazy_exports

__version__ = "0.1.0"

#: public name -> the module that defines it (imported when the name is first read: PEP 562)
_EXPORTS = {
    **dict.fromkeys(("Config", "ConfigError", "config_from_dict", "load_config"), "t2t_mtl.config"),
    **dict.fromkeys(("TrainResult", "TrainingAbortedError", "train"), "t2t_mtl.engine.trainer"),
    **dict.fromkeys(("export_model", "load_trained_model"), "t2t_mtl.engine.export"),
    **dict.fromkeys(("EvalReport", "EvalSettings", "Prediction", "PredictRequest", "evaluate_tasks", "predict",
                     "read_report", "write_report"), "t2t_mtl.evaluation"),
}

__all__ = ["__version__", *_EXPORTS]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
