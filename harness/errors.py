"""tokbench's own exceptions.

Every error a user can cause or meet (bad input, missing driver, no permission) is a
``TokbenchError``: the CLI prints its message as one line and exits non-zero, never a traceback.
Backends translate their library's errors into these classes in one place each, chaining the
library's own exception (``raise ... from e``) so logs keep the cause.

Exit codes (README.md lists them): 2 bad input (options, profiles, run directories, curve files),
3 a setting change refused for lack of permission, 4 a device or backend that failed or is missing,
130/143/129 a run interrupted by SIGINT/SIGTERM/SIGHUP (settings restored, finished points kept).
"""

from __future__ import annotations

EXIT_USAGE = 2
EXIT_PERMISSION = 3
EXIT_DEVICE = 4


class TokbenchError(Exception):
    """An error whose message is fit to show a user as one line."""

    exit_code = EXIT_USAGE


class UsageError(TokbenchError):
    """Bad input: an option, a value out of range, an unknown GPU index."""


class ProfileError(TokbenchError):
    """A profile or site file that cannot be read or does not validate."""


class BackendUnavailable(TokbenchError):
    """The requested device backend cannot run here."""

    exit_code = EXIT_DEVICE


class NvmlNotInstalled(BackendUnavailable):
    """The nvidia-ml-py package (module ``pynvml``) is missing."""


class DriverNotLoaded(BackendUnavailable):
    """NVML is importable but the NVIDIA driver library is not loaded."""


class NoGpuFound(BackendUnavailable):
    """The driver answers but sees no GPU."""


class DeviceError(TokbenchError):
    """A device refused or failed an operation."""

    exit_code = EXIT_DEVICE


class NotSupported(DeviceError):
    """The part does not offer this query or setting."""


class PermissionDenied(DeviceError):
    """Changing a setting needs privileges this process lacks."""

    exit_code = EXIT_PERMISSION

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
