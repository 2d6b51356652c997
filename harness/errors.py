"""tokbench's own exceptions.

Every error a user can cause or meet (bad input, missing driver, no permission) is a
``TokbenchError``: the CLI prints its message as one line and exits non-zero, never a traceback.
Backends translate their library's errors into these classes in one place each.
"""

from __future__ import annotations


class TokbenchError(Exception):
    """An error whose message is fit to show a user as one line."""

    exit_code = 2


class UsageError(TokbenchError):
    """Bad input: an option, a value out of range, an unknown GPU index."""


class ProfileError(TokbenchError):
    """A profile or site file that cannot be read or does not validate."""


class BackendUnavailable(TokbenchError):
    """The requested device backend cannot run here."""


class NvmlNotInstalled(BackendUnavailable):
    """The nvidia-ml-py package (module ``pynvml``) is missing."""


class DriverNotLoaded(BackendUnavailable):
    """NVML is importable but the NVIDIA driver library is not loaded."""


class NoGpuFound(BackendUnavailable):
    """The driver answers but sees no GPU."""


class DeviceError(TokbenchError):
    """A device refused or failed an operation."""


class NotSupported(DeviceError):
    """The part does not offer this query or setting."""


class PermissionDenied(DeviceError):
    """Changing a setting needs privileges this process lacks."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"permission denied to {what}: changing power limits or clocks needs root "
            "(or CAP_SYS_ADMIN in a container); run with sudo, or use --observe to measure "
            "at the current setting"
        )


class GpuBusy(DeviceError):
    """Another process is computing on a GPU the sweep was asked to use."""


class RunDirError(TokbenchError):
    """A run directory that is missing, damaged, or of another schema version."""


class CurveFileError(TokbenchError):
    """A curve file that is damaged, foreign, or of another schema version."""


def first_validation_error(error: object) -> tuple[str, str]:
    """``(where, what)`` of a pydantic ``ValidationError``'s first error: the dotted location of
    the offending key and pydantic's message, for the one-line errors of every file loader."""
    first = error.errors()[0]  # type: ignore[attr-defined]
    return ".".join(str(p) for p in first["loc"]), first["msg"]
