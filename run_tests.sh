#!/usr/bin/env bash
# Run the whole test suite (sets up .venv on first use). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_venv.sh
source scripts/setup_prism.sh
source scripts/setup_flink.sh
source scripts/setup_chromium.sh
# Azurite (Azure Blob Storage emulator) for the storage tests, from npm when Node.js is here.
if command -v npm >/dev/null && [ ! -x tests/azurite/node_modules/.bin/azurite-blob ]; then
  echo "Installing Azurite into tests/azurite ..."
  (cd tests/azurite && npm install --no-audit --no-fund --silent) || echo "Azurite could not be installed: its tests will be skipped"
fi
# Two test processes (pytest-xdist), each taking whole modules: most tests wait on a job in a process of its own.
exec .venv/bin/python -m pytest -q -rs -n 2 --dist loadfile "$@" tests
