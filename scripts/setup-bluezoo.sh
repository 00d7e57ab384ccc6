#!/usr/bin/env bash
# Install BlueZoo (a user-space mock of BlueZ, used by the emulated BLE tests) into its own
# virtualenv, .venv-bluezoo, and print the path of its `bluezoo` executable on stdout.
#
# BlueZoo is GPL-2.0: it must never enter the product's .venv. The tests only run it as a
# separate process (pointed to by SHOAL_BLUEZOO) on a private dbus-daemon.
# Idempotent: a no-op when the pinned version is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SHOAL_BLUEZOO_VENV:-.venv-bluezoo}
VERSION=${BLUEZOO_VERSION:-1.0.2}
PY=${PYTHON:-python3}
stamp="$VENV/.bluezoo-$VERSION"
if [ ! -x "$VENV/bin/bluezoo" ] || [ ! -f "$stamp" ]; then
  "$PY" -m venv "$VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "bluezoo==$VERSION" >&2
  touch "$stamp"
fi
echo "$(pwd)/$VENV/bin/bluezoo"
