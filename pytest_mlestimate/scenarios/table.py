"""Reading a CSV scenario table: a header of scenario fields, then one scenario per row.

Each cell is read as a YAML value in flow style (``4``, ``[512, 512]``, ``{min_size: 512}``, ``'text'``) with
YAML 1.2's plain scalars: only ``true``/``false`` are booleans, so ``amp`` may be ``off``, and ``010`` is ten.
Other text is taken as written (``4 GiB``, ``>= 40 %``). Aliases are refused, so no cell can expand to more
than it holds. Dotted columns fill mappings (``budgets.forward_pass``, ``model_kwargs.min_size``); an empty
cell sets nothing. A row's problems make that row's scenario an error; the header's make the file's.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import yaml

from pytest_mlestimate.core.errors import brief, clip, printable
from pytest_mlestimate.core.metrics import METRICS
from pytest_mlestimate.scenarios.files import (
    MAX_INT,
    Names,
    ScenarioEntry,
    ScenarioFileError,
    _BoundedLoader,
    _refuse,
    _yaml_problem,
    entries_of,
    read_scenario_file,
)

KEYED = ("budgets", "tolerances", "model_kwargs", "optimizer", "matrix")
"""Columns ``<field>.<key>`` may fill: one key of the field's mapping."""
METRIC_KEYED = ("budgets", "tolerances")
TABLE_KEYS = ("name", "budgets", "tolerances", "capacity", "matrix")
"""Columns besides the scenario's own fields."""
NAMING_COLUMNS = ("name", "architecture")
"""A CSV file whose header has one of these is a scenario table; other CSV files are left alone."""

_IMAGE_SIZE = re.compile(r"^\s*(\d{1,9})\s*[xX\u00d7]\s*(\d{1,9})\s*$")
_YAML_START = ("[", "{", "'", '"')


class _CellLoader(_BoundedLoader):
    """Reads one cell: YAML 1.2's plain scalars and no aliases."""

    yaml_implicit_resolvers: ClassVar[dict[Any, list[tuple[str, re.Pattern[str]]]]] = {}
    """Its own, so that YAML 1.1's booleans (off, yes) and sexagesimals (1:30) stay text."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            raise _refuse(self.peek_event().start_mark, "aliases (*name) are not read in a table: write the value out")
        return super().compose_node(parent, index)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        text = node.value
        if len(text) > 100:
            raise _refuse(
                node.start_mark, f"integer of {len(text):,} characters; allowed: {-MAX_INT - 1:,} to {MAX_INT:,}"
            )
        digits = text.lstrip("+-")
        base = {"0x": 16, "0o": 8}.get(digits[:2], 10)
        value = int(digits if base == 10 else digits[2:], base) * (-1 if text.startswith("-") else 1)
        if not -MAX_INT - 1 <= value <= MAX_INT:
            raise _refuse(node.start_mark, f"integer {value} is out of range; allowed: {-MAX_INT - 1:,} to {MAX_INT:,}")
        return value


_SCALARS = (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL)$", "~nN"),
    ("tag:yaml.org,2002:int", r"^[-+]?(?:[0-9]+|0x[0-9a-fA-F]+|0o[0-7]+)$", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
)
for _tag, _pattern, _first in _SCALARS:
    _CellLoader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))
_CellLoader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^$"), [""])
_CellLoader.add_constructor("tag:yaml.org,2002:int", _CellLoader.construct_yaml_int)
_PLAIN_SCALAR = [re.compile(pattern) for _, pattern, _ in _SCALARS]


class _Unset:
    """An empty cell."""


UNSET = _Unset()


def read_cell(text: str) -> Any:
    """A cell's value; raises ScenarioFileError (its message without a line) for one that cannot be read."""
    text = text.strip()
    if not text:
        return UNSET
    if not text.startswith(_YAML_START) and not any(pattern.match(text) for pattern in _PLAIN_SCALAR):
        return text
    loader: _CellLoader | None = None
    try:
        loader = _CellLoader(text)  # refuses a NUL or a lone surrogate at once
        node = loader.get_single_node()
        return loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        hint = "; quote text that starts with [ { ' or \"" if text.startswith(_YAML_START) else ""
        message = f"{_yaml_problem(exc, text)}{hint}"
    except ScenarioFileError as exc:
        message = str(exc)
    finally:
        if loader is not None:
            loader.dispose()
    message = re.sub(r" \(first at line \d+\)", "", message)  # lines inside the cell mean little
    raise ScenarioFileError(re.sub(r"line \d+(, |: )", "", message, count=1))


def _records(text: str) -> Iterator[tuple[int, list[str]]]:
    """Each CSV record with the line it starts on."""
    reader = csv.reader(io.StringIO(text))
    end = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            line = reader.line_num or 1
            raise ScenarioFileError(f"line {line}: not valid CSV: {printable(clip(str(exc), 300))}", line) from None
        yield end + 1, cells
        end = reader.line_num


def _header(text: str) -> tuple[int, list[str]] | None:
    for line, cells in _records(text):
        if any(cell.strip() for cell in cells):
            return line, [cell.strip() for cell in cells]
    return None


def looks_like_table(text: str) -> bool:
    """A header with a ``name`` or ``architecture`` column: the CSV file is a scenario table."""
    try:
        found = _header(text.removeprefix("\ufeff"))
    except ScenarioFileError:
        return False
    return found is not None and any(column in found[1] for column in NAMING_COLUMNS)


def _allowed_columns() -> tuple[tuple[str, ...], tuple[str, ...], str]:
    from pytest_mlestimate.scenarios.scenario import Optimizer, Scenario  # pydantic: only once a table is read

    fields = tuple(Scenario.model_fields)
    optimizer = tuple(Optimizer.model_fields)
    allowed = (
        f"allowed: {', '.join(TABLE_KEYS[:1] + fields + TABLE_KEYS[1:])}; "
        f"budgets.<metric> and tolerances.<metric> (metrics: {', '.join(METRICS)}); model_kwargs.<keyword>; "
        f"optimizer.<field> ({', '.join(optimizer)}); matrix.<field>"
    )
    return fields, optimizer, allowed


def _check_header(header: list[str], line: int) -> None:
    fields, optimizer, allowed = _allowed_columns()
    unknown = []
    first: dict[str, int] = {}
    for number, column in enumerate(header, start=1):
        if not column:
            continue
        if column in first:
            raise ScenarioFileError(
                f"header (line {line}): column {brief(column)} appears twice (columns {first[column]} and {number})",
                line,
            )
        first[column] = number
        field, dot, key = column.partition(".")
        if not dot:
            known = column in fields or column in TABLE_KEYS
        elif field in METRIC_KEYED:
            known = key in METRICS
        elif field == "optimizer":
            known = key in optimizer
        elif field == "matrix":
            known = key in fields
        else:
            known = field in KEYED and bool(key)
        if not known:
            unknown.append(printable(clip(column, 60)))
    if unknown:
        shown = ", ".join(repr(column) for column in unknown[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise ScenarioFileError(f"header (line {line}): unknown column(s) {shown}{more}; {allowed}", line)


def _image_size(value: Any) -> Any:
    """``512x512`` as ``[512, 512]``."""
    match = _IMAGE_SIZE.match(value) if isinstance(value, str) else None
    return [int(match[1]), int(match[2])] if match else value


def _read_row(header: list[str], cells: list[str], where: str) -> tuple[dict[str, Any], list[str]]:
    """The row as the mapping a YAML entry would be, and what is wrong with its cells."""
    raw: dict[str, Any] = {}
    keyed: list[tuple[str, str, str, Any]] = []
    problems = []
    for column, cell in zip(header, cells, strict=True):
        if not column:
            if cell.strip():
                problems.append(f"{where}: a cell under a column with no name in the header: {brief(cell)}")
            continue
        if column == "name":
            if cell.strip():
                raw["name"] = cell.strip()
            continue
        try:
            value = read_cell(cell)
        except ScenarioFileError as exc:
            problems.append(f"{where}, column {printable(column)}: cannot read {brief(cell.strip())}: {exc}")
            value = cell.strip()  # as text: the field is then wrong, not missing
        if value is UNSET:
            continue
        field, dot, key = column.partition(".")
        if field == "matrix" and key == "image_size" and isinstance(value, list):
            value = [_image_size(item) for item in value]
        if dot:
            keyed.append((column, field, key, value))
        else:
            raw[column] = _image_size(value) if column == "image_size" else value
    for column, field, key, value in keyed:
        whole = raw.setdefault(field, {})
        if isinstance(whole, dict):
            whole[key] = value
        else:
            problems.append(
                f"{where}, column {printable(column)}: column {field} holds {brief(whole)}, not a mapping that "
                f"{key} could be added to; leave one of the two empty"
            )
    return raw, problems


def read_scenario_table(text: str, file: str = "the table") -> list[ScenarioEntry]:
    """The table's scenarios, each at the line its row starts on; raises ScenarioFileError for a header that
    cannot be read. ``file`` is how problems name the file."""
    text = text.removeprefix("\ufeff")
    found_header = _header(text)
    if found_header is None:
        raise ScenarioFileError("no header: the first line names the columns, e.g. name,architecture,batch_size")
    header_line, header = found_header
    _check_header(header, header_line)
    found: list[ScenarioEntry] = []
    names = Names()
    row = 0
    for line, cells in _records(text):
        if line <= header_line:
            continue
        row += 1
        if not any(cell.strip() for cell in cells):
            continue
        where = f"{file}, row {row} (line {line})"
        if len(cells) != len(header):
            raw: dict[str, Any] = {}
            if "name" in header and header.index("name") < len(cells) and cells[header.index("name")].strip():
                raw["name"] = cells[header.index("name")].strip()
            problems = [f"{where}: {len(cells)} cells, but the header has {len(header)} columns"]
        else:
            raw, problems = _read_row(header, cells, where)
        found += entries_of(raw, row - 1, line, names, problems=problems)
    return found


def scenarios_in(path: Path, shown: str) -> list[ScenarioEntry]:
    """The scenario entries of a YAML scenario file or a CSV table (``shown``: its name in messages);
    ScenarioFileError, OSError or UnicodeDecodeError when it cannot be read."""
    text = path.read_text(encoding="utf-8")
    return read_scenario_table(text, shown) if path.suffix == ".csv" else read_scenario_file(text)
