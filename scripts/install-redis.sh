#!/usr/bin/env bash
# Makes sure a redis-server binary exists (the tests start their own servers
# on free ports; nothing depends on a Redis already running).
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
    redis-server --version
    exit 0
fi
sudo=""
if [ "$(id -u)" != "0" ]; then sudo="sudo"; fi
if command -v apt-get >/dev/null 2>&1; then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
    # The package may start a system service; the tests do not use it.
    $sudo service redis-server stop >/dev/null 2>&1 || true
else
    echo "redis-server is missing and apt-get is not available: install Redis 7 yourself" >&2
    exit 1
fi
redis-server --version
