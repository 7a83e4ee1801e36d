"""What the operator decides when starting the service, from the command line or ``MLESTIMATE_*`` variables."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pytest_mlestimate.core.pricing import Price, PriceError, price_from
from pytest_mlestimate.core.units import UnitError, parse_timeout
from pytest_mlestimate.scenarios.architectures import is_custom_factory, library_model
from pytest_mlestimate.scenarios.scenario import MAX_BATCH_SIZE, MAX_IMAGE_SIDE

_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
_API_KEY = re.compile(r"^[!-~]+$")
_KWARG_NAME = re.compile(r"^(\*|[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?)$")

DEFAULT_MAX_BODY_SIZE = 64 * 1024
DEFAULT_MAX_CLIP_LENGTH = 64
MAX_CLIP_LENGTH = 1024
"""The engine's bound on ``clip_length``."""
"""Bytes of a request body: a scenario is a few hundred."""
DEFAULT_MODEL_KWARG_LIMIT = 4096
"""The largest number a custom factory's model_kwarg may be when the operator names no limit for it (``*`` sets
this default): twice the widest stage of common backbones (ResNet-50's 2048 channels) and above the largest
common label set (LVIS, 1203 classes), far below sizes that make a model of hundreds of gigabytes (a 3x3
convolution of 100000 channels has 90 G parameters). Keywords ending in ``_size`` are image sizes by
convention and are held to ``max_image_side`` instead."""

MAX_CAPACITY_SEARCHES = 64
"""Threads for capacity searches: each waits on the device's lane most of its life, so a few suffice."""

MAX_KEEP_ALIVE = 3600

ENVIRONMENT = {
    "device": "MLESTIMATE_DEVICE",
    "api_key": "MLESTIMATE_API_KEY",
    "allowed_factories": "MLESTIMATE_ALLOW_FACTORIES",
    "queue_size": "MLESTIMATE_QUEUE_SIZE",
    "capacity_searches": "MLESTIMATE_CAPACITY_SEARCHES",
    "capacity_time_limit": "MLESTIMATE_CAPACITY_TIME_LIMIT",
    "read_timeout": "MLESTIMATE_READ_TIMEOUT",
    "keep_alive_timeout": "MLESTIMATE_KEEP_ALIVE_TIMEOUT",
    "max_connections": "MLESTIMATE_MAX_CONNECTIONS",
    "profile_timeout": "MLESTIMATE_PROFILE_TIMEOUT",
    "max_batch_size": "MLESTIMATE_MAX_BATCH_SIZE",
    "max_image_side": "MLESTIMATE_MAX_IMAGE_SIDE",
    "max_clip_length": "MLESTIMATE_MAX_CLIP_LENGTH",
    "weights_dir": "MLESTIMATE_WEIGHTS_DIR",
    "data_dir": "MLESTIMATE_DATA_DIR",
    "profile_cpus": "MLESTIMATE_PROFILE_CPUS",
    "max_body_size": "MLESTIMATE_MAX_BODY_SIZE",
    "max_model_kwargs": "MLESTIMATE_MAX_MODEL_KWARGS",
    "price_per_device_hour": "MLESTIMATE_PRICE_PER_DEVICE_HOUR",
    "price_per_kwh": "MLESTIMATE_PRICE_PER_KWH",
    "store": "MLESTIMATE_STORE",
    "ray": "MLESTIMATE_RAY",
    "ray_profiles": "MLESTIMATE_RAY_PROFILES",
    "replica": "MLESTIMATE_REPLICA",
}
"""Setting -> the environment variable that sets it (the cache directory is the engine's MLESTIMATE_CACHE_DIR)."""


_PRICE_NAMES = (
    "price_per_device_hour (--price-per-device-hour, MLESTIMATE_PRICE_PER_DEVICE_HOUR)",
    "price_per_kwh (--price-per-kwh, MLESTIMATE_PRICE_PER_KWH)",
)


class SettingsError(ValueError):
    """A setting the service cannot start with; the message names the setting and what is allowed."""


@dataclass(frozen=True)
class ServiceSettings:
    device: str = "auto"
    """Where profiles run. Not 'auto': requests saying 'auto' are measured there and others are refused."""
    api_key: str | None = None
    allowed_factories: frozenset[str] = frozenset()
    """Custom ``package.module:function`` models requests may name, besides torchvision's builders."""
    queue_size: int = 8
    """Distinct profiles that may wait per device, and capacity searches that may wait for a search thread; one
    more is answered 503."""
    capacity_searches: int = 2
    """Capacity searches run at once, each on a thread of its own (a search holds it for all its profiles)."""
    capacity_time_limit: float = 300.0
    """Seconds after which a capacity search starts no new profile and answers with what it found."""
    profile_timeout: float = 600.0
    read_timeout: float = 10.0
    """Seconds a client has to send a request's head and body, from its first byte; then its connection closes."""
    keep_alive_timeout: int = 5
    """Seconds an idle kept-alive connection stays open."""
    max_connections: int = 512
    """Connections and requests at once; past it, 503 (keep it below the process's open-file limit)."""
    max_batch_size: int = MAX_BATCH_SIZE
    max_image_side: int = MAX_IMAGE_SIDE
    """Also the longest sequence a language model's request may name (its image_size is [1, length])."""
    max_clip_length: int = DEFAULT_MAX_CLIP_LENGTH
    """Frames per clip of a video classifier's request."""
    weights_dir: Path | None = None
    """Requests may name a ``weights_path`` inside this directory only; without it, none at all."""
    data_dir: Path | None = None
    """Requests may name a ``dataset`` file inside this directory only; without it, none (a request may still
    carry the summary ``mlestimate dataset-stats`` writes)."""
    profile_cpus: frozenset[int] = field(default_factory=frozenset)
    """CPUs kept for profiling (and kept free of serving), so that CPU figures do not depend on traffic."""
    job_limit: int = 1000
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    """Bytes a request body may have; a longer one is answered 413 without being read."""
    max_model_kwargs: Mapping[str, float] = field(default_factory=dict)
    """model_kwarg name -> the largest number it may be, for any architecture; ``*`` replaces the default limit
    of a custom factory's other numeric keywords (DEFAULT_MODEL_KWARG_LIMIT)."""
    price_per_device_hour: str | None = None
    """With its currency ("2.50 USD"): the price of requests that set none, for Cost per Training."""
    price_per_kwh: str | None = None
    store: str | None = None
    """A ``postgresql://`` URL: profiles and asynchronous jobs kept in that database, shared by every replica
    started with it; by default the engine's sqlite cache and jobs in memory."""
    ray: str | None = None
    """The address of a Ray cluster that measures the profiles (``ray_tasks``); by default this host does."""
    ray_profiles: int = 4
    """Profiles this replica has on the Ray cluster at once, for each kind of device."""
    replica: str | None = None
    """This replica's name in the shared job table; by default host:pid."""

    @property
    def price(self) -> Price | None:
        """The default price of requests (checked when the settings are made)."""
        return price_from(self.price_per_device_hour, self.price_per_kwh, _PRICE_NAMES)

    def __post_init__(self) -> None:
        problems = []
        try:
            self.price  # noqa: B018 - read to check it
        except PriceError as exc:
            problems.append(str(exc))
        if not _DEVICE.match(self.device):
            problems.append(f"device '{self.device}' is not a device; allowed: auto, cpu, cuda, cuda:N")
        for name in sorted(self.allowed_factories):
            if not (is_custom_factory(name) or library_model(name)):
                problems.append(
                    f"allowed factory '{name}' is not of the form 'package.module:function' (or 'timm:NAME', "
                    "'hf:MODEL_TYPE')"
                )
        if self.api_key is not None and not self.api_key:
            problems.append("api_key is empty; leave it unset for an open service")
        elif self.api_key is not None and not _API_KEY.match(self.api_key):
            problems.append(
                "api_key (--api-key, MLESTIMATE_API_KEY) has a character that is not printable ASCII, or a space; "
                "allowed: ASCII letters, digits and punctuation (HTTP headers carry ASCII: no client could send it)"
            )
        if self.max_body_size < 1:
            problems.append(f"max_body_size {self.max_body_size} must be positive (bytes)")
        for name, limit in sorted(self.max_model_kwargs.items()):
            if not _KWARG_NAME.match(name):
                problems.append(
                    f"max_model_kwargs: '{name}' is not a keyword name; allowed: a Python identifier, a "
                    "sub-configuration's keyword (backbone_config.embed_dim) or *"
                )
            if isinstance(limit, bool) or not isinstance(limit, int | float) or not 0 < limit < math.inf:
                problems.append(f"max_model_kwargs: the limit of '{name}' is {limit!r}; allowed: a positive number")
        for name, value, highest in (
            ("max_batch_size", self.max_batch_size, MAX_BATCH_SIZE),
            ("max_image_side", self.max_image_side, MAX_IMAGE_SIDE),
            ("max_clip_length", self.max_clip_length, MAX_CLIP_LENGTH),
        ):
            if not 1 <= value <= highest:
                problems.append(f"{name} {value} is out of range; allowed: 1 to {highest}")
        if self.store is not None and not self.store.startswith(("postgresql://", "postgres://")):
            problems.append(
                f"store (--store, MLESTIMATE_STORE) must be a postgresql:// URL; got one beginning "
                f"{self.store.partition(':')[0][:20]!r}"
            )
        if not 1 <= self.ray_profiles <= MAX_CAPACITY_SEARCHES:
            problems.append(f"ray_profiles {self.ray_profiles} is out of range; allowed: 1 to {MAX_CAPACITY_SEARCHES}")
        if self.queue_size < 0:
            problems.append(f"queue_size {self.queue_size} is negative")
        if not 1 <= self.capacity_searches <= MAX_CAPACITY_SEARCHES:
            problems.append(
                f"capacity_searches {self.capacity_searches} is out of range; allowed: 1 to {MAX_CAPACITY_SEARCHES}"
            )
        if not 1 <= self.keep_alive_timeout <= MAX_KEEP_ALIVE:
            problems.append(
                f"keep_alive_timeout {self.keep_alive_timeout} is out of range; allowed: 1 to {MAX_KEEP_ALIVE} s"
            )
        if self.max_connections < 1:
            problems.append(f"max_connections {self.max_connections} must be at least 1")
        for name in ("profile_timeout", "capacity_time_limit", "read_timeout"):
            try:
                parse_timeout(getattr(self, name))
            except UnitError as exc:
                problems.append(f"{name}: {exc}")
        if self.profile_cpus and not hasattr(os, "sched_getaffinity"):
            problems.append("profile_cpus needs an operating system with CPU affinity (Linux)")
        elif self.profile_cpus:
            available = os.sched_getaffinity(0)
            if not self.profile_cpus < available:
                problems.append(
                    f"profile_cpus {sorted(self.profile_cpus)} must be some, not all, of this process's CPUs "
                    f"{sorted(available)}: the rest serve requests"
                )
        if problems:
            raise SettingsError("; ".join(problems))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServiceSettings:
        """Settings from ``MLESTIMATE_*`` variables; keyword arguments that are not None win over them."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, variable in ENVIRONMENT.items():
            raw = environ.get(variable)
            if raw is not None and raw.strip():
                values[name] = _parse(name, variable, raw.strip())
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **values) if values else cls()


def parse_cpus(text: str) -> frozenset[int]:
    """'1', '2,3' or '2-5' (the taskset list format)."""
    cpus: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return frozenset(cpus)


def parse_kwarg_limits(items: Iterable[str]) -> dict[str, float]:
    """'NAME=LIMIT' items (``channels=256``, ``*=1024``) -> {name: limit}; ValueError names a bad item."""
    limits: dict[str, float] = {}
    for item in filter(None, (i.strip() for i in items)):
        name, sep, text = item.partition("=")
        try:
            limit = float(text)
        except ValueError:
            limit = math.nan
        if not sep or not name.strip() or not 0 < limit < math.inf:
            raise ValueError(f"'{item}' is not NAME=LIMIT with a positive number, such as channels=256")
        limits[name.strip()] = int(limit) if limit.is_integer() else limit
    return limits


def _parse(name: str, variable: str, raw: str) -> Any:
    kind = {f.name: f.type for f in fields(ServiceSettings)}[name]
    try:
        if name == "allowed_factories":
            return frozenset(filter(None, re.split(r"[,\s]+", raw)))
        if name == "profile_cpus":
            return parse_cpus(raw)
        if name in ("weights_dir", "data_dir"):
            return Path(raw)
        if name == "max_model_kwargs":
            return parse_kwarg_limits(re.split(r"[,\s]+", raw))
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError as exc:
        why = f": {exc}" if name == "max_model_kwargs" else ""
        raise SettingsError(f"{variable}={raw!r} is not a valid {name.replace('_', ' ')}{why}") from None
    return raw
