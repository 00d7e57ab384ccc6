#!/usr/bin/env bash
# Set up (first time) and start a Shoal agent in the foreground with embedded defaults.
# Data lives in ~/.local/share/shoal (or $SHOAL_DATA_DIR). Extra arguments go to `shoal run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/shoal run "$@"
