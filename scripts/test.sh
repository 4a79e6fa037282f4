#!/usr/bin/env bash
# Install fastport with its test extra into the virtual environment .venv and run the tests:
# the Python suites, the C test programs of the core (-Wall -Wextra -Werror) and their
# ASAN/UBSAN build, the Windows build and its tests under Wine (when mingw-w64 and Wine are
# there), the micro-benchmarks once with benchmarking disabled, and mypy.stubtest of the
# extension's stubs (fastport/_ext.pyi).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh test
make --no-print-directory ctest
make --no-print-directory asan
# the C core cross-compiled for Windows (make win) and the pump's Windows tests under Wine (make
# wine); without mingw-w64 and Wine they are skipped, unless FP_REQUIRE_WINDOWS is set (.ci/run)
if command -v x86_64-w64-mingw32-gcc >/dev/null && command -v wine >/dev/null; then
    make --no-print-directory win wine
elif [ -n "${FP_REQUIRE_WINDOWS:-}" ]; then
    echo "make win wine: x86_64-w64-mingw32-gcc or wine is missing" >&2
    exit 1
else
    echo "skipped: make win wine (needs gcc-mingw-w64-x86-64, wine, wine64)"
fi
# from outside the source tree, so that `import fastport` is the installed package
root=$PWD
cd "$(mktemp -d)"
"$root/.venv/bin/python" -m pytest -q -p no:cacheprovider --rootdir="$root" -c "$root/pyproject.toml" \
    --benchmark-disable "$@" "$root/tests" "$root/bench"
# the extension's type stubs against the built module
"$root/.venv/bin/python" -m mypy.stubtest fastport._ext \
    --allowlist "$root/scripts/stubtest-allowlist.txt"
