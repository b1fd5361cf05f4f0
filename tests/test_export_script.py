"""The exported `python.py` states the batch and input shapes its configuration was tuned at, and
runs there (issue 29: it opened a session and never said the answer runs at batch 2)."""

from __future__ import annotations

import json
import subprocess
import sys

from autotune.cli import main


def test_the_exported_script_states_and_runs_at_the_batch_it_was_tuned_at(tiny_model, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("target: onnxruntime\nknobs:\n  batch_size: {type: categorical, choices: [2], default: 2}\n")
    results = tmp_path / "results"
    common = ["--results-dir", str(results)]
    started = [
        "start",
        str(tiny_model),
        "--space",
        str(space),
        "--trials",
        "1",
        "--foreground",
        "--target",
        "onnxruntime",
    ]
    assert main([*started, "--max-measure-s", "0.05", *common]) == 0
    out = tmp_path / "deploy"
    assert main(["export", "tiny", "-o", str(out), *common]) == 0

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["batch_size"] == 2 and manifest["input_shapes"] == {"x": [2, 3, 8, 8]}
    script = (out / "python.py").read_text()
    assert script.startswith("# Tuned and measured at batch 2 at inputs x [2, 3, 8, 8] float32")
    ran = subprocess.run([sys.executable, "python.py"], cwd=out, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == ["tuned for batch 2: x [2, 3, 8, 8] float32", "outputs: y [2, 5]"], ran.stdout
