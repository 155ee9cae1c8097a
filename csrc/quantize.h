// Weight quantizers: float32 rows -> rows of GGUF blocks, for writing model files (not on the
// inference path, so ISA-neutral and compiled with the core).
//
// F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 reproduce gguf-py's `gguf.quants.quantize` byte for
// byte (its numpy rounding conventions included), so files we write are the files gguf-py writes.
// The K-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) search per-sub-block scales the way llama.cpp's
// reference quantizers do, then refine the quantized super-block scales against the actual
// reconstruction error, so their error is never worse than a plain round-to-nearest of the scales.
#pragma once
#include <cstddef>
#include <cstdint>

namespace qc {

// True for the types quantize_rows() can produce: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
// Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.
bool can_quantize_to(int32_t type);

// Bytes of one quantized row of n_per_row elements, or 0 when the type cannot be produced or
// n_per_row is not a positive multiple of its block size.
size_t quantized_row_bytes(int32_t type, int64_t n_per_row);

// x: (n_rows, n_per_row) float32, contiguous; out: (n_rows, quantized_row_bytes(type, n_per_row))
// bytes. Rows are independent: they are split over n_threads threads (<= 0: one per core).
// The caller checks can_quantize_to() and the row length first; this function does not.
void quantize_rows(int32_t type, const float* x, void* out, int64_t n_rows, int64_t n_per_row,
                   int n_threads);

}  // namespace qc
