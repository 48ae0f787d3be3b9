#!/usr/bin/env bash
# Install everything ProdFS needs on a Debian machine: system packages (FUSE 3,
# PostgreSQL for the storage tests, the benchmark peers) and a virtual
# environment at .venv with the project and its test dependencies.
# Idempotent: a second run only checks. Run as root (or with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(libfuse3-dev fuse3 pkg-config attr python3-venv python3-dev gcc
              postgresql bindfs squashfuse squashfs-tools rsync)

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
# mount(8) looks for helpers in /sbin: point it at the installed one.
if [[ -w /sbin ]] && [[ -x .venv/bin/mount.fuse.prodfs ]]; then
  ln -sf "$(pwd)/.venv/bin/mount.fuse.prodfs" /sbin/mount.fuse.prodfs
fi
echo "setup: ready (.venv)" >&2
