"""Row preprocessors applied to a task's raw rows before rendering: rename, filter, map.

Each takes Python callables or, for YAML task files, sandboxed Jinja expressions evaluated against the row
(`Filter("label != -1")`, `Map({"text": "premise ~ ' ' ~ hypothesis"})`). Map-style datasets get an explicit
fingerprint derived from the input fingerprint, the preprocessor's description and the Jinja environment's
version, so results are cached (and not reused after a Jinja upgrade); a Python function's results are keyed by the
function and the source of its package (`code_digest`), so an edited function is run again.
`Task.load_rows` counts the rows a filter drops and logs them; nothing is dropped silently.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Union

import jinja2

from .code_digests import code_digest
from .errors import TaskDefinitionError, TemplateRenderError
from .jinja_env import ENVIRONMENT, environment_version, subscript_problem
from .lazy_modules import LazyModule
from .map_types import written_apart, written_back
from .render_hints import field_hint, row_preview, undefined_name
from .signatures import binding_error

datasets = LazyModule("datasets")
pyarrow = LazyModule("pyarrow")
AnyDataset = Union["datasets.Dataset", "datasets.IterableDataset"]


def compile_expression(expression: str, where: str) -> jinja2.environment.TemplateExpression:
    """`expression` compiled in the template sandbox; a syntax error, or an expression that is not a string, is a
    `TaskDefinitionError` naming `where`."""
    if not isinstance(expression, str):  # Jinja would compile str(value): YAML's 2020-11-12 as 2020 - 11 - 12
        raise TaskDefinitionError(f"{where}: a Jinja expression must be a string, got {expression!r} "
                                  f"({type(expression).__name__}); quote it in YAML (\"'text'\" for a text constant)")
    try:
        return ENVIRONMENT.compile_expression(expression, undefined_to_none=False)
    except jinja2.TemplateSyntaxError as error:
        raise TaskDefinitionError(f"{where}: Jinja expression {expression!r} does not parse: {error.message}") from None


def evaluate_expression(compiled: jinja2.environment.TemplateExpression, row: Mapping[str, Any], index: int,
                        where: str, expression: str) -> Any:
    """The expression's value on `row` (row `index` of the rows this preprocessor receives, i.e. after any
    earlier filter); every failure is a `TemplateRenderError` naming the preprocessor, the expression and the
    row."""
    where = f"{where}, row {index}"
    try:
        value = compiled(**row)
        if isinstance(value, jinja2.Undefined):  # a bare name (`lable`) evaluates to Undefined, not an error
            value._fail_with_undefined_error()
        return value
    except jinja2.UndefinedError as error:
        problem = subscript_problem(str(error))
        if problem:
            raise TemplateRenderError(f"{where}: expression {expression!r} failed: {problem}; the row is "
                                      f"{row_preview(row)}") from None
        hint = field_hint(undefined_name(str(error)), row, written_in="the expression")
        raise TemplateRenderError(f"{where}: expression {expression!r} uses a missing field ({error}); "
                                  f"the row has fields {sorted(row)}{hint}") from None
    except jinja2.exceptions.SecurityError as error:
        raise TemplateRenderError(f"{where}: expression {expression!r} refused by the sandbox: {error}") from None
    except Exception as error:  # a comparison or operation the row's values do not support
        raise TemplateRenderError(f"{where}: expression {expression!r} failed ({type(error).__name__}: {error}); "
                                  f"the row is {row_preview(row)}") from None


def called_on_row(fn: Callable[[Mapping[str, Any]], Any], row: Mapping[str, Any], index: int, where: str) -> Any:
    """`fn(row)`, a Python function of a preprocessor (row `index` of the rows it receives); its failure is a
    `TemplateRenderError` naming the preprocessor `where` and the row, chained to it (whose traceback ends at the
    function's own line), a task_registry error the function raises too (a template it renders names no step)."""
    try:
        return fn(row)
    except Exception as error:  # the user's function: any failure, named with its row
        raise TemplateRenderError(f"{where}, row {index}: the function raised {type(error).__name__}: {error}; the "
                                  f"row is {row_preview(row)}") from error


def _fingerprint(dataset: AnyDataset, description: str, fn: Any) -> dict[str, Any]:
    """An explicit fingerprint for a map-style result: the input's and the step's description, with, for Jinja
    expressions, the Jinja `environment_version` (an upgrade may change the results) and, for a Python function
    `fn`, datasets' hash of it and `code_digest(fn)` (datasets keys a function imported from a module by its name
    alone: an edited function would be served its old results). {} for a function datasets cannot hash (it gives
    such a result a random fingerprint, never reused)."""
    if not isinstance(dataset, datasets.Dataset):
        return {}
    hasher = datasets.fingerprint.Hasher
    if isinstance(fn, (str, Mapping)):
        return {"new_fingerprint": hasher.hash((dataset._fingerprint, description, environment_version()))}
    try:
        function = hasher.hash(fn)
    except Exception:  # (datasets' own fallback for what it cannot pickle catches as widely)
        return {}
    return {"new_fingerprint": hasher.hash((dataset._fingerprint, description, function, code_digest(fn)))}


class Preprocessor:
    """Turns a dataset of rows into another dataset of rows.

    `keeps_rows` is true for one-row-in, one-row-out steps; for the others `Task.load_rows` counts and
    logs the rows they drop.
    """

    keeps_rows = False

    def __call__(self, dataset: AnyDataset) -> AnyDataset:
        raise NotImplementedError

    def describe(self) -> str:
        """The step as it was written (`filter(label != -1)`), for messages, logs and fingerprints."""
        raise NotImplementedError

    def identity(self) -> str:
        """What the output depends on (`Task.definition_digest`): `describe()`, and a Python function's code."""
        return self.describe()

    def __repr__(self) -> str:
        return self.describe()


class Rename(Preprocessor):
    """Rename columns: `Rename({"sentence1": "premise"})`."""

    keeps_rows = True

    def __init__(self, mapping: Mapping[str, str]):
        if not isinstance(mapping, Mapping) or not mapping:
            raise TaskDefinitionError(f"rename needs a non-empty mapping old → new, got {mapping!r}")
        bad = [f"{old!r}: {new!r}" for old, new in mapping.items()
               if not (isinstance(old, str) and old and isinstance(new, str) and new)]
        if bad:
            raise TaskDefinitionError(f"rename maps column names to column names (non-empty strings), got "
                                      f"{', '.join(bad)}")
        self.mapping = dict(mapping)

    def __call__(self, dataset: AnyDataset) -> AnyDataset:
        """The renamed dataset; a missing or clashing column is a `TaskDefinitionError`, raised here when the
        columns are known and, for a stream whose columns are not (after a map), on its first row."""
        if dataset.column_names is not None:
            self._check(dataset.column_names)
        if isinstance(dataset, datasets.Dataset):
            return dataset.rename_columns(self.mapping)
        # datasets' streaming rename refuses a swap (`a → b, b → a`) that the map-style one allows, with a
        # ValueError naming the wrong columns: rename each row here, with the same checks as above
        features = dataset.features
        renamed = None if features is None else datasets.Features({self.mapping.get(c, c): f
                                                                   for c, f in features.items()})
        return dataset.map(self._rename_row, remove_columns=list(self.mapping), features=renamed)

    def _check(self, columns: list[str]) -> None:
        missing = sorted(set(self.mapping) - set(columns))
        if missing:
            raise TaskDefinitionError(f"rename: column(s) {missing} do not exist; columns are {list(columns)}")
        clashes = sorted(new for new in self.mapping.values() if new in columns and new not in self.mapping)
        if clashes:  # renaming onto a kept column would silently replace it
            kept = {**self.mapping, **{name: f"{name}_original" for name in clashes}}
            raise TaskDefinitionError(f"rename {self.mapping}: column(s) {clashes} exist already; to keep them, rename "
                                      f"them in the same step, e.g. {kept} (columns are {list(columns)})")

    def _rename_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        self._check(list(row))
        return {new: row[old] for old, new in self.mapping.items()}

    def describe(self) -> str:
        """`rename({old: new, ...})`."""
        return f"rename({self.mapping})"


def callable_name(fn: Callable[..., Any]) -> str:
    """`fn`'s qualified name, else its repr (not both: a method's repr holds its object's, which may describe itself
    through `fn` — endlessly)."""
    name = getattr(fn, "__qualname__", None)
    return name if isinstance(name, str) else repr(fn)


def one_argument_problem(fn: Callable[..., Any], argument: str) -> Optional[str]:
    """Why `fn` cannot be called with one positional argument, `argument` (as a step or a postprocess calls it),
    from its signature: the message names it and what to change; None when it can, or has no signature to read."""
    problem = binding_error(fn, None)
    if problem is None:
        return None
    signature, error = problem
    return (f"{callable_name(fn)}{signature} cannot be called with {argument} alone ({error}); it is given nothing "
            f"else: give its other parameters defaults")


def step_identity(description: str, fn: Any) -> str:
    """A step's `description`, with `code_digest(fn)` when `fn` is a Python function (not Jinja expressions), whose
    name stays the same when its code is edited."""
    return description if isinstance(fn, (str, Mapping)) else f"{description} code={code_digest(fn)}"


class _ExpressionPreprocessor(Preprocessor):
    """A preprocessor whose Jinja expressions are compiled into `_compiled` by `_compile()`: compiled Jinja does not
    pickle, so it is left out of the pickled state (a subclass's own attributes kept) and compiled again on loading."""

    def _compile(self) -> None:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key != "_compiled"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._compile()


class Filter(_ExpressionPreprocessor):
    """Keep the rows for which `predicate(row)` (or the Jinja expression) is true."""

    def __init__(self, predicate: Union[str, Callable[[Mapping[str, Any]], bool]]):
        if not isinstance(predicate, str) and not callable(predicate):
            raise TaskDefinitionError(f"filter needs a callable or a Jinja expression string, got {predicate!r}")
        if not isinstance(predicate, str) and (problem := one_argument_problem(predicate, "the row")):
            raise TaskDefinitionError(f"filter: {problem}")
        self.predicate = predicate
        self._compile()

    def _compile(self) -> None:
        self._compiled = compile_expression(self.predicate, "filter") if isinstance(self.predicate, str) else None

    def _test(self, row: Mapping[str, Any], index: int) -> bool:
        if self._compiled is None:
            return called_on_row(self.predicate, row, index, self.describe())
        return bool(evaluate_expression(self._compiled, row, index, "filter", self.predicate))

    def __call__(self, dataset: AnyDataset) -> AnyDataset:
        return dataset.filter(self._test, with_indices=True,
                              **_fingerprint(dataset, self.describe(), self.predicate))

    def describe(self) -> str:
        """`filter(<expression or function name>)`."""
        what = self.predicate if isinstance(self.predicate, str) else callable_name(self.predicate)
        return f"filter({what})"

    def identity(self) -> str:
        """`describe()`, with `code_digest` of a Python predicate."""
        return step_identity(self.describe(), self.predicate)


class Map(_ExpressionPreprocessor):
    """Add or replace fields: `Map(fn)` with `fn(row) -> dict of new fields`, or a mapping field → Jinja expr."""

    keeps_rows = True

    def __init__(self, fn: Union[Mapping[str, str], Callable[[Mapping[str, Any]], Mapping[str, Any]]]):
        if isinstance(fn, Mapping):
            if not fn:
                raise TaskDefinitionError("map needs at least one field: expression pair")
            bad = [field for field in fn if not isinstance(field, str) or not field]
            if bad:
                raise TaskDefinitionError(f"map: field names must be non-empty strings, got {bad}")
        elif not callable(fn):
            raise TaskDefinitionError(f"map needs a callable or a mapping field → Jinja expression, got {fn!r}")
        elif problem := one_argument_problem(fn, "the row"):
            raise TaskDefinitionError(f"map: {problem}")
        self.fn = fn
        self._compile()

    def _compile(self) -> None:
        self._compiled = None if not isinstance(self.fn, Mapping) else {
            field: (compile_expression(expr, f"map field {field!r}"), expr) for field, expr in self.fn.items()}

    def _apply(self, row: Mapping[str, Any], index: int, first: dict[str, Any],
               columns: frozenset[str] = frozenset()) -> Mapping[str, Any]:
        """The fields the map writes on `row`, those of the input's `columns` renamed apart (`written_apart`);
        `first` holds the first row's fields a Python function wrote (`_same_fields`)."""
        if self._compiled is None:
            fields = self._new_fields(called_on_row(self.fn, row, index, self.describe()), index)
            self._same_fields(fields, index, first)
        else:
            fields = {field: evaluate_expression(c, row, index, f"map field {field!r}", expr)
                      for field, (c, expr) in self._compiled.items()}
        return written_apart(fields, columns) if columns else fields

    def _new_fields(self, value: Any, index: int) -> dict[str, Any]:
        """A Python function's result on row `index` as the fields to add or replace; anything but a mapping (None:
        a function that edits the row and does not return it) is a `TaskDefinitionError` naming the step and row."""
        if isinstance(value, Mapping):
            return dict(value)
        text = repr(value)
        shown = text if len(text) <= 100 else text[:100] + "…"
        what = "None" if value is None else f"{type(value).__name__} {shown}"
        raise TaskDefinitionError(f"{self.describe()}, row {index}: the function returned {what}, not the row's "
                                  f"fields: return the row (`return row` after editing it) or a dict of the fields "
                                  f"to add or replace")

    def _same_fields(self, fields: Mapping[str, Any], index: int, first: dict[str, Any]) -> None:
        """Refuse a Python function's `fields` on row `index` unless they are those it wrote on the first row (kept in
        `first`): loaded, datasets takes a map's columns from its first row, and dropped a field that row lacks (or
        failed on a row lacking one it has), where streamed rows kept each row's fields."""
        first_index, names = first.setdefault("fields", (index, sorted(fields)))
        if sorted(fields) != names:
            raise TaskDefinitionError(f"{self.describe()}, row {index}: the function returned the fields "
                                      f"{sorted(fields)}, on row {first_index} {names}: return the same fields on "
                                      f"every row (the row, edited, or a dict of every field it writes, None for "
                                      f"one with no value)")

    def __call__(self, dataset: AnyDataset) -> AnyDataset:
        """The mapped rows; a loaded field the map writes is typed by the values written (`map_types`), as a
        streamed one is."""
        if not isinstance(dataset, datasets.Dataset):  # (streamed rows keep the values written)
            return self._mapped(dataset, {})
        columns = frozenset(dataset.column_names)
        # (the description names the fields written apart, so that a result cached with them in place is not read)
        written = f"{self.describe()} written apart"
        return written_back(self._mapped(dataset, {"columns": columns}, **_fingerprint(dataset, written, self.fn)))

    def _mapped(self, dataset: AnyDataset, fn_kwargs: dict[str, Any], **fingerprint: Any) -> AnyDataset:
        try:
            return dataset.map(self._apply, with_indices=True, fn_kwargs={"first": {}, **fn_kwargs}, **fingerprint)
        except (pyarrow.ArrowInvalid, pyarrow.ArrowTypeError) as error:  # one column, values of several types
            raise TaskDefinitionError(f"{self.describe()}: the new values do not share one type across rows "
                                      f"({error}); make every row's value the same type (e.g. `... | string` for "
                                      "text)") from None

    def describe(self) -> str:
        """`map({field: expression, ...})` or `map(<function name>)`."""
        what = dict(self.fn) if isinstance(self.fn, Mapping) else callable_name(self.fn)
        return f"map({what})"

    def identity(self) -> str:
        """`describe()`, with `code_digest` of a Python function."""
        return step_identity(self.describe(), self.fn)


def from_config(entry: Mapping[str, Any], where: str = "preprocessor") -> Preprocessor:
    """A preprocessor from a YAML entry: `{rename: {...}}`, `{filter: "expr"}`, `{map: {field: "expr"}}` or
    `{span_corruption: {field: text, noise_density: 0.15, mean_span_length: 3, seed: 0, max_words: 100}}`."""
    from .span_corruption import SpanCorruption

    kinds = {"rename": Rename, "filter": Filter, "map": Map, "span_corruption": SpanCorruption}
    if not isinstance(entry, Mapping) or len(entry) != 1 or next(iter(entry)) not in kinds:
        raise TaskDefinitionError(f"{where}: expected one of {sorted(kinds)} as the only key, got {entry!r}")
    kind, value = next(iter(entry.items()))
    if kind != "span_corruption":
        return kinds[kind](value)
    if not isinstance(value, Mapping) or "field" not in value:
        raise TaskDefinitionError(f"{where}: span_corruption needs a mapping with `field` (the text to corrupt), "
                                  f"got {value!r}")
    options = {"field", "noise_density", "mean_span_length", "seed", "max_words", "inputs_field", "targets_field"}
    unknown = sorted(set(value) - options)
    if unknown:
        raise TaskDefinitionError(f"{where}: span_corruption has no option(s) {unknown}; options: {sorted(options)}")
    options = dict(value)
    return SpanCorruption(options.pop("field"), **options)
