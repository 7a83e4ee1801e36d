"""The commands that read reports (merge, html, compare) fed wrong types, deep nesting, non-UTF-8 and huge values:
each answers with an exit code and, for exit 2, a message naming the file; nothing raises, and no output is
touched when the input is refused."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_mlestimate.commands.cli import main

ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.just(10**400 // 10**390),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
FIELDS = ["name", "file", "line", "outcome", "message", "scenario", "details", "budgets", "runs", "warnings",
          "explanation", "resource", "training_time", "inference_time", "energy", "cost", "measured"]  # fmt: skip


@st.composite
def records(draw: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"name": draw(st.text(min_size=1, max_size=12)), "file": "s.yaml"}
    for field in draw(st.lists(st.sampled_from(FIELDS), max_size=6, unique=True)):
        record[field] = draw(ODD)
    if draw(st.booleans()):
        keys = st.sampled_from(["metric", "kind", "limit", "runs", "value", "passed"])
        record["budgets"] = draw(st.lists(st.dictionaries(keys, ODD), max_size=2))
    return record


@st.composite
def documents(draw: Any) -> bytes:
    kind = draw(st.sampled_from(["report", "report", "report", "nested", "odd", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "nested":
        depth = draw(st.sampled_from([1, 10, 63, 65, 900, 3000, 100_000]))
        return ("[" * depth + "]" * depth).encode()
    if kind == "odd":
        return json.dumps(draw(ODD)).encode()
    document = {"schema_version": draw(st.sampled_from([1, 1, 1, "1", None, 2])), "environment": draw(ODD),
                "scenarios": draw(st.lists(records(), max_size=3))}  # fmt: skip
    return json.dumps(document, default=str).encode("utf-8", "surrogatepass")


@pytest.mark.parametrize("command", ["merge", "html", "compare"])
@given(data=documents())
@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
def test_a_report_of_any_shape_gets_an_exit_code_never_an_exception(
    command: str, data: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        report, out = Path(folder) / "r.json", Path(folder) / "out.txt"
        report.write_bytes(data)
        out.write_text("before")
        args = {
            "merge": ["merge", str(report), "--json", str(out)],
            "html": ["html", str(report), "-o", str(out)],
            "compare": ["compare", str(report), str(report)],
        }[command]
        code = main(args)
        err = capsys.readouterr().err
        assert code in (0, 1, 2), code
        if code == 2:
            assert "Traceback" not in err and err.strip(), err
            assert out.read_text() == "before"  # refused input: the output stays as it was
