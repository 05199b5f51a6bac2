#!/usr/bin/env bash
# Install (once) and start the app: bash scripts/app.sh [--model M] [--host H] [--port P] [--share]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="$(bash scripts/setup.sh | tail -n 1)"
export GRADIO_ANALYTICS_ENABLED=False TRANSFORMERS_VERBOSITY=error
exec "$VENV/bin/python" app.py "$@"
