#!/usr/bin/env bash
# A real headless browser for the web page's tests: Debian's chromium and
# chromium-driver, installed with apt when missing (skipped when present).
# Prints `export` lines for the tests (pkg/server/web/browsertest reads them).
#
# Use:  eval "$(scripts/browser.sh)"
set -euo pipefail

die() { echo "browser: $*" >&2; exit 1; }

if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
	echo "browser: installing chromium and chromium-driver with apt (once)" >&2
	[ "$(id -u)" = 0 ] || SUDO=sudo
	${SUDO:-} apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 || true
	${SUDO:-} env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
		--no-install-recommends chromium chromium-driver >&2 ||
		die "apt-get install chromium chromium-driver failed"
fi
driver=$(command -v chromedriver) || die "chromedriver not on PATH after install"
chromium=$(command -v chromium) || die "chromium not on PATH after install"
"$driver" --version >/dev/null || die "$driver does not run"

printf 'export ORCH_TEST_CHROMEDRIVER=%q\n' "$driver"
printf 'export ORCH_TEST_CHROMIUM=%q\n' "$chromium"
