"""bench/FUTILITY.md: when is a finalize pairing's verdict settled, and does stopping there change it?
(issue 26: "paired rounds stop as soon as the verdict is settled: the interval clears the A/A
interval or cannot any more")

For each kept study (default: bench/waste_cpu.py's five trained models in results/waste_cpu/), the
A/A control is measured as finalize measures it (the defaults against themselves at batch 1, settled
once its interval is `QUIET_AA_WIDTH` wide, after `MIN_ROUNDS`), and finalize's minimum rounds follow
from it (`QUIET_MIN_ROUNDS` when it is quiet). Then each stored answer's paired finalist is paired
against the defaults at its batch for all `PAIRED_ROUNDS` rounds (`autotune.finalize.measure_speedup`
in a forked child, `autotune.workers.run_paired_isolated`), and so are the defaults against
themselves at batches 1 and 2: the known-bad case, which a verdict must never call faster or slower.
Every round's ratio and per-side milliseconds are kept (`--json`), and the rounds are replayed, in
the order they ran, through the sequential rule (`autotune.measure.clear_of`): "clears" stops once
the interval clears the A/A control (finalize's rule before), "clears or cannot" also once no further
round up to the cap could, and "now" (finalize's rule now) stops on a clearance only by half the
control's width or more; each from several minimum rounds. For each: the round it stops at and its verdict there
(`autotune.answer.verdict`), against the verdict of all the rounds.

    .venv/bin/python bench/futility.py [--studies results/waste_cpu/waste0 ...] [--min-rounds 5 7 9]
        [--out bench/FUTILITY.md] [--json bench/FUTILITY.json] [--replay bench/FUTILITY.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import optuna

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from autotune.answer import (  # noqa: E402
    NO_DIFFERENCE,
    Speedup,
    default_trial,
    defaults_at_batch,
    stored_answers,
    verdict,
)
from autotune.finalize import MIN_ROUNDS, PAIRED_ROUNDS, QUIET_AA_WIDTH, QUIET_MIN_ROUNDS, measure_speedup, quiet  # noqa: E402
from autotune.measure import SETTLE_MARGIN, clear_of  # noqa: E402
from autotune.study import storage_url  # noqa: E402
from autotune.workers import run_paired_isolated  # noqa: E402

DEFAULT_STUDIES = sorted((ROOT / "results" / "waste_cpu").glob("waste[0-9]"))
# name -> (margin, whether it stops once it cannot clear): finalize's rule before issue 26's change,
# the "cannot any more" stop alone, and the rule as finalize runs it now (SETTLE_MARGIN)
RULES = {
    "clears": (0.0, False),
    "clears or cannot": (0.0, True),
    "clears by half the control's width, or cannot (now)": (SETTLE_MARGIN, True),
}


def speedup_of(record: dict[str, Any], n: int) -> Speedup:
    r = np.asarray(record["ratios"][:n])
    return Speedup(
        float(np.median(r)), float(np.percentile(r, 25)), float(np.percentile(r, 75)), n,
        float(np.median(record["a_ms"][:n])), float(np.median(record["b_ms"][:n])),
    )  # fmt: skip


def replay(record: dict[str, Any], aa: Speedup, rule: str, min_rounds: int) -> tuple[int, str]:
    """Where `rule` stops on `record`'s rounds (in the order they ran) from `min_rounds`, and its
    verdict there."""
    ratios = list(record["ratios"])
    margin, cannot = RULES[rule]
    settled = clear_of((aa.p25, aa.p75), rounds=len(ratios) if cannot else None, margin=margin)
    n = next((k for k in range(min_rounds, len(ratios) + 1) if settled(ratios[:k])), len(ratios))
    return n, verdict(speedup_of(record, n), aa)


def study_records(study_dir: Path) -> dict[str, Any]:
    """The fresh A/A control and every pairing of one study, each with all its rounds."""
    storage = storage_url(study_dir)
    name = optuna.get_all_study_summaries(storage)[0].study_name
    study = optuna.load_study(study_name=name, storage=storage)
    zero = default_trial(study)
    assert zero is not None, f"{study_dir}: no defaults trial"

    def pair(candidate: Any, batch: int, **options: Any) -> dict[str, Any]:
        raw: dict[str, Any] = {}  # the paired run's own result, with every round
        measure_speedup(
            study, zero, candidate, batch, PAIRED_ROUNDS,
            lambda request: raw.update(run_paired_isolated(request)) or raw, **options,
        )  # fmt: skip
        return {"ratios": list(raw["ratios"]), "a_ms": list(raw["a_ms"]), "b_ms": list(raw["b_ms"])}

    control = pair(zero, 1, settle_width=QUIET_AA_WIDTH, min_rounds=MIN_ROUNDS)
    plan = [(batch, answer.paired_winner) for batch, answer in sorted(stored_answers(study).items())]
    same = {b: defaults_at_batch(study, zero, b) for b in (1, 2)}  # the defaults' own trial at that batch
    plan += [(b, t.number) for b, t in same.items() if t is not None]  # the known-bad case: an A/A pairing
    pairings = []
    for batch, winner in plan:
        if winner is None:
            continue
        record = pair(study.trials[winner], batch, min_rounds=PAIRED_ROUNDS)
        aa_pair = same.get(batch) is not None and winner == same[batch].number
        pairings.append({"batch": batch, "trial": winner, "aa_pair": aa_pair, **record})
        print(name, batch, winner, f"{np.median(record['ratios']):.3f}", flush=True)
    return {"study": name, "model": Path(study.user_attrs["model_path"]).name, "control": control, "pairings": pairings}


def interval(s: Speedup) -> str:
    return f"{s.median:.3f} [{s.p25:.3f}, {s.p75:.3f}]"


def write(records: list[dict[str, Any]], minimums: list[int], out: Path, when: str) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    lines = [
        "# When a pairing's verdict is settled (issue 26)",
        "",
        f"`.venv/bin/python bench/futility.py`: rounds measured {when}, replayed by autotune {commit.stdout.strip()}; "
        f"{platform.machine()} "
        f"with {len(os.sched_getaffinity(0))} cores (ONNX Runtime CPU). " + " ".join(__doc__.split("\n\n")[1].split()),
        "",
        "Each cell: the round the rule stopped at, and its verdict there (F faster, S slower, = no measurable "
        f"difference); **bold** where it differs from all {PAIRED_ROUNDS} rounds'. A/A rows pair the defaults "
        "against themselves: any F or S there is a false verdict.",
        "",
        "| study (model) | A/A control (finalize's minimum) | batch | finalist | all rounds | "
        + " | ".join(f"{rule}, from {m}" for m in minimums for rule in RULES)
        + " |",
        "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in minimums for _ in RULES) + " |",
    ]
    short = {"faster": "F", "slower": "S", NO_DIFFERENCE: "="}
    totals = {(m, rule): [0, 0, 0] for m in minimums for rule in RULES}  # rounds, changed, false A/A
    aa_rows = 0
    for rec in records:
        ratios = rec["control"]["ratios"]
        aa = speedup_of(rec["control"], len(ratios))
        finalize_min = QUIET_MIN_ROUNDS if quiet(aa) else MIN_ROUNDS
        for p in rec["pairings"]:
            full = verdict(speedup_of(p, len(p["ratios"])), aa)
            aa_rows += p["aa_pair"]
            cells = []
            for m in minimums:
                for rule in RULES:
                    n, v = replay(p, aa, rule, m)
                    t = totals[(m, rule)]
                    t[0] += n
                    t[1] += v != full
                    t[2] += p["aa_pair"] and v != NO_DIFFERENCE
                    cell = f"{n} {short[v]}"
                    cells.append(f"**{cell}**" if v != full else cell)
            finalist = f"{p['trial']} (A/A)" if p["aa_pair"] else str(p["trial"])
            lines.append(
                f"| {rec['study']} ({rec['model']}) | {interval(aa)}, {len(ratios)} rounds ({finalize_min}) | "
                f"{p['batch']} | {finalist} | {interval(speedup_of(p, len(p['ratios'])))} {short[full]} | "
                + " | ".join(cells)
                + " |"
            )
    pairs = sum(len(rec["pairings"]) for rec in records)
    lines += ["", f"Over {pairs} pairings ({aa_rows} of them A/A):", ""]
    lines += ["| minimum rounds | rule | rounds run | verdicts unlike all rounds' | false verdicts on A/A |"]
    lines += ["| --- | --- | --- | --- | --- |"]
    for (m, rule), (rounds, changed, false) in totals.items():
        lines.append(f"| {m} | {rule} | {rounds} of {pairs * PAIRED_ROUNDS} | {changed} | {false} of {aa_rows} |")
    out.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", nargs="*", type=Path, default=DEFAULT_STUDIES)
    parser.add_argument("--min-rounds", nargs="*", type=int, default=[5, 9])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "FUTILITY.md")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "FUTILITY.json")
    parser.add_argument("--replay", type=Path, help="replay the rounds of this --json file instead of measuring")
    args = parser.parse_args()
    if args.replay:
        saved = json.loads(args.replay.read_text())
        records, when = saved["records"], saved["when"]
    else:
        when = f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
        records = [study_records(study_dir) for study_dir in args.studies]
        args.json.write_text(json.dumps({"when": when, "records": records}))
    write(records, args.min_rounds, args.out, when)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
