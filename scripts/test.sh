#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what it needs, then runs the
# suite in the fast mode (orjson, aiofiles, filelock), in the zero-dependency mode
# (FILELAYER_PURE=1), and the storage core and CLI tests in an environment that has no
# optional package and no Chainlit at all.
#
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -k journal # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium chromium-driver)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "== installing ${need_apt[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "== missing system packages (${need_apt[*]}): their tests will say so" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
echo "== installing the package with its test dependencies into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"

if [ ! -x .venv-pure/bin/python ]; then
  "$PY" -m venv .venv-pure
fi
echo "== installing the package alone (standard library only) into .venv-pure"
.venv-pure/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
.venv-pure/bin/python -m pip install -q --disable-pip-version-check pytest pytest-asyncio hypothesis

status=0
echo "== fast mode"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@" || status=1
echo "== zero-dependency mode (FILELAYER_PURE=1)"
FILELAYER_PURE=1 .venv/bin/python -m pytest -q -p no:cacheprovider "$@" || status=1
echo "== no optional package and no Chainlit installed"
.venv-pure/bin/python -m pytest -q -p no:cacheprovider "$@" || status=1
exit $status
