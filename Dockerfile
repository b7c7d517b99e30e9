# dwa in containers (docs/operations.md, "Containers"). Two images from one
# file: `--target host` (the host with its first-party plugins) and
# `--target backend` (the local Python backend). `just image` builds both;
# compose.yaml runs them with Redis.

# ---- build: the plugins (Rust, Python and JavaScript guests) and the host.
FROM rust:1.95-bookworm AS build
# Python for componentize-py, Node.js for componentize-js.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-pip python3-venv nodejs npm \
    && rm -rf /var/lib/apt/lists/*
# Pip installs into a venv of its own (Debian's python refuses system installs).
ENV VIRTUAL_ENV=/opt/pyenv PATH=/opt/pyenv/bin:$PATH CARGO_BUILD_JOBS=2
RUN python3 -m venv /opt/pyenv
WORKDIR /src
COPY . .
# The plugins are compiled once here too (`dwa plugins --load`), so that a
# container starts without compiling them (on another CPU the host compiles
# them again, once).
RUN bash scripts/build-plugins.sh \
    && cargo build --release --bin dwa \
    && mkdir -p /out/plugins /out/plugin-cache \
    && cp target/release/dwa /out/dwa \
    && cp plugins/dist/*.json plugins/dist/*.wasm /out/plugins/ \
    && cp shared/catalog.json /out/catalog.json \
    && DWA_PLUGIN_DIR=/out/plugins DWA_PLUGIN_CACHE_DIR=/out/plugin-cache RUST_LOG=warn /out/dwa plugins --load

# ---- host: the binary, its plugins and the generated task catalog.
FROM debian:bookworm-slim AS host
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/dwa --create-home dwa \
    && install -d -o dwa -g dwa /var/lib/dwa/work
COPY --from=build /out/dwa /usr/local/bin/dwa
COPY --from=build /out/plugins /opt/dwa/plugins
COPY --from=build /out/catalog.json /opt/dwa/catalog.json
COPY --from=build --chown=dwa:dwa /out/plugin-cache /var/lib/dwa/plugin-cache
ENV DWA_HOST=0.0.0.0 \
    PORT=3000 \
    DWA_DATA_DIR=/var/lib/dwa \
    DWA_PLUGIN_DIR=/opt/dwa/plugins \
    DWA_PLUGIN_CACHE_DIR=/var/lib/dwa/plugin-cache \
    DWA_TASK_CATALOG=/opt/dwa/catalog.json
USER 10001
EXPOSE 3000
VOLUME ["/var/lib/dwa"]
ENTRYPOINT ["dwa"]
CMD ["serve"]

# ---- backend: the local Python backend (backends/local) with its tasks.
FROM python:3.11-slim-bookworm AS backend
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DWA_WORK_DIR=/var/lib/dwa/work
WORKDIR /app
COPY backends/requirements.txt backends/requirements.txt
# The same pins and --no-deps installs as scripts/python-setup.sh.
RUN pip install --no-cache-dir -r backends/requirements.txt \
    && pip install --no-cache-dir --no-deps scikit-image==0.26.0 scenedetect==0.7.2 face-recognition==1.3.0 \
    && useradd --system --uid 10001 --home-dir /app dwa \
    && install -d -o dwa -g dwa /var/lib/dwa/work
COPY backends backends
COPY shared shared
USER 10001
EXPOSE 8000
CMD ["python", "-m", "backends.local", "--host", "0.0.0.0", "--port", "8000"]
