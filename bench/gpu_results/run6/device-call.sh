#!/usr/bin/env bash
# Run 6 (issues 26 and 27 item 4): the one device call after the six `bash bench/gpu_device.sh chunk` calls,
# carrying .device/part-7, .device/tree, bench/models/ppocr_v4_rec.onnx and bench/models/ppocr_v4_rec_lines.npz
# (run 5's grid JSON is tracked: it travels with the tree). Reuses run 5's grid; runs, in order:
#   study     the 30-trial study under --budget 4m (issue 26 a, b, d)
#   paired    the grid's optima against autotune's answers (b1, throughput), as in runs 1-5
#   clean     the defaults at b1 alone in one session, paired against themselves, alone again (issue 26 c)
#   perbatch  autotune's answer at each batch 1-32 against the FP16 and FP32 hand experts, A/A beside (issue 27.4)
# `perbatch` saves after every pair and skips pairs already recorded: `bash device-call.sh perbatch` in a next
# call on the same warm machine finishes it.
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
ARGS="--inputs $PWD/bench/models/ppocr_v4_rec_lines.npz --budget 4m --trials 30"
MODEL=(ppocr_v4_rec bench/models/ppocr_v4_rec.onnx x:1,3,48,320)
if [ "${1:-}" = perbatch ]; then
  GRID_TIMEOUT=$((${LIMIT:-580} - SECONDS)) GRID_PHASES="perbatch" GRID_ARGS="$ARGS" bash bench/gpu_device.sh grid "${MODEL[@]}"
  mv "$OUT/ppocr_v4_rec.log" "$OUT/perbatch2.log" 2>/dev/null
  exit 0
fi
bash bench/gpu_device.sh setup 2>&1 | tee "$OUT/setup.txt" || exit 1
# A foreground study writes no autotune.log (only the daemon's stdout is one): this sitecustomize, on the
# device's PYTHONPATH only, sends the `autotune` logger's INFO records (the per-pairing lines) to a file,
# and keeps its warnings on stderr as before.
cp bench/gpu_results/log_sitecustomize.py /root/site/sitecustomize.py  # the autotune logger's INFO lines to $AUTOTUNE_LOG_TO
export AUTOTUNE_LOG_TO=$OUT/autotune.log
GRID_TIMEOUT=$((500 - SECONDS)) GRID_PHASES="study paired clean" GRID_SEED=bench/gpu_results/run5/ppocr_v4_rec-grid.json \
  GRID_ARGS="$ARGS" bash bench/gpu_device.sh grid "${MODEL[@]}"
unset AUTOTUNE_LOG_TO
cp /root/results/ppocr_v4_rec/autotune.log "$OUT/study-dir-autotune.log" 2>/dev/null
ls -la /root/results/ppocr_v4_rec/ > "$OUT/study-dir.txt" 2>&1
PYTHONPATH=/root/site python3 - "$OUT/attrs.json" /root/results/ppocr_v4_rec/study.db <<'EOF'
import json, sys, optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
s = optuna.load_study(study_name=None, storage="sqlite:///" + sys.argv[2])
a = s.user_attrs
keys = ["elapsed_s", "finalize_s", "finalize_reserve_s", "budget_s", "aa_control", "answers", "profile_skipped",
        "finalize_progress", "best_trial", "best_batch", "speedup", "carried"]
trials = sorted(s.get_trials(deepcopy=False), key=lambda t: t.number)
rows = [{"n": t.number, "state": t.state.name, "batch": t.user_attrs.get("batch_size"),
         "p50_ms": t.user_attrs.get("latency_ms_p50"), "timings_s": t.user_attrs.get("details", {}).get("timings_s"),
         "duplicate_of": t.user_attrs.get("duplicate_of"), "ruled_out": t.user_attrs.get("ruled_out"),
         "start": str(t.datetime_start), "end": str(t.datetime_complete)} for t in trials]
z = trials[0].user_attrs
out = {k: a.get(k) for k in keys} | {"attr_keys": sorted(a), "trial0_latency_ms_p50": z.get("latency_ms_p50"),
       "trial0_batch_size": z.get("batch_size"), "trial0_build_time_s": z.get("build_time_s"),
       "sum_total_s": sum((r["timings_s"] or {}).get("total_s", 0.0) for r in rows),
       "sum_worker_s": sum((r["timings_s"] or {}).get("worker_s", 0.0) for r in rows), "n_trials": len(rows), "trials": rows}
json.dump(out, open(sys.argv[1], "w"), indent=1, default=str)
print(json.dumps({k: v for k, v in out.items() if k != "trials"}, default=str)[:3000])
EOF
grep -h "wall time" /root/results/ppocr_v4_rec/report.md
mv "$OUT/ppocr_v4_rec.log" "$OUT/study-paired-clean.log"
echo "perbatch starts at ${SECONDS}s of the call"
GRID_TIMEOUT=$((580 - SECONDS)) GRID_PHASES="perbatch" GRID_ARGS="$ARGS" bash bench/gpu_device.sh grid "${MODEL[@]}"
mv "$OUT/ppocr_v4_rec.log" "$OUT/perbatch.log" 2>/dev/null
true
