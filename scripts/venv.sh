# Sourced by the set-up scripts: a fresh virtual environment in .venv with fastport installed
# from this checkout, with the extras named in $1 (e.g. "test" or "plot").
PY=${PYTHON:-python3}
rm -rf .venv
"$PY" -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet ".[$1]"
