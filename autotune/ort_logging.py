"""ONNX Runtime's provider warnings: kept out of the user's terminal, each in the log once.

ONNX Runtime repeats a provider warning for every session it creates, from two places: its C++
default logger writes to the process's stderr ("No registered plugin EP device found for
'CUDAExecutionProvider'", at WARNING, before a session's own `log_severity_level` applies), and
its Python wrapper `warnings.warn`s ("Specified provider 'CUDAExecutionProvider' is not in
available provider names"). Finalize alone creates dozens of sessions, so the same line filled
the terminal. Here the default logger is raised to ERROR (errors still print), and the Python
provider warnings become one INFO record per distinct message on the `autotune` logger: the
daemon's log (its stdout) gets each once, a foreground terminal none.
"""

from __future__ import annotations

import logging
import re
import warnings
from typing import Any

import onnxruntime

ORT_ERROR_SEVERITY = 3  # 0 verbose, 1 info, 2 warning, 3 error, 4 fatal
_PROVIDER_WARNING = re.compile(r"provider|execution ?provider|EP device", re.IGNORECASE)
_state: dict[str, Any] = {"routed": False, "seen": set(), "showwarning": None}


def route_onnxruntime_logging() -> None:
    """Idempotent, per process: ONNX Runtime's default logger at ERROR, and its provider
    warnings logged once each (`autotune` logger, INFO) instead of printed."""
    if _state["routed"]:
        return
    onnxruntime.set_default_logger_severity(ORT_ERROR_SEVERITY)
    # Its C++ messages cannot be taken one by one: the log says once that they are muted.
    logging.getLogger("autotune").info(
        "onnxruntime: its own log shows errors only (provider warnings repeat per session)"
    )
    _state["routed"] = True
    _state["showwarning"] = warnings.showwarning
    warnings.showwarning = _showwarning
    # Python's "default" action shows a warning once per call site and module globals; the
    # hook below shows each distinct provider message once per process, whatever the caller.
    warnings.filterwarnings("always", message=r"(?i).*provider", category=UserWarning, module=r"onnxruntime\.")


def _showwarning(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    text = str(message)
    if "onnxruntime" in str(filename) and _PROVIDER_WARNING.search(text):
        key = " ".join(text.split())
        if key not in _state["seen"]:
            _state["seen"].add(key)
            logging.getLogger("autotune").info("onnxruntime: %s (shown once)", key)
        return
    original = _state["showwarning"] or warnings._showwarning_orig  # type: ignore[attr-defined]
    original(message, category, filename, lineno, file, line)
