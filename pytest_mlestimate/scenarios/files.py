"""Reading a YAML scenario file: its ``defaults:`` and ``scenarios:`` entries with their line numbers, each
entry with a ``matrix:`` expanded to one scenario per combination.

Only the file's shape is checked here; each entry's fields are validated by the engine's schema when
its test runs, so that one bad entry never stops the others.

The YAML is read with limits: a few hundred bytes of nested aliases (a "billion laughs") expand to
billions of values when anything walks or prints them, so aliases may repeat at most ``MAX_ALIAS_VALUES``
values and ``MAX_ALIAS_CHARACTERS`` characters in all; nesting is at most ``MAX_DEPTH`` deep; a key may
appear once in a mapping (a second ``scenarios:`` silently replaced the first); integers fit 64 bits.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from pytest_mlestimate.core.errors import brief, clip, printable

PLUGIN_KEYS = ("name", "budgets", "tolerances", "capacity", "matrix")
"""Keys of a scenario entry that belong to the test, not to the engine's scenario."""

MAX_ALIASES = 10_000
MAX_ALIAS_VALUES = 100_000
MAX_ALIAS_CHARACTERS = 10_000_000
MAX_DEPTH = 50
MAX_NAME = 200
MAX_COMBINATIONS = 256
"""Scenarios one ``matrix:`` may make: each is a test, and most are a profile."""
MAX_FILE_SCENARIOS = 5_000
"""Scenarios one file may make in all: a ``defaults:`` matrix applies to every entry, so a few lines can
otherwise multiply into tens of thousands of tests."""
MAX_LABEL = 40
"""Characters of one value in a swept scenario's name (``tiny[batch_size=2,...]``)."""
MAX_INT = 2**63 - 1

_SCENARIOS_KEY = re.compile(r"^scenarios\s*:", re.MULTILINE)
_MERGE_TAG = "tag:yaml.org,2002:merge"


def looks_like_scenarios(text: str) -> bool:
    """A top-level ``scenarios:`` key: the file is ours, even if it is not valid YAML."""
    return bool(_SCENARIOS_KEY.search(text))


class ScenarioFileError(ValueError):
    def __init__(self, message: str, line: int = 1) -> None:
        self.line = line
        super().__init__(message)


def _line_of(mark: yaml.Mark | None) -> int:
    return mark.line + 1 if mark is not None else 1


def _refuse(mark: yaml.Mark | None, message: str) -> ScenarioFileError:
    line = _line_of(mark)
    return ScenarioFileError(f"line {line}: {message}", line)


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader that counts what aliases expand to while composing, before anything is built."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._alias_values = 0
        self._alias_characters = 0
        self._depth = 0
        self._sizes: dict[int, tuple[int, int]] = {}
        """(values, characters) of each complete node, with its aliases expanded."""
        self._open: list[list[int]] = [[0, 0]]
        """The running (values, characters) of the collections being composed, innermost last."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = super().compose_node(parent, index)
            size = self._sizes.get(id(node))
            if size is None:
                raise _refuse(
                    event.start_mark, f"alias *{clip(str(event.anchor), 40)} refers to a value that contains it"
                )
            self._aliases += 1
            self._alias_values += size[0]
            self._alias_characters += size[1]
            if self._aliases > MAX_ALIASES:
                raise _refuse(event.start_mark, f"more than {MAX_ALIASES:,} aliases (*name) in one file")
            for total, limit, what in (
                (self._alias_values, MAX_ALIAS_VALUES, "values"),
                (self._alias_characters, MAX_ALIAS_CHARACTERS, "characters"),
            ):
                if total > limit:
                    raise _refuse(
                        event.start_mark,
                        f"the aliases (*name) up to this one expand to more than {limit:,} {what}, the most allowed "
                        "(aliases of lists of aliases multiply: write the values out instead)",
                    )
            self._open[-1][0] += size[0]
            self._open[-1][1] += size[1]
            return node
        if self._depth >= MAX_DEPTH:
            raise _refuse(self.peek_event().start_mark, f"nested more than {MAX_DEPTH} levels deep")
        self._depth += 1
        self._open.append([0, 0])
        node = super().compose_node(parent, index)
        self._depth -= 1
        values, characters = self._open.pop()
        if isinstance(node, yaml.ScalarNode):
            values, characters = 1, len(node.value)
        else:
            values += 1
        self._sizes[id(node)] = (values, characters)
        self._open[-1][0] += values
        self._open[-1][1] += characters
        return node

    def compose_mapping_node(self, anchor: str | None) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        first: dict[Any, int] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
                continue
            value = self.construct_object(key)
            line = _line_of(key.start_mark)
            try:
                if value in first:
                    raise _refuse(
                        key.start_mark,
                        f"duplicate key {brief(value)} (first at line {first[value]}); a key may appear once in a "
                        "mapping",
                    )
                first[value] = line
            except TypeError:  # unhashable: the constructor will say so
                continue
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """Values Python refuses to build (a 5,000-digit integer, the 31st of February) as errors with a line."""
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            if isinstance(exc, ScenarioFileError):
                raise
            shown = brief(node.value) if isinstance(node, yaml.ScalarNode) else f"this {node.id}"
            raise _refuse(node.start_mark, f"cannot read {shown}: {clip(str(exc), MAX_NAME)}") from None

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(node.value) > 100:
            raise _refuse(
                node.start_mark, f"integer of {len(node.value):,} characters; allowed: {-MAX_INT - 1:,} to {MAX_INT:,}"
            )
        value = super().construct_yaml_int(node)
        if not -MAX_INT - 1 <= value <= MAX_INT:
            raise _refuse(
                node.start_mark, f"integer {brief(value)} is out of range; allowed: {-MAX_INT - 1:,} to {MAX_INT:,}"
            )
        return value


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


@dataclass
class ScenarioEntry:
    name: str
    line: int
    fields: dict[str, Any]
    budgets: Any = None
    tolerances: Any = None
    capacity: Any = None
    """The scenario's ``capacity:`` request, unread (``capacity.read_request`` reads it)."""
    problems: list[str] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)
    """The line of each field's key (``budgets``) and of each budget's and tolerance's key
    (``budgets.peak_gpu_memory``), from the entry or the defaults it took the value from."""

    def line_of(self, path: str) -> int:
        """The line of a field's key, else of its parent's, else the scenario's."""
        while path not in self.lines and "." in path:
            path = path.rpartition(".")[0]
        return self.lines.get(path, self.line)


def _merge(defaults: Mapping[str, Any], entry: Mapping[str, Any]) -> dict[str, Any]:
    """The entry wins; mappings (budgets, model_kwargs, optimizer, ...) merge one level deep."""
    merged = dict(defaults)
    for key, value in entry.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


LINED_MAPPINGS = ("budgets", "tolerances", "matrix")
"""Fields whose own keys' lines are kept, for problems that point at the budget at fault."""


def _key_lines(node: yaml.Node) -> dict[str, int]:
    """``{"budgets": 5, "budgets.forward_pass": 6, ...}`` for a scenario entry's (or the defaults') node."""
    found: dict[str, int] = {}
    if not isinstance(node, yaml.MappingNode):
        return found
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
            continue
        found[key.value] = _line_of(key.start_mark)
        if key.value in LINED_MAPPINGS and isinstance(value, yaml.MappingNode):
            for inner, _ in value.value:
                if isinstance(inner, yaml.ScalarNode) and inner.tag != _MERGE_TAG:
                    found[f"{key.value}.{inner.value}"] = _line_of(inner.start_mark)
    return found


@dataclass
class _Layout:
    """Where things are in the file: each ``scenarios:`` entry's line and its keys' lines, and the defaults'."""

    entries: list[int] = field(default_factory=list)
    entry_keys: list[dict[str, int]] = field(default_factory=list)
    default_keys: dict[str, int] = field(default_factory=dict)


def _load(text: str) -> tuple[Any, _Layout]:
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
        document = loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()
    layout = _Layout()
    if isinstance(root, yaml.MappingNode):  # merge keys (``<<:``) are flattened in place by now
        for key, value in root.value:
            if key.value == "scenarios" and isinstance(value, yaml.SequenceNode):
                layout.entries = [_line_of(item.start_mark) for item in value.value]
                layout.entry_keys = [_key_lines(item) for item in value.value]
            elif key.value == "defaults":
                layout.default_keys = _key_lines(value)
    return document, layout


def _yaml_problem(exc: yaml.YAMLError, text: str) -> ScenarioFileError:
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        line = _line_of(mark)
        where = f"line {line}, column {mark.column + 1}: "
        problem = getattr(exc, "problem", None) or str(exc)
    elif isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        where = f"line {line}: "
        code = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "?")
        problem = f"character U+{code:04X} is not allowed in YAML; write it as an escape in double quotes"
    else:
        line, where, problem = 1, "", str(exc)
    return ScenarioFileError(f"not valid YAML: {where}{printable(clip(problem, 300))}", line)


def _name_of(raw: Any, index: int) -> tuple[str, list[str]]:
    """The scenario's name as a test may carry it, and what is wrong with the name in the file."""
    fallback = f"#{index + 1}"
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return fallback, ["name: required field is missing (each scenario needs a unique name)"]
    if isinstance(raw, Mapping | list | set | bytes):
        return fallback, [f"name: expected text, got {brief(raw)}"]
    text = raw if isinstance(raw, str) else str(raw)
    problems = []
    if len(text) > MAX_NAME:
        problems.append(f"name: {len(text):,} characters, at most {MAX_NAME} are allowed: {brief(text)}")
    safe = printable(text)
    if safe != text:
        problems.append(f"name: {brief(text)} holds control characters; allowed: printable text")
    return clip(safe, MAX_NAME), problems


def read_scenario_file(text: str) -> list[ScenarioEntry]:
    try:
        document, layout = _load(text)
    except yaml.YAMLError as exc:
        raise _yaml_problem(exc, text) from None
    if not isinstance(document, Mapping):
        raise ScenarioFileError("expected a mapping with a 'scenarios:' list at the top level")
    unknown = sorted(
        printable(clip(key, 60)) if isinstance(key, str) else brief(key)
        for key in document
        if key not in ("scenarios", "defaults")
    )
    if unknown:
        shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise ScenarioFileError(f"unknown top-level key(s) {shown}; allowed: defaults, scenarios")
    defaults = document.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise ScenarioFileError(f"defaults: expected a mapping of scenario fields, got {brief(defaults)}")
    entries = document.get("scenarios")
    if not isinstance(entries, list):
        raise ScenarioFileError(f"scenarios: expected a list of scenarios, got {brief(entries)}")
    found: list[ScenarioEntry] = []
    names = Names()
    for index, raw in enumerate(entries):
        line = layout.entries[index] if index < len(layout.entries) else 1
        keys = layout.entry_keys[index] if index < len(layout.entry_keys) else {}
        found += entries_of(raw, index, line, names, defaults, {**layout.default_keys, **keys})
        if len(found) > MAX_FILE_SCENARIOS:
            raise ScenarioFileError(
                f"the file makes more than {MAX_FILE_SCENARIOS:,} scenarios by its entry {index + 1} (line {line}); "
                "a matrix under defaults: applies to every entry: split the file or narrow the matrix"
            )
    return found


@dataclass
class Names:
    """The names one file's scenarios took: a name may be used once, and each test gets its own id."""

    first_line: dict[str, int] = field(default_factory=dict)
    taken: set[str] = field(default_factory=set)


def entries_of(
    raw: Any,
    index: int,
    line: int,
    names: Names,
    defaults: Mapping[str, Any] | None = None,
    lines: dict[str, int] | None = None,
    problems: list[str] | None = None,
) -> list[ScenarioEntry]:
    """The scenario of one entry (a YAML mapping or a table's row), or one per combination of its ``matrix:``.
    ``problems`` are what the caller found while reading it; an entry with any stays one (error) entry."""
    if not isinstance(raw, Mapping):
        found = [ScenarioEntry(f"#{index + 1}", line, {}, problems=[f"expected a mapping, got {brief(raw)}"])]
    else:
        merged = _merge(defaults or {}, raw)
        name, name_problems = _name_of(merged.pop("name", None), index)
        entry = ScenarioEntry(
            name,
            line,
            {k: v for k, v in merged.items() if k not in PLUGIN_KEYS},
            budgets=merged.get("budgets"),
            tolerances=merged.get("tolerances"),
            capacity=merged.get("capacity"),
            problems=[*(problems or []), *name_problems],
            lines=dict(lines or {}),  # as _merge merges the values
        )
        if not name_problems and name in names.first_line:
            entry.problems.append(f"name: '{name}' is already used by the scenario at line {names.first_line[name]}")
        elif not name_problems:
            names.first_line[name] = line
        found = [entry]
        if "matrix" in merged:
            axes, matrix_problems = _read_matrix(merged["matrix"])
            entry.problems += matrix_problems
            if not entry.problems:
                found = _expand(entry, axes)
    for entry in found:
        entry.name = _unique(entry.name, line, names.taken)
    return found


def _read_matrix(raw: Any) -> tuple[dict[str, list[Any]], list[str]]:
    """The matrix's value lists by field, or what is wrong with it."""
    from pytest_mlestimate.scenarios.scenario import Scenario  # pydantic: only once a file sweeps something

    fields = tuple(Scenario.model_fields)
    allowed = f"allowed: {', '.join(fields)}"
    if not isinstance(raw, Mapping) or not raw:
        return {}, [
            "matrix: expected a mapping of scenario fields to lists of values, e.g. {batch_size: [2, 4]}; "
            f"got {brief(raw)}"
        ]
    axes: dict[str, list[Any]] = {}
    problems = []
    for key, values in raw.items():
        if key in PLUGIN_KEYS:
            problems.append(
                f"matrix: {brief(key)} cannot be swept ({', '.join(PLUGIN_KEYS)} belong to the entry); {allowed}"
            )
        elif key not in fields:
            problems.append(f"matrix: unknown field {brief(key)}; {allowed}")
        elif not isinstance(values, list):
            problems.append(f"matrix.{key}: expected a list of values, e.g. [2, 4], got {brief(values)}")
        elif not values:
            problems.append(f"matrix.{key}: the list is empty, which makes no scenarios; give at least one value")
        else:
            axes[key] = values
    count = math.prod(len(values) for values in axes.values())
    if count > MAX_COMBINATIONS:
        sizes = " x ".join(str(len(values)) for values in axes.values())
        problems.append(
            f"matrix: {sizes} values make {count:,} scenarios; at most {MAX_COMBINATIONS} are allowed (split the "
            "entry or shorten the lists)"
        )
        return axes, problems
    for key, values in axes.items():
        seen: dict[str, Any] = {}
        for value in values:
            label = _label(value)
            if label in seen:
                problems.append(
                    f"matrix.{key}: {brief(seen[label])} and {brief(value)} would both be named "
                    f"{key}={clip(label, MAX_LABEL)}; list each value once"
                )
                break
            seen[label] = value
    return axes, problems


def _label(value: Any) -> str:
    """A value as a swept scenario's name shows it: ``off``, ``2``, ``512x512``."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list) and 0 < len(value) <= 8 and all(isinstance(v, int | float | str) for v in value):
        return "x".join(_label(v) for v in value)
    return printable(brief(value))


def _expand(entry: ScenarioEntry, axes: dict[str, list[Any]]) -> list[ScenarioEntry]:
    """One scenario per combination, the first field's values changing slowest; each takes the entry's budgets
    and tolerances, and a swept field's problems point at its line in the matrix."""
    lines = {**entry.lines, **{key: entry.line_of(f"matrix.{key}") for key in axes}}
    found = []
    for values in itertools.product(*axes.values()):
        combination = dict(zip(axes, values, strict=True))
        params = ",".join(f"{key}={clip(_label(value), MAX_LABEL)}" for key, value in combination.items())
        name = f"{entry.name}[{params}]"
        if len(name) > MAX_NAME:
            name = clip(name[:-1], MAX_NAME - 1) + "]"
        found.append(
            replace(entry, name=name, fields=_merge(entry.fields, combination), problems=[], lines=dict(lines))
        )
    return found


def _unique(name: str, line: int, taken: set[str]) -> str:
    """Each scenario its own test id, or two would share one record: a repeated name gets its line."""
    candidate, extra = name, 0
    while candidate in taken:
        extra += 1
        suffix = f" (line {line})" if extra == 1 else f" (line {line}, {extra})"
        candidate = clip(name, MAX_NAME - len(suffix)) + suffix
    taken.add(candidate)
    return candidate
