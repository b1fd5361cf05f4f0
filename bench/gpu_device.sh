#!/usr/bin/env bash
# The device side of bench/gpu_study.py on the lent GPU machine (see bench/RESULTS-GPU.md).
#   bash bench/gpu_device.sh setup     unpack the carried wheels (.device parts), install them
#   bash bench/gpu_device.sh tests     the GPU tests (tests/test_onnxruntime_cuda.py)
#   bash bench/gpu_device.sh ppocr     tune the CNN detector (PP-OCRv4 det, 640x640)
#   bash bench/gpu_device.sh minilm    export and tune the transformer encoder (seq 128)
set -uo pipefail
export PYTHONPATH=/root/site:$PWD PYTHONUNBUFFERED=1 PATH=/root/bin:$PATH RAY_USAGE_STATS_ENABLED=0
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
case $1 in
setup)
  mkdir -p /root/stash /root/bin && cp .device/part-*/* /root/stash/ 2>/dev/null
  cat /root/stash/chunk-* | xz -d | tar xf - -C /root/stash || exit 1
  python3 -m pip install -q --no-index --no-deps --target /root/site /root/stash/*.whl || exit 1
  printf '#!/bin/sh\nexec python3 -c "import sys; from autotune.cli import main; sys.argv[0] = \\"autotune\\"; raise SystemExit(main())" "$@"\n' > /root/bin/autotune
  chmod +x /root/bin/autotune
  python3 -c "import onnxruntime as o, ray, optuna; print(o.__version__, o.get_available_providers(), ray.__version__, optuna.__version__)"
  nvidia-smi --query-gpu=name,driver_version --format=csv ;;
tests)
  timeout 200 python3 -m pytest -q -rs -s tests/test_onnxruntime_cuda.py 2>&1 | tee "$OUT/pytest-gpu.txt" ;;
ppocr)
  timeout 500 python3 bench/gpu_study.py study ppocr_v4_det bench/models/ppocr_v4_det.onnx \
    --shape x:1,3,640,640 --trials 30 --budget 4m 2>&1 | tee "$OUT/study-ppocr.txt"
  cp bench/gpu_results/ppocr_v4_det.json "$OUT/" ;;
diag)
  timeout 150 python3 bench/gpu_probe.py "$OUT/kernels.json" 2>&1 | tail -4 ;;
bg-ppocr)  # the detector study in the background, from a copy of the tree (later calls may change it)
  rm -rf /root/w && mkdir -p /root/w/bench/models && cp -a autotune search_spaces pyproject.toml /root/w/ &&
  cp -a bench/gpu_study.py bench/models.py bench/gpu_results /root/w/bench/ &&
  cp bench/models/ppocr_v4_det.onnx /root/w/bench/models/ || exit 1
  cd /root/w && PYTHONPATH=/root/site:/root/w setsid nohup timeout 1200 python3 bench/gpu_study.py study \
    ppocr_v4_det bench/models/ppocr_v4_det.onnx --shape x:1,3,640,640 --trials 30 --budget 12m \
    > /root/w/study.log 2>&1 < /dev/null &
  sleep 2; echo started ;;
watch)  # keep the machine warm while the background study runs: bash bench/gpu_device.sh watch SECONDS
  for _ in $(seq "${2:-20}"); do pgrep -f "gpu_study.py study" >/dev/null || break; sleep 1; done
  python3 -c "import sqlite3; c=sqlite3.connect('/root/w/results/ppocr_v4_det/study.db'); print(c.execute('select state, count(*) from trials group by state').fetchall())" 2>&1 | tail -1
  tail -c 300 /root/w/study.log
  pgrep -f "gpu_study.py study" >/dev/null && echo RUNNING || echo DONE ;;
fetch)
  cp /root/w/study.log "$OUT/study-ppocr.txt"; cp /root/w/bench/gpu_results/ppocr_v4_det.json "$OUT/"
  cp /root/w/results/ppocr_v4_det/study.db "$OUT/ppocr_v4_det.db" ;;
minilm)
  python3 bench/gpu_study.py export 2>&1 | tail -2
  timeout 560 python3 bench/gpu_study.py study minilm_l6_h384 bench/models/minilm_l6_h384.onnx \
    --trials 30 --budget 6m30s 2>&1 | tee "$OUT/study-minilm.txt"
  cp bench/gpu_results/minilm_l6_h384.json "$OUT/" ;;
esac
