#!/usr/bin/env bash
# Set up everything the test suite needs and run it: system packages (when root), the
# virtualenv with test extras, ruff, mypy, then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  while read -r pkg bin; do
    [ -z "$pkg" ] || [ "${pkg#\#}" != "$pkg" ] && continue
    command -v "$bin" >/dev/null || missing+=("$pkg")
  done < scripts/apt-packages.txt
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing system packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi
bash scripts/bootstrap.sh test
# BlueZoo (GPL-2.0, test-only) for the emulated BLE tier lives in its own venv, never .venv;
# without it (or dbus-daemon) those tests skip with a reason.
if [ -z "${SHOAL_BLUEZOO:-}" ] && bluezoo=$(bash scripts/setup-bluezoo.sh); then
  export SHOAL_BLUEZOO="$bluezoo"
fi
.venv/bin/ruff check agent radio tests bench hardware-tests
.venv/bin/mypy  # config and file list: [tool.mypy] in pyproject.toml
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ $rc = 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit $rc
