#!/usr/bin/env bash
# Run 10 (issue 26: finalize after ecabe67, which leaves unpaired a finalist further behind the accurate
# defaults than the study's noise; and why run 9's A/A control measured the defaults at 1.72x their own
# time). After the seven `bash bench/gpu_device.sh chunk` calls, one call carrying .device/extra,
# bench/models/yolov8n.onnx, bench/models/yolov8n_inputs.npz, bench/models/ppocr_v4_rec.onnx and
# bench/models/ppocr_v4_rec_lines.npz:
#   bash bench/gpu_results/run10/device-call.sh
# set-up; the GPU's clocks, utilization and compute processes sampled every 250 ms (gpu.csv, apps.csv) and
# the host's load every 0.5 s (load.txt) throughout; run 8's YOLOv8n study, then the clean single-session
# defaults (gpu_grid `clean`), then run 7's PP-OCRv4 recognizer study at --budget 3m if time is left.
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
bash bench/gpu_device.sh setup 2>&1 | tee "$OUT/setup.txt" || exit 1
cp bench/gpu_results/log_sitecustomize.py /root/site/sitecustomize.py
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,utilization.gpu,power.draw,temperature.gpu,clocks_throttle_reasons.active \
  --format=csv,noheader -lms 250 > "$OUT/gpu.csv" 2>&1 & p1=$!
nvidia-smi --query-compute-apps=timestamp,pid,process_name,used_memory --format=csv,noheader -lms 250 > "$OUT/apps.csv" 2>&1 & p2=$!
(while sleep 0.5; do echo "$(date +%T.%N | cut -c1-12) $(cut -d' ' -f1-4 /proc/loadavg)"; done) > "$OUT/load.txt" & p3=$!
sed -e 's/GRID_PHASES="study perbatch"/GRID_PHASES="study clean"/' \
    -e 's/GRID_TIMEOUT=$((585 - SECONDS))/GRID_TIMEOUT=$((330 - SECONDS))/' \
    -e 's/GRID_TIMEOUT=$((580 - SECONDS))/GRID_TIMEOUT=$((${LEFT:-0} - SECONDS))/' \
    -e 's/--budget 4m --trials 30/--budget 3m --trials 30/' \
    bench/gpu_results/run7/device-call.sh > /tmp/run10.sh
bash /tmp/run10.sh yolov8n
python3 -c "import json; r=json.load(open('/root/gpu_results/yolov8n-grid.json')); print(json.dumps(r.get('clean'), default=str)[:1500])"
if [ "$SECONDS" -lt "${PPOCR_BEFORE:-0}" ]; then  # PPOCR_BEFORE=330: the recognizer's study too
  sed -i 's/^  bash bench\/gpu_device.sh setup.*$/  true/' /tmp/run10.sh
  LEFT=$((585 - SECONDS)) bash /tmp/run10.sh ppocr
fi
kill $p1 $p2 $p3 2>/dev/null
true
