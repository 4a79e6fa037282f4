#!/usr/bin/env bash
# Checks that a Windows program imports the Filter Manager's user library for real: its import
# table names FLTLIB.DLL with FilterConnectCommunicationPort, FilterGetMessage and
# FilterReplyMessage (what `make win` links against mingw-w64's libfltlib.a).
set -euo pipefail
exe=$1
table=$(x86_64-w64-mingw32-objdump -p "$exe")
dll=$(printf '%s\n' "$table" | awk '/DLL Name:/ {on = (toupper($3) == "FLTLIB.DLL")} on')
[ -n "$dll" ] || { echo "$exe: no FLTLIB.DLL in its import table" >&2; exit 1; }
for fn in FilterConnectCommunicationPort FilterGetMessage FilterReplyMessage; do
    printf '%s\n' "$dll" | grep -qw "$fn" || { echo "$exe: FLTLIB.DLL!$fn not imported" >&2; exit 1; }
done
echo "$exe imports FLTLIB.DLL: FilterConnectCommunicationPort FilterGetMessage FilterReplyMessage"
