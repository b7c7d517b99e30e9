#!/usr/bin/env bash
# The Python environment of the backends and their tests: .venv with
# backends/requirements.txt and requirements-ray.txt (pinned). Reinstalls only
# when those files changed.
set -euo pipefail
cd "${DWA_REPO:-$(dirname "$0")/..}"
stamp=.venv/.requirements.sha256
want=$( (cat backends/requirements.txt backends/requirements-ray.txt; grep -o -e 'scikit-image==[0-9.]*' -e 'scenedetect==[0-9.]*' "$0") | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
if ! python3 -m venv .venv 2>/dev/null; then
    # Debian's python3 lacks venv until python3-venv is installed.
    sudo=""
    if [ "$(id -u)" != "0" ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r backends/requirements.txt -r backends/requirements-ray.txt
# Test images only (skimage/data/astronaut.png: a real face): never imported,
# so none of scikit-image's own dependencies are needed.
.venv/bin/python -m pip install --quiet --no-deps scikit-image==0.26.0
# scenedetect asks for opencv-python; the headless OpenCV above serves it.
.venv/bin/python -m pip install --quiet --no-deps scenedetect==0.7.2
echo "$want" > "$stamp"
echo "python environment ready: .venv ($(.venv/bin/python --version))"
