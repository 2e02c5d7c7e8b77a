"""Prompt templates: a row of a dataset rendered to an (inputs, targets) pair, promptsource-compatible.

Rendering follows promptsource's `Template.apply(example)` (default `truncate=True`) exactly:

1. every string value of the row has `|||` replaced by a protector token (so row text never splits);
2. the answer choices, if any, are the `answer_choices` Jinja string rendered against the protected row
   (without truncation), split on `|||`, each part stripped and then un-protected;
3. the template text gets `| string | truncate(2048)` appended inside every `{{ ... }}` (textually), is
   rendered with the protected row plus `answer_choices` (the list from step 2, or `None`), split on `|||`,
   and each part un-protected and then stripped.

Two parts give `inputs` and `targets`. An optional `references` Jinja string (rendered like the answer
choices, split on `|||`) lists every acceptable gold answer for scoring (e.g. all of WebQuestions'
`answers`); it is rendered only for rows that are not skipped, and without it the references are `[targets]`.
One part (the template rendered no `|||`, e.g. a row the template
excludes with `{% if %}`) or an empty target is promptsource's "skip" case: the result has `targets == ""`
and `skipped` is true, as it is for an empty input (T0 drops those too); `Task.to_dataset` counts and drops such
rows, and evaluation skips them. More than two parts is an error.

Differences from promptsource, on purpose: a sandboxed environment (no Python internals), undefined
variables raise instead of rendering empty, a target that is not among the answer choices raises, a row
field that indexes the answer choices (`answer_choices[label]`) and holds a negative number raises (it is
`datasets`' -1 for an unlabeled row, which promptsource renders as the last choice) unless the template skips the
row (promptsource's `{% if label != -1 %}` guard), and the `choice` filter can be seeded per row. Each render error
names the task, template, row and field; what it likely means and what to write is `render_hints`'s to say.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import random
import re
import uuid
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import jinja2
import jinja2.meta
import jinja2.nodes
from jinja2.exceptions import SecurityError

from .errors import (
    AnswerNotInChoicesError,
    MissingFieldError,
    SandboxViolationError,
    TaskDefinitionError,
    TemplateRenderError,
    TemplateSyntaxError,
)
from .jinja_env import (EMPTY_RANDOM, ENVIRONMENT, MISBOUND, MISBOUND_IF_NUMBERS, EmptyChoiceError, NullPrintedError,
                        compile_template, misbound_truncation, refusing_printed_nulls, seeded_choices, with_truncation)
from .render_hints import (choice_hint, empty_pick_problem, field_hint, no_element_problem, row_preview,
                           separator_hint, undefined_name)

SEPARATOR = "|||"
# The token promptsource substitutes for `|||` inside row values while rendering.
PIPE_PROTECTOR = "3ed2dface8203c4c9dfb1a5dc58e41e0"

_JINJA_MARKUP = re.compile(r"\{[{%#]")  # what starts an expression, a statement or a comment


@dataclasses.dataclass(frozen=True)
class TemplateMetadata:
    """promptsource's template annotations (`!TemplateMetadata`)."""

    original_task: Optional[bool] = None
    choices_in_prompt: Optional[bool] = None
    metrics: Optional[list[str]] = None
    languages: Optional[list[str]] = None

    @classmethod
    def coerce(cls, value: Union[None, "TemplateMetadata", Mapping[str, Any]], *, template: str) -> "TemplateMetadata":
        """A `TemplateMetadata` from `None`, an instance or a mapping; unknown keys are an error."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise TaskDefinitionError(f"template {template!r}: metadata must be a mapping, got {type(value).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise TaskDefinitionError(
                f"template {template!r}: unknown metadata key(s) {unknown}; allowed: {sorted(known)}"
            )
        for key, item in value.items():
            flag = key in ("original_task", "choices_in_prompt")
            if item is not None and not (isinstance(item, bool) if flag else
                                         isinstance(item, (list, tuple)) and all(isinstance(v, str) for v in item)):
                raise TaskDefinitionError(f"template {template!r}: metadata `{key}` must be "
                                          f"{'true or false' if flag else 'a list of strings'}, got {item!r}")
        return cls(**dict(value))

    def to_dict(self) -> dict[str, Any]:
        """The four fields as plain data, unset ones `None`."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class RenderedExample:
    """One rendered row: the final strings plus the decaNLP triple (instruction, context, answer)."""

    inputs: str
    targets: str
    answer_choices: Optional[list[str]]
    instruction: str
    context: str
    answer: str
    references: Optional[list[str]] = None

    @property
    def gold_references(self) -> list[str]:
        """The acceptable answers to score a prediction against: `references`, else `[targets]` ([] without a
        target)."""
        if self.references is not None:
            return list(self.references)
        return [self.targets] if self.targets else []

    @property
    def skipped(self) -> bool:
        """Whether the row is left out: promptsource's skip case (the template produced no target for it), or an
        empty input (nothing to read; T0's data drops such rows too)."""
        return self.targets == "" or self.inputs == ""


def _is_row(row: Any) -> bool:
    """A mapping of field names to values, or one read as such (`keys`, `items`, `[]`: a pandas row, a Series)."""
    return isinstance(row, Mapping) or all(callable(getattr(row, name, None))
                                           for name in ("keys", "items", "__getitem__"))


def _escape_pipe(row: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value.replace(SEPARATOR, PIPE_PROTECTOR) if isinstance(value, str) else value
            for key, value in row.items()}


def _unescape_pipe(text: str) -> str:
    return text.replace(PIPE_PROTECTOR, SEPARATOR)


def _key_path(node: jinja2.nodes.Node) -> Optional[tuple[str, ...]]:
    """`label` → ("label",), `idx.label` and `idx['label']` → ("idx", "label"); None for any other expression."""
    if isinstance(node, jinja2.nodes.Name):
        return (node.name,)
    if isinstance(node, jinja2.nodes.Getattr):
        parent = _key_path(node.node)
        return None if parent is None else (*parent, node.attr)
    if isinstance(node, jinja2.nodes.Getitem) and isinstance(node.arg, jinja2.nodes.Const) and \
            isinstance(node.arg.value, str):
        parent = _key_path(node.node)
        return None if parent is None else (*parent, node.arg.value)
    return None


class Template:
    """A Jinja prompt template: `input ||| target`, optional `|||`-separated answer choices.

    `references` (optional, a `|||`-separated Jinja string like `answer_choices`) renders every acceptable gold
    answer of a row, e.g. `"{{ answers | join(' ||| ') }}"`; text metrics score a prediction against them
    (SQuAD/exact match take the best, BLEU uses them all). `reference` is promptsource's free-text note on where
    the prompt comes from. `source_file`/`source_line` say where the template's text starts (YAML files), for
    error messages; a render error names them and a given `id` (`origin`).
    `instruction` and `context` are optional Jinja strings giving the decaNLP split of the input
    (e.g. instruction "Is the review positive or negative?", context "{{sentence}}"); without them the
    rendered `instruction` is the whole input and `context` is empty. All Jinja is compiled once, at
    construction (a syntax error raises `TemplateSyntaxError` there), and cached across equal templates.
    """

    def __init__(self, name: str, jinja: str, answer_choices: Optional[str] = None,
                 metadata: Union[None, TemplateMetadata, Mapping[str, Any]] = None, id: Optional[str] = None,
                 *, reference: str = "", instruction: Optional[str] = None, context: Optional[str] = None,
                 references: Optional[str] = None, source_file: Optional[str] = None,
                 source_line: Optional[int] = None):
        if not isinstance(name, str) or not name:
            raise TaskDefinitionError(f"a template needs a non-empty string name, got {name!r}")
        if not isinstance(jinja, str):
            raise TaskDefinitionError(f"template {name!r}: `jinja` must be a string, got {type(jinja).__name__}")
        if answer_choices is not None and not isinstance(answer_choices, str):
            joined = (f": write the list as one string, {' ||| '.join(map(str, answer_choices))!r}"
                      if isinstance(answer_choices, (list, tuple)) and answer_choices else "")
            raise TaskDefinitionError(
                f"template {name!r}: `answer_choices` must be a `|||`-separated Jinja string, "
                f"got {type(answer_choices).__name__}{joined}"
            )
        for key, value in (("instruction", instruction), ("context", context), ("id", id)):
            if value is not None and not isinstance(value, str):
                raise TaskDefinitionError(f"template {name!r}: `{key}` must be a string, got {value!r}")
        if not isinstance(reference, str):
            raise TaskDefinitionError(f"template {name!r}: `reference` (a free-text note on the prompt's source) "
                                      f"must be a string, got {reference!r}")
        if references is not None and (not isinstance(references, str) or not references.strip()):
            raise TaskDefinitionError(
                f"template {name!r}: `references` must be a non-empty `|||`-separated Jinja string listing the "
                f"acceptable answers (e.g. \"{{{{ answers | join(' ||| ') }}}}\"), got {references!r}")
        self.name = name
        self.jinja = jinja
        self.answer_choices = answer_choices
        self.references = references
        self.metadata = TemplateMetadata.coerce(metadata, template=name)
        identity = f"t2t-mtl-template:{name}:{jinja}:{answer_choices}" + (
            f":{references}" if references is not None else "")
        self.id = id or str(uuid.uuid5(uuid.NAMESPACE_URL, identity))
        self.reference = reference
        self.instruction = instruction
        self.context = context
        self.source_file = source_file
        self.source_line = source_line
        self.origin = _origin(source_file, source_line, id)
        self._compile()

    def target_problem(self) -> Optional[str]:
        """Why this template can never render a target, so that every row would be skipped; None when it can."""
        if SEPARATOR not in self.jinja:
            return "has no `|||` separator, so it renders no target and every row would be skipped: write it as " \
                   "`input ||| target`"
        if self.answer_choices is not None and not self.answer_choices.strip():
            return "has an empty answer_choices: list the choices separated by `|||`, or drop the key"
        return None

    # -- compilation -------------------------------------------------------------------------------------
    def _compile(self) -> None:
        if why := self._misbound(MISBOUND) or self._reads_other_templates():  # (file:line first, as a syntax error's)
            where = f"{self.source_file}:{self.source_line}: " if self.source_file and self.source_line else ""
            raise TaskDefinitionError(f"{where}template {self.name!r}: {why}")
        self._main = self._compile_one(with_truncation(self.jinja), self.jinja)
        self._choices = None if self.answer_choices is None else self._compile_one(self.answer_choices,
                                                                                      self.answer_choices)
        self._plain_choices = None if self._choices is None or _JINJA_MARKUP.search(self.answer_choices) else \
            self._split_choices(self._choices.render())
        self._references = None if self.references is None else self._compile_one(self.references, self.references)
        self._instruction = None if self.instruction is None else self._compile_one(
            with_truncation(self.instruction), self.instruction)
        self._context = None if self.context is None else self._compile_one(
            with_truncation(self.context), self.context)

    def _reads_other_templates(self) -> Optional[str]:
        """Why the Jinja cannot render: a tag reading another template (`include`, `import`, `extends`), which the
        sandbox holds none of; else None (a text that does not parse is left to its compiling)."""
        tags = {jinja2.nodes.Include: "include", jinja2.nodes.Import: "import",
                jinja2.nodes.FromImport: "from ... import", jinja2.nodes.Extends: "extends"}
        for text in (self.jinja, self.answer_choices, self.references, self.instruction, self.context):
            try:
                node = None if text is None else next(ENVIRONMENT.parse(text).find_all(tuple(tags)), None)
            except jinja2.TemplateSyntaxError:
                continue
            if node is not None:
                return (f"`{{% {tags[type(node)]} %}}` reads another template file, and a task's template reads none "
                        f"(each renders on its own, in a sandbox): write that text into this one, or a macro "
                        f"(`{{% macro %}}`) defined in it")
        return None

    def _compile_one(self, source: str, original: str) -> jinja2.Template:
        """Compile `source` (the `original` text, possibly with the truncation rewrite) or raise naming the
        original text's error, or the rewrite's when only the rewritten text fails to parse."""
        try:
            return compile_template(source)
        except jinja2.TemplateSyntaxError as error:
            message, lineno = error.message or str(error), error.lineno
            if source != original:
                try:  # compiled, not only parsed: an unknown filter fails at compile time
                    compile_template(original)
                    message = (f"{message} — promptsource's truncation rewrite (`}}}}` → "
                               f"`| string | truncate(...) }}}}`) breaks this template; avoid `}}}}` inside "
                               f"string literals")
                except jinja2.TemplateSyntaxError as original_error:
                    message, lineno = original_error.message or str(original_error), original_error.lineno
            raise TemplateSyntaxError(message, template=self.name, lineno=lineno,
                                      filename=self.source_file, file_lineno=self.source_line) from None

    def render_digest(self) -> str:
        """A hash of the Jinja strings the rows rendered with this template hold: `jinja`, `answer_choices` and
        `references` (not `instruction` and `context`, which no rendered row holds, nor the name, `reference` or the
        metadata). Equal in every process; it changes with any edit of the three."""
        text = json.dumps([self.jinja, self.answer_choices, self.references])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def __getstate__(self) -> dict[str, Any]:
        compiled = {"_main", "_choices", "_plain_choices", "_references", "_instruction", "_context"}
        return {k: v for k, v in self.__dict__.items() if k not in compiled}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._compile()

    @functools.cached_property
    def variables(self) -> frozenset[str]:
        """The row fields the template's Jinja reads (parsed on first use, for error messages)."""
        sources = [s for s in (self.jinja, self.answer_choices, self.references, self.instruction, self.context)
                   if s is not None]
        names = frozenset().union(*(jinja2.meta.find_undeclared_variables(ENVIRONMENT.parse(s)) for s in sources))
        return names - set(ENVIRONMENT.globals) - {"answer_choices"}

    @functools.cached_property
    def target_variables(self) -> frozenset[str]:
        """The row fields the target, the Jinja after `|||`, reads (all of `variables` where that part does not parse
        on its own: a `|||` inside a block)."""
        _, _, target = self.jinja.partition(SEPARATOR)
        try:
            names = jinja2.meta.find_undeclared_variables(ENVIRONMENT.parse(target))
        except jinja2.TemplateSyntaxError:
            return self.variables
        return frozenset(names) - set(ENVIRONMENT.globals) - {"answer_choices"}

    @functools.cached_property
    def choice_index_fields(self) -> tuple[tuple[str, ...], ...]:
        """The row fields (as key paths: `label`, `idx.label`) the Jinja uses directly as an index into
        `answer_choices`; names the template binds itself (`for`, `set`) are not row fields."""
        sources = [s for s in (self.jinja, self.references, self.instruction, self.context) if s is not None]
        paths: set[tuple[str, ...]] = set()
        for source in sources:
            tree = ENVIRONMENT.parse(source)
            bound = {name.name for name in tree.find_all(jinja2.nodes.Name) if name.ctx in ("store", "param")}
            for item in tree.find_all(jinja2.nodes.Getitem):
                if isinstance(item.node, jinja2.nodes.Name) and item.node.name == "answer_choices":
                    path = _key_path(item.arg)
                    if path is not None and path[0] not in bound:
                        paths.add(path)
        return tuple(sorted(paths))

    @functools.cached_property
    def attribute_paths(self) -> tuple[tuple[str, ...], ...]:
        """The nested row fields the Jinja reads as attributes or by a key (`pair.a`, `pair['a']` as ("pair", "a"));
        names the template binds itself (`for`, `set`) are not row fields."""
        sources = [s for s in (self.jinja, self.answer_choices, self.references, self.instruction, self.context)
                   if s is not None]
        paths: set[tuple[str, ...]] = set()
        for source in sources:
            tree = ENVIRONMENT.parse(source)
            bound = {name.name for name in tree.find_all(jinja2.nodes.Name) if name.ctx in ("store", "param")}
            paths.update(path for node in tree.find_all((jinja2.nodes.Getattr, jinja2.nodes.Getitem))
                         if (path := _key_path(node)) is not None and path[0] not in bound)
        return tuple(sorted(paths))

    def _missing_key(self, key: str, row: Mapping[str, Any]) -> Optional[tuple[str, str]]:
        """(the field as `a.b`, what is wrong) for a field `a.b` the template reads whose mapping `a` on `row` has no
        key `key`; None when no such field explains the missing `key`."""
        for path in self.attribute_paths:
            value: Any = row
            for part in path[:-1]:
                value = value.get(part) if isinstance(value, Mapping) else None
            if path[-1] == key and isinstance(value, Mapping) and key not in value:
                parent, field = ".".join(path[:-1]), ".".join(path)
                return field, (f"field {parent!r} has no key {key!r} (the template reads {field}); it has the keys "
                               f"{sorted(value)}")
        return None

    def _choice_index_values(self, row: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
        """(field as `a.b`, the row's value there, None where absent) of every `choice_index_fields` path."""
        for path in self.choice_index_fields:
            value: Any = row
            for key in path:
                value = value.get(key) if isinstance(value, Mapping) else None
            yield ".".join(path), value

    def _check_choice_indices(self, row: Mapping[str, Any], task: Optional[str], row_index: Optional[int]) -> None:
        """Refuse a row whose answer-choice index field is negative (`datasets`' -1 marks an unlabeled row); called
        for rows the template does not skip (a guard such as `{% if label != -1 %}` makes the skip case)."""
        for field, value in self._choice_index_values(row):
            if isinstance(value, int) and not isinstance(value, bool) and value < 0:
                raise self._error(
                    f"field {field!r} is {value}, which `datasets` uses for a row without a label (e.g. a GLUE "
                    f"test split), so `answer_choices[{field}]` has no answer to render; keep labeled rows with a "
                    f"filter preprocessor (`{field} >= 0`) or use a labeled split", task, row_index, field=field)

    def _choice_index_problem(self, row: Mapping[str, Any]) -> Optional[tuple[str, str]]:
        """(field, message) when `answer_choices[field]` found nothing because the row's `field` holds text (a
        list index must be a number; Jinja reads `list['1']` as a missing attribute '1') or a float (`list[1.0]`
        has no element), else None."""
        for field, value in self._choice_index_values(row):
            if isinstance(value, str):
                return field, (f"field {field!r} is the text {_unescape_pipe(value)!r}, which cannot index the answer "
                               f"choices: `answer_choices[{field}]` needs a number (a csv/tsv column with a cell that "
                               f"is not a number, an empty one included, is read as text); fix the rows, or convert "
                               f"numbers written as text with `| int` in a `map` preprocessor")
            if isinstance(value, float):
                return field, (f"field {field!r} is the number {value!r}, which cannot index the answer choices: "
                               f"`answer_choices[{field}]` needs a whole number (a csv column with an empty cell, "
                               f"read by `hf: csv`, holds its numbers as floats); convert it with a `map` preprocessor "
                               f"(`{{{field}: \"{field} | int\"}}`) after a `filter` dropping the rows without one, "
                               f"or list a local csv under `files:`")
        return None

    # -- answer choices ----------------------------------------------------------------------------------
    def answer_choices_for(self, row: Mapping[str, Any], *, task: Optional[str] = None,
                           row_index: Optional[int] = None) -> Optional[list[str]]:
        """The answer choices for `row` (promptsource's `get_answer_choices_list`), or `None`."""
        if self._choices is None:
            return None
        if self._plain_choices is not None:  # no Jinja markup: the same text for every row, rendered once
            return list(self._plain_choices)
        return self._split_choices(self._run(self._choices, _escape_pipe(row), task=task, row_index=row_index))

    @staticmethod
    def _split_choices(rendered: str) -> list[str]:
        return [_unescape_pipe(choice.strip()) for choice in rendered.split(SEPARATOR)]

    @property
    def fixed_answer_choices(self) -> Optional[list[str]]:
        """The answer choices when they do not depend on the row (e.g. `yes ||| no`), else `None`."""
        if self.answer_choices is None:
            return None
        if jinja2.meta.find_undeclared_variables(ENVIRONMENT.parse(self.answer_choices)):
            return None
        return [choice.strip() for choice in self._choices.render().split(SEPARATOR)]

    # -- rendering ---------------------------------------------------------------------------------------
    def render(self, row: Mapping[str, Any], *, task: Optional[str] = None, row_index: Optional[int] = None,
               rng: Optional[random.Random] = None, check_answer_choices: bool = True) -> RenderedExample:
        """Render `row`; errors name `task`, this template, the field and `row_index`.

        `rng` seeds the `choice` and `random` filters. With `check_answer_choices`, a non-empty target that is not
        one of the answer choices raises `AnswerNotInChoicesError`.
        """
        if not _is_row(row):
            raise self._error(f"a row must be a mapping of field names to values, got {type(row).__name__}",
                              task, row_index)
        if "answer_choices" in row:
            raise self._error("the row has a field named 'answer_choices', which templates reserve; rename it with a "
                              "`rename` preprocessor", task, row_index, field="answer_choices")
        with seeded_choices(rng):
            choices = self.answer_choices_for(row, task=task, row_index=row_index)
            context_vars = _escape_pipe(row)
            context_vars["answer_choices"] = choices
            rendered = self._run(self._main, context_vars, task=task, row_index=row_index)
            parts = [_unescape_pipe(part).strip() for part in rendered.split(SEPARATOR)]
            if len(parts) > 2:
                field, hint = separator_hint({k: v for k, v in row.items() if k in self.variables}, choices, SEPARATOR)
                raise self._error(f"the rendered text has {len(parts) - 1} `|||` separators, expected one (input "
                                  f"||| target){hint}", task, row_index, field=field)
            inputs, targets = (parts[0], parts[1]) if len(parts) == 2 else (parts[0], "")
            instruction = (_unescape_pipe(self._run(self._instruction, context_vars, task=task,
                                                    row_index=row_index)).strip()
                           if self._instruction is not None else inputs)
            context = (_unescape_pipe(self._run(self._context, context_vars, task=task, row_index=row_index)).strip()
                       if self._context is not None else "")
            if targets:
                self._check_choice_indices(row, task, row_index)
            references = (self._render_references(context_vars, task=task, row_index=row_index)
                          if self._references is not None and targets else None)
        if check_answer_choices and choices is not None and targets and targets not in choices:
            raise self._error(
                f"target {targets!r} is not among the answer choices {choices}{choice_hint(targets, choices, row)}",
                task, row_index, kind=AnswerNotInChoicesError)
        return RenderedExample(inputs=inputs, targets=targets, answer_choices=choices, instruction=instruction,
                               context=context, answer=targets, references=references)

    def _render_references(self, variables: Mapping[str, Any], *, task: Optional[str],
                           row_index: Optional[int]) -> list[str]:
        """The `references` split on `|||` and stripped; an empty one is an error naming the row."""
        rendered = self._run(self._references, variables, task=task, row_index=row_index)
        references = [_unescape_pipe(part).strip() for part in rendered.split(SEPARATOR)]
        if not all(references):
            raise self._error(
                f"`references` rendered an empty gold answer ({rendered!r}): every `|||`-separated part must be a "
                f"non-empty answer; check the row's answers or the expression", task, row_index, field="references")
        return references

    def _run(self, compiled: jinja2.Template, variables: Mapping[str, Any], *, task: Optional[str],
             row_index: Optional[int]) -> str:
        """`compiled` rendered with `variables`; any failure is a `TemplateRenderError` (or a subclass) naming `task`,
        this template, `row_index` and the field at fault where one is."""
        try:
            with refusing_printed_nulls():
                return compiled.render(variables)
        except NullPrintedError as error:
            raise self._null_printed_error(variables, task, row_index, error.as_number) from None
        except SecurityError as error:
            raise self._error(f"refused unsafe access in the template sandbox: {error}", task, row_index,
                              kind=SandboxViolationError) from None
        except jinja2.UndefinedError as error:
            raise self._undefined_error(error, variables, task, row_index) from None
        except EmptyChoiceError:
            raise self._empty_pick_error("choice", variables, task, row_index) from None
        except TemplateRenderError:
            raise
        except Exception as error:  # a template bug on this row: say where, keep the cause chained
            if isinstance(error, TypeError) and self._reads_undefined_answer_choices:  # e.g. None | join
                raise self._no_answer_choices(error, task, row_index) from error
            if isinstance(error, TypeError) and (why := self._misbound(MISBOUND_IF_NUMBERS)):  # e.g. label + 1
                raise self._error(f"rendering failed with TypeError: {error}: {why}", task, row_index) from error
            nulls = self._null_causes(compiled, variables, error) if isinstance(error, TypeError) else []
            if nulls:  # e.g. a null list joined, a null text sliced
                raise self._null_error(nulls[0], f"uses it (TypeError: {error})", variables, task,
                                       row_index) from error
            raise self._error(f"rendering failed with {type(error).__name__}: {error}", task, row_index) from error

    def _misbound(self, operators: Mapping[type, str]) -> Optional[str]:
        """Why one of `operators` in the texts promptsource's truncation rewrite changes (jinja, instruction, context)
        gets a string from it (`misbound_truncation`), or None."""
        texts = (self.jinja, self.instruction, self.context)
        return next((why for text in texts if text is not None and (why := misbound_truncation(text, operators))), None)

    def _null_printed_error(self, variables: Mapping[str, Any], task: Optional[str], row_index: Optional[int],
                            as_number: bool = False) -> TemplateRenderError:
        """The error of a rendering that printed a null value (`as_number`: made a number of it): the row's null field
        the template reads, if any."""
        nulls = self._null_fields(variables)
        if nulls and as_number:
            return self._null_error(nulls[0], "makes a number of it (Jinja's `int` and `float` make 0 of a null)",
                                    variables, task, row_index)
        if nulls:
            return self._null_error(nulls[0], "prints it", variables, task, row_index)
        items = sorted(k for k in self.variables if isinstance(variables.get(k), (list, tuple))
                       and any(item is None for item in variables[k]))
        if items:
            return self._null_error(items[0], "prints it", variables, task, row_index, what="holds a null item")
        return self._null_error(None, "prints a null value (a nested field of the row, or an expression's result)",
                                variables, task, row_index)

    def _null_fields(self, variables: Mapping[str, Any]) -> list[str]:
        """The row's null fields the template reads: top-level ones, else nested ones it reads (`meta.src`)."""
        return sorted(k for k in self.variables if k in variables and variables[k] is None) or \
            sorted(".".join(path[:end]) for path in self.attribute_paths for end in range(2, len(path) + 1)
                   if _null_at(variables, path[:end]))

    def _null_causes(self, compiled: jinja2.Template, variables: Mapping[str, Any], error: Exception) -> list[str]:
        """The row's null fields the template reads (`_null_fields`) but for which `compiled` does not fail as it did
        with `error`: rendered again with each one empty text instead, it renders or fails otherwise."""
        causes = []
        for field in self._null_fields(variables):
            try:
                with refusing_printed_nulls():
                    compiled.render(_replaced(variables, field.split("."), ""))
            except Exception as again:  # (any failure: compared with the first)
                if type(again) is type(error) and str(again) == str(error):
                    continue
            causes.append(field)
        return causes

    def _null_error(self, field: Optional[str], use: str, variables: Mapping[str, Any], task: Optional[str],
                    row_index: Optional[int], what: str = "is null") -> TemplateRenderError:
        """The error of a rendering that met the null `field` (None: one it cannot name) where the template `use`s
        it, with what makes a null and what to do, and the row shown whole."""
        met = f"field {field!r} {what} on this row and the template {use}" if field else f"the template {use}"
        return self._error(
            f"{met}: a row of a file that lacks a field others have gets null there, as does a csv cell that "
            f"is empty or, read by `hf: csv`, says NA, None or null (list a local csv under `files:` to keep "
            f"such cells as text); give every row a value, drop such rows with a `filter` preprocessor, or guard "
            f"it in the template ({{% if x %}}...{{% endif %}}, {{{{ x or '' }}}})", task, row_index,
            field=field, kind=MissingFieldError,
            row_shown=row_preview({k: v for k, v in variables.items() if k != "answer_choices"}))

    def _null_record(self, key: str, variables: Mapping[str, Any]) -> Optional[tuple[str, str]]:
        """(the null field, the nested field read from it) where the template reads `key` of a null record of the
        row (`nested.k` with `nested` null: Jinja's "'None' has no attribute 'k'"); else None."""
        for path in self.attribute_paths:
            for end in range(1, len(path)):
                if path[end] == key and _null_at(variables, path[:end]):
                    return ".".join(path[:end]), ".".join(path[:end + 1])
        return None

    def _undefined_error(self, error: jinja2.UndefinedError, variables: Mapping[str, Any], task: Optional[str],
                         row_index: Optional[int]) -> TemplateRenderError:
        """The error of a rendering that read something undefined, from the likeliest cause down: answer choices the
        template lacks, text or a float indexing the answer choices, a subscript that found nothing, a nested field's
        missing key, else a field missing from the row (with a hint at what it may be)."""
        if str(error) == EMPTY_RANDOM:
            return self._empty_pick_error("random", variables, task, row_index)
        fields = sorted(k for k in variables if k != "answer_choices")
        absent = sorted(self.variables - set(fields))
        if not absent and self._reads_undefined_answer_choices:
            return self._no_answer_choices(error, task, row_index)
        bad_index = None if absent else self._choice_index_problem(variables)
        if bad_index:
            return self._error(bad_index[1], task, row_index, field=bad_index[0])
        no_element = no_element_problem(str(error), variables.get("answer_choices"))
        if no_element:
            return self._error(no_element, task, row_index)
        named = undefined_name(str(error))
        record = self._null_record(named, variables) if named is not None and not absent else None
        if record and str(error).startswith("'None' has no attribute"):
            return self._null_error(record[0], f"reads {record[1]} from it", variables, task, row_index)
        nested = self._missing_key(named, variables) if named is not None and not absent else None
        if nested:
            return self._error(nested[1], task, row_index, field=nested[0], kind=MissingFieldError)
        field = named if named in absent or not absent else absent[0]
        hint = field_hint(field, {name: variables[name] for name in fields})
        # (Jinja's wording, e.g. "list object has no element Undefined" for `choices[absent]`, only where no
        # field the template reads is absent: then it is the one clue to what is)
        cause = "" if field in absent else f" ({error})"
        return self._error(f"field {field!r} is missing from the row{cause}; the row has fields {fields}{hint}",
                           task, row_index, field=field, kind=MissingFieldError)

    def _empty_pick_error(self, filter_name: str, variables: Mapping[str, Any], task: Optional[str],
                          row_index: Optional[int]) -> TemplateRenderError:
        """The error of a rendering whose `choice` or `random` filter got an empty sequence, naming the row's empty
        list field the template reads."""
        field, problem = empty_pick_problem(filter_name, {k: v for k, v in variables.items() if k in self.variables})
        return self._error(problem, task, row_index, field=field)

    @functools.cached_property
    def _reads_undefined_answer_choices(self) -> bool:
        """Whether the Jinja reads `answer_choices` although the template defines none (so they are `None`)."""
        if self.answer_choices is not None:
            return False
        sources = [s for s in (self.jinja, self.references, self.instruction, self.context) if s is not None]
        return any("answer_choices" in jinja2.meta.find_undeclared_variables(ENVIRONMENT.parse(s)) for s in sources)

    def _no_answer_choices(self, error: Exception, task: Optional[str],
                           row_index: Optional[int]) -> TemplateRenderError:
        return self._error(
            f"the template reads `answer_choices` but defines none, so they are None ({type(error).__name__}: "
            f"{error}); give the template `answer_choices` (e.g. \"no ||| yes\")", task, row_index,
            field="answer_choices")

    def _error(self, message: str, task: Optional[str], row_index: Optional[int], *, field: Optional[str] = None,
               kind: type[TemplateRenderError] = TemplateRenderError,
               row_shown: Optional[str] = None) -> TemplateRenderError:
        """A render error of `kind` naming `task`, this template with its `origin`, `row_index` (with `row_shown`)
        and `field`: every error a row's rendering raises is built here."""
        return kind(message, task=task, template=self.name, origin=self.origin, row_index=row_index, field=field,
                    row_shown=row_shown)

    def __repr__(self) -> str:
        references = f", references={self.references!r}" if self.references is not None else ""
        return f"Template(name={self.name!r}, jinja={self.jinja!r}, answer_choices={self.answer_choices!r}{references})"


def _null_at(row: Mapping[str, Any], path: Sequence[str]) -> bool:
    """Whether the nested field `path` (`("meta", "src")` for `meta.src`) of `row` is there and null."""
    value: Any = row
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return False
        value = value[key]
    return value is None


def _replaced(row: Mapping[str, Any], path: Sequence[str], value: Any) -> dict[str, Any]:
    """A copy of `row` with its nested field `path` (`("meta", "src")`) set to `value`, the records on the way
    copied."""
    inner = value if len(path) == 1 else _replaced(row[path[0]], path[1:], value)
    return {**row, path[0]: inner}


def _origin(source_file: Optional[str], source_line: Optional[int], given_id: Optional[str]) -> Optional[str]:
    """Where a template comes from, for its render errors: `from FILE:LINE` (the file it was read from, the line its
    text starts) and `id ID` (an id it was given, e.g. promptsource's); None for a template with neither."""
    where = f"from {source_file}:{source_line}" if source_file and source_line else (
        f"from {source_file}" if source_file else "")
    return ", ".join(part for part in (where, f"id {given_id}" if given_id else "") if part) or None
