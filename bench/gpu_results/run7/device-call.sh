#!/usr/bin/env bash
# Run 7 (issue 26's finalize after the changes of 2026-12-07; issue 27 item 4 on YOLOv8n). After the six
# `bash bench/gpu_device.sh chunk` calls (carrying .device/part-1 .. part-6), two calls on the warm machine,
# run from the working tree (a committed checkout; no .device/tree is carried, to stay under 64 MiB):
#   bash bench/gpu_results/run7/device-call.sh ppocr     carrying .device/part-7, .device/extra,
#        bench/models/ppocr_v4_rec.onnx, bench/models/ppocr_v4_rec_lines.npz: set-up, then the same 30-trial
#        study as run 6 (its finalize's cost and verdicts against run 6's)
#   bash bench/gpu_results/run7/device-call.sh yolov8n   carrying bench/models/yolov8n.onnx and
#        bench/models/yolov8n_inputs.npz: a 30-trial study, then autotune's answer at every batch against the
#        hand experts (without a CUDA graph where the model cannot have one), 11 rounds each
# .device/extra holds optuna_dashboard and bottle (`bash bench/gpu_device.sh extra` fills it from the venv):
# the device's wheel set lacks them, and finalize imports optuna_dashboard.
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
dump_attrs() {  # the study's attributes and per-trial timings, as run 6's attrs.json
  PYTHONPATH=/root/site python3 - "$1" "$2" <<'EOF'
import json, sys, optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
s = optuna.load_study(study_name=None, storage="sqlite:///" + sys.argv[2])
a = s.user_attrs
keys = ["elapsed_s", "finalize_s", "finalize_reserve_s", "budget_s", "aa_control", "answers", "profile_skipped",
        "finalize_progress", "best_trial", "best_batch", "speedup", "paired_min_rounds", "drift"]
trials = sorted(s.get_trials(deepcopy=False), key=lambda t: t.number)
rows = [{"n": t.number, "state": t.state.name, "batch": t.user_attrs.get("batch_size"),
         "p50_ms": t.user_attrs.get("latency_ms_p50"), "timings_s": t.user_attrs.get("details", {}).get("timings_s"),
         "duplicate_of": t.user_attrs.get("duplicate_of"), "ruled_out": t.user_attrs.get("ruled_out"),
         "start": str(t.datetime_start), "end": str(t.datetime_complete)} for t in trials]
out = {k: a.get(k) for k in keys} | {"n_trials": len(rows), "trials": rows}
json.dump(out, open(sys.argv[1], "w"), indent=1, default=str)
print(json.dumps({k: v for k, v in out.items() if k not in ("trials", "answers", "drift")}, default=str)[:2000])
EOF
}
case ${1:-} in
ppocr)
  bash bench/gpu_device.sh setup 2>&1 | tee "$OUT/setup.txt" || exit 1
  cp bench/gpu_results/log_sitecustomize.py /root/site/sitecustomize.py  # the autotune logger's INFO lines to $AUTOTUNE_LOG_TO
  AUTOTUNE_LOG_TO=$OUT/ppocr-autotune.log GRID_TIMEOUT=$((580 - SECONDS)) GRID_PHASES="study" \
    GRID_SEED=bench/gpu_results/run6/ppocr_v4_rec-grid.json \
    GRID_ARGS="--inputs $PWD/bench/models/ppocr_v4_rec_lines.npz --budget 4m --trials 30" \
    bash bench/gpu_device.sh grid ppocr_v4_rec bench/models/ppocr_v4_rec.onnx x:1,3,48,320 > /dev/null
  dump_attrs "$OUT/ppocr-attrs.json" /root/results/ppocr_v4_rec/study.db
  grep -h "wall time" /root/results/ppocr_v4_rec/report.md
  rm -f "$OUT/ppocr_v4_rec.db" "$OUT/ppocr_v4_rec-profile.json" ;;
yolov8n)
  AUTOTUNE_LOG_TO=$OUT/yolov8n-autotune.log GRID_TIMEOUT=$((585 - SECONDS)) GRID_PHASES="study perbatch" \
    GRID_SEED=bench/gpu_results/run5/yolov8n-grid.json \
    GRID_ARGS="--inputs $PWD/bench/models/yolov8n_inputs.npz --budget 3m --trials 30 --rounds 11" \
    bash bench/gpu_device.sh grid yolov8n bench/models/yolov8n.onnx images:1,3,640,640 | grep -v "^per-batch" | tail -3
  grep -h "^per-batch" "$OUT/yolov8n.log" | cut -c1-200
  dump_attrs "$OUT/yolov8n-attrs.json" /root/results/yolov8n/study.db
  grep -h "wall time" /root/results/yolov8n/report.md
  rm -f "$OUT/yolov8n.db" "$OUT/yolov8n-profile.json" ;;
*) echo "usage: $0 ppocr|yolov8n" >&2; exit 2 ;;
esac
true
