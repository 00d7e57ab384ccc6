#!/usr/bin/env bash
# Set up (first time) and start a Shoal agent in the foreground with embedded defaults.
# Data lives in ~/.local/share/shoal (or $SHOAL_DATA_DIR). Extra arguments go to `shoal run`
# (e.g. --local, --port 0, --name N); the global ones (--config, --data-dir, --log-level)
# are moved before `run`, where the command expects them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
global=() run=()
while [ $# -gt 0 ]; do
  case "$1" in
    --config|--data-dir|--log-level)
      [ $# -ge 2 ] || { echo "run-agent.sh: $1 needs a value" >&2; exit 2; }
      global+=("$1" "$2"); shift 2 ;;
    --config=*|--data-dir=*|--log-level=*) global+=("$1"); shift ;;
    *) run+=("$1"); shift ;;
  esac
done
exec .venv/bin/shoal "${global[@]}" run "${run[@]}"
