"""The container files (docs/operations.md, "Containers"): the Dockerfile
passes hadolint, and compose.yaml wires the host, Redis and the backend by
the variables the host reads. No Docker engine runs on the build machines,
so the images themselves are built by `just image` where one does; `docker
compose config` checks the compose file when the plugin is there.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
CONFIG_RS = (ROOT / "host/dwa/src/config.rs").read_text()


def host_reads(name: str) -> bool:
    """Whether the host reads the variable (its config, or the OTLP exporter's)."""
    return f'"{name}"' in CONFIG_RS or name.startswith("OTEL_")


def test_the_dockerfile_passes_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"
    r = subprocess.run([str(hadolint), "--config", str(ROOT / ".hadolint.yaml"), str(ROOT / "Dockerfile")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_images_set_only_variables_the_host_reads_and_copy_what_exists():
    host_stage = DOCKERFILE.split("AS host", 1)[1].split("\nFROM ", 1)[0]
    env = re.search(r"^ENV (.*?)(?=^\S)", host_stage, re.S | re.M).group(1)
    names = re.findall(r"([A-Z_][A-Z0-9_]*)=", env)
    assert {"DWA_HOST", "PORT", "DWA_DATA_DIR", "DWA_PLUGIN_DIR", "DWA_TASK_CATALOG"} <= set(names)
    assert [n for n in names if not host_reads(n)] == []
    # The host listens on every interface inside its container.
    assert "DWA_HOST=0.0.0.0" in env
    for src in re.findall(r"^COPY (?!--from)(\S+) ", DOCKERFILE, re.M):
        assert (ROOT / src).exists(), f"COPY {src}: no such file"
    # The backend image installs what scripts/python-setup.sh does.
    setup = (ROOT / "scripts/python-setup.sh").read_text()
    nodeps = re.search(r"nodeps=\((.*?)\)", setup).group(1).split()
    assert f"--no-deps {' '.join(nodeps)}" in DOCKERFILE
    assert re.search(r"^FROM \S+ AS (host|backend)$", DOCKERFILE, re.M)
    assert "USER 10001" in host_stage, "the host does not run as root"


def test_compose_wires_the_host_to_redis_and_the_backend():
    services = COMPOSE["services"]
    assert set(services) == {"host", "backend", "redis"}
    host, backend = services["host"], services["backend"]
    assert host["build"]["target"] == "host" and backend["build"]["target"] == "backend"
    for target in ("host", "backend"):
        assert f" AS {target}\n" in DOCKERFILE
    env = host["environment"]
    assert [n for n in env if not host_reads(n)] == []
    redis = urlparse(env["REDIS_URL"])
    assert redis.scheme == "redis" and redis.hostname == "redis" and redis.port == 6379
    local = urlparse(env["LOCAL_BACKEND_URL"])
    assert local.hostname == "backend"
    cmd = DOCKERFILE.split("AS backend", 1)[1]
    assert f'"--port", "{local.port}"' in cmd and '"--host", "0.0.0.0"' in cmd
    assert set(host["depends_on"]) == {"redis", "backend"}
    assert host["ports"] == ["3000:3000"]
    # Host and backend share the task working folders, at the path each is told.
    work = env["DWA_WORK_DIR"]
    assert f"work:{work}" in host["volumes"] and f"work:{work}" in backend["volumes"]
    assert backend["environment"]["DWA_WORK_DIR"] == work


def test_docker_compose_accepts_the_file():
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("no docker compose here (only the docker client, or none)")
    r = subprocess.run([docker, "compose", "-f", str(ROOT / "compose.yaml"), "config", "-q"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
