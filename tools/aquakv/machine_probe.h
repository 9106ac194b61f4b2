// Measured machine limits for speed reports: read bandwidth from memory and the sgemm rate, on
// the threads in use. Owns: those two probes. Not: the cost models that use them (cmd_bench).
#pragma once

namespace aquakv::cli {

// Bytes/s reading a 256 MiB buffer (larger than any cache), best of 3, all threads.
double measure_read_bandwidth();
// Flop/s of OpenBLAS sgemm on 512 x 512 x 512 (2 m n k flops), best of 3, all threads.
double measure_sgemm_rate();

}  // namespace aquakv::cli
