#!/usr/bin/env bash
# Install fastport (with the plotting extra) into the virtual environment .venv and run the
# main job: `fastport bench` on the embedded emulated driver. Extra arguments go to fastport bench.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh plot
exec .venv/bin/fastport bench "$@"
