#!/usr/bin/env bash
# Mutation testing of the core modules (a benchmark of the tests, not part of CI's run):
#   bash scripts/mutation.sh [module ...]      e.g. bash scripts/mutation.sh schedule metrics
# Each module is mutated by mutmut in a scratch copy of the repository, against the fast tests
# that cover it; the score (killed / all) goes to out/mutation/<module>.txt and a summary line
# to stdout. Survivors are listed with `mutmut results` there; the ones we judge equivalent
# are explained in scripts/mutation_survivors.md. Slow: minutes to an hour per module on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="$(cd "$(DEV=1 bash scripts/setup.sh | tail -n 1)" && pwd)"
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1 TRANSFORMERS_VERBOSITY=error
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

declare -A PATHS TESTS
PATHS[schedule]="inversion/schedule.py";            TESTS[schedule]="tests/test_schedule.py tests/test_ddim_reference.py tests/test_inversion_core.py tests/test_inverters.py"
PATHS[metrics]="inversion/metrics.py";              TESTS[metrics]="tests/test_metrics_images_tokens.py tests/test_inversion_core.py"
PATHS[images]="inversion/images.py";                TESTS[images]="tests/test_metrics_images_tokens.py tests/test_properties.py tests/test_images_messages.py"
PATHS[inverters]="inversion/inverters";             TESTS[inverters]="tests/test_inverter_references.py tests/test_inverters.py tests/test_inversion_core.py tests/test_claims.py tests/test_host_sync.py"
PATHS[words]="editing/words.py";                    TESTS[words]="tests/test_words.py tests/test_editing.py"
PATHS[attention]="editing/attention.py";            TESTS[attention]="tests/test_editor_references.py tests/test_attention_processor.py tests/test_editing.py tests/test_claims.py tests/test_host_sync.py"
PATHS[editors]="editing/p2p.py editing/masactrl.py editing/diffedit.py editing/loop.py"; TESTS[editors]="tests/test_editor_references.py tests/test_editing.py tests/test_claims.py tests/test_attention_processor.py tests/test_host_sync.py"
PATHS[cache]="demo/cache.py";                       TESTS[cache]="tests/test_app.py"

modules=("$@")
[ ${#modules[@]} -gt 0 ] || modules=(schedule metrics images inverters words attention editors cache)
mkdir -p out/mutation
for m in "${modules[@]}"; do
  [ -n "${PATHS[$m]:-}" ] || { echo "unknown module $m; known: ${!PATHS[*]}" >&2; exit 2; }
  work="$PWD/out/mutation/work/$m"   # kept, so that single survivors can be rerun: cd there; mutmut run NAME
  rm -rf "$work" && mkdir -p "$work"
  tar --exclude=./.venv --exclude=./runs --exclude=./out --exclude=./.git --exclude=./mutants -cf - . | tar -xf - -C "$work"
  paths=$(printf '"%s", ' ${PATHS[$m]}); tests=$(printf '"%s", ' ${TESTS[$m]})
  cat > "$work/pyproject.toml" <<TOML
[tool.mutmut]
source_paths = [${paths%, }]
pytest_add_cli_args_test_selection = [${tests%, }]
also_copy = ["inversion", "editing", "demo", "shapes", "assets", "tests", "app.py", "pytest.ini"]
pytest_add_cli_args = ["-x", "-q", "-p", "no:cacheprovider"]
TOML
  start=$(date +%s)
  (cd "$work" && "$VENV/bin/mutmut" run --max-children "${MUTMUT_CHILDREN:-2}" >/dev/null 2>&1 || true)
  (cd "$work" && "$VENV/bin/mutmut" results --all true > results.txt 2>&1 || true)
  killed=$(grep -cE ": (killed|timeout)" "$work/results.txt" || true)
  total=$(grep -cE ": (killed|survived|timeout|no tests|suspicious|segfault)" "$work/results.txt" || true)
  (cd "$work" && for name in $(grep -E ": (survived|no tests)" results.txt | cut -d: -f1); do "$VENV/bin/mutmut" show "$name" 2>/dev/null; done) > "out/mutation/$m.survivors.diff" || true
  cp "$work/results.txt" "out/mutation/$m.txt"
  echo "$m: ${killed}/${total} killed ($(( $(date +%s) - start )) s), results in out/mutation/$m.txt"
done
