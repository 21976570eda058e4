#!/usr/bin/env bash
# Install Arize Phoenix (pinned) into its own virtual environment for the end-to-end test
# (tests/e2e, `pytest -m e2e`), and print the path of its `phoenix` executable.
#
# Phoenix gets its own environment because installing it into the test environment would upgrade
# that environment's OpenTelemetry packages and add an OpenAI instrumentor that
# `opentelemetry-instrument` would then load into the example app.
#
# Usage (stdout carries only the path; progress goes to stderr):
#     PRODLENS_E2E_PHOENIX="$(bash .ci/e2e-setup.sh)"
#     export PRODLENS_E2E_PHOENIX
#
# Idempotent: an environment that finished installing the pinned version is reused as it is.
# Settings:
#     PRODLENS_E2E_VENV    where the environment goes
#                          (default: ${XDG_CACHE_HOME:-$HOME/.cache}/prodlens-e2e/phoenix-VERSION)
#     PRODLENS_E2E_PYTHON  interpreter to build it from (default: python3; Phoenix needs 3.11-3.14)
set -euo pipefail

PHOENIX_VERSION="20.26.1"
PYTHON="${PRODLENS_E2E_PYTHON:-python3}"
VENV="${PRODLENS_E2E_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/prodlens-e2e/phoenix-$PHOENIX_VERSION}"
DONE_MARKER="$VENV/.prodlens-e2e-installed"

say() { echo "e2e-setup: $*" >&2; }
die() { echo "e2e-setup: ERROR: $*" >&2; exit 1; }

# The test runs Phoenix and the app in a private network namespace: it needs these tools (and root).
for tool in unshare:util-linux ip:iproute2 ss:iproute2; do
    command -v "${tool%%:*}" >/dev/null || die "\`${tool%%:*}\` not found: apt-get install ${tool#*:}"
done

installed_version() {
    "$VENV/bin/python" -c \
        'import importlib.metadata as m; print(m.version("arize-phoenix"))' 2>/dev/null || true
}

if [[ -f "$DONE_MARKER" && -x "$VENV/bin/phoenix" && "$(installed_version)" == "$PHOENIX_VERSION" ]]; then
    say "arize-phoenix==$PHOENIX_VERSION already installed in $VENV"
else
    command -v "$PYTHON" >/dev/null || die "interpreter '$PYTHON' not found (set PRODLENS_E2E_PYTHON)"
    "$PYTHON" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 15))' \
        || die "arize-phoenix==$PHOENIX_VERSION needs Python 3.11-3.14; '$PYTHON' is $("$PYTHON" -V 2>&1)"
    if [[ -e "$VENV" ]]; then
        # Only ever delete something that is recognisably a virtual environment.
        [[ -f "$VENV/pyvenv.cfg" ]] || die "$VENV exists and is not a virtual environment; remove it or set PRODLENS_E2E_VENV"
        say "removing incomplete or outdated environment $VENV"
        rm -rf -- "$VENV"
    fi
    say "creating $VENV with $("$PYTHON" -V 2>&1)"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
    say "installing arize-phoenix==$PHOENIX_VERSION (about a minute)"
    started=$SECONDS
    "$VENV/bin/python" -m pip install --quiet --quiet --disable-pip-version-check \
        "arize-phoenix==$PHOENIX_VERSION" >&2 \
        || die "pip install arize-phoenix==$PHOENIX_VERSION failed"
    [[ -x "$VENV/bin/phoenix" ]] || die "no phoenix executable in $VENV/bin after installing"
    [[ "$(installed_version)" == "$PHOENIX_VERSION" ]] || die "installed version is '$(installed_version)', expected $PHOENIX_VERSION"
    touch "$DONE_MARKER"
    say "installed in $((SECONDS - started)) s"
fi

echo "$VENV/bin/phoenix"
