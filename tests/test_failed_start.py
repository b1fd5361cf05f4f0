"""A start that fails leaves nothing behind, and `list` shows every study directory there is
(issue 29: an unreachable --ray-address failed after 29 s and left `results/` holding a study in
state failed that `list` did not show)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autotune.cli import main
from autotune.layout import STATE_FILE, existing_dirs, remove_failed_start
from tests.test_ray_start import TimingOutRayInit

REPO = Path(__file__).resolve().parent.parent
WORKERLESS = "tests.workerless_target:WorkerlessTarget"


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err.strip()


def test_a_foreground_start_whose_ray_times_out_says_so_in_one_line_and_leaves_nothing(
    capsys, monkeypatch, tiny_model, tmp_path
):
    """`start --workers 1` in the foreground makes a local Ray cluster; both tries time out (a named
    thin fake of `ray.init`, see tests/test_ray_start.py): exit 1, one line, no results directory."""
    import ray

    fake = TimingOutRayInit(failures=2)
    monkeypatch.setattr(ray, "init", fake.init)
    monkeypatch.setattr(ray, "shutdown", fake.shutdown)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    results = tmp_path / "results"
    argv = ["start", str(tiny_model), "--foreground", "--workers", "1", "--trials", "1", "--results-dir", str(results)]
    code, _, err = _run(capsys, *argv)
    assert code == 1 and len(fake.calls) == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "timed out starting" in err and "--ray-address" in err
    assert not results.exists()


@pytest.mark.slow
def test_a_daemon_that_fails_at_start_takes_its_study_directory_with_it(tiny_model, tmp_path):
    """The daemon validates again, then fails making its workers (a test double target whose
    workers cannot be had): `start` says why in one line, exit 1, and no results directory stays."""
    space = tmp_path / "space.yaml"
    space.write_text(
        "target: workerless\nknobs:\n  graph_optimization_level: {type: categorical, choices: [all], default: all}\n"
    )
    results = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    argv = ["start", str(tiny_model), "--trials", "1", "--target", WORKERLESS, "--space", str(space)]
    proc = subprocess.run(
        [sys.executable, "-m", "autotune.cli", *argv, "--results-dir", str(results)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and "started" not in proc.stdout, proc
    assert len(lines) == 1 and "failed at start" in lines[0] and "no worker can be had" in lines[0], proc.stderr
    assert not results.exists()


def test_a_failed_start_keeps_what_was_there_before_it(tmp_path):
    results = tmp_path / "results"
    (results / "old").mkdir(parents=True)
    created = existing_dirs(results / "new")
    (results / "new").mkdir()
    (results / "new" / STATE_FILE).write_text(json.dumps({"state": "failed", "reason": "x"}))
    assert remove_failed_start(results / "new", created)
    assert not (results / "new").exists() and (results / "old").is_dir()  # the results dir had a study
    again = existing_dirs(results / "old")
    (results / "old" / "inputs.npz").write_bytes(b"")
    assert not remove_failed_start(results / "old", again) and (results / "old").is_dir()


def test_list_shows_a_study_that_failed_before_its_first_trial_with_its_reason(capsys, monkeypatch, tmp_path):
    """A directory left by a daemon that failed before its storage existed (an older autotune's,
    or a study started again in its directory) is listed with its state, as `status` reads it."""
    monkeypatch.setenv("COLUMNS", "200")  # one table row per study
    results = tmp_path / "results"
    (results / "early").mkdir(parents=True)
    (results / "early" / STATE_FILE).write_text(json.dumps({"state": "failed", "reason": "Ray did not start"}))
    code, out, err = _run(capsys, "list", "--results-dir", str(results))
    assert code == 0 and not err, err
    row = next(line for line in out.splitlines() if "early" in line)
    assert "failed: Ray did not start" in row and "never began" in row, out


class NotARayHead:
    """An HTTP/2 server that answers every stream with status 404, as a proxy or another gRPC
    service does (the network this was written on answers so for any address, 10.255.255.1
    included): it passes the HTTP/2 handshake probe, and ray.init would retry it for 30 s."""

    SETTINGS = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
    SETTINGS_ACK = bytes([0, 0, 0, 4, 1, 0, 0, 0, 0])
    NOT_FOUND = bytes([0, 0, 1, 1, 5, 0, 0, 0, 1, 0x8D])  # HEADERS on stream 1: ":status: 404", end

    def __init__(self) -> None:
        import socket
        import threading

        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import threading

        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn) -> None:
        with conn:
            try:
                conn.settimeout(30)
                conn.sendall(self.SETTINGS)
                received = b""
                while data := conn.recv(65536):
                    received += data
                    if len(received) > 24 + 9:  # past the preface and its SETTINGS: a request
                        conn.sendall(self.SETTINGS_ACK + self.NOT_FOUND)
                        received = b""
            except OSError:
                pass

    def close(self) -> None:
        self.server.close()


def test_a_ray_address_that_speaks_http2_but_is_no_ray_head_is_one_line_in_seconds(capsys, tiny_model, tmp_path):
    """Issue 29: `--ray-address 10.255.255.1:6379` failed after 29 s, in the daemon, leaving a
    results directory. The address is now asked for its cluster id as ray.init's client asks."""
    import time

    head = NotARayHead()
    results = tmp_path / "results"
    try:
        began = time.monotonic()
        code, out, err = _run(
            capsys, "start", str(tiny_model), "--ray-address", head.address, "--results-dir", str(results)
        )
        took = time.monotonic() - began
    finally:
        head.close()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"--ray-address {head.address}: no Ray cluster answers there" in err and "404" in err, err
    assert "started" not in out and not results.exists()
    assert took < 25  # ray.init's own retries took 30 s; the cluster-id probe gives up after 20
