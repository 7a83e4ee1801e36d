"""Hostile scenario files, generated: random structure at random depth, scenario fields with wild values,
anchors and aliases (recursive ones and bombs), duplicate keys, control characters, NUL, lone surrogates,
huge numbers, .inf and .nan.

The reader must answer each with entries or a ScenarioFileError (never another exception), with short
messages and names that a terminal and an XML report can carry; a whole ``pytest --mlestimate`` run must
end with clear errors, no internal error or traceback, and complete, valid reports, in bounded time and
memory. No generated scenario is measurable (its architecture is never a valid one), so nothing profiles.
"""

from __future__ import annotations

import json
import resource
import signal
import time
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_mlestimate.scenarios.files import MAX_NAME, ScenarioFileError, read_scenario_file
from tests.plugin.test_scenario_file import alias_bomb

SCHEMA = json.loads((Path(__file__).parents[2] / "pytest_mlestimate" / "report.schema.json").read_text())
FIELDS = (
    "name",
    "task_type",
    "architecture",
    "dataset_size",
    "batch_size",
    "image_size",
    "device",
    "epochs",
    "model_kwargs",
    "budgets",
    "tolerances",
    "weights_path",
    "detection_load",
    "optimizer",
    "colour",
)
WORDS = (
    "detection",
    "instance",
    "cpu",
    "cuda",
    "cuda:7",
    "max",
    "weights",
    "4 GiB",
    "80 ms",
    "85 %",
    ">= 40 %",
    "4 GB/s",
    "-1",
    "0",
    "~",
    "null",
    "yes",
    "true",
    ".inf",
    "-.inf",
    ".nan",
    "1e999",
    "-0.0",
    "2023-01-01",
    "0x7fffffffffffffff",
    "peak_ram_memory",
    "forward_pass",
    "fasterrcnn_resnet50_fpm",
    "!!binary aGVsbG8=",
)
HOSTILE_WORDS = ("2023-02-31", "0x" + "f" * 40, "1" * 5000, "!!float nope", "!unknown tag", "<<", "*undefined", "@")
INVALID_ARCHITECTURES = ('"fasterrcnn_resnet50_fpm"', '"resnet"', '""', "12", "[a]", '"no such:model here"', "~")
# Any character except ':' (a "module:factory" name would be a custom model, which would be measured).
TEXT = st.text(st.characters(exclude_characters=":"), max_size=12) | st.text(
    st.characters(min_codepoint=0, max_codepoint=0x1F) | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    max_size=4,
)


def quoted(text: str) -> str:
    """YAML double quotes take JSON's escapes, so any text (NUL, lone surrogates) can be written."""
    return json.dumps(text)


@st.composite
def scalars(draw: st.DrawFn) -> str:
    choice = draw(st.integers(0, 9))
    if choice <= 3:
        return draw(st.sampled_from(HOSTILE_WORDS) if choice == 2 else st.sampled_from(WORDS))
    if choice <= 5:
        return quoted(draw(TEXT))
    if choice == 6:
        return str(draw(st.integers(-(2**63), 2**63 - 1) | st.integers(-(2**70), 2**70)))
    if choice == 7:
        return repr(draw(st.floats()))
    if choice == 8:
        character, repeat = draw(st.sampled_from([("x", 20_000), ("é", 2000), ("\x00", 300), ("\ud800", 1000)]))
        return quoted(character * repeat)
    return draw(st.sampled_from(FIELDS))


class Anchors:
    """The anchors of one generated file, and whether its mappings repeat keys (one repeated key anywhere
    makes the whole file invalid, so only some files do)."""

    def __init__(self, duplicates: bool) -> None:
        self.done: list[str] = []
        self.count = 0
        self.duplicates = duplicates

    def new(self) -> str:
        self.count += 1
        return f"a{self.count}"


def values(anchors: Anchors, depth: int) -> st.SearchStrategy[str]:
    @st.composite
    def value(draw: st.DrawFn) -> str:
        kind = draw(st.sampled_from(["scalar", "scalar", "alias", "list", "map"] if depth > 0 else ["scalar", "alias"]))
        if kind == "scalar" or (kind == "alias" and not anchors.done):
            return draw(scalars())
        if kind == "alias":
            return "*" + draw(st.sampled_from(anchors.done))
        anchor = anchors.new() if draw(st.booleans()) else None
        if anchor and draw(st.integers(0, 9)) == 5:
            anchors.done.append(anchor)  # an alias inside its own anchor: recursive
        if kind == "list":
            items = draw(st.lists(values(anchors, depth - 1), max_size=4))
            text = "[" + ", ".join(items) + "]"
        else:
            text = draw(mappings(anchors, depth - 1))
        if anchor:
            anchors.done.append(anchor)
            text = f"&{anchor} {text}"
        return text

    return value()


def keys(anchors: Anchors) -> st.SearchStrategy[str]:
    plain = st.sampled_from(FIELDS) | TEXT.map(quoted)
    return plain | st.sampled_from(WORDS) | scalars() if anchors.duplicates else plain


def mappings(anchors: Anchors, depth: int, *, scenario: bool = False) -> st.SearchStrategy[str]:
    @st.composite
    def mapping(draw: st.DrawFn) -> str:
        unique = None if anchors.duplicates else (lambda pair: pair[0])
        pairs = draw(st.lists(st.tuples(keys(anchors), values(anchors, depth)), max_size=5, unique_by=unique))
        pairs = [(k, v) for k, v in pairs if k.strip('"') != "architecture"]
        if scenario or draw(st.booleans()):
            pairs.append(("architecture", draw(st.sampled_from(INVALID_ARCHITECTURES))))
        if scenario and draw(st.integers(0, 3)) != 2:
            pairs = [(k, v) for k, v in pairs if k.strip('"') != "name"]
            pairs.insert(0, ("name", draw(st.sampled_from(["s1", "s2", "s3"]) | values(anchors, depth))))
        if anchors.duplicates and draw(st.booleans()) and pairs:
            pairs.append(draw(st.sampled_from(pairs)))  # a duplicate key
        return "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"

    return mapping()


@st.composite
def scenario_files(draw: st.DrawFn) -> str:
    special = draw(st.integers(0, 19))
    if special == 5:
        return alias_bomb(draw(st.integers(3, 9)), name_alias=draw(st.booleans()))
    if special == 6:
        depth = draw(st.integers(30, 80))
        return f"scenarios:\n  - {{name: deep, model_kwargs: {{a: {'[' * depth}{']' * depth}}}}}\n"
    if special == 7:
        return "scenarios:\n" + draw(st.text(max_size=200))
    anchors = Anchors(duplicates=draw(st.integers(0, 4)) == 2)
    depth = draw(st.integers(0, 4))
    lines = []
    if draw(st.booleans()):
        lines.append("defaults: " + draw(mappings(anchors, depth) | values(anchors, depth)))
    lines.append("scenarios:")
    for _ in range(draw(st.integers(0, 5) if draw(st.integers(0, 9)) == 5 else st.integers(1, 5))):
        entry = draw(mappings(anchors, depth, scenario=True) | values(anchors, depth))
        lines.append(f"  - {entry}")
    if draw(st.integers(0, 7)) == 3:
        lines.append(draw(st.sampled_from(["scenarios: []", "defaults: {}", "other: 1", "1: 2"])))
    return "\n".join(lines) + "\n"


def unsafe(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") for ch in text)


@given(scenario_files())
@settings(max_examples=300, deadline=10_000, database=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_reader_answers_entries_or_a_clear_error(text: str) -> None:
    try:
        entries = read_scenario_file(text)
    except ScenarioFileError as exc:
        assert len(str(exc)) < 600 and not unsafe(str(exc)), str(exc)[:2000]
        assert 1 <= exc.line <= text.count("\n") + 2
        return
    names = [entry.name for entry in entries]
    assert len(set(names)) == len(names)
    for entry in entries:
        assert entry.name and len(entry.name) <= MAX_NAME and not unsafe(entry.name)
        assert all(len(problem) < 600 for problem in entry.problems)


@contextmanager
def watchdog(seconds: int) -> Iterator[None]:
    """A hang fails the example instead of holding the whole test run."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"a pytest run over one generated file took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_whole_runs_end_with_clear_errors_and_complete_reports(pytester: pytest.Pytester, cached: Path) -> None:
    runs: list[float] = []
    memory_before = peak_rss_mib()

    @given(scenario_files(), scenario_files())
    @settings(
        max_examples=50,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example, HealthCheck.data_too_large],
    )
    def check(first: str, second: str) -> None:
        folder = pytester.path / f"example{len(runs)}"
        folder.mkdir()
        (folder / "first.yaml").write_text(first, encoding="utf-8", errors="surrogatepass")
        (folder / "second.yaml").write_text(second, encoding="utf-8", errors="surrogatepass")
        report, junit = folder / "report.json", folder / "junit.xml"
        start = time.monotonic()
        with watchdog(60):
            result = pytester.runpytest_inprocess(
                "--mlestimate",
                "--mlestimate-json",
                str(report),
                "--mlestimate-junitxml",
                str(junit),
                "-p",
                "no:cacheprovider",
                str(folder),
            )
        runs.append(time.monotonic() - start)
        output = result.stdout.str() + result.stderr.str()
        assert "INTERNALERROR" not in output and "Traceback" not in output, output[-3000:]
        outcomes = result.parseoutcomes()
        items = sum(outcomes.get(kind, 0) for kind in ("passed", "failed", "error", "errors", "skipped"))
        if items == 0:
            assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED, output[-3000:]
        else:
            assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), output[-3000:]
        document = json.loads(report.read_text())
        jsonschema.validate(document, SCHEMA)
        assert len(document["scenarios"]) == items
        assert report.stat().st_size < 200_000 and junit.stat().st_size < 200_000
        assert len(list(ET.parse(junit).getroot().iter("testcase"))) == items

    check()
    assert max(runs) < 30
    assert peak_rss_mib() - memory_before < 1024
    print(f"{len(runs)} runs, {sum(runs):.1f} s in all, slowest {max(runs):.2f} s")


def test_the_generator_makes_the_hostile_cases_it_promises() -> None:
    """The strategies reach aliases, duplicates, control characters and bombs (else the tests above prove
    little)."""
    seen: dict[str, bool] = dict.fromkeys(("alias", "anchor", "nul", "surrogate", "bomb", "deep"), False)
    read = {"entries": 0, "refused": 0}

    @given(scenario_files())
    @settings(max_examples=300, database=None, deadline=None, derandomize=True)  # a count, not a search
    def look(text: str) -> None:
        seen["alias"] |= "*a" in text
        seen["anchor"] |= "&a" in text
        seen["nul"] |= "\\u0000" in text
        seen["surrogate"] |= "\\ud8" in text or "\\udb" in text
        seen["bomb"] |= "&l0" in text
        seen["deep"] |= "[" * 30 in text
        try:
            read["entries"] += bool(read_scenario_file(text))
        except ScenarioFileError:
            read["refused"] += 1

    look()
    assert all(seen.values()), seen
    assert read["entries"] >= 60 and read["refused"] >= 30, read  # both paths get a fair share of examples
