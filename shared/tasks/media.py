"""ffmpeg for the media tasks: the system's, or the static binary the
`imageio-ffmpeg` wheel ships (so a bare Python environment has one)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from .errors import TaskError, require


def ffmpeg() -> str:
    found = shutil.which("ffmpeg")
    if found:
        return found
    return require("media", "imageio-ffmpeg", "imageio_ffmpeg", "or install ffmpeg").get_ffmpeg_exe()


def run(args: list[str], what: str, timeout: float = 3600) -> str:
    """Runs ffmpeg with `args`; a failure names what was being done and ffmpeg's last lines."""
    cmd = [ffmpeg(), "-hide_banner", "-nostdin", "-y", *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TaskError(f"{what}: ffmpeg ran past {timeout:.0f} s", retryable=True) from None
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise TaskError(f"{what}: ffmpeg failed: {tail}")
    return done.stderr


def probe(path: Path) -> dict:
    """Duration (s) and streams of a media file, read from ffmpeg's own report."""
    cmd = [ffmpeg(), "-hide_banner", "-nostdin", "-i", str(path), "-f", "null", "-t", "0", "-"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    text = done.stderr
    if "Invalid data found" in text or "No such file" in text:
        raise TaskError(f"{path.name}: not a media file ffmpeg can read")
    duration = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Duration:"):
            stamp = line.split(",")[0].split("Duration:")[1].strip()
            if stamp != "N/A":
                h, m, s = stamp.split(":")
                duration = int(h) * 3600 + int(m) * 60 + float(s)
    fps = None
    for line in text.splitlines():
        m = re.search(r"Video:.* ([0-9.]+) fps", line)
        if m and fps is None:
            fps = float(m.group(1))
    return {
        "duration": duration,
        "audio": any("Audio:" in line for line in text.splitlines()),
        "video": any("Video:" in line for line in text.splitlines()),
        "fps": fps,
    }

