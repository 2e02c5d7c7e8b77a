"""Reading config layers: YAML files (a key repeated in one mapping refused), their `base:` chains, `--set`
overrides, and the merge of one layer over another (`deep_merge`; see `t2t_mtl.config` for the layering rules)."""
from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Union

import yaml

from t2t_mtl.config_errors import ConfigError, ConfigFileError

__all__ = ["CONFIG_DIR", "ENTRY_SOURCES", "SHARED_SELECTOR_KEYS", "WHOLE_VALUE_KEYS", "deep_merge", "file_layers",
           "layer_keys", "parse_overrides", "resolve_config_path"]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
_YAML = (".yaml", ".yml")  # the endings of a config file


@functools.lru_cache(maxsize=None)
def _unique_key_loader() -> type:
    """SafeLoader for which a key repeated in one mapping is an error (plain YAML keeps the last one silently),
    within `task_registry.yaml_limits`' bounds (nesting, aliases); built on first use, as task_registry is slow
    to import."""
    from task_registry.yaml_keys import check_written_keys
    from task_registry.yaml_limits import BoundedComposition

    class UniqueKeyLoader(BoundedComposition, yaml.SafeLoader):
        def construct_unique_mapping(self, node: yaml.MappingNode) -> Dict[Any, Any]:
            check_written_keys(self, node)
            return self.construct_mapping(node, deep=True)

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                    UniqueKeyLoader.construct_unique_mapping)
    return UniqueKeyLoader


def _load_yaml(text: str) -> Any:
    """`yaml.safe_load`, but a key repeated in one mapping, or a document past `yaml_limits`' bounds, raises
    `yaml.YAMLError`."""
    return yaml.load(text, Loader=_unique_key_loader())  # noqa: S506 (a SafeLoader)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """A YAML error on one line: where (line and column, when known) and what, without PyYAML's source excerpt."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context = getattr(error, "context", None)
    what = f"{context}: {problem}" if context else problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {what}" if mark is not None else what


def _read_yaml(path: Path) -> Dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError(f"config file {path} does not exist") from None
    except UnicodeDecodeError as err:
        raise ConfigFileError(f"config file {path} is not UTF-8 text ({err.reason} at byte {err.start}); "
                              f"save it as UTF-8") from None
    try:
        data = _load_yaml(text)
    except yaml.YAMLError as err:
        raise ConfigFileError(f"config file {path} is not valid YAML: {_yaml_problem(err)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"config file {path} must hold a mapping at the top level, got {type(data).__name__}")
    return data


def resolve_config_path(name_or_path: Union[str, Path], relative_to: Optional[Path] = None) -> Path:
    """A config file path, or the name of a packaged config (`quickstart` → `configs/quickstart.yaml`)."""
    candidates = []
    path = Path(name_or_path)
    if relative_to is not None and not path.is_absolute():
        candidates.append(relative_to / path)
    candidates.append(path)
    stem = path.name if path.suffix in _YAML else path.name + ".yaml"
    candidates.append(CONFIG_DIR / stem)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    packaged = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    near = _near_config_names(path, candidates[0].parent)
    hint = f"did you mean {', '.join(map(repr, near))}? " if near else ""
    raise ConfigFileError(f"config {str(name_or_path)!r} not found (looked at {', '.join(map(str, candidates))}); "
                          f"{hint}packaged configs: {', '.join(packaged)}")


def _near_config_names(path: Path, folder: Path) -> List[str]:
    """The YAML files of `folder` (written as beside `path`) — or, where it does not exist, of the existing folder
    closest to it (written as `close_existing_path` gives it) — and the packaged config names that are close to
    the missing `path`'s name: a misspelt folder, file name or extension (`confgs/my.yml` for `configs/my.yaml`)."""
    # (task_registry is slow to import: on the error path only)
    from task_registry.path_hints import close_existing_path, close_names

    shown = path.parent
    if not folder.is_dir():
        folder = shown = close_existing_path(folder) or folder
    near = [str(shown / name) for name in close_names(folder, path.name, n=2, cutoff=0.75, suffixes=_YAML)]
    return near + [Path(name).stem for name in close_names(CONFIG_DIR, path.name, suffixes=(".yaml",))]


def layer_keys(layer: Mapping[str, Any], _prefix: str = "") -> Set[str]:
    """The dotted keys a layer sets, at every depth (`{"tokenizer": {"train": {"vocab_size": 9}}}` →
    tokenizer, tokenizer.train, tokenizer.train.vocab_size)."""
    keys: Set[str] = set()
    for key, value in layer.items():
        dotted = f"{_prefix}{key}"
        keys.add(dotted)
        if isinstance(value, Mapping):
            keys |= layer_keys(value, f"{dotted}.")
    return keys


def file_layers(path: Path, seen: Sequence[Path] = ()) -> List[Dict[str, Any]]:
    """The layers of one file: its `base:` chain first, then the file itself."""
    path = path.resolve()
    if path in seen:
        raise ConfigFileError(f"config file {path} includes itself through `base:` ({' -> '.join(map(str, seen))})")
    data = _read_yaml(path)
    base = data.pop("base", None)
    layers: List[Dict[str, Any]] = []
    if base is not None:
        bases = base if isinstance(base, list) else [base]
        for item in bases:
            layers += file_layers(resolve_config_path(item, path.parent), (*seen, path))
    layers.append(data)
    return layers


#: free-form sections whose class a name chooses, with the key that holds the name: a layer naming another
#: strategy/method replaces the section's whole contents
SELECTOR_KEYS = {"sampling": "strategy", "weighting": "method", "gradient_surgery": "method"}

#: keys of those sections that every strategy takes (t2t_mtl.sampling.factory.COMMON_PARAMS), kept on a switch
SHARED_SELECTOR_KEYS = {"sampling": ("mode", "block_size")}


#: for a WHOLE_VALUE_KEYS key, the sibling whose value gives the selection while the key is unset (data.mixture's
#: tasks), which dotted `--set` entries alone would narrow to themselves
ENTRY_SOURCES = {("data", "tasks"): "mixture"}


#: keys whose value a layer replaces whole, as a list is, also when both are mappings: `data.tasks` is the training
#: selection, so an overlay's {task: rate} mapping is the whole selection, not additions to its base's
WHOLE_VALUE_KEYS = {("data", "tasks")}


class _EntrySets(dict):
    """The entries dotted `--set` keys give inside a WHOLE_VALUE_KEYS key (`--set data.tasks.NAME=RATE`): they
    name single entries, so they merge into the lower layers' value entry by entry."""


class _Cleared(dict):
    """The entries dotted `--set` keys give inside a key an earlier `--set` of the command set to null (`--set
    model.dims=null --set model.dims.dropout_rate=0.2`): a fresh mapping, which replaces the lower layers' value."""


def deep_merge(base: Dict[str, Any], override: Mapping[str, Any], *, _path: tuple = ()) -> Dict[str, Any]:
    """Merge `override` into a copy of `base`; nested dicts merge key by key, other values replace, and so does a
    WHOLE_VALUE_KEYS mapping (`data.tasks`) unless dotted `--set` keys gave it entry by entry, and a mapping dotted
    `--set` keys gave after a `--set` of it to null.

    At the top level, a `sampling`/`weighting`/`gradient_surgery` mapping that names a different
    strategy/method than the base replaces the base section (its parameters belong to the old one), except
    the keys every strategy takes (`sampling.mode`, `sampling.block_size`), which carry over."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        selector = SELECTOR_KEYS.get(key) if not _path else None
        whole = (*_path, key) in WHOLE_VALUE_KEYS and not isinstance(value, _EntrySets)
        if isinstance(value, _Cleared):
            out[key] = deep_merge({}, value, _path=(*_path, key))
        elif (selector and isinstance(value, Mapping) and isinstance(out.get(key), dict)
                and selector in value and value[selector] != out[key].get(selector)):
            replaced = copy.deepcopy(dict(value))
            for shared in SHARED_SELECTOR_KEYS.get(key, ()):
                if shared in out[key] and shared not in replaced:
                    replaced[shared] = out[key][shared]
            out[key] = replaced
        elif isinstance(value, Mapping) and isinstance(out.get(key), dict) and not whole:
            out[key] = deep_merge(out[key], value, _path=(*_path, key))
        elif isinstance(value, _EntrySets) and isinstance(out.get(key), list) and out[key]:
            raise ConfigError(_entries_over_a_list((*_path, key), out[key], value))
        elif isinstance(value, _EntrySets) and out.get(key) is None and (*_path, key) in ENTRY_SOURCES:
            source = ENTRY_SOURCES[(*_path, key)]
            given = {**out, **override}.get(source)  # (this layer's own value first, in whichever order it came)
            if given:
                raise ConfigError(_entries_over_a_source((*_path, key), source, given, value))
            out[key] = dict(value)
        else:
            out[key] = copy.deepcopy(dict(value) if isinstance(value, _EntrySets) else value)
    return out


def _entries_over_a_source(path: tuple, source: str, given: Any, entries: Mapping[str, Any]) -> str:
    """Why dotted `--set` entries cannot go into an unset key whose selection a sibling gives (`data.tasks` unset
    under `data.mixture`): as the whole key they would narrow that selection to themselves."""
    key, parent = ".".join(map(str, path)), ".".join(map(str, path[:-1]))
    return (f"--set {key}.{next(iter(entries))}=...: {key} is unset, so {parent}.{source} {given!r} gives the "
            f"selection, and {dict(entries)} alone would narrow it to {', '.join(map(str, entries))}: give the whole "
            f"selection with its rates (--set '{key}={{NAME: RATE, ...}}'), or set {parent}.{source}=null")


def _entries_over_a_list(path: tuple, listed: List[Any], entries: Mapping[str, Any],
                         where: str = "in the lower layers") -> str:
    """Why dotted `--set` entries cannot go into a list `where` the layers give it (`data.tasks: [a, b]`): as a
    mapping of just those entries they would drop the list's other names."""
    key = ".".join(map(str, path))
    whole = {**{name: 1 for name in listed}, **entries}
    example = ", ".join(f"{name}: {rate}" for name, rate in whole.items())
    return (f"--set {key}.{next(iter(entries))}=...: {key} is a list {where} "
            f"({', '.join(map(str, listed))}), so setting single rates would replace it by {dict(entries)} and drop "
            f"the rest: give the whole selection with its rates, e.g. --set '{key}={{{example}}}'")


#: one part of a --set key: a name without dots, or any name in double or single quotes (`"my.task"`)
_KEY_PART_RE = re.compile(r'"[^"]+"|\'[^\']+\'|[^."\']+')
_KEY_RE = re.compile(rf"(?:{_KEY_PART_RE.pattern})(?:\.(?:{_KEY_PART_RE.pattern}))*")


def parse_overrides(overrides: Sequence[str]) -> Dict[str, Any]:
    """`["a.b=1", "c=[x, y]"]` → `{"a": {"b": 1}, "c": ["x", "y"]}` (values parsed as YAML); a key part in quotes
    may hold dots (`data.tasks."my.task"=2`). Dotted keys inside a WHOLE_VALUE_KEYS key set single entries of it
    (`data.tasks.b=3` changes b's rate and keeps the other tasks). Dotted keys inside a key an earlier entry set to
    null start a fresh mapping of it, which replaces the lower layers' value (`model.dims=null`,
    `model.dims.dropout_rate=0.2`: dims holding that rate alone); a top-level section's (`training=null`,
    `training.steps=5`) merges into theirs, as a null section keeps theirs. One string, not a list of them, is a
    ConfigError giving the list to write."""
    if isinstance(overrides, str):  # (from Python: its letters are no overrides)
        raise ConfigError(f"overrides must be a list of KEY=VALUE strings (as --set takes them), got the string "
                          f"{overrides!r}: write [{overrides!r}]")
    out: Dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. training.lr=3e-4")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not _KEY_RE.fullmatch(key):
            raise ConfigError(f"--set {item!r}: empty or unclosed key part in {key!r} (a part with dots goes in "
                              f"quotes: --set 'data.tasks.\"my.task\"=2')")
        try:
            value = _load_yaml(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({_yaml_problem(err)})") from None
        node = out
        parts = [part[1:-1] if part[0] in "\"'" else part for part in _KEY_PART_RE.findall(key)]
        for depth, part in enumerate(parts[:-1], 1):
            if part in node and node[part] is None:  # (set to null by an earlier entry: a fresh mapping)
                node[part] = _Cleared() if depth > 1 else {}
            node = node.setdefault(part, _EntrySets() if tuple(parts[:depth]) in WHOLE_VALUE_KEYS else {})
            if isinstance(node, list) and node and tuple(parts[:depth]) in WHOLE_VALUE_KEYS:
                raise ConfigError(_entries_over_a_list(tuple(parts[:depth]), node, {parts[depth]: value},
                                                       where="in an earlier --set"))
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part!r} was already set to a non-mapping value")
        node[parts[-1]] = value
    return out
