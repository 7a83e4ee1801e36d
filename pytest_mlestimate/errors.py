"""Why an estimate could not be made. Each message is written for the person who runs the estimate."""

from __future__ import annotations


class EstimateError(RuntimeError):
    """A valid scenario that could not be measured."""


class ModelBuildError(EstimateError):
    """The model could not be built or its weights did not load."""


class ModelRunError(EstimateError):
    """The model raised while it was being trained or run (e.g. a shape its layers cannot take)."""


class DeviceUnavailableError(EstimateError):
    """The scenario asks for a device this machine does not have (a reason to skip, not to fail)."""


class ProfileTimeoutError(EstimateError):
    pass


class ProfileCrashError(EstimateError):
    """The profiling process died or raised something unexpected."""


ERROR_TYPES: dict[str, type[EstimateError]] = {
    cls.__name__: cls
    for cls in (ModelBuildError, ModelRunError, DeviceUnavailableError, ProfileTimeoutError, ProfileCrashError)
}
