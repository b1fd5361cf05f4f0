"""What `autotune dashboard` serves for one study, read over HTTP as a browser reads it: the study's
detail from optuna-dashboard's API (its note, its best trials). Used by tests/test_study.py and
bench/waste_cpu.py (issue 26: every surface names the same answer and front)."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path
from typing import Any

from autotune.dashboard import bind_server


def served_study_detail(study_dir: Path, timeout_s: float = 60.0) -> dict[str, Any]:
    """The detail `autotune dashboard` serves for the one study in `study_dir` (a server on a free
    port, stopped after)."""
    server = bind_server(study_dir, None, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        with urllib.request.urlopen(f"{base}/api/studies", timeout=timeout_s) as r:
            (summary,) = json.loads(r.read())["study_summaries"]
        with urllib.request.urlopen(f"{base}/api/studies/{summary['study_id']}", timeout=timeout_s) as r:
            return json.loads(r.read())
    finally:
        server.shutdown()
        server.server_close()
