#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine (run as root), then run the whole
# suite: unit tests, real-sshd tests, and the quality gates (ruff, mypy, import-linter).
# Extra arguments go to pytest. README.md and .ci/run both call exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  need=()
  [ -x /usr/sbin/sshd ] || command -v sshd >/dev/null 2>&1 || need+=(openssh-server)
  command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
  command -v sudo >/dev/null 2>&1 || need+=(sudo)
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
  # server binaries for the PostgreSQL store tests, which start their own cluster on a free
  # port (a system cluster the package may start is never used)
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
  # the air-gapped test: a node in its own network namespace (ip netns, veth; nsenter)
  command -v ip >/dev/null 2>&1 || need+=(iproute2)
  command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
  # the bundle's apt repository tests (dpkg-deb builds a tiny package)
  command -v dpkg-deb >/dev/null 2>&1 || need+=(dpkg)
  # the web dashboard's page tests: Debian's headless chromium driven by playwright
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  if [ "${#need[@]}" -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
  fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
exec .venv/bin/python -m pytest "$@"
