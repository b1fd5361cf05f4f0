"""The dashboard tells the truth and stays local; Ray listens on the loopback address only.

No headless browser is installed here (no chromium, no playwright), so the dashboard is checked
through the JSON API its pages are drawn from.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

from autotune.cli import main
from autotune.dashboard import bind_server
from autotune.layout import STUDY_DB
from autotune.study._records import DIRECTIONS, set_constraints

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def mixed_study(tmp_path: Path) -> Path:
    """Two trials: a feasible one, and a faster, more accurate-looking one that failed the gate."""
    study_dir = tmp_path / "results" / "mixed"
    study_dir.mkdir(parents=True)
    storage = f"sqlite:///{study_dir / STUDY_DB}"
    study = optuna.create_study(study_name="mixed", storage=storage, directions=list(DIRECTIONS))
    study.set_user_attr("study_dir", str(study_dir))
    for constraint, values in ((-1.0, (100.0, 0.01)), (1.0, (500.0, 0.001))):
        trial = study.ask()
        set_constraints(trial, {"accuracy": constraint})
        study.tell(trial, [values[0], values[1], *([1.0] * (len(DIRECTIONS) - 2))])
    return study_dir


def _get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        return json.loads(response.read())


def test_the_dashboard_api_shows_constraints_and_keeps_infeasible_trials_off_the_front(mixed_study):
    server = bind_server(mixed_study, None, 0)
    port = server.server_address[1]
    assert server.server_address[0] == "127.0.0.1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        (study,) = _get(port, "/api/studies")["study_summaries"]
        detail = _get(port, f"/api/studies/{study['study_id']}")
    finally:
        server.shutdown()
        server.server_close()
    constraints = {t["number"]: t["constraints"] for t in detail["trials"]}
    assert constraints == {0: [-1.0], 1: [1.0]}  # the dashboard greys out a trial with a value > 0
    assert [t["number"] for t in detail["best_trials"]] == [0]  # trial 1 dominates, but is infeasible


def test_a_taken_port_is_one_line_and_exit_2(capsys, mixed_study):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["dashboard", "mixed", "--port", str(port), "--results-dir", str(mixed_study.parent)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"--port {port}" in err and "already in use" in err and "pick another --port" in err


@pytest.mark.parametrize("port", ["0", "70000", "http"])
def test_a_port_out_of_range_is_rejected(capsys, mixed_study, port):
    code = main(["dashboard", "mixed", "--port", port, "--results-dir", str(mixed_study.parent)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and f"--port {port!r}" in err


RAY_PROBE = textwrap.dedent(
    """
    import json, os, psutil
    from autotune.workers import RayExecutor
    import ray

    executor = RayExecutor(1)
    ray.get(ray.remote(lambda: 1).remote())  # a worker process has started
    me = psutil.Process()
    listening = []
    for proc in [me, *me.children(recursive=True)]:
        try:
            listening += [(proc.name(), c.laddr.ip) for c in proc.net_connections("inet") if c.status == "LISTEN"]
        except psutil.NoSuchProcess:
            pass
    session = ray._private.worker.global_worker.node.get_session_dir_path()
    private = executor._ray_dir
    print(json.dumps({"listening": listening, "session": session, "private": private,
                      "mode": oct(os.stat(private).st_mode & 0o777)}))
    executor.close()
    print(json.dumps({"removed": not os.path.exists(private)}))
    """
)


@pytest.mark.slow
def test_a_local_ray_cluster_listens_on_loopback_only_and_keeps_its_files_private(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ENABLE")}
    probe = subprocess.run(
        [sys.executable, "-c", RAY_PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    first, second = (json.loads(line) for line in probe.stdout.strip().splitlines()[-2:])
    names = {name for name, _ in first["listening"]}
    assert {"gcs_server", "raylet"} <= names, first  # the probe saw Ray's servers
    elsewhere = [(name, ip) for name, ip in first["listening"] if ip not in ("127.0.0.1", "::ffff:127.0.0.1", "::1")]
    assert not elsewhere, f"listening beyond the loopback address: {elsewhere}"
    assert first["session"].startswith(first["private"] + os.sep)
    assert first["mode"] == "0o700"
    assert second["removed"]


@pytest.mark.slow
def test_no_process_of_a_running_daemon_listens_beyond_loopback(tmp_path):
    import psutil

    from autotune.daemon import lock_holder
    from tests.conftest import make_tiny_model

    model = make_tiny_model(tmp_path / "tiny.onnx")
    space = tmp_path / "space.yaml"  # the misbehaving target builds these levels normally, 1 s each
    space.write_text("knobs:\n  graph_optimization_level: {type: categorical, choices: [all, extended], default: all}\n"
                     "  intra_op_threads: {type: int, low: 0, high: 2, default: 0}\n")  # fmt: skip
    results = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [sys.executable, "-m", "autotune.cli"]
    argv = ["start", str(model), "--study", "net", "--trials", "20", "--results-dir", str(results),
            "--target", "tests.crashing_target:MisbehavingTarget", "--space", str(space)]  # fmt: skip
    started = subprocess.run([*cmd, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr
    study_dir = results / "net"
    try:
        listening: list[tuple[str, str]] = []
        names: set[str] = set()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not {"gcs_server", "raylet"} <= names:
            pid = lock_holder(study_dir)
            if pid is not None:
                daemon = psutil.Process(pid)
                listening, names = [], set()
                for proc in [daemon, *daemon.children(recursive=True)]:
                    try:
                        names.add(proc.name())
                        listening += [
                            (proc.name(), c.laddr.ip) for c in proc.net_connections("inet") if c.status == "LISTEN"
                        ]
                    except psutil.NoSuchProcess:
                        pass
            time.sleep(0.5)
        assert {"gcs_server", "raylet"} <= names, names
        loopback = ("127.0.0.1", "::ffff:127.0.0.1", "::1")
        assert listening and all(ip in loopback for _, ip in listening), listening
    finally:
        subprocess.run([*cmd, "stop", "net", "--now", "--results-dir", str(results)], cwd=REPO, env=env,
                       capture_output=True, timeout=120)  # fmt: skip
        deadline = time.monotonic() + 60
        while lock_holder(study_dir) is not None and time.monotonic() < deadline:
            time.sleep(0.5)
