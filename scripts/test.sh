#!/usr/bin/env bash
# Install fastport with its test extra into the virtual environment .venv and run the tests:
# the Python suites, the C test programs of the core (-Wall -Wextra -Werror) and their
# ASAN/UBSAN build, the micro-benchmarks once with benchmarking disabled, and mypy.stubtest of the
# extension's stubs (fastport/_ext.pyi).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh test
make --no-print-directory ctest
make --no-print-directory asan
# from outside the source tree, so that `import fastport` is the installed package
root=$PWD
cd "$(mktemp -d)"
"$root/.venv/bin/python" -m pytest -q -p no:cacheprovider --rootdir="$root" -c "$root/pyproject.toml" \
    --benchmark-disable "$@" "$root/tests" "$root/bench"
# the extension's type stubs against the built module
"$root/.venv/bin/python" -m mypy.stubtest fastport._ext \
    --allowlist "$root/scripts/stubtest-allowlist.txt"
