#!/usr/bin/env bash
# Install (once), lint (ruff) and run the whole test suite offline: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="$(DEV=1 bash scripts/setup.sh | tail -n 1)"
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1 TRANSFORMERS_VERBOSITY=error
"$VENV/bin/ruff" check .  # lint first: a finding fails the run
set +e
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
