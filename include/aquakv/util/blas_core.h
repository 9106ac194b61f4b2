// Which OpenBLAS kernel family runs the sgemm calls. Owns: reading OpenBLAS's core name and
// choosing a better one when OpenBLAS does not recognise the CPU. Not: thread counts
// (util/parallel.h).
//
// OpenBLAS picks its kernels from the CPU model at load time; a build older than the CPU (e.g.
// Debian 12's 0.3.21 on Sapphire Rapids) falls back to its SSE3 "Prescott" kernels, measured
// 3x slower on prefill than its "SkylakeX" ones on such a machine. The only switch is the
// OPENBLAS_CORETYPE environment variable, read when the library loads, so the tool re-executes
// itself once with it set (tools/aquakv/main.cpp); a value the user set is always kept.
#pragma once

#include <string>

namespace aquakv {

// OpenBLAS's name for the kernels in use ("SkylakeX", "Haswell", "Prescott", ...).
std::string blas_core_name();

// The OPENBLAS_CORETYPE worth setting on this CPU, or "" when OpenBLAS already uses a kernel
// family for AVX2 or better, the user set the variable, or the CPU has no AVX2+FMA.
std::string blas_core_upgrade();

}  // namespace aquakv
