"""The HTTP estimation service (``pip install "pytest-mlestimate[service]"``).

``uvicorn pytest_mlestimate.service:app`` serves an app built from ``MLESTIMATE_*`` variables; ``create_app``
builds one from explicit settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from pytest_mlestimate.service.app import create_app
    from pytest_mlestimate.service.settings import ServiceSettings

    app: FastAPI

__all__ = ["ServiceSettings", "app", "create_app"]


def __getattr__(name: str) -> Any:
    """Built on first use, so that importing the settings or the CLI builds no app."""
    if name == "app":
        from pytest_mlestimate.service.app import create_app

        globals()["app"] = built = create_app()
        return built
    if name == "create_app":
        from pytest_mlestimate.service.app import create_app

        return create_app
    if name == "ServiceSettings":
        from pytest_mlestimate.service.settings import ServiceSettings

        return ServiceSettings
    raise AttributeError(f"module 'pytest_mlestimate.service' has no attribute {name!r}")
