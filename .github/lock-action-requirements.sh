#!/usr/bin/env bash
# Regenerates .github/action-requirements.txt, the hash-pinned dependencies action.yml installs
# (patchkit itself comes from the action's own checkout, never from an index).
#
#   .github/lock-action-requirements.sh            # with python3.11, the oldest Python patchkit supports
#   PYTHON=python3.12 .github/lock-action-requirements.sh
#
# It resolves pyproject.toml's [project].dependencies (the torch-free core, no extras) and the
# build backend ([build-system].requires: the action builds patchkit with no build isolation)
# with pip-tools in a throwaway virtualenv, against pypi.org only (local pip configuration is
# ignored), and records the sha256 of every file PyPI has for each pinned version: the sdist and
# all wheels, so the manylinux x86_64 wheels for CPython 3.11, 3.12 and 3.13 that ubuntu runners
# pick are among them. Run it after changing the dependencies in pyproject.toml, and commit the
# result; tests/test_ci.py checks the file pins the whole closure within pyproject's ranges.
#
# It also writes .github/action-keyless-requirements.txt: what the `keyless` extra (sigstore) adds
# to that closure, resolved with the core's pins as constraints, so the action's sign-keyless mode
# installs both files and the verify mode installs exactly what it did before.
#
#   KEYLESS_ONLY=1 .github/lock-action-requirements.sh   # only the keyless file, the core's pins kept
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3.11}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
unset PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_CONSTRAINT
"$py" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install --quiet --index-url https://pypi.org/simple 'pip-tools==7.7.0'
keyless() {
  # The keyless extra's closure under the core's pins, less what the core file already pins.
  sed -n 's/^\([A-Za-z0-9._-]*==[^ ]*\).*/\1/p' .github/action-requirements.txt > "$tmp/core-constraints.txt"
  printf -- '-c %s\n' "$tmp/core-constraints.txt" > "$tmp/keyless.in"
  "$py" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["keyless"]))' >> "$tmp/keyless.in"
  "$tmp/venv/bin/pip-compile" --quiet --no-header --generate-hashes --allow-unsafe --strip-extras \
      --index-url https://pypi.org/simple --no-emit-index-url --output-file "$tmp/keyless.txt" "$tmp/keyless.in"
  "$py" - "$tmp/keyless.txt" "$tmp/core-constraints.txt" > .github/action-keyless-requirements.txt <<'PY'
import re, sys
core = {line.split("==")[0].lower() for line in open(sys.argv[2]) if "==" in line}
print("""# What patchkit's GitHub Action installs on top of .github/action-requirements.txt in its
# sign-keyless mode: the `keyless` extra (sigstore) and what it needs beyond the core, resolved with
# the core's pins as constraints, pinned with hashes. Installed with
#   pip install --require-hashes --no-deps --only-binary :all: -r .github/action-keyless-requirements.txt
#
# Generated; do not edit. Regenerate with .github/lock-action-requirements.sh (KEYLESS_ONLY=1 keeps
# the core file as it is), and commit.
#""")
block, keep = [], False
for line in open(sys.argv[1]).read().splitlines():
    m = re.match(r"([A-Za-z0-9._-]+)==", line)
    if m:
        if block and keep:
            print("\n".join(block))
        block, keep = [line], m.group(1).lower() not in core
    elif block:
        block.append(line)
if block and keep:
    print("\n".join(block))
PY
  echo "wrote .github/action-keyless-requirements.txt" >&2
}
if [ -n "${KEYLESS_ONLY:-}" ]; then
  keyless
  exit 0
fi
"$tmp/venv/bin/pip-compile" --quiet --no-header --generate-hashes --allow-unsafe --strip-extras \
    --build-deps-for wheel --index-url https://pypi.org/simple --no-emit-index-url \
    --output-file "$tmp/requirements.txt" pyproject.toml
{
  cat <<'HEADER'
# The dependencies of patchkit's GitHub Action (action.yml), pinned with hashes: the torch-free
# core's dependency closure (pyproject.toml [project].dependencies) and its build backend
# ([build-system].requires). The action installs them with
#   pip install --require-hashes --no-deps --only-binary :all: -r .github/action-requirements.txt
# and then patchkit itself from the action's checkout (the ref in `uses: …/patchkit@REF`) with
# --no-index --no-deps --no-build-isolation: nothing named patchkit ever comes from an index.
#
# Generated; do not edit. Regenerate after changing pyproject's dependencies, and commit:
#   .github/lock-action-requirements.sh
# (pip-compile --generate-hashes against pypi.org, with the oldest supported Python, 3.11).
#
HEADER
  cat "$tmp/requirements.txt"
} > .github/action-requirements.txt
echo "wrote .github/action-requirements.txt" >&2
keyless
