#!/usr/bin/env bash
# Repeats of the sampler (issue 27): 14-trial studies of the bundled example model over a 16-configuration
# space, four seeds, counting the asks that repeated a configuration the study held (told from it, not run).
#   bash bench/repeats.sh [TREE]      TREE: an autotune checkout to measure (default: this one), e.g. a
#                                     `git worktree add /tmp/before 042158e` for the sampler before NoRepeatSampler
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd); tree=${1:-$here}; out=$(mktemp -d)
cat > "$out/space.yaml" <<'YAML'
knobs:
  graph_optimization_level: {type: categorical, choices: [disable, basic, extended, all], default: all}
  execution_mode: {type: categorical, choices: [sequential, parallel], default: sequential}
  intra_op_spinning: {type: bool, default: true}
YAML
for seed in 0 1 2 3; do
  (cd "$tree" && PYTHONPATH=$tree "$here/.venv/bin/python" -m autotune.cli start "$here/examples/example.onnx" \
    --study "s$seed" --results-dir "$out" --foreground --trials 14 --seed "$seed" --max-measure-s 0.1 \
    --space "$out/space.yaml" > "$out/s$seed.log" 2>&1)
done
"$here/.venv/bin/python" - "$out" <<'PY'
import sys, optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
total = numbers = 0
for seed in range(4):
    study = optuna.load_study(study_name=f"s{seed}", storage=f"sqlite:///{sys.argv[1]}/s{seed}/study.db")
    trials = study.get_trials(deepcopy=False)
    repeats = [t.number for t in trials if "duplicate_of" in t.user_attrs]
    total, numbers = total + len(repeats), numbers + len(trials)
    print(f"seed {seed}: {len(trials)} trial numbers, repeats {repeats}")
print(f"repeats: {total} of {numbers} trial numbers")
PY
