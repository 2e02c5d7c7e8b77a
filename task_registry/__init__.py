"""task_registry: every NLP task as an instructed text-to-text prompt.

Templates (sandboxed Jinja, promptsource-compatible) render rows of a data source (hub id, local files or
a Python generator) into `inputs`/`targets` strings; tasks and mixtures live in a global registry; YAML
task files and promptsource template collections register tasks without Python. Depends only on
datasets, jinja2 and yaml (and scipy, for BIG-bench's normalisation of an example's choice scores).
"""
from typing import Any

from .errors import (
    AnswerNotInChoicesError,
    DataSourceError,
    DuplicateRegistrationError,
    EvalOnlyTaskError,
    HeldOutTaskError,
    MissingFieldError,
    SandboxViolationError,
    TaskDefinitionError,
    TaskFileError,
    TaskRegistryError,
    TemplateRenderError,
    TemplateSyntaxError,
    UnknownMixtureError,
    UnknownTaskError,
    UnknownTemplateError,
)
from .eval_protocol import EvalProtocol
from .few_shot_format import FewShotFormat
from .mixture import Mixture, normalize, rate_num_examples
from .overlap import TaskOverlap, find_overlap
from .promptsource import import_promptsource, load_promptsource_collection, promptsource_task
from .preprocessors import Filter, Map, Preprocessor, Rename
from .span_corruption import SpanCorruption
from .registry import (
    comma_separated,
    get_mixture,
    get_task,
    isolated_registry,
    list_mixtures,
    list_tasks,
    load_builtin_tasks,
    register_mixture,
    register_task,
    resolve,
    resolve_selection,
    task,
    training_rates,
)
from .sources import (DATA_DIR_ENV, GeneratorSource, HFSource, LocalFileSource, Source, get_data_dir, restored_data_dir,
                      set_data_dir)
from .task import PreprocessStats, RenderStats, Task
from .task_modules import TaskModuleError, import_task_modules
from .template import RenderedExample, Template, TemplateMetadata
from .tokenize import TruncationCounts, count_truncated, tokenize_dataset
from .yaml_tasks import (TaskCheck, check_task_files, load_task_dir, load_task_dirs, parse_task_file, task_files,
                         validate_task_file, validate_task_files, yaml_task_file)

__all__ = [
    "AnswerNotInChoicesError", "DataSourceError", "DuplicateRegistrationError", "EvalOnlyTaskError",
    "HeldOutTaskError", "MissingFieldError", "SandboxViolationError", "TaskDefinitionError", "TaskRegistryError",
    "TemplateRenderError", "TemplateSyntaxError", "UnknownMixtureError", "UnknownTaskError",
    "UnknownTemplateError", "EvalProtocol", "FewShotFormat", "Mixture", "normalize", "rate_num_examples", "TaskOverlap",
    "find_overlap", "Filter", "Map", "Preprocessor",
    "Rename", "SpanCorruption", "comma_separated", "get_mixture", "get_task", "isolated_registry", "list_mixtures",
    "list_tasks", "load_builtin_tasks", "register_mixture", "register_task", "resolve", "resolve_selection", "task",
    "training_rates",
    "DATA_DIR_ENV", "GeneratorSource", "HFSource", "LocalFileSource", "Source",
    "get_data_dir", "restored_data_dir", "set_data_dir", "OUTPUT_FEATURES", "PreprocessStats", "RenderStats", "Task",
    "TaskModuleError", "import_task_modules",
    "RenderedExample", "Template", "TemplateMetadata", "tokenize_dataset", "count_truncated", "TruncationCounts",
    "TaskFileError",
    "import_promptsource", "load_promptsource_collection", "promptsource_task", "load_task_dir", "load_task_dirs",
    "parse_task_file", "task_files", "validate_task_file", "validate_task_files", "check_task_files", "TaskCheck",
    "yaml_task_file",
]


def __getattr__(name: str) -> Any:
    """OUTPUT_FEATURES (the rendered rows' datasets.Features), built when first read: importing datasets takes a
    second or more, which listing or checking tasks never needs (PEP 562)."""
    if name == "OUTPUT_FEATURES":
        from .row_renderer import output_features

        return output_features()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
