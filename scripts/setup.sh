#!/usr/bin/env bash
# Installs what galera-health's demo needs on a fresh Debian/Ubuntu machine (as root): Debian
# mariadb-server, galera-4, rsync, iproute2, procps; a virtualenv in .venv with the package.
# `setup.sh --test` adds what only the test suite uses: chromium + chromium-driver (the status
# page in a headless browser), haproxy (a real load balancer in front of the test bed),
# prometheus (promtool checks the alert rules), systemd (systemd-analyze verify of the units),
# etcd-server (the store of the test Kubernetes API server), nftables + socat (the Azure VM
# port redirect, tested in network namespaces) and
# the Python test tools (the package's [test] extra). Elsewhere it says exactly what to install.
# Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(mariadb-server mariadb-client galera-4 rsync iproute2 procps python3-venv)
FOR_TESTS=0
if [ "${1:-}" = "--test" ]; then
  FOR_TESTS=1
  DEBIAN_PACKAGES+=(chromium chromium-driver haproxy prometheus systemd etcd-server nftables socat)
fi

missing_system() {
  command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || return 0
  command -v mariadb-install-db >/dev/null 2>&1 || return 0
  command -v mariadb >/dev/null 2>&1 || return 0
  [ -e /usr/lib/galera/libgalera_smm.so ] || [ -e /usr/lib64/galera-4/libgalera_smm.so ] || return 0
  command -v rsync >/dev/null 2>&1 || return 0
  command -v ss >/dev/null 2>&1 || return 0
  [ "$FOR_TESTS" = 1 ] || return 1
  [ -x /usr/bin/chromium ] || return 0
  [ -x /usr/bin/chromedriver ] || return 0
  command -v haproxy >/dev/null 2>&1 || return 0
  command -v promtool >/dev/null 2>&1 || return 0
  command -v systemd-analyze >/dev/null 2>&1 || return 0
  command -v etcd >/dev/null 2>&1 || return 0
  command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || return 0
  command -v socat >/dev/null 2>&1 || return 0
  return 1
}

if missing_system; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian packages: ${DEBIAN_PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    # policy-rc.d keeps the package from starting a system mariadb we do not want running.
    had_policy=0; [ -e /usr/sbin/policy-rc.d ] && had_policy=1
    [ "$had_policy" = 1 ] || printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    apt-get install -y -q --no-install-recommends "${DEBIAN_PACKAGES[@]}" >/dev/null
    [ "$had_policy" = 1 ] || rm -f /usr/sbin/policy-rc.d
  else
    echo "setup: MariaDB Galera is not installed, and this is not a root Debian/Ubuntu shell." >&2
    echo "setup: install these packages (Debian/Ubuntu names), then run this again:" >&2
    echo "         ${DEBIAN_PACKAGES[*]}" >&2
    echo "setup: (mariadbd, mariadb-install-db, mariadb, /usr/lib/galera/libgalera_smm.so, rsync, ss;" >&2
    echo "setup:  for the tests also /usr/bin/chromium, /usr/bin/chromedriver, haproxy, promtool," >&2
    echo "setup:  systemd-analyze, etcd, nft, socat)" >&2
    exit 1
  fi
fi

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "setup: galera-health needs Python >= 3.10 as '$PYTHON' (set PYTHON=...)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating virtualenv .venv"
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [ "$FOR_TESTS" = 1 ]; then
  .venv/bin/python -m pip install -q -e ".[test]"
else
  .venv/bin/python -m pip install -q -e .
fi
echo "setup: ready ($(.venv/bin/galera-health --version), $(mariadbd --version 2>/dev/null | cut -d' ' -f1-4))"
