#!/usr/bin/env bash
# The package as the package index would ship it: builds the sdist and the wheel with the
# standard `build` front end, checks them with twine, then installs the wheel (no extras)
# into an empty virtual environment and uses it there: `filelayer --help`,
# `python -m filelayer list` on an archive made with the installed storage core, and
# `import filelayer`. Nothing but the standard library may be needed for that, the wheel
# must carry py.typed and no tests.
#
#   bash scripts/check_wheel.sh     (uses .venv for build and twine)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
work=$(mktemp -d "${TMPDIR:-/tmp}/filelayer-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "-- building the sdist and the wheel"
.venv/bin/python -m build --sdist --wheel --outdir "$work/dist" . >"$work/build.log" 2>&1 || {
  tail -40 "$work/build.log"
  exit 1
}
ls "$work/dist"
.venv/bin/python -m twine check --strict "$work"/dist/*

echo "-- what the wheel carries"
.venv/bin/python - "$work"/dist/*.whl <<'EOF'
import sys
import zipfile

names = zipfile.ZipFile(sys.argv[1]).namelist()
assert "filelayer/py.typed" in names, "the wheel lacks filelayer/py.typed"
tests = [n for n in names if n.startswith(("tests/", "test/")) or "/tests/" in n]
assert not tests, f"the wheel carries tests: {tests[:5]}"
top = sorted({n.split("/")[0] for n in names})
assert all(t == "filelayer" or t.endswith(".dist-info") for t in top), top
print(f"{len(names)} files, top level {top}, py.typed, no tests")
EOF

echo "-- installing it alone into an empty environment"
"$PY" -m venv "$work/bare"
bare="$work/bare/bin"
"$bare/python" -m pip install -q --disable-pip-version-check "$work"/dist/*.whl

cd "$work"  # away from the source tree: only the installed package can be imported
"$bare/python" - <<'EOF'
from importlib.metadata import distributions, requires

names = sorted(d.metadata["Name"].lower() for d in distributions())
others = [n for n in names if n not in ("pip", "setuptools", "chainlit-filelayer")]
assert not others, f"installing the wheel brought in {others}"
needs = [r for r in requires("chainlit-filelayer") or [] if "extra ==" not in r]
assert not needs, f"the wheel requires {needs} without an extra"
print("installed alone:", names)
EOF
"$bare/filelayer" --help >"$work/help.txt"
head -3 "$work/help.txt"
"$bare/python" - <<'EOF'
# An example archive, written by the installed storage core alone.
from filelayer import ArchiveStore

store = ArchiveStore("chats")
user = store.upsert_user("alice@example.com")
store.update_thread("bread", name="How do I bake bread?", user_id=user["id"])
store.write_step(
    {"id": "m1", "threadId": "bread", "type": "user_message", "name": "alice",
     "output": "How do I bake bread?", "createdAt": "2026-03-01T10:00:00.000Z"}
)
store.write_step(
    {"id": "m2", "threadId": "bread", "type": "assistant_message", "name": "Assistant",
     "output": "Flour, water, salt, time.", "createdAt": "2026-03-01T10:00:05.000Z"}
)
EOF
"$bare/python" -m filelayer --root chats list | tee "$work/list.txt"
grep -q "bread" "$work/list.txt"
"$bare/python" - <<'EOF'
import sys

before = set(sys.modules)
import filelayer
from filelayer import ArchiveStore, cli  # noqa: F401  the core and the command

assert "chainlit" not in sys.modules
third_party = sorted(
    name
    for name, module in sys.modules.items()
    if name not in before
    and "site-packages" in (getattr(module, "__file__", None) or "")
    and not name.startswith("filelayer")
)
assert not third_party, f"importing filelayer loaded {third_party}"
print("import filelayer:", filelayer.__file__)
EOF
echo "-- the wheel installs clean"
