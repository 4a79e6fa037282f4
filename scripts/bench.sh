#!/usr/bin/env bash
# Install fastport (with the plotting extra) into a fresh virtual environment (.venv) and run the
# main job: `fastport bench` on the embedded emulated driver. Extra arguments go to fastport bench.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
rm -rf .venv
"$PY" -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet '.[plot]'
exec .venv/bin/fastport bench "$@"
