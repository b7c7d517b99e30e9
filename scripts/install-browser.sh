#!/usr/bin/env bash
# What the dashboard's browser test needs: Debian's chromium (a browser that
# a tool downloads by itself cannot be fetched here) and playwright-core,
# pinned in tests/browser/package-lock.json, which drives it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
    sudo=""
    if [ "$(id -u)" != "0" ]; then sudo="sudo"; fi
    if command -v apt-get >/dev/null 2>&1; then
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
    else
        echo "chromium is missing and apt-get is not available: install Chromium at /usr/bin/chromium" >&2
        exit 1
    fi
fi
/usr/bin/chromium --version 2>/dev/null | head -1
cd tests/browser && npm ci --no-audit --no-fund --loglevel=error
