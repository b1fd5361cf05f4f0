#!/usr/bin/env bash
# The device side of bench/gpu_grid.py on the lent GPU machine (see bench/RESULTS-GPU.md).
#   bash bench/gpu_device.sh chunk            keep this call's wheel chunk (.device/part-K) in /root/stash
#   bash bench/gpu_device.sh setup            unpack the chunks, install the wheels (and .device/extra), print versions
#   bash bench/gpu_device.sh extra            (here, not there) copy optuna_dashboard + bottle from .venv into
#                                             .device/extra: the device's wheel set lacks them (carry it to setup)
#   bash bench/gpu_device.sh minilm           export the MiniLM-sized encoder (PyTorch + transformers there)
#   bash bench/gpu_device.sh grid NAME MODEL [SHAPE...]
#                                             grid + autotune + paired for one model (bench/gpu_grid.py all);
#                                             GRID_ARGS adds options, e.g. "--trials 6 --rounds 5";
#                                             GRID_PHASES="study paired" with GRID_SEED=FILE (an earlier
#                                             NAME-grid.json) reuses that grid and re-runs the rest
# autotune is imported from .device/tree when it exists (a `git archive` of one commit: the
# working tree may be mid-edit), else from the working tree.
set -uo pipefail
REPO=$PWD
TREE=$REPO; [ -d .device/tree/autotune ] && TREE=$REPO/.device/tree
export PYTHONPATH=/root/site:$TREE PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0 AUTOTUNE_TREE=$TREE
export GRID_RESULTS=/root/gpu_results  # outside the working tree, which each call lays anew
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
case $1 in
chunk)
  mkdir -p /root/stash && cp .device/part-*/* /root/stash/ && ls /root/stash ;;
setup)
  mkdir -p /root/stash && cp .device/part-*/* /root/stash/ 2>/dev/null
  if [ ! -d /root/site/onnxruntime ]; then
    cat /root/stash/chunk-* | xz -d | tar xf - -C /root/stash || exit 1
    python3 -m pip install -q --no-index --no-deps --target /root/site /root/stash/*.whl || exit 1
  fi
  if [ -d .device/extra ]; then cp -r .device/extra/* /root/site/; fi
  python3 -c "import onnxruntime as o, ray, optuna; print(o.__version__, o.get_available_providers(), ray.__version__, optuna.__version__)"
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" 2>&1 | tail -1
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  echo "autotune from $TREE: $(cat "$TREE/.commit" 2>/dev/null || echo working tree)" ;;
extra)
  site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  rm -rf .device/extra && mkdir -p .device/extra && cp -r "$site/optuna_dashboard" "$site/bottle.py" .device/extra/ &&
    find .device/extra -name __pycache__ -prune -exec rm -rf {} + && du -sh .device/extra ;;
minilm)
  [ -f bench/models/minilm_l6_h384.onnx ] || timeout 200 python3 bench/gpu_study.py export 2>&1 | tail -2 ;;
grid)
  name=$2 model=$3; shift 3
  shapes=(); for s in "$@"; do shapes+=(--shape "$s"); done
  if [ -n "${GRID_SEED:-}" ]; then mkdir -p "$GRID_RESULTS" && cp "$GRID_SEED" "$GRID_RESULTS/$name-grid.json"; fi
  end=$(( $(date +%s) + ${GRID_TIMEOUT:-560} ))
  for phase in ${GRID_PHASES:-all}; do
    left=$(( end - $(date +%s) )); [ "$left" -gt 5 ] || break
    # shellcheck disable=SC2086
    (cd "$TREE" && timeout "$left" python3 "$REPO/bench/gpu_grid.py" "$phase" "$name" \
      "$REPO/$model" "${shapes[@]}" --results-dir /root/results ${GRID_ARGS:-}) 2>&1 \
      | grep --line-buffered -v ":onnxruntime:" | tee -a "$OUT/$name.log"  # ORT's per-session warnings
  done
  cp "$GRID_RESULTS/$name-grid.json" "$OUT/" 2>/dev/null
  cp "/root/results/$name/study.db" "$OUT/$name.db" 2>/dev/null
  cp "/root/results/$name/report.md" "$OUT/$name-report.md" 2>/dev/null
  cp "/root/results/$name/profile.json" "$OUT/$name-profile.json" 2>/dev/null  # issue 16's GPU row
  true ;;
esac
