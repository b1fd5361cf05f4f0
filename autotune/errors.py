"""Exceptions that the CLI turns into one-line messages and exit codes."""


class AutotuneError(Exception):
    """Base class of every error autotune raises on purpose."""


class UsageError(AutotuneError):
    """Bad input from the user (a file, a flag, a value): exit code 2, nothing written."""


class TargetUnavailable(UsageError):
    """The requested target's runtime is not installed or has no device to run on."""


class BuildError(AutotuneError):
    """A candidate could not be built; the trial fails with this message as its reason."""


class TrialTimeout(AutotuneError):
    """A trial ran past its time limit."""


class MetricError(AutotuneError):
    """A task metric does not load, raises, or returns something other than (error, passed)."""
