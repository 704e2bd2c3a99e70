#!/usr/bin/env bash
# Create or refresh .venv with the pinned stack. Idempotent: does nothing when the requirements are
# unchanged since the last successful setup (their hash is kept in .venv/.requirements.sha256).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
REQS=(requirements/base.txt requirements/deepspeed.txt requirements/test.txt)
want=$(cat "${REQS[@]}" scripts/setup_venv.sh pyproject.toml | sha256sum | cut -d' ' -f1)
if [[ -x $VENV/bin/python && -x $VENV/bin/dyt-pretrain && -f $VENV/.requirements.sha256 \
      && $(cat "$VENV/.requirements.sha256") == "$want" ]]; then
  exit 0
fi

# Python 3.12+: $PYTHON, else `python3` when it is new enough (pyenv honours .python-version), else python3.12.
version_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; }
PY=""
for cand in ${PYTHON:-} python3 python3.12 python3.13; do
  if command -v "$cand" >/dev/null && version_ok "$cand"; then PY=$(command -v "$cand"); break; fi
done
if [[ -z $PY ]]; then
  echo "error: Python 3.12 or newer is required (megatron-core >= 0.17 needs it)." >&2
  echo "       Install it (e.g. 'pyenv install 3.12') or set PYTHON=/path/to/python3.12." >&2
  exit 1
fi

echo "setting up $VENV with $($PY --version) (first time: several GB of wheels, a few minutes)"
[[ -x $VENV/bin/python ]] && version_ok "$VENV/bin/python" || { rm -rf "$VENV"; "$PY" -m venv "$VENV"; }
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -r requirements/base.txt -r requirements/test.txt
# DeepSpeed's setup imports torch: build it against the torch just installed, with no ops precompiled
# (they JIT-compile on first use; on CPU none are needed).
DS_BUILD_OPS=0 "$VENV/bin/python" -m pip install --quiet --no-build-isolation -r requirements/deepspeed.txt
# This checkout, editable, for the dyt-* commands the Makefile runs (dependencies are all installed above).
"$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
echo "$want" > "$VENV/.requirements.sha256"
echo "environment ready: $VENV"
