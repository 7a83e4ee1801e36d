"""Another commit's code beside this one: a temporary git worktree, and the import path that reads from it.

A model built from a checkout imports its modules from the checkout wherever this run would import them from
this repository: each import-path entry (and the working directory) inside the repository is moved to the same
place in the checkout; entries outside it (the installed packages) stay.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

GIT_SECONDS = 300.0
"""A worktree of a large repository takes a while to write."""


class CheckoutError(Exception):
    """A revision that cannot be checked out; the message names the revision and the repository."""


@dataclass(frozen=True)
class Checkout:
    root: Path
    """The worktree."""
    replaces: Path
    """The repository's top level whose files the worktree stands in for."""
    ref: str
    commit: str

    def moved(self, path: str | os.PathLike[str]) -> str:
        """``path`` in the checkout when it lies inside the repository; otherwise unchanged."""
        absolute = Path(os.path.abspath(path or os.curdir))
        try:
            return str(self.root / absolute.relative_to(self.replaces))
        except ValueError:
            return str(absolute)

    def import_path(self, paths: Sequence[str]) -> list[str]:
        return list(dict.fromkeys(self.moved(p) for p in paths))

    def file(self, path: Path) -> Path | None:
        """The checkout's version of a file of the repository; None when the path lies outside it."""
        try:
            return self.root / path.resolve().relative_to(self.replaces)
        except ValueError:
            return None


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=GIT_SECONDS,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise CheckoutError(f"git could not be run in {cwd}: {exc}") from None


@contextlib.contextmanager
def checked_out(directory: Path, ref: str) -> Iterator[Checkout]:
    """``ref`` of the repository holding ``directory``, in a temporary worktree removed afterwards."""
    found = _git(directory, "rev-parse", "--show-toplevel")
    if found.returncode != 0:
        raise CheckoutError(f"{directory} is not inside a git repository: cannot check out {ref!r}")
    top = Path(found.stdout.strip()).resolve()
    resolved = _git(top, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if resolved.returncode != 0 or not ref or ref.startswith("-"):
        raise CheckoutError(f"{ref!r} is not a revision of {top} (a branch, a tag or a commit; fetch it first)")
    commit = resolved.stdout.strip()
    folder = Path(tempfile.mkdtemp(prefix="mlestimate-against-"))
    added = _git(top, "worktree", "add", "--detach", str(folder), commit)
    if added.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise CheckoutError(f"{ref!r} ({commit[:12]}) could not be checked out: {added.stderr.strip()[:500]}")
    try:
        yield Checkout(folder, top, ref, commit)
    finally:
        _git(top, "worktree", "remove", "--force", str(folder))
        shutil.rmtree(folder, ignore_errors=True)
        _git(top, "worktree", "prune")
