"""The study's storage boundary: the Optuna storage a study lives in (SQLite in its directory
or a database server), opening and loading it, study names, and unreadable databases said in
one line."""

from __future__ import annotations

import functools
import importlib.util
import itertools
import logging
import random
import re
import sqlite3
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from autotune.errors import UsageError, root_cause
from autotune.layout import STUDY_DB, check_study_name, daemon_state, storage_url
from autotune.lazy import lazy_module
from autotune.space import config_key
from autotune.study._records import DIRECTIONS, OBJECTIVES, constraints_from_attrs, native_constraints
from autotune.sweep import unmeasured_config, unmeasured_neighbour
from autotune.targets import target_names

if TYPE_CHECKING:
    import sqlalchemy

    from autotune.space import SearchSpace
    from autotune.study._spec import StudySpec
else:
    sqlalchemy = lazy_module("sqlalchemy")  # loaded on first use (~0.3 s): only a study's storage needs it


def quiet_optuna() -> None:

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def make_storage(url: str) -> Any:
    """Optuna RDB storage for `url`; SQLite gets WAL journaling and `synchronous=NORMAL`.

    Optuna commits once per suggest and per user attribute; with SQLite's default rollback
    journal each commit is an fsync (~4 ms here), which made the orchestration a third of a
    study's wall time. WAL keeps the database consistent across crashes (a `kill -9` loses at
    most the last transactions, never corrupts) at a fraction of the cost.
    """

    if not url.startswith("sqlite:"):
        return optuna.storages.RDBStorage(url)

    def set_pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 30}})
    sqlalchemy.event.listen(storage.engine, "connect", set_pragmas)
    storage.engine.dispose()  # later connections get the pragmas
    return storage


REDRAWS = 8  # relative samples `NoRepeatSampler` draws before it looks near its first draw
TWO_KNOB_CANDIDATES = 4096  # configurations two knobs away that `NoRepeatSampler` looks at


class NoRepeatSampler(optuna.samplers.BaseSampler):
    """A sampler whose relative samples are drawn again, up to `REDRAWS` times, while they
    repeat a configuration the study already holds (issue 27: TPE proposed trial 8's and trial
    20's configurations again on YOLOv8n, GPU run 8; a repeat is told from its original, not run,
    but it is an ask that taught nothing). Only a sample that fixes every knob can be known to
    repeat; the rest is the wrapped sampler's."""

    def __init__(self, base: optuna.samplers.BaseSampler, space: SearchSpace, seed: int = 0) -> None:
        self.base = base
        self.space = space
        self.seed = seed

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        params = self.base.sample_relative(study, trial, search_space)
        # only a sample that fixes every active knob (or, in the start-up, a search space that holds
        # every knob) can be told a repeat: the rest is left to the independent sampler
        fixed = params or search_space
        if not all(knob.name in fixed for knob in self.space.knobs if not params or knob.active(params)):
            return params
        seen, seed = held_configurations(study), self.seed * 1_000_003 + trial.number
        if not params:
            # the wrapped sampler's random start-up (TPE's first trials): a random configuration
            # the study does not hold, as its independent draws would be less their repeats
            return unmeasured_config(self.space, seen, lambda config: True, seed=seed) or {}
        first = params
        for _ in range(REDRAWS):
            if config_key(params) not in seen:
                return params
            params = self.base.sample_relative(study, trial, search_space)
        if config_key(params) not in seen:
            return params
        # TPE keeps to its favourite: the nearest configuration to it the study does not hold
        # (a uniformly random one ran 2.7x slower than the defaults on YOLOv8n, `unmeasured_neighbour`)
        return (
            unmeasured_neighbour(self.space, first, seen, lambda config: True, seed=seed)
            or self.two_knobs_away(first, seen, seed)
            or unmeasured_config(self.space, seen, lambda config: True, seed=seed)
            or first
        )

    def two_knobs_away(self, around: dict[str, Any], seen: set[str], seed: int) -> dict[str, Any] | None:
        """A configuration two discrete knobs away from `around` that the study does not hold, in
        a seeded random order (at most `TWO_KNOB_CANDIDATES` looked at), else None."""
        knobs = [knob for knob in self.space.knobs if knob.name in around and knob.type != "float"]
        candidates = [
            {**around, a.name: x, b.name: y}
            for a, b in itertools.combinations(knobs, 2)
            for x in list(a.values()[:16])
            for y in list(b.values()[:16])
            if x != around[a.name] and y != around[b.name]
        ][:TWO_KNOB_CANDIDATES]
        random.Random(seed).shuffle(candidates)
        return next((c for c in candidates if config_key(c) not in seen), None)

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        """The wrapped sampler's value, unless it is the last knob of the configuration and that
        configuration is one the study holds: then another value of the knob that completes one it
        does not hold, if any. This is where a conditional knob left out of the relative sample
        repeated a configuration (YOLOv8n on the CPU: `inter_op_threads` under `execution_mode:
        parallel`, bench/WASTE_CPU.md)."""
        value = self.base.sample_independent(study, trial, param_name, param_distribution)
        config = {**trial.params, param_name: value}
        if not all(knob.name in config for knob in self.space.knobs if knob.active(config)):
            return value  # knobs still to come: the configuration is not known yet
        knob = self.space[param_name] if param_name in self.space else None
        if knob is None or knob.type == "float":
            return value
        seen = held_configurations(study)
        if config_key(config) not in seen:
            return value
        others = [v for v in knob.values()[:64] if v != value]
        random.Random(self.seed * 1_000_003 + trial.number).shuffle(others)
        return next((v for v in others if config_key({**config, param_name: v}) not in seen), value)

    def before_trial(self, study: Any, trial: Any) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()


def held_configurations(study: Any) -> set[str]:
    """The `config_key`s of the configurations the study holds: every trial but the queued ones."""
    states = tuple(state for state in optuna.trial.TrialState if state != optuna.trial.TrialState.WAITING)
    return {config_key(t.params) for t in study.get_trials(deepcopy=False, states=states)}


def open_study(spec: StudySpec, *, create: bool) -> Any:
    """Creates (or loads) the Optuna study with the multi-objective TPE sampler."""

    quiet_optuna()
    constraints: dict[str, Any] = {} if native_constraints() else {"constraints_func": constraints_from_attrs}
    if spec.sampler == "random":
        sampler: Any = optuna.samplers.RandomSampler(seed=spec.seed)
    else:
        sampler = optuna.samplers.TPESampler(
            seed=spec.seed,
            constant_liar=True,
            n_startup_trials=max(4, min(10, (spec.n_trials or 40) // 4)),
            multivariate=True,
            **constraints,
        )
        sampler = NoRepeatSampler(sampler, spec.space, spec.seed)
    if create:
        study = optuna.create_study(
            storage=make_storage(spec.storage_url),
            study_name=spec.name,
            directions=list(DIRECTIONS),
            sampler=sampler,
            load_if_exists=True,
        )
        study.set_metric_names(list(OBJECTIVES))
        return study
    return optuna.load_study(study_name=spec.name, storage=make_storage(spec.storage_url), sampler=sampler)


def existing_study_model(results_dir: Path, name: str, storage: str | None = None) -> dict[str, Any] | None:
    """The stored model facts of study `name`, or None when it does not exist (read-only).

    Raises:
        UsageError: the study's database is not a readable study database, or `storage`
            cannot be opened; the message names the file (or the URL, password hidden).
    """

    quiet_optuna()
    url = storage_url(results_dir / name, storage)
    if storage is None and not (results_dir / name / STUDY_DB).exists():
        return None
    if storage is None:
        check_database(results_dir / name)
    try:
        summaries = optuna.get_all_study_summaries(storage=url, include_best_trial=False)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy's many errors: one line naming the file/URL
        raise UsageError(_unreadable(results_dir / name, storage, exc)) from None
    for summary in summaries:
        if summary.study_name == name:
            return dict(summary.user_attrs)
    return None


def redact_url(url: str) -> str:
    """`url` with any password replaced by ***."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy parses: nothing to hide in it
        return re.sub(r"//([^:/@]*):[^@]*@", r"//\1:***@", url)


def check_database(study_dir: Path) -> None:
    """UsageError naming the file when `<study_dir>/study.db` exists but is no SQLite database
    (a 0-byte file included: it would silently become a new, empty study).

    The file is read through SQLite, never with a plain `open()`: closing any descriptor of a
    file drops every POSIX lock the process holds on it, so a daemon that checked its own database
    that way lost its locks, and another process closing its connection then believed itself the
    last one, checkpointed and unlinked the WAL the daemon was still writing into (every trial told
    after a resume was lost at the next kill -9). SQLite's own unix VFS keeps a process's
    descriptors of one file open until its last connection closes ("How To Corrupt An SQLite
    Database File", 2.2).
    """

    db = study_dir / STUDY_DB
    try:
        size = db.stat().st_size
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UsageError(f"{db}: cannot read the study database ({exc.strerror})") from None
    if size == 0:
        raise UsageError(f"{db}: empty file, not a study database (restore it, or move it aside to start over)")
    try:
        # mode=rw: never creates the file; the query reads the header and the schema.
        connection = sqlite3.connect(f"{db.resolve().as_uri()}?mode=rw", uri=True, timeout=30)
        try:
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc) or "malformed" in str(exc):
            raise UsageError(
                f"{db}: not a SQLite database (corrupt; restore it, or move it aside to start over)"
            ) from None
        raise UsageError(f"{db}: cannot read the study database ({exc})") from None


def study_names(url: str) -> list[str]:
    """The studies in the Optuna storage at `url` (`autotune list --storage`).

    Raises:
        UsageError: the storage cannot be opened (one line, password hidden).
    """

    quiet_optuna()
    try:
        return sorted(optuna.get_all_study_names(storage=url))
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy's many errors: one line naming the URL
        raise UsageError(_unreadable(Path("."), url, exc)) from None


_DRIVER_PACKAGES = {
    "psycopg": "'psycopg[binary]'",
    "psycopg2": "psycopg2-binary",
    "pymysql": "PyMySQL",
    "MySQLdb": "mysqlclient",
}


def _unreadable(study_dir: Path, storage: str | None, exc: BaseException) -> str:

    cause = root_cause(exc)
    detail = " ".join(str(cause).split())[:200]
    if storage is not None:
        if isinstance(cause, ImportError):
            module = getattr(cause, "name", None) or detail
            instead = ""
            if module == "psycopg" and importlib.util.find_spec("psycopg2") is not None:
                instead = ", or name the installed one: postgresql+psycopg2://..."
            return (
                f"--storage {redact_url(storage)}: the database driver {module!r} is not installed "
                f"(pip install {_DRIVER_PACKAGES.get(module, module)}{instead})"
            )
        return f"--storage {redact_url(storage)}: cannot open this storage ({type(cause).__name__}: {detail})"
    return f"{study_dir / STUDY_DB}: unreadable study database ({detail}); restore it, or move it aside"


def load_study_dir(results_dir: Path, name: str, storage: str | None = None) -> Any:
    """Loads study `name` of `results_dir` for a command (status, report, export, ...).

    One directory is one study: the returned study reads its `study_dir` as the directory it
    was loaded from, never the path stored in the database (a copied results directory must
    not write into the original), and a plugin target named in the database ("module:Class")
    is never imported from there.

    Raises:
        UsageError: a bad name, no such study, or an unreadable database (one line naming it).
    """

    quiet_optuna()
    check_study_name(name)
    study_dir = results_dir / name
    if storage is None and not (study_dir / STUDY_DB).exists():
        state = daemon_state(study_dir) if study_dir.is_dir() else "not started"
        if state != "not started":  # a daemon that failed (or runs) before the study existed
            raise UsageError(f"study {name!r}: no trials yet; its daemon: {state}")
        raise UsageError(f"study {name!r}: not found under {results_dir} (see `autotune list`)")
    if storage is None:
        check_database(study_dir)
    url = storage_url(study_dir, storage)
    try:
        study = optuna.load_study(study_name=name, storage=url)
    except KeyError:
        raise UsageError(f"study {name!r}: not in storage {redact_url(url)}") from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy's many errors: one line naming the file/URL
        raise UsageError(_unreadable(study_dir, storage, exc)) from None
    study.__class__ = _located_study_class()
    setattr(study, "_located_dir", str(study_dir.resolve()))  # noqa: B010 - a class attribute of _LocatedStudy
    return study


@functools.cache
def _located_study_class() -> type:

    class _LocatedStudy(optuna.Study):
        """An Optuna study whose `study_dir` is where it was loaded from (see `load_study_dir`)."""

        _located_dir = ""

        @property
        def user_attrs(self) -> dict[str, Any]:

            attrs = super().user_attrs
            attrs["study_dir"] = self._located_dir
            target = attrs.get("target")
            if isinstance(target, str) and target not in target_names():
                # Named by "module:Class" at start; importing a name read from a file would run
                # whatever code it names. Commands that need the target refuse it by this name.
                attrs["target"] = f"plugin {target.replace(':', '.')} (not imported from the database)"
            return attrs

    return _LocatedStudy
