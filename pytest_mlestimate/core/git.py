"""Where a run comes from: its commit and branch, from GitHub Actions' variables or git."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError):
        return None
    answer = done.stdout.strip()
    return answer if done.returncode == 0 and answer else None


def source_control(root: Path, environ: Mapping[str, str] | None = None) -> tuple[str | None, str | None]:
    """(commit, branch) of a run: GitHub Actions' variables where set (``GITHUB_SHA``; ``GITHUB_HEAD_REF`` on a pull
    request, else ``GITHUB_REF_NAME``), else git in ``root``, else None. A detached HEAD has no branch."""
    environ = os.environ if environ is None else environ
    commit = environ.get("GITHUB_SHA") or _git(root, "rev-parse", "HEAD")
    branch = (
        environ.get("GITHUB_HEAD_REF")
        or environ.get("GITHUB_REF_NAME")
        or _git(root, "rev-parse", "--abbrev-ref", "HEAD")
    )
    return commit, (None if branch == "HEAD" else branch)
