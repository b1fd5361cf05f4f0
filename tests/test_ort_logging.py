"""ONNX Runtime's provider warnings stay out of the terminal and reach the log once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import make_tiny_model

REPO = Path(__file__).resolve().parent.parent
SCRIPT = """
import logging, sys
import onnxruntime as ort
logging.basicConfig(filename=sys.argv[2], level=logging.INFO)  # as the daemon logs
from autotune.ort_logging import route_onnxruntime_logging
route_onnxruntime_logging()
route_onnxruntime_logging()  # idempotent
for _ in range(3):  # finalize opens many sessions
    ort.InferenceSession(sys.argv[1], providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
import warnings
warnings.warn("an unrelated warning still shows", UserWarning)
"""


def test_provider_warnings_of_many_sessions_are_logged_once_and_not_printed(tmp_path):
    import onnxruntime

    model = make_tiny_model(tmp_path / "tiny.onnx")
    log = tmp_path / "autotune.log"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(model), str(log)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "CUDAExecutionProvider" not in proc.stderr + proc.stdout
    assert "an unrelated warning still shows" in proc.stderr
    logged = log.read_text().count("CUDAExecutionProvider")
    expected = 0 if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else 1
    assert logged == expected, log.read_text()
    assert log.read_text().count("shows errors only") == 1  # the muted C++ warnings, said once


def test_a_foreground_finalize_line_is_printed_once_even_when_a_library_gave_root_a_handler():
    import io
    import logging

    from rich.console import Console

    from autotune.cli import finalize_lines_to

    console_text, root_text = io.StringIO(), io.StringIO()
    root_handler = logging.StreamHandler(root_text)  # what a library's logging.warning() leaves behind
    logging.getLogger().addHandler(root_handler)
    try:
        with finalize_lines_to(Console(file=console_text, width=200)):
            logging.getLogger("autotune").info("finalize: pairing 1 of 1, A/A control")
        assert console_text.getvalue().count("finalize: pairing 1 of 1") == 1
        assert "finalize" not in root_text.getvalue()
        assert logging.getLogger("autotune").propagate  # restored afterwards
    finally:
        logging.getLogger().removeHandler(root_handler)
