"""What a row's failed rendering likely means and what to write instead: the hints that end a template's render
errors, worked out from Jinja's message, the row and the answer choices (`Template.render` raises the errors)."""
from __future__ import annotations

import re
from typing import Any, Mapping, Optional, Sequence

from .errors import close_matches
from .jinja_env import TEXT_VAR_LENGTH, rename_step, subscript_problem

_UNDEFINED_PATTERNS = (
    re.compile(r"'([^']+)' is undefined"),
    re.compile(r"has no attribute '([^']+)'"),
)


def no_element_problem(message: str, choices: Any) -> Optional[str]:
    """What a subscript that found nothing went wrong with (`subscript_problem`), with the answer choices when
    there are some, or None when `message` is about something else."""
    what = subscript_problem(message)
    if what is None:
        return None
    if isinstance(choices, list) and (one := _choices_written_as_one(choices)):
        return f"{what}; {one}"
    hint = f"; the answer choices are {choices}" if isinstance(choices, list) else ""
    return f"{what}{hint}; check the row's values against the template"


def _choices_written_as_one(choices: Sequence[str], target: Optional[str] = None) -> Optional[str]:
    """What to write when `choices` is one choice joining several with `,`, `/`, `|` or `;` (`"no, yes"`, where
    `"no ||| yes"` was meant): one of them `target` where it is given; else None."""
    if len(choices) != 1:
        return None
    parts = [[part.strip() for part in choices[0].split(separator)] for separator in (",", "/", "|", ";")]
    if not any(len(split) > 1 and (target is None or target in split) for split in parts):
        return None
    return f"the answer choices are one choice, {choices[0]!r}: separate the choices with `|||` (\"no ||| yes\")"


def row_preview(row: Mapping[str, Any], width: int = 200) -> str:
    """`row` as a dict's repr, cut after `width` characters: what an error shows of a row to find it by."""
    text = repr(dict(row))
    return text if len(text) <= width else text[:width] + "…}"


def undefined_name(message: str) -> Optional[str]:
    """The name a Jinja UndefinedError `message` says is undefined (a row field, or a key of one), or None."""
    for pattern in _UNDEFINED_PATTERNS:
        match = pattern.search(message)
        if match:
            return match.group(1)
    return None


def choice_hint(target: str, choices: Sequence[str], row: Mapping[str, Any]) -> str:
    """What to write when `target` is not among `choices`: the choices written as one (`"a, b"`, not `"a ||| b"`),
    a choice differing from it in case or spacing alone, or — `target` being the index of a choice (a label column of
    numbers printed as the target, `{{label}}`, where `{{ answer_choices[label] }}` was meant) — the row's field
    that holds it; a choice longer than promptsource's truncation of every `{{ }}` (which the answer choices escape)
    that the target cuts short; else ""."""
    cut = [choice for choice in choices if len(choice) > TEXT_VAR_LENGTH and target.endswith("...")
           and choice.startswith(target[:-3])]
    if cut:
        return (f"; it is the choice of {len(cut[0])} characters {cut[0][:40] + '...'!r} cut short by promptsource's "
                f"truncation of every `{{{{ }}}}` to {TEXT_VAR_LENGTH} characters, which the answer choices escape: "
                f"shorten the row's text with a `map` preprocessor, or drop such rows with a `filter`")
    if one := _choices_written_as_one(choices, target):
        return f"; {one}"
    same = [choice for choice in choices if " ".join(choice.split()).lower() == " ".join(target.split()).lower()]
    if same:
        return (f"; it differs from the choice {same[0]!r} in case or spacing alone: write the choices as the data "
                f"writes its labels, or map the labels to them (e.g. `| lower` in the template)")
    if not target.isdigit() or int(target) >= len(choices):
        return ""
    fields = [name for name, value in row.items()
              if isinstance(value, int) and not isinstance(value, bool) and value == int(target)]
    field = fields[0] if len(fields) == 1 else "FIELD"
    return (f"; {target!r} is the index of the choice {choices[int(target)]!r}: print the choice, not the index, as "
            f"the target (`||| {{{{ answer_choices[{field}] }}}}`)")


def separator_hint(row: Mapping[str, Any], choices: Optional[Sequence[str]], separator: str
                   ) -> tuple[Optional[str], str]:
    """(field, hint) for a rendering split by more `separator`s than its template writes: an answer choice, or text
    inside a list or record of `row` (the fields the template reads), that holds one reaches the text unprotected
    (promptsource protects a field that is text, and un-protects the choices it hands the template), with the row's
    field and a filter dropping such rows; else (None, a hint at the template)."""
    dropped = ("and splits it — promptsource drops such a row: replace `{sep}` there with a `map` preprocessor, or "
               "drop such rows with a `filter`{example}")
    for choice in choices or ():
        if separator in choice:
            fields = [name for name, value in row.items() if isinstance(value, str) and choice in value]
            where = f" (the row's field {fields[0]!r})" if fields else ""
            example = f" (`\"'{separator}' not in {fields[0]}\"`)" if fields else ""
            return (fields[0] if fields else None,
                    f": the answer choice {choice!r} holds `{separator}`{where}, which reaches the text unprotected "
                    f"(promptsource un-protects the answer choices before the template prints them) "
                    + dropped.format(sep=separator, example=example))
    for name, value in row.items():
        if not isinstance(value, str) and _holds_text(value, separator):
            example = f" (`\"'{separator}' not in ({name} | string)\"`)"
            return name, (f": the row's field {name!r} holds `{separator}` inside a list or record, which reaches the "
                          f"text unprotected (promptsource protects a field that is text alone) "
                          + dropped.format(sep=separator, example=example))
    return None, f"; check the template for a stray `{separator}`"


def empty_pick_problem(filter_name: str, fields: Mapping[str, Any]) -> tuple[Optional[str], str]:
    """(field, problem) for the `choice` or `random` filter given an empty sequence: the first of `fields` (those the
    template reads) holding an empty list, with the guard and the filter to write; (None, the problem) without one."""
    empty = next((name for name, value in fields.items() if isinstance(value, (list, tuple)) and not value), None)
    what = f"the `{filter_name}` filter got an empty list to pick from"
    promptsource = "promptsource fails on it too" if filter_name == "choice" else "promptsource prints nothing for it"
    default = ", or `| default('')`" if filter_name == "random" else ""
    if empty is None:
        return None, f"{what} ({promptsource}); guard it in the template{default} or drop such rows with a `filter`"
    return empty, (f"{what}: field {empty!r} is empty on this row ({promptsource}); guard it in the template "
                   f"({{% if {empty} %}}...{{% endif %}}{default}) or drop such rows with a `filter` "
                   f"(`\"{empty} | length > 0\"`)")


def _holds_text(value: Any, text: str) -> bool:
    """Whether `text` is in a string of `value`, a string or a list, tuple or mapping of them (nested)."""
    if isinstance(value, str):
        return text in value
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, (list, tuple)) else ()
    return any(_holds_text(item, text) for item in items)


def field_hint(field: Optional[str], row: Mapping[str, Any], written_in: str = "the template") -> str:
    """What a missing `field` likely is: part of a row field that joins several column names (a file separated by
    `;`, tabs or commas read by a reader that splits at another separator), a field of the rows a JSON file holds
    under one key, the start of (or close to) a row field whose name no template can write (`a.b`, `c-d`: to
    rename), or a misspelling of a row field in the Jinja `written_in`; else ""."""
    if field is None:
        return ""
    for name, value in row.items():
        if isinstance(value, list) and any(isinstance(item, Mapping) and field in item for item in value):
            return (f"; the row's field {name!r} is a list of records holding {field!r}: if those are the rows, the "
                    f"file nests them under {name!r}; write one record per row instead (a .jsonl file, one JSON "
                    f"object a line, or a .json file holding a list of objects)")
    for name in row:
        separator = next((s for s in ("\t", ";", ",", "|") if s in name and field in name.split(s)), None)
        if separator is not None:
            return (f"; the row's field {name!r} holds several column names: the file is separated by "
                    f"{separator!r}, which its reader does not split at (a .csv file is read comma-separated, a .tsv "
                    f"file listed under `files:` tab-separated: save or name the file accordingly)")
    close = close_matches(field, list(row), n=1)
    unwritable = next((name for name in row if _name_starts(name, field)), None) or \
        next((name for name in close if not name.isidentifier()), None)
    if unwritable is not None:
        return (f"; the row's field {unwritable!r} has a name Jinja cannot write (it reads `a.b` as the key b of a "
                f"field a, `c-d` as c minus d): rename it {rename_step(unwritable)}")
    return f"; did you mean {close[0]!r} (a misspelt name in {written_in})?" if close else ""


def _name_starts(name: str, field: str) -> bool:
    """Whether the row field `name`, one no template can write (not an identifier: `a.b`, `c-d`, `col name`), starts
    with the name `field` that Jinja read from it (`a` of `a.b`)."""
    return not name.isidentifier() and name.startswith(field) and len(name) > len(field) and \
        not (name[len(field)].isalnum() or name[len(field)] == "_")
