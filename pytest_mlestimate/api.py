"""The Python API: ``estimate(scenario)``. The pytest plugin and the HTTP service call nothing else."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mlestimate.core.checkouts import Checkout
from pytest_mlestimate.core.devices import device_lock
from pytest_mlestimate.core.pricing import Price
from pytest_mlestimate.core.progress import Listener, heard_safely
from pytest_mlestimate.estimates.estimate import Estimate
from pytest_mlestimate.profiling.profile import Profile
from pytest_mlestimate.scenarios.scenario import Scenario, parse_scenario
from pytest_mlestimate.stores.interfaces import profile_store_at
from pytest_mlestimate.stores.profile_cache import profile_key

DEFAULT_CLAIM_WAIT = 3600.0

if TYPE_CHECKING:
    from pytest_mlestimate.profiling.turns import TurnEnds


def estimate(
    scenario: Scenario | Mapping[str, Any],
    *,
    cache: bool = True,
    refresh: bool = False,
    isolate: bool = True,
    timeout: float | None = None,
    cache_path: Path | str | None = None,
    progress: Listener | None = None,
    price: Price | None = None,
    checkout: Checkout | None = None,
    turns: TurnEnds | None = None,
    ray: str | None = None,
) -> Estimate:
    """Measure (or recall) the scenario's profile and return its estimate.

    ``cache=False`` neither reads nor writes the cache; ``refresh=True`` re-measures and overwrites. A custom
    model whose code changed since its profile was cached is measured again: the estimate's ``cache['stale']``
    names the file.
    ``isolate=False`` profiles in this process (faster to start; RAM figures then include the caller's).
    ``progress`` hears what a profile is doing (``progress.Progress``), from another thread when isolated;
    an estimate answered from the cache makes no reports. ``price`` prices a scenario that sets none.
    Raises ``ScenarioError`` for invalid input and an ``EstimateError`` when the model cannot be measured;
    a model that does not fit in GPU memory is a result (``Estimate.fits`` is False), not an error.
    ``checkout`` builds the model from another commit's code (``checkouts.checked_out``): isolated, never cached.
    ``turns`` measures in turns with another profile (``turns.side_by_side``, which holds the device for both):
    isolated, never cached.
    ``cache_path`` may be a ``postgresql://`` URL: the cache a fleet shares, where each configuration is measured
    once (``stores.postgres_profiles``). ``ray`` measures on the Ray cluster at that address (``ray_tasks``).
    """
    parsed = parse_scenario(scenario)
    if checkout is not None or turns is not None:
        cache, isolate, ray = False, True, None
    store = profile_store_at(cache_path) if cache else None
    key = profile_key(parsed, placement="ray" if ray else None) if store else None
    stale = None
    if store is not None and key is not None and not refresh:
        found = store.get(key)
        if found is not None:
            return Estimate(parsed, found, {"hit": True, "key": key, "path": str(store.path)}, price)
        stale = store.stale
    claim = store.claim(key, claim_wait(timeout)) if store is not None and key is not None else contextlib.nullcontext()
    with claim as measured_meanwhile:  # by another host sharing the store, while this one waited for its lease
        if measured_meanwhile is not None and not refresh:
            return Estimate(parsed, measured_meanwhile, {"hit": True, "key": key, "path": str(store.path)}, price)
        if ray is not None:
            from pytest_mlestimate.profiling.ray_tasks import profile_on_ray

            profile = profile_on_ray(parsed, ray, timeout)  # the node holds its own device lock
        else:
            with device_lock(parsed.device) if turns is None else contextlib.nullcontext():
                if store is not None and key is not None and not refresh:
                    found = store.get(key)  # measured by another thread while this one waited
                    if found is not None:
                        return Estimate(parsed, found, {"hit": True, "key": key, "path": str(store.path)}, price)
                listener = heard_safely(progress) if progress else None
                profile = _measure(parsed, isolate, timeout, listener, checkout, turns)
        info: dict[str, Any] = {"hit": False}
        if stale is not None:
            info["stale"] = stale
        if store is not None and key is not None and profile.contended:
            info["stored"] = False
            profile.warnings.append(
                "not cached: measured while other processes took the CPU; the next estimate measures again"
            )
        elif store is not None and key is not None:
            info.update(key=key, path=str(store.path), stored=store.put(key, profile))
    if store is not None and store.problem:
        profile.warnings.append(store.problem)
    return Estimate(parsed, profile, cache=info, default_price=price)


def claim_wait(timeout: float | None) -> float:
    """How long an estimate waits for another host's profile of the same configuration before giving up: the
    profile's own time limit and a lease's length (its holder may have died just before it)."""
    from pytest_mlestimate.stores.postgres_profiles import LEASE_SECONDS

    return (timeout if timeout is not None else DEFAULT_CLAIM_WAIT) + 2 * LEASE_SECONDS


def estimate_model(
    model_factory: Callable[[], Any],
    scenario: Scenario | Mapping[str, Any],
    price: Price | None = None,
) -> Estimate:
    """Estimate a model defined in Python code, in this process and without the cache.

    ``scenario`` may leave out ``architecture``; the factory's name is used for it.
    """
    data = scenario.model_dump() if isinstance(scenario, Scenario) else dict(scenario)
    data.setdefault("architecture", f"{model_factory.__module__}:{getattr(model_factory, '__name__', 'model')}")
    if ":" in data["architecture"] and not data["architecture"].partition(":")[2].isidentifier():
        data["architecture"] = "python:model"
    parsed = parse_scenario(data)
    from pytest_mlestimate.profiling.profiler import profile_scenario

    with device_lock(parsed.device):
        profile = profile_scenario(parsed, model_factory=lambda _scenario: model_factory())
    return Estimate(parsed, profile, cache={"hit": False}, default_price=price)


def _measure(
    scenario: Scenario,
    isolate: bool,
    timeout: float | None,
    progress: Listener | None,
    checkout: Checkout | None = None,
    turns: TurnEnds | None = None,
) -> Profile:
    if isolate:
        from pytest_mlestimate.profiling.isolation import profile_in_child

        return profile_in_child(scenario, timeout, progress, checkout, turns)
    from pytest_mlestimate.profiling.profiler import profile_scenario
    from pytest_mlestimate.profiling.sources import recorded

    return recorded(
        scenario.architecture,
        lambda: profile_scenario(scenario, progress=progress) if progress else profile_scenario(scenario),
        in_child=False,
    )
