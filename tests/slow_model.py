"""A model whose every step takes at least 0.3 s: a profile that is surely still running when a test stops it."""

import time
from typing import Any

from pytest_mlestimate.tiny import TinyDetector
from tests.tiny_scenario import TINY


class Slow(TinyDetector):
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.3)
        return super().forward(*args, **kwargs)


def slow_detector() -> Slow:
    return Slow()


SLOW: dict[str, Any] = {
    **TINY,
    "architecture": "tests.slow_model:slow_detector",
    "device": "cpu",
    "measure_iterations": 10_000,
}
