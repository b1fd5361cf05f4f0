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
