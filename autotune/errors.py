"""Exceptions that the CLI turns into one-line messages and exit codes."""

from __future__ import annotations

import re


class AutotuneError(Exception):
    """Base class of every error autotune raises on purpose."""


class UsageError(AutotuneError):
    """Bad input from the user (a file, a flag, a value): exit code 2, nothing written."""


class TargetUnavailable(UsageError):
    """The requested target's runtime is not installed or has no device to run on."""


class BuildError(AutotuneError):
    """A candidate could not be built; the trial fails with this message as its reason."""


class MetricError(AutotuneError):
    """A task metric does not load, raises, or returns something other than (error, passed)."""


_LOAD_MODEL_FROM = re.compile(r"Load model from \S+ failed:\s*")
_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[^\s/:'\"()]+/)+([^\s/:'\"()]+)")


def condense_reason(text: str, limit: int = 300) -> str:
    """A failure reason on one line of at most `limit` characters that keeps what explains it.

    Runtimes put the explanation last, after a path (ONNX Runtime: `INVALID_GRAPH : Load model
    from /long/trial/dir/model.onnx failed: ... Error ...`), so a plain cut kept the path and lost
    the error. Absolute paths are shortened to their file name, ONNX Runtime's "Load model from
    PATH" preamble is dropped, and a text still too long keeps its head and its tail.
    """
    one = " ".join(str(text).split())
    one = _LOAD_MODEL_FROM.sub("Load model failed: ", one)
    one = _ABSOLUTE_PATH.sub(r"\1", one)
    if len(one) <= limit:
        return one
    head = limit // 3
    return f"{one[:head].rstrip()} ... {one[len(one) - (limit - head - 5) :].lstrip()}"


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-blank line of `exc`'s message through `condense_reason`; its type name when blank.

    Args:
        exc (BaseException): the exception a library raised.
        limit (int): the most characters kept. Default: 300.
    """
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return condense_reason(lines[0], limit) if lines else type(exc).__name__


def root_cause(exc: BaseException) -> BaseException:
    """The exception that says what went wrong, under the wrappers: Optuna's StorageInternalError
    ("invalid data in the commit, e.g. exceeding max length", whatever the cause) around
    SQLAlchemy's error around the database driver's (`.orig`: "database disk image is
    malformed", "connection to server ... failed"), or an ImportError around the missing module."""
    seen: set[int] = set()
    current = exc
    while id(current) not in seen:
        seen.add(id(current))
        inner = getattr(current, "orig", None) or current.__cause__ or current.__context__
        if not isinstance(inner, BaseException):
            break
        current = inner
    return current


class StorageLost(AutotuneError):
    """The study's database was deleted, replaced or truncated while the daemon ran."""
