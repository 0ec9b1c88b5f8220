#!/usr/bin/env bash
# Installs (once) what the console's browser test drives, and prints the folder to give the test
# as RECALLOC_TEST_PLAYWRIGHT:
#   - Chromium: Debian's package (apt chromium), skipped when /usr/bin/chromium exists;
#   - Node.js and npm: Debian's packages when there is no node (playwright-core 1.56 runs on
#     Node 18, Debian 12's, and later);
#   - playwright-core, pinned, from npm into the cache folder keyed by its version (no browser
#     download: the test sets executablePath to Debian's chromium).
# Idempotent: a second run only prints the folder.
set -euo pipefail
source "$(dirname "$0")/env.sh"
PLAYWRIGHT_VERSION=1.56.1
dir=$cache/playwright-core-$PLAYWRIGHT_VERSION
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
apt_install() {
  $sudo apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q --no-install-recommends "$@" >/dev/null; }
}

if [ ! -x /usr/bin/chromium ]; then
  say "installing chromium (apt; the console's browser test runs it headless)"
  apt_install chromium
fi
[ -x /usr/bin/chromium ] || die "chromium could not be installed"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  say "installing Node.js and npm (apt nodejs npm; they drive the browser through playwright-core)"
  apt_install nodejs npm
fi
command -v node >/dev/null || die "node could not be installed"

if [ ! -f "$dir/node_modules/playwright-core/package.json" ]; then
  say "installing playwright-core $PLAYWRIGHT_VERSION from npm into $dir (once)"
  rm -rf "$dir"; mkdir -p "$dir"
  # Its own package.json keeps npm from walking up to a parent project.
  echo '{"name": "recalloc-browser-test", "private": true}' >"$dir/package.json"
  (cd "$dir" && npm install --no-audit --no-fund --loglevel=error --save-exact \
    "playwright-core@$PLAYWRIGHT_VERSION" >&2) || die "npm install playwright-core@$PLAYWRIGHT_VERSION failed"
fi
echo "$dir"
