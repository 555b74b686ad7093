"""lbedge's exception family: every error says what failed, where, and what to do."""

from __future__ import annotations


class LBEdgeError(Exception):
    """Base class of every error lbedge raises on purpose."""


class CheckpointError(LBEdgeError):
    """A checkpoint or bundle folder is missing, corrupt, truncated or does not match its config."""


class InputError(LBEdgeError, ValueError):
    """An input (file, array, audio, video, text) cannot be used as given."""


class UsageError(InputError):
    """The call is wrong as written (a missing or contradictory option, a configuration that names nothing
    usable): fix the command or the configuration. The CLI exits with status 2 for it."""


class EngineMismatch(LBEdgeError):
    """A compiled engine does not match the runtime, device or model it is asked to run on."""


class SensorError(LBEdgeError):
    """A sensor could not be opened or stopped delivering frames."""


class MissingDependency(LBEdgeError, ImportError):
    """An optional dependency is not installed; the message names the extra that provides it."""
