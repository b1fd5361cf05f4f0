#!/usr/bin/env bash
# Run 8 (issue 27's done-when on YOLOv8n after the late carry (c4d8402) and the one-failure CUDA-graph
# rule (e7c9334); issue 26's finalize share again). After the six `bash bench/gpu_device.sh chunk` calls,
# one call, carrying .device/part-7, .device/extra (`bash bench/gpu_device.sh extra`),
# bench/models/yolov8n.onnx and bench/models/yolov8n_inputs.npz (about 46 MB with the tracked tree):
#   bash bench/gpu_results/run8/device-call.sh
# set-up, then run 7's YOLOv8n study (30 trials, --budget 3m) and autotune's answer at every batch against
# the hand experts (11 rounds each). Compare with bench/gpu_results/run7/yolov8n-*: the answers at batches
# 4 and 8 (0.884 and 0.833 of the FP16 expert there) and the wasted count (4 there).
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
bash bench/gpu_device.sh setup 2>&1 | tee "$OUT/setup.txt" || exit 1
cp bench/gpu_results/log_sitecustomize.py /root/site/sitecustomize.py  # INFO lines to $AUTOTUNE_LOG_TO
bash bench/gpu_results/run7/device-call.sh yolov8n
