#!/usr/bin/env bash
# Runs the example Chainlit app on the file layer, on a fresh machine:
#   bash scripts/example.sh              # http://localhost:8000, log in as admin / admin
#   PORT=8080 bash scripts/example.sh
# Conversations are kept under ./chats (or $FILELAYER_ROOT).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
echo "== installing filelayer with Chainlit into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[all,examples]"

# Chainlit signs its login tokens with this secret; keep one per checkout so that
# logins survive restarts.
if [ -z "${CHAINLIT_AUTH_SECRET:-}" ]; then
  [ -f .chainlit-secret ] || .venv/bin/python -c \
    'import secrets; print(secrets.token_urlsafe(48))' > .chainlit-secret
  CHAINLIT_AUTH_SECRET=$(cat .chainlit-secret)
  export CHAINLIT_AUTH_SECRET
fi
export FILELAYER_ROOT=${FILELAYER_ROOT:-$PWD/chats}

cd examples
exec ../.venv/bin/chainlit run app.py --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" "$@"
