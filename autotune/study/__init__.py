"""The study: what to try (Optuna), handed to an executor (where it runs), told back.

Cut by concern, as `optuna/study/` is: `_storage` (where a study lives, opening and loading it),
`_records` (what a told trial records, and the queries over it), `_references` (the FP32 outputs
candidates are verified against), `_loop` (the ask/submit/tell loop), `_spec` (the validated request the loop takes;
`autotune.spec` builds it from `start`'s options). The executors live with the Ray executor in
`autotune.workers`, the on-disk layout in `autotune.layout`. This module is the public surface.
"""

from autotune.study._loop import run_study
from autotune.study._records import (
    chosen_trial,
    count_trials,
    counts_toward_goal,
    finished_count,
    regenerate_model,
    study_tolerance,
    trial_by_number,
    trial_layers,
)
from autotune.study._references import compute_references, judged_tolerance, weak_reference_warnings
from autotune.study._spec import StudySpec
from autotune.study._storage import (
    check_study_name,
    existing_study_model,
    load_study_dir,
    make_storage,
    open_study,
    quiet_optuna,
    storage_url,
)

__all__ = [
    "StudySpec",
    "chosen_trial",
    "check_study_name",
    "compute_references",
    "judged_tolerance",
    "count_trials",
    "counts_toward_goal",
    "existing_study_model",
    "finished_count",
    "load_study_dir",
    "make_storage",
    "open_study",
    "quiet_optuna",
    "regenerate_model",
    "run_study",
    "storage_url",
    "study_tolerance",
    "trial_by_number",
    "trial_layers",
    "weak_reference_warnings",
]
