#!/usr/bin/env bash
# Runs Windows test programs under Wine, headless: a fresh WINEPREFIX in a temporary directory
# (removed afterwards, its wineserver stopped), no debug channels, no Mono/Gecko installers.
# Exit status: non-zero if any program failed (Wine passes the program's exit code through).
set -euo pipefail
prefix=$(mktemp -d)
export WINEPREFIX=$prefix WINEDEBUG=-all WINEARCH=win64 WINEDLLOVERRIDES="mscoree,mshtml="
unset DISPLAY WAYLAND_DISPLAY
cleanup() {
    wineserver -k >/dev/null 2>&1 || true
    wineserver -w >/dev/null 2>&1 || true
    rm -rf "$prefix"
}
trap cleanup EXIT
wineboot --init >/dev/null 2>&1 # the prefix (about 6 s), without its chatter
rc=0
for exe in "$@"; do
    echo "== wine $exe"
    wine "$exe" || rc=1
done
exit $rc
