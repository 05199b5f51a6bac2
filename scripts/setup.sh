#!/usr/bin/env bash
# Make (or reuse) a virtual environment and install the project into it.
#   VENV=path   where the environment lives (default: .venv)
#   DEV=1       also install the test requirements (and Debian chromium for the browser test)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# Nothing to do when this environment was set up from these very requirement files (and extras):
# a stamp of their contents, written after a successful install, skips pip on every later start.
STAMP="$VENV/.installed"  # one line per requirement file installed: its sha256 and name
NEED="$(sha256sum requirements.txt $([ "${DEV:-0}" = 1 ] && echo requirements-dev.txt))"
if [ -f "$STAMP" ] && [ -z "$(comm -23 <(echo "$NEED" | sort) <(sort "$STAMP"))" ] && { [ "${DEV:-0}" != 1 ] || command -v chromium >/dev/null 2>&1; }; then
  echo "$VENV"
  exit 0
fi
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip 2>/dev/null || true
# torch first and pinned: otherwise a dependency pulls a multi-GB CUDA build.
$PIP install -q "torch==2.13.0"
if [ "${DEV:-0}" = 1 ]; then
  $PIP install -q -r requirements-dev.txt
  if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "installing Debian chromium for the browser test" >&2
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
      echo "warning: chromium not found and cannot be installed here; the browser test will be skipped" >&2
    fi
  fi
else
  $PIP install -q -r requirements.txt
fi
{ cat "$STAMP" 2>/dev/null || true; echo "$NEED"; } | sort -u > "$STAMP.tmp" && mv "$STAMP.tmp" "$STAMP"
echo "$VENV"
