#!/usr/bin/env bash
# Installs promtool (Debian's prometheus package) for the serve tests'
# `promtool check metrics` of /metrics; quick when already installed.
# The package's own prometheus daemon is not started.
set -euo pipefail
command -v promtool >/dev/null && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
	echo "promtool.sh: not root or no apt-get; the metrics lint is skipped" >&2
	exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# Do not start the daemon the package ships (unless a policy is in place).
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
	trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends prometheus >/dev/null 2>&1 ||
	{ apt-get -o DPkg::Lock::Timeout=600 update >/dev/null 2>&1 && apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends prometheus >/dev/null; }
command -v promtool
