"""bench/FUTILITY.md: when is a finalize pairing's verdict settled, and does stopping there change it?
(issue 26: "paired rounds stop as soon as the verdict is settled: the interval clears the A/A
interval or cannot any more")

For each kept study (default: bench/waste_cpu.py's five trained models in results/waste_cpu/), each
stored answer's paired finalist is paired again against the defaults at its batch for all
`autotune.finalize.PAIRED_ROUNDS` rounds, as finalize pairs it (`autotune.finalize.measure_speedup`
in a forked child, `autotune.workers.run_paired_isolated`), keeping every round's ratio and per-side
milliseconds. The rounds are then replayed, in the order they ran, through finalize's sequential
rule (`autotune.measure.clear_of`) as it was (stop once the interval clears the study's A/A control)
and as it is (also stop once no further rounds up to the cap could clear it), each from the study's
own minimum rounds: the round each stops at and the verdict there (`autotune.answer.verdict`),
against the verdict of all the rounds.

    .venv/bin/python bench/futility.py [--studies results/waste_cpu/waste0 ...] [--out bench/FUTILITY.md]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import optuna

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from autotune.answer import Speedup, default_trial, stored_aa, stored_answers, verdict  # noqa: E402
from autotune.finalize import PAIRED_ROUNDS, measure_speedup  # noqa: E402
from autotune.measure import clear_of  # noqa: E402
from autotune.workers import run_paired_isolated  # noqa: E402

DEFAULT_STUDIES = sorted((ROOT / "results" / "waste_cpu").glob("waste[0-9]"))


def replay(record: dict[str, Any], aa: Speedup | None, min_rounds: int, cap: int) -> dict[str, dict[str, Any]]:
    """Where each rule stops on `record`'s rounds (in the order they ran) and its verdict there;
    "all" is every round."""
    ratios, a_ms, b_ms = record["ratios"], record["a_ms"], record["b_ms"]
    floor = (aa.p25, aa.p75) if aa is not None else None
    rules = {"clears": clear_of(floor), "clears or cannot": clear_of(floor, rounds=cap)}
    out = {}
    for name, settled in [*rules.items(), ("all", None)]:
        n = len(ratios)
        if settled is not None:
            n = next((k for k in range(min_rounds, len(ratios) + 1) if settled(list(ratios[:k]))), len(ratios))
        r = np.asarray(ratios[:n])
        s = Speedup(
            float(np.median(r)), float(np.percentile(r, 25)), float(np.percentile(r, 75)), n,
            float(np.median(a_ms[:n])), float(np.median(b_ms[:n])),
        )  # fmt: skip
        out[name] = {"rounds": n, "verdict": verdict(s, aa), "speedup": s}
    return out


def pairings(study_dir: Path) -> list[dict[str, Any]]:
    storage = f"sqlite:///{study_dir / 'study.db'}"
    name = optuna.get_all_study_summaries(storage)[0].study_name
    study = optuna.load_study(study_name=name, storage=storage)
    zero, aa = default_trial(study), stored_aa(study)
    min_rounds = int(study.user_attrs.get("paired_min_rounds", 9))
    rows, kept = [], []  # every paired run's raw result (its rounds)
    for batch, answer in sorted(stored_answers(study).items()):
        winner = getattr(answer, "paired_winner", None)
        if winner is None or zero is None:
            continue
        measure_speedup(
            study, zero, study.trials[winner], batch, PAIRED_ROUNDS,
            lambda request: kept.append(run_paired_isolated(request)) or kept[-1], min_rounds=PAIRED_ROUNDS,
        )  # fmt: skip
        raw = kept[-1]
        found = replay(raw, aa, min_rounds, PAIRED_ROUNDS)
        rows.append({"study": name, "model": Path(study.user_attrs["model_path"]).name, "batch": batch,
                     "trial": winner, "min_rounds": min_rounds, "aa": aa, **found})  # fmt: skip
        print(name, batch, {k: (v["rounds"], v["verdict"]) for k, v in found.items()}, flush=True)
    return rows


def interval(s: Speedup) -> str:
    return f"{s.median:.3f} [{s.p25:.3f}, {s.p75:.3f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", nargs="*", type=Path, default=DEFAULT_STUDIES)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "FUTILITY.md")
    args = parser.parse_args()
    rows = [row for study_dir in args.studies for row in pairings(study_dir)]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    lines = [
        "# When a pairing's verdict is settled (issue 26)",
        "",
        f"`.venv/bin/python bench/futility.py` on {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, autotune "
        f"{commit.stdout.strip()}, {platform.machine()} with {len(__import__('os').sched_getaffinity(0))} cores "
        "(ONNX Runtime CPU). " + " ".join(__doc__.split("\n\n")[1].split()),
        "",
        f"| study (model) | batch | finalist | A/A control | all {PAIRED_ROUNDS} rounds | clears: rounds, verdict "
        "| clears or cannot: rounds, verdict | same verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        aa = interval(r["aa"]) if r["aa"] is not None else "-"
        same = r["clears or cannot"]["verdict"] == r["all"]["verdict"]
        lines.append(
            f"| {r['study']} ({r['model']}) | {r['batch']} | {r['trial']} | {aa} | {interval(r['all']['speedup'])} "
            f"{r['all']['verdict']} | {r['clears']['rounds']}, {r['clears']['verdict']} | "
            f"{r['clears or cannot']['rounds']}, {r['clears or cannot']['verdict']} | {'yes' if same else '**no**'} |"
        )
    before = sum(r["clears"]["rounds"] for r in rows)
    after = sum(r["clears or cannot"]["rounds"] for r in rows)
    changed = sum(r["clears or cannot"]["verdict"] != r["all"]["verdict"] for r in rows)
    changed_before = sum(r["clears"]["verdict"] != r["all"]["verdict"] for r in rows)
    lines += [
        "",
        f'Rounds over {len(rows)} pairings: {before} with the rule as it was, {after} with "or cannot" '
        f"({after / before:.2f}x). Verdicts other than all {PAIRED_ROUNDS} rounds': {changed_before} as it was, "
        f'{changed} with "or cannot" (it stops only when no further round could change the interval\'s verdict).',
        "",
    ]
    args.out.write_text("\n".join(lines))
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
