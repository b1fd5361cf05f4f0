"""A study kept in a real PostgreSQL server (`--storage postgresql://...`), its trials run on two
Ray nodes: a kill -9 of the daemon loses no told trial, `--resume` finishes it, and status,
report and export find it by its URL.

The server is started by the test itself (tests/postgres_server.py); where that cannot be done
(no PostgreSQL binaries, no driver) the test is skipped with the reason, never passed.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections import Counter

import optuna
import pytest

from autotune.daemon import daemon_state, lock_holder
from autotune.study import counts_toward_goal
from tests.conftest import make_tiny_model
from tests.postgres_server import ServerUnavailable, postgres_server
from tests.ray_nodes import two_node_cluster
from tests.test_daemon import MISBEHAVING, SLOW_SPACE, cli, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def postgres_url():
    try:
        server = postgres_server()
        url = server.__enter__()
    except ServerUnavailable as exc:
        pytest.skip(f"no PostgreSQL server for --storage tests: {exc}")
    try:
        yield url
    finally:
        server.__exit__(None, None, None)


def by_state(url: str, name: str) -> Counter:
    return Counter(t.state.name for t in optuna.load_study(study_name=name, storage=url).trials)


def told(url: str, name: str) -> dict[int, tuple]:
    trials = optuna.load_study(study_name=name, storage=url).trials
    return {t.number: (t.state.name, t.values, t.params) for t in trials if t.state.is_finished()}


def test_a_postgres_study_on_two_ray_nodes_survives_kill_9_and_resumes_losing_nothing(tmp_path, postgres_url):
    model = make_tiny_model(tmp_path / "tiny.onnx")
    space = tmp_path / "space.yaml"
    space.write_text(SLOW_SPACE)  # the misbehaving target's builds take a second: trials are in flight
    results = tmp_path / "results"
    study_dir = results / "pg"
    with two_node_cluster() as cluster:
        out = cli("start", str(model), "--study", "pg", "--trials", "6", "--workers", "2",
                  "--ray-address", cluster.address, "--storage", postgres_url, "--results-dir", str(results),
                  "--target", MISBEHAVING, "--space", str(space), "--max-measure-s", "0.05", timeout=300).stdout  # fmt: skip
        assert "study pg started" in out
        pid = lock_holder(study_dir)
        assert postgres_url not in open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
        assert not (study_dir / "study.db").exists()  # the records are in the server, not beside the results

        wait_for(lambda: by_state(postgres_url, "pg")["COMPLETE"] >= 2, 180, "two complete trials")
        wait_for(lambda: by_state(postgres_url, "pg")["RUNNING"] >= 1, 60, "a running trial")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: lock_holder(study_dir) is None, 30, "the kernel to drop the daemon's lock")
        before = told(postgres_url, "pg")
        counts_before = by_state(postgres_url, "pg")
        running = [t.number for t in optuna.load_study(study_name="pg", storage=postgres_url).trials
                   if t.state.name == "RUNNING"]  # fmt: skip
        assert counts_before["RUNNING"] >= 1 and counts_before["COMPLETE"] >= 2
        assert daemon_state(study_dir).startswith("crashed")

        status = cli("status", "pg", "--storage", postgres_url, "--results-dir", str(results)).stdout
        assert "complete" in status

        cli("start", "--resume", "pg", "--storage", postgres_url, "--results-dir", str(results),
            "--target", MISBEHAVING, "--ray-address", cluster.address, timeout=300)  # fmt: skip
        wait_for(lambda: lock_holder(study_dir) is None, 300, "the resumed daemon to finish")
        assert daemon_state(study_dir) == "finished", (study_dir / "autotune.log").read_text()[-2000:]

    after = optuna.load_study(study_name="pg", storage=postgres_url).trials
    for number, record in before.items():  # every told trial is as it was told
        trial = after[number]
        assert (trial.state.name, trial.values, trial.params) == record
    counts_after = Counter(t.state.name for t in after)
    # The trials cut by the kill are failed as interrupted, and their configurations re-run; a
    # running trial whose result had reached the daemon (its arrival journaled) before the kill is
    # told that result on resume instead, and the log says so.
    log = (study_dir / "autotune.log").read_text()
    arrived = [n for n in running if not after[n].user_attrs.get("interrupted")]
    for number in arrived:
        assert f"trial {number}: told its result, which had arrived before a stop" in log
    assert counts_after["FAIL"] == counts_before["FAIL"] + counts_before["RUNNING"] - len(arrived)
    # Six trials count toward --trials: measured, or pruned as too slow (on a busy machine a tiny
    # model's run beside another can be 10x its default's), never one lost or run twice.
    counted = [t for t in after if counts_toward_goal(t)]
    assert counts_after["RUNNING"] == 0 and len(counted) == 6, [
        (t.number, t.state.name, t.user_attrs.get("reason")) for t in after
    ]
    assert all(t.state.name == "COMPLETE" or t.user_attrs["reason"].startswith("too slow") for t in counted)
    interrupted = [t for t in after if t.state.name == "FAIL" and t.user_attrs.get("interrupted")]
    assert len(interrupted) == counts_before["RUNNING"] - len(arrived) and sorted(
        t.number for t in interrupted
    ) == sorted(set(running) - set(arrived))
    nodes = {t.user_attrs["details"]["build"].get("ray_node_id") for t in after if t.state.name == "COMPLETE"}
    assert nodes == set(cluster.node_ids), f"trials ran on {nodes}, the cluster's nodes are {cluster.node_ids}"

    # Every reading command finds the study by its URL.
    status = cli("status", "pg", "--storage", postgres_url, "--results-dir", str(results)).stdout
    assert "finished" in status
    cli("report", "pg", "--storage", postgres_url, "--results-dir", str(results))
    assert "pg" in (study_dir / "report.md").read_text()
    export = tmp_path / "exported"
    cli("export", "pg", "--storage", postgres_url, "--results-dir", str(results), "--output", str(export))
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["study"] == "pg"
    # Without the URL the study is not in the results directory's (absent) SQLite file: one line.
    missing = cli("status", "pg", "--results-dir", str(results), check=False)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    # `list` finds a server's studies with --storage (none of them has a study.db to glob).
    assert "no studies" in cli("list", "--results-dir", str(results)).stdout
    listed = " ".join(cli("list", "--storage", postgres_url, "--results-dir", str(results)).stdout.split())
    assert re.search(r"\bpg\W+finished\W+tiny\.onnx", listed), listed
