#!/usr/bin/env bash
# Install (once), lint (ruff) and run the whole test suite offline: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="$(DEV=1 bash scripts/setup.sh | tail -n 1)"
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1 TRANSFORMERS_VERBOSITY=error
# Two workers of one torch thread each, a test file per worker at a time: on 2 cores 6.5 min against 8.7
# (one process, one thread) and 10.3 (one process, two threads: the app servers' threads contend).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
"$VENV/bin/ruff" check .  # lint first: a finding fails the run
set +e
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
