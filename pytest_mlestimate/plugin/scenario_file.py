"""Reading a YAML scenario file: its ``defaults:`` and ``scenarios:`` entries with their line numbers.

Only the file's shape is checked here; each entry's fields are validated by the engine's schema when
its test runs, so that one bad entry never stops the others.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

PLUGIN_KEYS = ("name", "budgets", "tolerances")
"""Keys of a scenario entry that belong to the test, not to the engine's scenario."""

_SCENARIOS_KEY = re.compile(r"^scenarios\s*:", re.MULTILINE)


def looks_like_scenarios(text: str) -> bool:
    """A top-level ``scenarios:`` key: the file is ours, even if it is not valid YAML."""
    return bool(_SCENARIOS_KEY.search(text))


class ScenarioFileError(ValueError):
    def __init__(self, message: str, line: int = 1) -> None:
        self.line = line
        super().__init__(message)


@dataclass
class ScenarioEntry:
    name: str
    line: int
    fields: dict[str, Any]
    budgets: Any = None
    tolerances: Any = None
    problems: list[str] = field(default_factory=list)


def _merge(defaults: Mapping[str, Any], entry: Mapping[str, Any]) -> dict[str, Any]:
    """The entry wins; mappings (budgets, model_kwargs, optimizer, ...) merge one level deep."""
    merged = dict(defaults)
    for key, value in entry.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _entry_lines(text: str) -> list[int]:
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        if key.value == "scenarios" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def read_scenario_file(text: str) -> list[ScenarioEntry]:
    try:
        document = yaml.safe_load(text)
        lines = _entry_lines(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        where = f"line {line}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScenarioFileError(f"not valid YAML: {where}{problem}", line) from None
    if not isinstance(document, Mapping):
        raise ScenarioFileError("expected a mapping with a 'scenarios:' list at the top level")
    unknown = sorted(set(document) - {"scenarios", "defaults"})
    if unknown:
        raise ScenarioFileError(
            f"unknown top-level key(s) {', '.join(map(str, unknown))}; allowed: defaults, scenarios"
        )
    defaults = document.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise ScenarioFileError(f"defaults: expected a mapping of scenario fields, got {defaults!r}")
    entries = document.get("scenarios")
    if not isinstance(entries, list):
        raise ScenarioFileError(f"scenarios: expected a list of scenarios, got {entries!r}")
    found: list[ScenarioEntry] = []
    first_line: dict[str, int] = {}
    for index, raw in enumerate(entries):
        line = lines[index] if index < len(lines) else 1
        if not isinstance(raw, Mapping):
            found.append(ScenarioEntry(f"#{index + 1}", line, {}, problems=[f"expected a mapping, got {raw!r}"]))
            continue
        merged = _merge(defaults, raw)
        name = merged.pop("name", None)
        entry = ScenarioEntry(
            str(name) if name is not None else f"#{index + 1}",
            line,
            {k: v for k, v in merged.items() if k not in PLUGIN_KEYS},
            budgets=merged.get("budgets"),
            tolerances=merged.get("tolerances"),
        )
        if name is None or not str(name).strip():
            entry.problems.append("name: required field is missing (each scenario needs a unique name)")
        elif entry.name in first_line:
            entry.problems.append(
                f"name: '{entry.name}' is already used by the scenario at line {first_line[entry.name]}"
            )
        else:
            first_line[entry.name] = line
        found.append(entry)
    return found
