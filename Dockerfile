# syntax=docker/dockerfile:1.7
#
# gpubench server image. Two variants from one file:
#
#   docker build -t gpubench:0.1.0 .                                  # CUDA (default)
#   docker build -t gpubench:0.1.0-cpu --build-arg VARIANT=cpu .      # CPU only
#
# The CUDA variant compiles with `--features cuda` on the NVIDIA CUDA *devel* image
# (nvcc, headers) and runs on the *runtime* image of the same CUDA version and OS.
# Set CUDA_COMPUTE_CAP to the GPU you will run on (80 A100, 86 A10/RTX 30xx,
# 89 L4/L40S/RTX 40xx, 90 H100/H200): no GPU is visible while the image builds.
#
# No model is baked in: mount one at /models and pass `--model /models/<dir>`,
# or pass nothing and the server provisions the default model into /cache.

ARG VARIANT=cuda
ARG CUDA_VERSION=12.6.3
ARG CUDA_OS=ubuntu24.04
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=trixie

# ---------------------------------------------------------------------------
# Toolchain: the official Rust image, copied into the CUDA devel image below.
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS rust-toolchain

# ---------------------------------------------------------------------------
# Build environment, CUDA: nvcc and CUDA headers + the Rust toolchain.
FROM nvidia/cuda:${CUDA_VERSION}-devel-${CUDA_OS} AS build-cuda
ARG CUDA_COMPUTE_CAP=90
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=rust-toolchain /usr/local/rustup /usr/local/rustup
COPY --from=rust-toolchain /usr/local/cargo /usr/local/cargo
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/cuda/bin:${PATH} \
    CUDA_ROOT=/usr/local/cuda \
    CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP} \
    LIBRARY_PATH=/usr/local/cuda/lib64/stubs \
    CARGO_FEATURES=cuda

# ---------------------------------------------------------------------------
# Build environment, CPU: the Rust image as it is.
FROM rust-toolchain AS build-cpu
ENV CARGO_FEATURES=""

# ---------------------------------------------------------------------------
# Compile gpubench (release) for the chosen variant.
FROM build-${VARIANT} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin gpubench ${CARGO_FEATURES:+--features ${CARGO_FEATURES}} \
 && install -m 0755 target/release/gpubench /usr/local/bin/gpubench

# ---------------------------------------------------------------------------
# Runtime bases: the CUDA runtime image matching the devel image, or plain Debian.
FROM nvidia/cuda:${CUDA_VERSION}-runtime-${CUDA_OS} AS runtime-cuda
FROM debian:${DEBIAN_RELEASE}-slim AS runtime-cpu

# ---------------------------------------------------------------------------
# The image that runs: non-root, no model inside, `gpubench serve` as entrypoint.
FROM runtime-${VARIANT} AS runtime
ARG VARIANT
LABEL org.opencontainers.image.title="gpubench" \
      org.opencontainers.image.description="gpubench LLM inference server (serve) and benchmarking tools" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0" \
      io.gpubench.variant="${VARIANT}"
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 gpubench \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/gpubench --shell /usr/sbin/nologin gpubench \
 && mkdir -p /models /cache /reports \
 && chown 10001:10001 /models /cache /reports
COPY --from=build /usr/local/bin/gpubench /usr/local/bin/gpubench
ENV HF_HOME=/cache/huggingface \
    XDG_CACHE_HOME=/cache \
    RUST_LOG=info
WORKDIR /home/gpubench
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/health || exit 1
ENTRYPOINT ["tini", "--", "gpubench", "serve", "--host", "0.0.0.0"]
CMD ["--port", "8000"]
