#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` (a real peer server for the load-test and serve tests and
# for scripts/bench-serve) from the llama.cpp sources vendored in the llama-cpp-python sdist.
# Portable flags: no -march=native, AMX off (AMX tiles fault in some VMs even when cpuid lists
# them), AVX-512 only when this CPU has it. Idempotent; prints where the binary is.
# Skips with a message (exit 0) when cmake or the sdist cannot be had.
set -euo pipefail
version=0.3.36
cache="${GPUBENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpubench}"
dir="$cache/peers/llama.cpp-$version"
bin="$dir/bin/llama-server"
if [ -x "$bin" ]; then
  echo "llama-server: $bin"
  exit 0
fi
if ! command -v cmake >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null && apt-get install -y -qq cmake >/dev/null
  fi
fi
if ! command -v cmake >/dev/null; then
  echo "llama-server: cmake missing, not built (tests against it will skip)"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if ! python3 -m pip download -q --no-deps --no-binary :all: --disable-pip-version-check \
    "llama-cpp-python==$version" -d "$work" >/dev/null 2>&1; then
  echo "llama-server: the llama-cpp-python==$version sources could not be downloaded (tests against it will skip)"
  exit 0
fi
tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
src="$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)"
avx512=OFF
grep -qw avx512f /proc/cpuinfo && grep -qw avx512bw /proc/cpuinfo && avx512=ON
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
  -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
  -DGGML_AVX512="$avx512" -DGGML_AVX512_VNNI="$avx512" \
  -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
  -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  >"$work/cmake.log" 2>&1 || { tail -20 "$work/cmake.log"; echo "llama-server: cmake configure failed"; exit 0; }
cmake --build "$work/build" --target llama-server -j"$(nproc)" >"$work/build.log" 2>&1 \
  || { tail -20 "$work/build.log"; echo "llama-server: build failed (tests against it will skip)"; exit 0; }
mkdir -p "$dir/bin"
cp "$work/build/bin/llama-server" "$bin.tmp.$$"
mv "$bin.tmp.$$" "$bin"
echo "llama-server: $bin"
