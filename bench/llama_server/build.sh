#!/usr/bin/env bash
# Build llama.cpp's llama-server for the benchmark anchor (bench/anchor.py), from the llama.cpp
# source that the llama-cpp-python sdist vendors, at the exact version pinned in constraints.txt.
# A benchmark tool only: Switchyard never runs or depends on it.
#
#   bench/llama_server/build.sh            # -> bench/llama_server/build/bin/llama-server
#   JOBS=4 bench/llama_server/build.sh     # parallel compile jobs (default 2)
#   FULL=1 bench/llama_server/build.sh     # compile ggml and libllama too (a GPU build needs this)
#   FULL=1 CMAKE_EXTRA="-DGGML_CUDA=ON" bench/llama_server/build.sh
#
# By default only the server's own code (common/, tools/server, the UI assets, cpp-httplib) is
# compiled (and libmtmd, when the wheel has none), and it links against the libllama and libggml* that llama-cpp-python built
# from this same vendored source (LLAMA_LIB, default: the llama_cpp/lib of the Python given by
# PYTHON). Both sides of the benchmark then run the very same compiled inference code, and the
# build is ~70 compile units instead of ~350: a full build does not finish in an hour on the
# shared 2-core machine. The server's own code is compiled at -O1 (OPT) for the same reason; the
# hot loops are all in the shared libraries.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
pip="${PIP:-python3 -m pip}"
jobs="${JOBS:-2}"

version="$(sed -n 's/^llama[-_]cpp[-_]python==\(.*\)$/\1/p' "$repo/constraints.txt" | head -1)"
if [ -z "$version" ]; then
  echo "llama-cpp-python is not pinned in constraints.txt" >&2
  exit 1
fi

dl="$here/sdist"
src="$here/src-$version"
build="$here/build"
mkdir -p "$dl"

sdist="$(ls "$dl"/llama_cpp_python-"$version".tar.gz 2>/dev/null || true)"
if [ -z "$sdist" ]; then
  $pip download --no-binary :all: --no-deps "llama-cpp-python==$version" -d "$dl"
  sdist="$dl/llama_cpp_python-$version.tar.gz"
fi

if [ ! -f "$src/CMakeLists.txt" ]; then
  rm -rf "$src" && mkdir -p "$src"
  tar -xzf "$sdist" -C "$src" --strip-components=3 "llama_cpp_python-$version/vendor/llama.cpp"
fi

# -DGGML_NATIVE=OFF matches the llama-cpp-python wheel built for Switchyard's environment;
# -DLLAMA_CURL=OFF: the anchor loads a local GGUF, never a URL.
opt="${OPT:--O1}"
if [ -n "${FULL:-}" ]; then opt="-O3"; fi
cmake -S "$src" -B "$build" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_C_FLAGS_RELEASE="$opt -DNDEBUG" \
  -DCMAKE_CXX_FLAGS_RELEASE="$opt -DNDEBUG" \
  -DGGML_NATIVE=OFF \
  -DLLAMA_CURL=OFF \
  -DLLAMA_OPENSSL=OFF \
  -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=ON \
  -DBUILD_SHARED_LIBS=OFF \
  ${CMAKE_EXTRA:-}

if [ -n "${FULL:-}" ]; then
  cmake --build "$build" --config Release --target llama-server -j "$jobs"
else
  python="${PYTHON:-python3}"
  lib="${LLAMA_LIB:-$("$python" -c 'import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec("llama_cpp").origin), "lib"))')}"
  for so in libllama.so libggml.so libggml-base.so libggml-cpu.so; do
    [ -f "$lib/$so" ] || { echo "$lib/$so is missing: install llama-cpp-python $version, or set LLAMA_LIB, or FULL=1" >&2; exit 1; }
  done
  # libmtmd (the multimodal library the server links) is built by llama-cpp-python only without
  # -DLLAVA_BUILD=OFF, which Switchyard's install sets: compile it here when the wheel has none.
  mtmd_dir=""
  mtmd_link="-lmtmd"
  if [ ! -f "$lib/libmtmd.so" ]; then
    mtmd_dir="tools/mtmd/CMakeFiles/mtmd.dir"
    mtmd_link=""
  fi
  cd "$build"
  # Each target's own objects and archive, without the dependencies CMake would build first.
  for dir in vendor/hash/CMakeFiles/vendor-hash.dir vendor/cpp-httplib/CMakeFiles/cpp-httplib.dir \
             common/CMakeFiles/llama-common-base.dir common/CMakeFiles/llama-common.dir \
             tools/ui/CMakeFiles/llama-ui-assets.dir tools/ui/CMakeFiles/llama-ui.dir \
             tools/server/CMakeFiles/server-context.dir tools/server/CMakeFiles/llama-server-impl.dir $mtmd_dir; do
    make -f "$dir/build.make" "$dir/depend" >/dev/null
    make -j "$jobs" -f "$dir/build.make" "$dir/build"
  done
  make -f tools/server/CMakeFiles/llama-server.dir/build.make tools/server/CMakeFiles/llama-server.dir/main.cpp.o
  # The link line CMake wrote, with the static inference libraries swapped for the wheel's shared ones.
  cd tools/server
  link="$(cat CMakeFiles/llama-server.dir/link.txt)"
  if [ -n "$mtmd_link" ]; then link="$(printf '%s' "$link" | sed -e 's#[^ ]*/libmtmd\.a##')"; fi
  link="$(printf '%s' "$link" | sed -e 's#[^ ]*/libllama\.a##' \
      -e 's#[^ ]*/libggml-cpu\.a##' -e 's#[^ ]*/libggml-base\.a##' -e 's#[^ ]*/libggml\.a##')"
  eval "$link -L'$lib' -Wl,-rpath,'$lib' $mtmd_link -lllama -lggml -lggml-cpu -lggml-base"
  cd "$build"
fi
"$build/bin/llama-server" --version || true
echo "built: $build/bin/llama-server (llama.cpp vendored by llama-cpp-python $version)"
