"""The user's code a profile measured: every source file of it that building and running the model imported, with
a digest of each, kept with the profile so that the cache (``stores.profile_cache``) measures again once any of
them changed. A key cannot know these files before the model runs: a factory's file names its imports, not
theirs, and a factory may import inside a function.

The user's code is each imported module whose file lies outside the Python installation (its standard library,
site-packages and dist-packages folders) and outside this package, the factory's own file, and the modules of the
factory's package wherever it is installed. A torchvision builder runs none of it: nothing is recorded.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import site
import sys
import sysconfig
import time
from collections.abc import Callable, Collection
from types import ModuleType

from pytest_mlestimate.profiling.profile import Profile
from pytest_mlestimate.scenarios.architectures import TORCHVISION

MODIFIED = "modified after it was imported"
"""Recorded in place of a digest for a file written after its module was imported (while the profile ran, or, in
the caller's process, since the caller imported it): the profile measured the code that was read before, which no
file holds any more, so no content can match it."""
UNREADABLE = "unreadable"
_LIBRARY_FOLDERS = frozenset({"site-packages", "dist-packages"})
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PACKAGE_NAME = __name__.partition(".")[0]


def recorded(architecture: str, measure: Callable[[], Profile], *, in_child: bool) -> Profile:
    """The profile ``measure`` returns, with the user's source files it imported in ``Profile.sources``.

    ``in_child``: this process exists only for this profile (``worker``), so every module of the user's code in it
    belongs to the model. In the caller's own process (``isolate=False``) only what the profile imported counts,
    with what the factory's module reaches through its globals (the caller may have imported it before).
    """
    if architecture in TORCHVISION:
        return measure()
    before = frozenset(sys.modules)
    started = time.time_ns()
    profile = measure()
    profile.sources = imported_sources(architecture.partition(":")[0], None if in_child else before, started, before)
    modified = sorted(path for path, digest in profile.sources.items() if digest == MODIFIED)
    if modified:
        profile.warnings.append(
            f"{', '.join(modified)} changed after the model's code was imported: this profile measured the code "
            "read before, and the next estimate measures again"
        )
    return profile


def imported_sources(
    factory_module: str, since: Collection[str] | None, started_ns: int, loaded_before: Collection[str] = ()
) -> dict[str, str]:
    """Path -> SHA-256 of each source file of the user's code in ``sys.modules``: all of them (``since`` None),
    or those imported after ``since`` was taken plus what the factory's module reaches. A file written after its
    module was imported (after ``started_ns``, or for a module in ``loaded_before`` after the import Python's
    bytecode cache records) is recorded as ``MODIFIED``."""
    modules = dict(sys.modules)
    if since is None:
        names = {name for name, module in modules.items() if _is_users(name, module, factory_module)}
    else:
        names = {name for name in modules.keys() - set(since) if _is_users(name, modules[name], factory_module)}
        names |= _reached_from(factory_module, modules)
    names.add(factory_module)
    found: dict[str, str] = {}
    for name in sorted(names):
        module = modules.get(name)
        path = _file_of(module)
        if path is None or path in found or not os.path.isfile(path):
            continue
        if name in loaded_before:
            found[path] = MODIFIED if _edited_since_imported(module, path) else _digest(path, None)
        else:
            found[path] = _digest(path, started_ns)
    return found


def _digest(path: str, imported_after_ns: int | None) -> str:
    try:
        with open(path, "rb") as handle:
            if imported_after_ns is not None and os.fstat(handle.fileno()).st_mtime_ns > imported_after_ns:
                return MODIFIED
            return hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return UNREADABLE


def _edited_since_imported(module: object, path: str) -> bool:
    """Whether a module this process imported before the profile started has been edited since. Its bytecode
    cache (``__cached__``) records the source's time (whole seconds) and size as of the last import that read it,
    in this process or a later one: a source that no longer matches was edited after this process read it. An
    edit that another process imported since is not seen; where no bytecode is written, nothing is."""
    try:
        cached = module.__dict__.get("__cached__")
    except Exception:
        return False
    if sys.dont_write_bytecode or not isinstance(cached, str):
        return False
    try:
        with open(cached, "rb") as handle:
            header = handle.read(16)
        stat = os.stat(path)
    except OSError:
        return False
    if len(header) < 16 or int.from_bytes(header[4:8], "little") != 0:
        return False  # a hash-checked bytecode file: it records no time
    recorded = (int.from_bytes(header[8:12], "little"), int.from_bytes(header[12:16], "little"))
    return recorded != (int(stat.st_mtime) & 0xFFFFFFFF, stat.st_size & 0xFFFFFFFF)


def _file_of(module: object) -> str | None:
    """The module's file as an absolute path, without asking the file system (or a lazy module) anything."""
    try:
        path = module.__dict__.get("__file__")
    except Exception:  # not a module: something a library put in sys.modules
        return None
    return os.path.abspath(path) if isinstance(path, str) else None


def _is_users(name: str, module: object, factory_module: str) -> bool:
    path = _file_of(module)
    if path is None:
        return False  # built in, frozen, a namespace package, or code made in memory
    top, factory_top = name.partition(".")[0], factory_module.partition(".")[0]
    if top == factory_top and top != _PACKAGE_NAME:
        users = True  # the factory's package, even where it is installed as a library
    elif top != name and _is_library(_file_of(sys.modules.get(top))):
        users = False  # a library's generated code (torch's compiled kernels), wherever it is written
    else:
        users = not _is_library(path)
    return users and os.path.isfile(path)


def _is_library(path: str | None) -> bool:
    if path is None:
        return False
    roots = _library_roots()
    if path.startswith(roots) or not _LIBRARY_FOLDERS.isdisjoint(path.split(os.sep)):
        return True
    real = os.path.realpath(path)  # only for the few that look like the user's: each part is one system call
    return real != path and (real.startswith(roots) or not _LIBRARY_FOLDERS.isdisjoint(real.split(os.sep)))


@functools.cache
def _library_roots() -> tuple[str, ...]:
    """Folders of the Python installation and of this package, each ending in a separator."""
    paths = sysconfig.get_paths()
    roots = {paths.get(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    with contextlib.suppress(AttributeError):  # an old virtualenv's site module lacks these
        roots.update(site.getsitepackages())
        roots.add(site.getusersitepackages())
    roots.add(_PACKAGE)
    found = set()
    for root in filter(None, roots):
        found.update(os.path.join(folder, "") for folder in (os.path.abspath(root), os.path.realpath(root)))
    return tuple(sorted(found))


def _reached_from(factory_module: str, modules: dict[str, ModuleType]) -> set[str]:
    """The user's modules the factory's module reaches through its globals (a module, or the module that
    defines a class or function), and theirs in turn, with the packages above each: an import the caller made
    before the profile started is not new, but its code is the model's."""
    reached: set[str] = set()
    waiting = [factory_module]
    while waiting:
        name = waiting.pop()
        module = modules.get(name)
        if name in reached or module is None or not (name == factory_module or _is_users(name, module, factory_module)):
            continue
        reached.add(name)
        waiting.extend(name.rsplit(".", depth)[0] for depth in range(1, name.count(".") + 1))
        try:
            values = list(vars(module).values())
        except TypeError:
            continue
        for value in values:
            if isinstance(value, ModuleType):
                waiting.append(value.__name__)
                continue
            with contextlib.suppress(Exception):  # a lazy object's __getattr__ may do anything
                owner = getattr(value, "__module__", None)
                if isinstance(owner, str):
                    waiting.append(owner)
    return reached
