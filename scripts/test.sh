#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what it needs (as root, Debian's
# chromium, postgresql and strace), then runs
#
#   fast         the layering contract (lint-imports), then the suite in the fast mode
#                (orjson, aiofiles, filelock)
#   pure         the suite in the zero-dependency mode (FILELAYER_PURE=1)
#   nodeps       the storage core and CLI tests in an environment that has no optional
#                package and no Chainlit at all
#   chainlit-2.0 the data-layer contract, authorization and element-route tests against
#   chainlit-2.3 the oldest claimed Chainlit release and a middle one, each in its own
#                environment (.venv-chainlit-<release>)
#   wheel        builds the sdist and the wheel, checks them, installs the wheel into an
#                empty environment and runs the command and the import there
#
#   bash scripts/test.sh                              # every stage
#   bash scripts/test.sh -k journal                   # extra arguments go to pytest
#   FILELAYER_CI_STAGES="chainlit-2.0 wheel" bash scripts/test.sh   # only these stages
#
# Every stage runs even if one before it failed; the run fails if any stage failed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
STAGES=${FILELAYER_CI_STAGES:-fast pure nodeps chainlit-2.0 chainlit-2.3 wheel}
STAGES=" ${STAGES//,/ } "
PIP=(python -m pip install -q --disable-pip-version-check)

# The exact releases behind the chainlit-<minor> stages: the oldest one pyproject.toml
# claims, and one from the middle of the range (the newest is what .venv gets). 2.3 rather
# than a later middle release: from 2.4 on, installing a release alone sends pip's
# resolver backtracking for many minutes through its telemetry dependencies.
declare -A RELEASE=([2.0]=2.0.0 [2.3]=2.3.0)
# The data-layer contract, the authorization rules and the element route: the code that
# leans on Chainlit's internals (its context, session, auth helpers and routes).
CONTRACT_TESTS=(
  tests/store/test_contract_*.py
  tests/store/test_authorship.py
  tests/chainlit/test_contract_interface.py
  tests/chainlit/test_layer_*.py
  tests/chainlit/test_serve.py
  tests/chainlit/test_authorization.py
)

wants() { [[ "$STAGES" == *" $1 "* ]]; }

for stage in $STAGES; do
  case "$stage" in
    fast | pure | nodeps | wheel) ;;
    chainlit-*) [ -n "${RELEASE[${stage#chainlit-}]:-}" ] || {
      echo "unknown stage $stage (releases: ${!RELEASE[*]})" >&2
      exit 2
    } ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium chromium-driver)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v strace >/dev/null 2>&1 || need_apt+=(strace)  # the power-cut explorer
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "== installing ${need_apt[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "== missing system packages (${need_apt[*]}): their tests will say so" >&2
  fi
fi

if wants fast || wants pure || wants wheel; then
  if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    "$PY" -m venv .venv
  fi
  echo "== installing the package with its test dependencies into .venv"
  .venv/bin/"${PIP[@]}" -e ".[test]"
fi

if wants nodeps; then
  if [ ! -x .venv-pure/bin/python ]; then
    "$PY" -m venv .venv-pure
  fi
  echo "== installing the package alone (standard library only) into .venv-pure"
  .venv-pure/bin/"${PIP[@]}" --no-deps -e .
  .venv-pure/bin/"${PIP[@]}" pytest pytest-asyncio hypothesis
fi

status=0
failed=()
ran() {  # ran STAGE-NAME EXIT-CODE
  local code=$2
  # pytest's 5 is "no test collected": a stage that ran nothing has failed.
  if [ "$code" != 0 ]; then
    status=1
    failed+=("$1")
  fi
  echo "== $1: $([ "$code" = 0 ] && echo passed || echo "FAILED (exit $code)") in $((SECONDS - started)) s"
}

if wants fast; then
  echo "== fast mode"
  started=$SECONDS
  code=0
  # The layers of docs/architecture.md, checked: imports point down, the core never
  # imports Chainlit ([tool.importlinter] in pyproject.toml).
  .venv/bin/lint-imports --no-cache || code=$?
  .venv/bin/python -m pytest -q -p no:cacheprovider "$@" || code=$?
  ran fast $code
fi

if wants pure; then
  echo "== zero-dependency mode (FILELAYER_PURE=1)"
  started=$SECONDS
  code=0
  FILELAYER_PURE=1 .venv/bin/python -m pytest -q -p no:cacheprovider "$@" || code=$?
  ran pure $code
fi

if wants nodeps; then
  echo "== no optional package and no Chainlit installed"
  started=$SECONDS
  code=0
  .venv-pure/bin/python -m pytest -q -p no:cacheprovider "$@" || code=$?
  ran nodeps $code
fi

release_stage() {  # release_stage RELEASE VENV [pytest arguments]
  local release=$1 venv=$2 installed
  shift 2
  [ -x "$venv/bin/python" ] || "$PY" -m venv "$venv" || return
  # One resolution for Chainlit and the test tools, so that Chainlit's own pins hold
  # (2.0 wants packaging<24). Old releases use asyncer, which needs sniffio and no
  # longer gets it through its own dependencies.
  "$venv"/bin/"${PIP[@]}" "chainlit==$release" sniffio \
    pytest pytest-asyncio hypothesis httpx aiohttp || return
  "$venv"/bin/"${PIP[@]}" --no-deps -e . || return
  installed=$("$venv/bin/python" -c \
    "from importlib.metadata import version; print(version('chainlit'))") || return
  if [ "$installed" != "$release" ]; then
    echo "expected Chainlit $release in $venv, found $installed" >&2
    return 1
  fi
  "$venv/bin/python" -m pytest -q -p no:cacheprovider -rs "${CONTRACT_TESTS[@]}" "$@"
}

for minor in 2.0 2.3; do
  wants "chainlit-$minor" || continue
  release=${RELEASE[$minor]}
  echo "== Chainlit $release: contract, authorization and element-route tests" \
    "(.venv-chainlit-$minor)"
  started=$SECONDS
  code=0
  release_stage "$release" ".venv-chainlit-$minor" "$@" || code=$?
  ran "chainlit-$minor" $code
done

if wants wheel; then
  echo "== the wheel: built, checked, installed alone into an empty environment"
  started=$SECONDS
  code=0
  bash scripts/check_wheel.sh || code=$?
  ran wheel $code
fi

if [ $status != 0 ]; then
  echo "== failed: ${failed[*]}"
fi
exit $status
