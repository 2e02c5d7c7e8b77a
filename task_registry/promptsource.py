"""Import promptsource template collections (`templates.yaml` with `!Template` / `!TemplateMetadata` tags).

A collection root holds `<dataset>/templates.yaml` or `<dataset>/<subset>/templates.yaml` (user-namespaced
datasets such as `Zaid/coqa_expanded` add one folder level). The file is read with a safe YAML loader that
only understands the two promptsource tags (never arbitrary Python objects). Every template becomes a
`Template` with promptsource's name, id, reference, answer choices and metadata; a Jinja syntax error names
the file and the line where the template text starts.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

import yaml

from .errors import TaskDefinitionError, TemplateSyntaxError, close_matches
from .lazy_modules import LazyModule
from .preprocessors import AnyDataset, Preprocessor
from .sources import HFSource
from .task import Task
from .template import Template
from .yaml_keys import check_written_keys
from .yaml_limits import BoundedComposition

TEMPLATES_FILENAME = "templates.yaml"
_TEMPLATE_TAG = "!Template"
_METADATA_TAG = "!TemplateMetadata"

datasets = LazyModule("datasets")


class _TaggedMapping(dict):
    """A mapping read from a promptsource tag, remembering where its `jinja` value starts."""

    jinja_line: Optional[int] = None


class _PromptsourceLoader(BoundedComposition, getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """The (libyaml-accelerated when available) SafeLoader plus promptsource's two tags, read as mappings; a
    key repeated in one mapping (e.g. two templates under one id, where YAML keeps only the last) is an error;
    within `yaml_limits`' bounds."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        check_written_keys(self, node)
        return super().construct_mapping(node, deep=deep)


def _construct_template(loader: _PromptsourceLoader, node: yaml.MappingNode) -> _TaggedMapping:
    mapping = _TaggedMapping(loader.construct_mapping(node, deep=True))
    for key_node, value_node in node.value:
        if key_node.value == "jinja":
            mapping.jinja_line = value_node.start_mark.line + 1 + (1 if value_node.style in ("|", ">") else 0)
    return mapping


def _construct_metadata(loader: _PromptsourceLoader, node: yaml.MappingNode) -> dict[str, Any]:
    return dict(loader.construct_mapping(node, deep=True))


_PromptsourceLoader.add_constructor(_TEMPLATE_TAG, _construct_template)
_PromptsourceLoader.add_constructor(_METADATA_TAG, _construct_metadata)


def read_templates_file(path: Union[str, os.PathLike]) -> tuple[dict[str, Any], list[Template]]:
    """Parse one `templates.yaml`: its header (`dataset`, `subset`) and its templates in file order."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.load(handle, Loader=_PromptsourceLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        raise TaskDefinitionError(f"{path}: not valid promptsource YAML: {error}") from None
    except UnicodeDecodeError as error:
        raise TaskDefinitionError(f"{path}: not UTF-8 text ({error}); save it as UTF-8") from None
    if not isinstance(document, dict) or not isinstance(document.get("templates"), dict):
        raise TaskDefinitionError(f"{path}: expected a mapping with a `templates:` mapping of !Template entries")
    templates = []
    for key, entry in document["templates"].items():
        if not isinstance(entry, _TaggedMapping):
            raise TaskDefinitionError(f"{path}: templates entry {key!r} is not tagged {_TEMPLATE_TAG}")
        missing = [field for field in ("name", "jinja") if field not in entry]
        if missing:
            raise TaskDefinitionError(f"{path}: template {key!r} lacks {missing}")
        try:
            templates.append(Template(
                entry["name"], entry["jinja"], answer_choices=entry.get("answer_choices"),
                metadata=entry.get("metadata"), id=entry.get("id") or str(key), reference=entry.get("reference") or "",
                source_file=str(path), source_line=entry.jinja_line))
        except TemplateSyntaxError:  # names the file and line already
            raise
        except TaskDefinitionError as error:
            raise TaskDefinitionError(f"{path}: {error}") from None
    subset = document.get("subset")
    header = {"dataset": document.get("dataset"),
              "subset": None if subset == "None" else subset}  # snli's and multi_nli's files write `subset: None`
    return header, templates


def _collection_file(root: Path, dataset: str, subset: Optional[str]) -> Path:
    path = root / dataset / subset / TEMPLATES_FILENAME if subset else root / dataset / TEMPLATES_FILENAME
    if not path.is_file():
        known = [str(p.parent.relative_to(root)) for p in root.rglob(TEMPLATES_FILENAME)]
        wanted = f"{dataset}/{subset}" if subset else dataset
        matches = close_matches(wanted, known, substrings=False)
        hint = f"; did you mean {', '.join(repr(m) for m in matches)}?" if matches else ""
        raise TaskDefinitionError(f"no promptsource templates for {wanted!r} under {root} ({path} does not "
                                  f"exist){hint}")
    return path


def import_promptsource(dir_or_file: Union[str, os.PathLike], dataset: Optional[str] = None,
                        subset: Optional[str] = None) -> list[Template]:
    """Templates of one promptsource `templates.yaml`.

    `dir_or_file` is the file itself, the folder holding it, or a collection root with `dataset` (and
    `subset`) naming `<root>/<dataset>[/<subset>]/templates.yaml`.
    """
    path = Path(dir_or_file)
    if path.is_dir():
        if dataset is not None:
            path = _collection_file(path, dataset, subset)
        elif (path / TEMPLATES_FILENAME).is_file():
            path = path / TEMPLATES_FILENAME
        else:
            raise TaskDefinitionError(f"{path} is a folder without {TEMPLATES_FILENAME}; pass dataset= (and subset=) "
                                      f"to pick one from a collection")
    elif not path.is_file():
        raise TaskDefinitionError(f"promptsource templates file {path} does not exist")
    return read_templates_file(path)[1]


def load_promptsource_collection(root: Union[str, os.PathLike]) -> dict[tuple[str, Optional[str]], list[Template]]:
    """Every `templates.yaml` under `root`, keyed by (dataset, subset) as their headers name them (subset None for a
    dataset without subsets). Two files whose headers name the same (dataset, subset) are an error naming both."""
    root = Path(root)
    collection: dict[tuple[str, Optional[str]], list[Template]] = {}
    origin: dict[tuple[str, Optional[str]], Path] = {}
    for path in sorted(root.rglob(TEMPLATES_FILENAME)):
        header, templates = read_templates_file(path)
        relative = path.parent.relative_to(root).parts
        dataset = header["dataset"] or "/".join(relative[:-1] if len(relative) > 1 else relative)
        key = (dataset, header["subset"])
        if key in origin:
            raise TaskDefinitionError(
                f"{path}: its header names dataset {dataset!r} subset {key[1]!r}, as {origin[key]} does, so one "
                f"file's templates would hide the other's; correct the `dataset:` / `subset:` header of one of them")
        collection[key], origin[key] = templates, path
    return collection


class HyphensToUnderscores(Preprocessor):
    """Rename columns whose names hold `-` to use `_` (promptsource's `removeHyphen`, applied before its
    templates render, since Jinja names cannot contain hyphens)."""

    keeps_rows = True

    def __call__(self, dataset: AnyDataset) -> AnyDataset:
        """`dataset` with its columns renamed; two columns that would get one name are a `TaskDefinitionError`. A stream
        that names no columns (they are known as its rows are read) has each row's renamed as it is read."""
        if dataset.column_names is None:
            return datasets.IterableDataset.from_generator(_underscored_rows, gen_kwargs={"rows": dataset})
        _check_no_merge(dataset.column_names)
        mapping = {c: c.replace("-", "_") for c in dataset.column_names if "-" in c}
        return dataset.rename_columns(mapping) if mapping else dataset

    def describe(self) -> str:
        """`hyphens_to_underscores()`."""
        return "hyphens_to_underscores()"


def _check_no_merge(columns: Iterable[str]) -> None:
    """A `TaskDefinitionError` naming two of `columns` that `-` → `_` would give one name."""
    named: dict[str, list[str]] = {}
    for column in columns:
        named.setdefault(column.replace("-", "_"), []).append(column)
    for name, sources in named.items():
        if len(sources) > 1:
            raise TaskDefinitionError(
                f"columns {' and '.join(map(repr, sources))} would both be {name!r} once promptsource's `-` in "
                f"column names becomes `_` (its templates read `a-b` as `a_b`; promptsource keeps the last "
                f"one's values alone): rename one of them in the data")


def _underscored_rows(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """`rows` with `-` in their field names as `_` (`HyphensToUnderscores` of a stream that names no columns)."""
    for row in rows:
        _check_no_merge(row)
        yield {key.replace("-", "_"): value for key, value in row.items()}


def promptsource_task(name: str, templates_root: Union[str, os.PathLike], dataset: str,
                      subset: Optional[str] = None, template_names: Optional[Sequence[str]] = None,
                      **task_kwargs: Any) -> Task:
    """A `Task` on the hub dataset `dataset`/`subset` with its promptsource templates (all, or the named).

    Column names with `-` are renamed to `_` first, as promptsource does; `preprocessors` in
    `task_kwargs` run after that.
    """
    templates = import_promptsource(templates_root, dataset=dataset, subset=subset)
    if template_names is not None:
        by_name = {t.name: t for t in templates}
        unknown = [n for n in template_names if n not in by_name]
        if unknown:
            raise TaskDefinitionError(f"promptsource {dataset}/{subset or ''} has no template(s) {unknown}; "
                                      f"it has {sorted(by_name)}")
        templates = [by_name[n] for n in template_names]
    preprocessors = [HyphensToUnderscores(), *task_kwargs.pop("preprocessors", ())]
    return Task(name, HFSource(dataset, subset), templates, preprocessors=preprocessors, **task_kwargs)
