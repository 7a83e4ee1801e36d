"""pytest imports every installed plugin in every run: ours must stay light until ``--mlestimate``."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision", "pynvml", "fastapi", "pydantic")


def loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return [name for name in done.stdout.strip().split(",") if name]


def test_importing_the_plugin_loads_nothing_heavy() -> None:
    assert loaded_after("import pytest_mlestimate.plugin") == []


def test_a_pytest_run_without_the_flag_loads_nothing_heavy(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        "import sys\n"
        f"def pytest_sessionfinish():\n    print('HEAVY:', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    result = pytester.runpytest_subprocess("-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["plugins: *mlestimate-*"])
    assert "HEAVY: []" in result.stdout.str()
