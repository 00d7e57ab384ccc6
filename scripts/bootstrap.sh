#!/usr/bin/env bash
# Create or refresh the project's virtualenv (.venv) from pyproject.toml.
# Usage: scripts/bootstrap.sh [extra]   e.g. "test" installs the test extras too.
# Quiet on purpose: pip's progress and build chatter go to a log that is printed in full
# only if a step fails; a run prints one line when it installs and nothing when up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "shoal needs Python >= 3.11 (found: $("$PY" --version 2>&1))" >&2; exit 1
fi
log=$(mktemp "${TMPDIR:-/tmp}/shoal-bootstrap.XXXXXX")
trap 'rm -f "$log"' EXIT
quietly() {  # run "$@" with its output kept aside; on failure show all of it and stop
  if ! "$@" >>"$log" 2>&1; then
    cat "$log" >&2
    echo "bootstrap: failed: $*" >&2
    exit 1
  fi
}
if [ ! -x .venv/bin/python ]; then
  quietly "$PY" -m venv .venv
fi
stamp=".venv/.shoal-installed-${1:-run}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  spec="."
  [ -n "${1:-}" ] && spec=".[$1]"
  echo "bootstrap: installing shoal${1:+ with the $1 extras} into .venv (a minute or two the first time)" >&2
  quietly .venv/bin/python -m pip install --disable-pip-version-check --upgrade pip
  quietly .venv/bin/python -m pip install --disable-pip-version-check -e "$spec"
  touch "$stamp"
fi
