"""Measured profiles as the service reads them: recent ones from memory, the rest from the engine's cache (an
sqlite file, or the PostgreSQL database the replicas share).

A hot request must not pay for sqlite or for the profile key's environment fingerprint on every call, so
both the key and the profile are remembered. The key is remembered only where it is a pure function of
the scenario's fields (a torchvision architecture, no weights file): a custom model's key also covers its
source file, which is re-read each time, and a remembered profile of it is checked against the files of its code
(``changed_source``), so that an edited model is measured again.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TypeVar

from pytest_mlestimate.profiling.profile import Profile
from pytest_mlestimate.scenarios.architectures import TORCHVISION
from pytest_mlestimate.scenarios.scenario import Scenario
from pytest_mlestimate.stores.interfaces import profile_store_at
from pytest_mlestimate.stores.profile_cache import changed_source, profile_key

_V = TypeVar("_V")


class Recent(OrderedDict[str, _V]):
    """A bounded mapping that forgets the least recently remembered entry first."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def remember(self, key: str, value: _V) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.capacity:
            self.popitem(last=False)


class ProfileStore:
    def __init__(self, location: Path | str, capacity: int = 1024, placement: str | None = None) -> None:
        self.location = location
        """Where the engine keeps the profiles: what the engine's ``cache_path`` is given."""
        self.path = profile_store_at(location).path
        """The same, as users are shown it."""
        self.placement = placement
        self._keys = Recent[str](capacity)
        self._profiles = Recent[Profile](capacity)
        self._lock = threading.Lock()

    def cache_info(self, key: str) -> dict[str, object]:
        return {"hit": True, "key": key, "path": str(self.path)}

    def known_key(self, scenario: Scenario) -> str | None:
        """The profile key if it was computed before and cannot have changed since."""
        with self._lock:
            return self._keys.get(_fields(scenario))

    def key(self, scenario: Scenario) -> str:
        found = self.known_key(scenario)
        if found is not None:
            return found
        key = profile_key(scenario, self.placement)
        if scenario.architecture in TORCHVISION and scenario.weights_path is None:
            with self._lock:
                self._keys.remember(_fields(scenario), key)
        return key

    def recent(self, key: str) -> Profile | None:
        with self._lock:
            found = self._profiles.get(key)
            if found is not None:
                self._profiles.move_to_end(key)
        if found is not None and changed_source(found) is not None:
            with self._lock:
                if self._profiles.get(key) is found:
                    del self._profiles[key]
            return None
        return found

    def remember(self, key: str, profile: Profile) -> None:
        with self._lock:
            self._profiles.remember(key, profile)

    def lookup(self, key: str) -> Profile | None:
        """Memory, then the persistent cache (blocking: sqlite or the database)."""
        found = self.recent(key)
        if found is None:
            found = profile_store_at(self.location).get(key)
            if found is not None:
                self.remember(key, found)
        return found

    def __len__(self) -> int:
        return len(self._profiles)


def _fields(scenario: Scenario) -> str:
    return json.dumps(scenario.profile_fields(), sort_keys=True)
