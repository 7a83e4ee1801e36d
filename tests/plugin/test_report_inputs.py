"""The files the commands read and write: never a device read to exhaustion, never an input overwritten by an
output, never a report written through a link planted beside it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_mlestimate.commands.cli import main
from pytest_mlestimate.core import files
from pytest_mlestimate.core.files import write_atomically

ROOT = Path(__file__).resolve().parents[2]
REPORT = {"schema_version": 1, "environment": {}, "scenarios": []}


def test_a_report_is_not_written_through_a_link_at_a_predictable_temporary_name(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    target = tmp_path / "out.json"
    os.symlink(victim, tmp_path / f".{target.name}.{os.getpid()}.tmp")  # the name an earlier writer used
    write_atomically(target, "{}\n")
    assert victim.read_text() == "keep me"
    assert target.read_text() == "{}\n" and not target.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".{target.name}.{os.getpid()}.tmp", "out.json", "victim.txt"]


def test_a_written_report_has_the_permissions_an_ordinary_write_gives(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    write_atomically(target, "{}\n")
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("command", [["html", "/dev/zero"], ["merge", "/dev/zero", "--json", "{out}"],
                                     ["compare", "/dev/zero", "/dev/zero"]])  # fmt: skip
def test_a_device_is_refused_before_it_is_read(tmp_path: Path, command: list[str]) -> None:
    args = [part.format(out=tmp_path / "out.json") for part in command]
    script = textwrap.dedent(
        """
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))  # reading /dev/zero whole fails here
        from pytest_mlestimate.commands.cli import main
        sys.exit(main(sys.argv[1:]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )
    assert done.returncode == 2, done.stderr
    assert "/dev/zero is not a regular file" in done.stderr and "Traceback" not in done.stderr


def test_a_report_over_the_size_bound_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    report = tmp_path / "report.json"
    report.write_text(json.dumps(REPORT) + " " * 200)
    monkeypatch.setattr(files, "MAX_INPUT_BYTES", 100)
    assert main(["html", str(report)]) == 2
    err = capsys.readouterr().err
    assert f"{report} is {report.stat().st_size:,} bytes; at most 100 are read" in err
    assert not (tmp_path / "report.html").exists()


def test_an_output_over_its_input_is_refused_and_the_input_kept(tmp_path: Path, capsys) -> None:
    report = tmp_path / "same.json"
    text = json.dumps(REPORT)
    report.write_text(text)
    assert main(["html", str(report), "-o", str(report)]) == 2
    assert "is the report it reads" in capsys.readouterr().err
    assert main(["merge", str(report), "--markdown", str(tmp_path / "." / "same.json")]) == 2
    assert "is a shard report it reads" in capsys.readouterr().err
    assert report.read_text() == text


def test_a_report_of_the_wrong_shape_is_a_message_and_exit_2(tmp_path: Path, capsys) -> None:
    report = tmp_path / "odd.json"
    report.write_text(json.dumps({**REPORT, "scenarios": [{"name": "x", "file": "f.yaml", "warnings": 5}]}))
    code = main(["html", str(report), "-o", str(tmp_path / "odd.html")])
    err = capsys.readouterr().err
    assert code == 2 and str(report) in err and "Traceback" not in err


def test_a_named_pipe_is_refused_without_waiting_for_a_writer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipe = tmp_path / "report.json"
    os.mkfifo(pipe)
    assert main(["html", str(pipe), "-o", str(tmp_path / "out.html")]) == 2  # opening it would block forever
    assert f"{pipe} is not a regular file" in capsys.readouterr().err
