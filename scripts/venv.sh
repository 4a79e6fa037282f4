# Sourced by the set-up scripts: the virtual environment .venv (created when missing, kept
# otherwise) with fastport installed from this checkout plus the extras named in $1 (e.g. "test"
# or "plot"). Keeping it means the test and the bench commands add to each other's installs
# instead of undoing them; `rm -rf .venv` starts afresh.
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
    .venv/bin/pip install --quiet --upgrade pip
fi
.venv/bin/pip install --quiet ".[$1]"
