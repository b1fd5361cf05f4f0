"""`autotune dashboard`: optuna-dashboard on 127.0.0.1 against a study's storage, telling the truth
about feasibility.

optuna-dashboard (0.21) reads a trial's constraints from the system attribute `constraints` (a
list, Optuna 4's format); Optuna 5 stores them one key each (`constraints:accuracy`), so the
dashboard saw none, and its Pareto front (`best_trials`) ignores constraints altogether: a trial
that failed the accuracy gate could sit on the front. Here the dashboard is given each trial's
constraint values in the list it reads, and its front is computed over feasible trials only.
"""

from __future__ import annotations

import copy
import errno
import socketserver
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from optuna.artifacts import FileSystemArtifactStore

from autotune.answer import front_of
from autotune.errors import UsageError
from autotune.layout import ARTIFACT_DIR
from autotune.study import storage_url

if TYPE_CHECKING:
    from optuna.study import StudyDirection
    from optuna.trial import FrozenTrial

HOST = "127.0.0.1"


def constraint_values(trial: FrozenTrial) -> list[float]:
    """A trial's constraint values (<= 0 feasible): Optuna 5's named constraints, else Optuna 4's
    list, else the copy autotune keeps in the user attributes; [] when it has none."""
    named = getattr(trial, "constraints", None)
    if isinstance(named, dict) and named:
        return [float(v) for v in named.values()]
    listed = trial.system_attrs.get("constraints")
    if listed:
        return [float(v) for v in listed]
    return [float(v) for v in trial.user_attrs.get("constraints", [])]


def is_feasible(trial: FrozenTrial) -> bool:
    """Whether every constraint of the trial holds (a trial without constraints is feasible)."""
    return all(v <= 0.0 for v in constraint_values(trial))


def _with_listed_constraints(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Copies of `trials` whose system attributes carry the constraint list the dashboard reads."""
    out = []
    for trial in trials:
        values = constraint_values(trial)
        if values and trial.system_attrs.get("constraints") != values:
            trial = copy.copy(trial)
            trial._system_attrs = {**trial._system_attrs, "constraints": values}
        out.append(trial)
    return out


def _patch_optuna_dashboard() -> None:
    """Points optuna-dashboard's trial loading and Pareto front at the feasibility-aware versions
    (idempotent; module globals of `optuna_dashboard._app`, checked by tests/test_dashboard.py)."""
    from optuna_dashboard import _app  # lazy: its app module is patched only when `autotune dashboard` serves it

    if getattr(_app, "_autotune_patched", False):
        return
    load_trials: Callable[..., list[FrozenTrial]] = _app.get_trials
    front: Callable[..., list[FrozenTrial]] = _app.get_pareto_front_trials

    def get_trials(*args: Any, **kwargs: Any) -> list[FrozenTrial]:
        return _with_listed_constraints(load_trials(*args, **kwargs))

    def get_pareto_front_trials(
        trials: Sequence[FrozenTrial], directions: Sequence[StudyDirection]
    ) -> list[FrozenTrial]:
        if len(directions) == 2:  # an autotune study: the one front every surface shows
            return front_of(trials)
        return front([t for t in trials if is_feasible(t)], directions)

    _app.get_trials = get_trials
    _app.get_pareto_front_trials = get_pareto_front_trials
    _app._autotune_patched = True


def dashboard_app(study_dir: Path, storage: str | None) -> Any:
    """The optuna-dashboard WSGI application for a study (its artifacts too, when it has some).

    Args:
        study_dir (Path): `results/<study>/`.
        storage (str | None): an Optuna storage URL; None reads `study_dir/study.db`.
    """
    from optuna_dashboard import wsgi  # lazy: only `autotune dashboard` serves it

    _patch_optuna_dashboard()
    artifacts = study_dir / ARTIFACT_DIR
    store = None
    if artifacts.is_dir():
        store = FileSystemArtifactStore(str(artifacts))
    return wsgi(storage_url(study_dir, storage), artifact_store=store)


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = False  # a port another process holds is refused, not shared


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_dashboard(study_dir: Path, storage: str | None, port: int) -> int:
    """Serves the dashboard on 127.0.0.1:`port` until Ctrl-C (blocks).

    Raises:
        UsageError: the port is taken: one line naming it and the fix.
    """
    server = bind_server(study_dir, storage, port)
    print(f"optuna-dashboard for {study_dir.name} on http://{HOST}:{port}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def bind_server(study_dir: Path, storage: str | None, port: int) -> WSGIServer:
    """The dashboard's server bound to 127.0.0.1:`port`, not yet serving.

    Raises:
        UsageError: the port is taken (or cannot be bound): one line naming it and the fix.
    """
    app = dashboard_app(study_dir, storage)
    try:
        server = _Server((HOST, port), _QuietHandler)
    except OSError as exc:
        why = "already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc)).lower()
        raise UsageError(f"--port {port}: cannot listen on {HOST}:{port} ({why}); pick another --port") from None
    server.set_app(app)
    return server
