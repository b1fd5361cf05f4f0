"""A study's records as text: `dump` writes an Optuna study (its attributes, every trial's state,
parameters with their distributions, values and attributes) to JSON, `load` reads one back into
an in-memory Optuna study that the report and profile code read like the original. Bench results
keep the JSON in git, never the binary SQLite database (issue 28).

    python bench/study_records.py dump STUDY.db NAME OUT.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def dump(db: Path, name: str, out: Path) -> Path:
    import optuna
    from optuna.distributions import distribution_to_json

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    record = {
        "study_name": study.study_name,
        "directions": [d.name.lower() for d in study.directions],
        "user_attrs": study.user_attrs,
        "trials": [
            {
                "number": t.number,
                "state": t.state.name,
                "params": t.params,
                "distributions": {k: distribution_to_json(d) for k, d in t.distributions.items()},
                "values": t.values,
                "user_attrs": t.user_attrs,
                "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
                "datetime_complete": t.datetime_complete.isoformat() if t.datetime_complete else None,
            }
            for t in study.get_trials(deepcopy=False)
        ],
    }
    out.write_text(json.dumps(record, indent=1, default=str) + "\n")
    return out


def load(path: Path) -> Any:
    """An in-memory Optuna study holding the records of `path` (a `dump`)."""
    from datetime import datetime

    import optuna
    from optuna.distributions import json_to_distribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    record = json.loads(path.read_text())
    study = optuna.create_study(study_name=record["study_name"], directions=record["directions"])
    for key, value in record["user_attrs"].items():
        study.set_user_attr(key, value)
    for t in record["trials"]:
        state = optuna.trial.TrialState[t["state"]]
        study.add_trial(
            optuna.trial.create_trial(
                state=state,
                params=t["params"],
                distributions={k: json_to_distribution(d) for k, d in t["distributions"].items()},
                values=t["values"] if state == optuna.trial.TrialState.COMPLETE else None,
                user_attrs=t["user_attrs"],
            )
        )
        frozen = study.get_trials(deepcopy=False)[-1]
        for attr, text in (("datetime_start", t["datetime_start"]), ("datetime_complete", t["datetime_complete"])):
            if text:
                setattr(frozen, attr, datetime.fromisoformat(text))
    return study


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "dump":
        sys.exit(__doc__)
    print(dump(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])))
