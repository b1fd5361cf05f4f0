#!/usr/bin/env bash
# Run 9 (issue 27's wasted trials on YOLOv8n after the probe-first hold and the no-repeat sampler,
# the per-batch answers again). After the seven `bash bench/gpu_device.sh chunk` calls, one call,
# carrying .device/extra, bench/models/yolov8n.onnx and bench/models/yolov8n_inputs.npz:
#   bash bench/gpu_results/run9/device-call.sh [study]
# set-up, then run 8's YOLOv8n study (30 trials, --budget 3m) and, unless `study` is given, autotune's
# answer at every batch against the hand experts (11 rounds each). Compare with bench/gpu_results/run8/.
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
bash bench/gpu_device.sh setup 2>&1 | tee "$OUT/setup.txt" || exit 1
cp bench/gpu_results/log_sitecustomize.py /root/site/sitecustomize.py  # INFO lines to $AUTOTUNE_LOG_TO
if [ "${1:-}" = study ]; then
  sed 's/GRID_PHASES="study perbatch"/GRID_PHASES="study"/' bench/gpu_results/run7/device-call.sh > /tmp/run7-study.sh
  bash /tmp/run7-study.sh yolov8n
else
  bash bench/gpu_results/run7/device-call.sh yolov8n
fi
