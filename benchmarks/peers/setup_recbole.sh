#!/bin/sh
# RecBole's own virtualenv for the peers benchmark (see README.md beside this file).
# RecBole 1.2.1 pins ray<=2.6.3, which has no wheels past Python 3.11, and pulls ray,
# tensorboard and plotly that nothing else needs: it stays out of the project's .venv.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3.11}
"$python" -m venv "$here/.venv"
"$here/.venv/bin/python" -m pip install --quiet --upgrade pip
# torch pinned as in the project (the CPU build); the rest as RecBole asks.
"$here/.venv/bin/python" -m pip install --quiet "torch==2.13.0" "recbole==1.2.1"
"$here/.venv/bin/python" -c "import recbole, torch; print('recbole', recbole.__version__, 'torch', torch.__version__)"
