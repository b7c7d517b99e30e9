#!/usr/bin/env bash
# A Python environment for the backends and their tests, from pinned files:
#   scripts/python-setup.sh                      .venv: requirements.txt + requirements-ray.txt + requirements-test.txt
#   scripts/python-setup.sh VENV REQ...          VENV: requirements.txt + the REQ files
# (`just test-heavy` makes .venv-heavy with requirements-heavy.txt.)
# Reinstalls only when those files changed.
set -euo pipefail
cd "${DWA_REPO:-$(dirname "$0")/..}"
venv="${1:-.venv}"
if [ $# -gt 1 ]; then
    extra=("${@:2}")
else
    extra=(backends/requirements-ray.txt backends/requirements-test.txt)
fi
# Installed --no-deps: scikit-image for its bundled test images only (never
# imported); scenedetect because it asks for opencv-python, whose cv2 would
# overwrite the headless OpenCV of requirements.txt; face-recognition because
# it asks for dlib's source build (requirements.txt has the prebuilt dlib-bin).
nodeps=(scikit-image==0.26.0 scenedetect==0.7.2 face-recognition==1.3.0)
stamp="$venv/.requirements.sha256"
want=$( (cat backends/requirements.txt "${extra[@]}"; echo "${nodeps[*]}") | sha256sum | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
if ! python3 -m venv "$venv" 2>/dev/null; then
    # Debian's python3 lacks venv until python3-venv is installed.
    sudo=""
    if [ "$(id -u)" != "0" ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
fi
reqs=(-r backends/requirements.txt)
for f in "${extra[@]}"; do reqs+=(-r "$f"); done
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "${reqs[@]}"
"$venv/bin/python" -m pip install --quiet --no-deps "${nodeps[@]}"
echo "$want" > "$stamp"
echo "python environment ready: $venv ($("$venv/bin/python" --version))"
