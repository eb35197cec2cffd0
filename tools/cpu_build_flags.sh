#!/usr/bin/env bash
# Print CMAKE_ARGS for building llama.cpp on this CPU, or nothing when the default native build is safe.
#
# Why: llama.cpp builds with -march=native by default. Some virtual machines (seen on Firecracker VMs with
# Sapphire Rapids hosts) advertise AMX in /proc/cpuinfo but do not enable its register state, so the native build
# dies with SIGILL ("Illegal instruction") at the first matrix multiplication. When the CPU claims AMX, we run one
# AMX instruction in a throw-away probe; if that traps, we build without -march=native and enable exactly the
# x86 features the CPU lists, AMX excluded (medbench_local/engine/cpu_flags.py holds the table).
set -uo pipefail
[ "$(uname -m)" = "x86_64" ] || exit 0
grep -q -w amx_tile /proc/cpuinfo 2>/dev/null || exit 0
command -v "${CC:-gcc}" >/dev/null 2>&1 || exit 0
probe_dir="$(mktemp -d)"
trap 'rm -rf "$probe_dir"' EXIT
cat > "$probe_dir/amx.c" <<'C'
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <immintrin.h>
int main(void) {
    unsigned char cfg[64];
    syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */);
    memset(cfg, 0, sizeof cfg);
    cfg[0] = 1; cfg[16] = 64; cfg[48] = 16;
    _tile_loadconfig(cfg);
    _tile_zero(0);
    _tile_release();
    return 0;
}
C
"${CC:-gcc}" -O1 -mamx-tile "$probe_dir/amx.c" -o "$probe_dir/amx" 2>/dev/null || exit 0
if { "$probe_dir/amx"; } >/dev/null 2>&1; then
  exit 0  # AMX works: the native build is fine
fi
# the flags table lives in one place, shared with `doctor` and `run` (they print the same rebuild command)
"${PYTHON:-python3}" "$(dirname "$0")/../medbench_local/engine/cpu_flags.py"
