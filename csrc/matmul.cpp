#include "matmul.h"

#include <algorithm>
#include <atomic>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "repack.h"

namespace qc {

static const WeightKernels& checked(const Kernels& K, int32_t wtype, int64_t n_in) {
  if (wtype < 0 || wtype >= GGML_TYPE_COUNT || !K.weight[wtype].vec_dot)
    throw std::invalid_argument("matmul: no kernel for tensor type " + std::to_string(wtype));
  const WeightKernels& wk = K.weight[wtype];
  const int64_t blk = type_info(wtype).block_elems, act_blk = type_info(wk.act_type).block_elems;
  if (n_in <= 0 || n_in % blk != 0 || n_in % act_blk != 0)
    throw std::invalid_argument(std::string("matmul: row length ") + std::to_string(n_in) +
                                " is not a multiple of the " + type_info(wtype).name + " block size");
  return wk;
}

// The ways one weight's rows are multiplied, chosen per product by route() (for rows computed
// alone, matmul.h, as for one token; the gemv routes then take the rows one by one, rows_alone,
// or where the kernel has a gemv_rows, several at a time):
//   kGemm       several tokens and the type has a gemm: tiles of rows x chunks of tokens (prefill);
//   kGemv       one token, the type has a gemv and the row length fits its activation layout;
//   kVecDot     otherwise: one vec_dot per output, in tiles of 16 rows;
//   kLayoutGemv one token over repacked rows (repack.h) and the path has that layout's gemv;
//   kLayoutGemm several tokens over repacked rows and the path has that layout's gemm;
//   kUnrepack   repacked rows otherwise: unpacked a block of rows at a time, then as stored.
enum Route { kGemm, kGemv, kVecDot, kLayoutGemv, kLayoutGemm, kUnrepack };

// The route of rows in the stored layout (one of the first three).
static Route stored_route(const WeightKernels& wk, int64_t n_in, int64_t n_tok) {
  if (n_tok > 1 && wk.gemm) return kGemm;
  if (n_tok == 1 && wk.gemv && n_in % act_block_elems(wk.gemv_act) == 0) return kGemv;
  return kVecDot;
}

static Route route(const Kernels& K, const MatmulOutput& o, int64_t n_in, int64_t n_tok) {
  if (o.layout == QC_LAYOUT_STORED) return stored_route(checked(K, o.wtype, n_in), n_in, n_tok);
  if (o.layout < 0 || o.layout >= QC_LAYOUT_COUNT || repack_base_type(o.layout) != o.wtype)
    throw std::invalid_argument("matmul: " + std::string(type_info(o.wtype).name) + " weights in an unknown layout " +
                                std::to_string(o.layout));
  if (n_tok == 1 && K.layout[o.layout].gemv) return kLayoutGemv;
  return n_tok > 1 && K.layout[o.layout].gemm ? kLayoutGemm : kUnrepack;
}

// The activation format the product reads: its kernel's layout where it has one, else the type's
// activation type.
static int32_t act_format(const Kernels& K, const MatmulOutput& o, int64_t n_in, int64_t n_tok) {
  const WeightKernels& wk = checked(K, o.wtype, n_in);
  Route r = route(K, o, n_in, n_tok);
  if (r == kLayoutGemv) return K.layout[o.layout].gemv_act;
  if (r == kUnrepack) r = stored_route(wk, n_in, n_tok);
  if (r == kLayoutGemm) r = kGemm;  // the stored gemm's activations (LayoutKernels::gemm)
  if (r == kGemv) return wk.gemv_act;
  if (r == kGemm && wk.gemm_act >= 0) return wk.gemm_act;
  return wk.act_type;
}

// The activation formats a group needs, each once: fmt[i] and the byte offset of its rows in scratch.
struct ActLayout {
  int n = 0;
  int32_t fmt[4];
  size_t offset[4];
  size_t total = 0;
};

// alone: the rows are quantized as a one-token product's (matmul_group).
static ActLayout act_layout(const Kernels& K, const MatmulOutput* outs, int n_outs, int64_t n_in, int64_t n_tok,
                            bool alone) {
  ActLayout L;
  for (int i = 0; i < n_outs; ++i) {
    const int32_t f = act_format(K, outs[i], n_in, alone ? 1 : n_tok);
    bool seen = false;
    for (int j = 0; j < L.n; ++j) seen |= L.fmt[j] == f;
    if (seen) continue;
    if (L.n == 4) throw std::invalid_argument("matmul_group: too many activation formats");
    L.fmt[L.n] = f;
    L.offset[L.n] = L.total;
    L.total += act_row_bytes(f, n_in) * (size_t)n_tok;
    ++L.n;
  }
  return L;
}

// Enough for any call with 1 .. n_tok tokens, together or alone (the decode layouts may be larger).
size_t matmul_group_scratch_bytes(const Kernels& K, const MatmulOutput* outs, int n_outs, int64_t n_in, int64_t n_tok) {
  const size_t together = act_layout(K, outs, n_outs, n_in, n_tok, false).total,
               alone = act_layout(K, outs, n_outs, n_in, n_tok, true).total;
  return together > alone ? together : alone;
}

size_t matmul_scratch_bytes(const Kernels& K, int32_t wtype, int64_t n_in, int64_t n_tok, int32_t layout) {
  const MatmulOutput one{nullptr, wtype, 0, nullptr, layout};
  return matmul_group_scratch_bytes(K, &one, 1, n_in, n_tok);
}

// Several activation rows, each through a decode kernel exactly as a product of that row alone:
// gemv(w, n_rows, act, y) for one row over n_rows weight rows from w. The weight rows go in blocks
// of about kBlockBytes, which stay in L2 while every activation row passes over them, so the
// weights are read from memory once for all the rows. unit: rows per block are a multiple of it.
template <class Gemv>
static void rows_alone(const uint8_t* w, size_t w_row, int64_t n_rows, int64_t unit, const uint8_t* act,
                       size_t act_row, int64_t n_tok, float* y, size_t y_stride, Gemv&& gemv) {
  constexpr size_t kBlockBytes = 64 * 1024;
  if (n_tok == 1) return gemv(w, n_rows, act, y);
  int64_t block = (int64_t)(kBlockBytes / w_row);
  block = block < unit ? unit : block - block % unit;
  for (int64_t rb = 0; rb < n_rows; rb += block) {
    const int64_t nb = n_rows - rb < block ? n_rows - rb : block;
    for (int64_t t = 0; t < n_tok; ++t) gemv(w + rb * w_row, nb, act + t * act_row, y + t * y_stride + rb);
  }
}

// rows_alone for a kernel that also takes several activation rows per pass over the weights
// (gemv_rows): per block of weight rows, the first n_first activation rows (first(wb, nb, a, na,
// yb)), which stream the block from memory, then the other rows together (gemv_rows) over the
// block in L2, the weights unpacked once for them: for the stored layouts whose gemv_rows does not
// stream best (n_first 1: the one-row gemv; WeightKernels::gemv_rows_streams) and the repacked
// ones whose kernels say so (LayoutKernels::gemv_rows_first) (bench/README.md, "Several sequences
// at once").
template <class First, class GemvRows>
static void rows_first_then_rest(const uint8_t* w, size_t w_row, int64_t n_rows, int64_t unit, const uint8_t* act,
                                 size_t act_row, int64_t n_tok, int64_t n_first, float* y, size_t y_stride,
                                 First&& first, GemvRows&& gemv_rows) {
  constexpr size_t kBlockBytes = 64 * 1024;
  int64_t block = (int64_t)(kBlockBytes / w_row);
  block = block < unit ? unit : block - block % unit;
  if (n_first > n_tok) n_first = n_tok;
  for (int64_t rb = 0; rb < n_rows; rb += block) {
    const int64_t nb = n_rows - rb < block ? n_rows - rb : block;
    first(w + rb * w_row, nb, act, n_first, y + rb);
    if (n_tok > n_first) gemv_rows(w + rb * w_row, nb, act + n_first * act_row, n_tok - n_first, y + n_first * y_stride + rb);
  }
}

// Prefill: the tile kernel gemm over the rows x a chunk of tokens at a time. The chunk's quantized
// activations (about kActChunkBytes) stay in this core's L2 while the weight rows stream past once
// per chunk; inside, each tile of a few weight rows stays in L1 while the chunk's tokens pass
// (gemm_impl.h). Larger chunks read the weights fewer times but spill the activations out of L2.
// At least min_tokens all the same: the tile kernels repack each tile of weights once per chunk,
// and with the long rows of the FFN down projections (8960 wide: 18 tokens in 192 KB) the
// repacking outweighed the spill (figures: bench/README.md, "Kernel design measurements").
static void gemm_chunks(gemm_fn gemm, int min_tokens, int64_t n_in, const uint8_t* w, size_t w_row, int64_t n_rows,
                        const uint8_t* act, size_t act_row, int64_t n_tok, float* y, size_t y_stride) {
  constexpr size_t kActChunkBytes = 192 * 1024;
  int64_t chunk = (int64_t)(kActChunkBytes / act_row);
  chunk = chunk < min_tokens ? min_tokens : chunk - chunk % 8;
  for (int64_t t0 = 0; t0 < n_tok; t0 += chunk) {
    const int64_t nt = n_tok - t0 < chunk ? n_tok - t0 : chunk;
    gemm(n_in, w, w_row, (int)n_rows, act + t0 * act_row, act_row, (int)nt, y + t0 * y_stride, y_stride);
  }
}

// y[t * y_stride + r] = dot(row r of w, activation row t) for r < n_rows, t < n_tok: the rows in
// the stored layout (w_row bytes apart), the activations in this type's format for n_tok tokens
// (alone: in a one-token product's format, each row computed as that product would).
static void stored_rows(const WeightKernels& wk, int64_t n_in, const uint8_t* w, size_t w_row, int64_t n_rows,
                        const uint8_t* act, size_t act_row, int64_t n_tok, float* y, size_t y_stride, bool alone) {
  const Route r = stored_route(wk, n_in, alone ? 1 : n_tok);
  if (r == kGemm) {
    gemm_chunks(wk.gemm, wk.gemm_min_tokens, n_in, w, w_row, n_rows, act, act_row, n_tok, y, y_stride);
  } else if (r == kGemv && n_tok > 1 && wk.gemv_rows && wk.gemv_rows_streams) {
    wk.gemv_rows(n_in, w, w_row, (int)n_rows, act, act_row, (int)n_tok, y, y_stride);
  } else if (r == kGemv && n_tok > 1 && wk.gemv_rows) {
    rows_first_then_rest(w, w_row, n_rows, 4, act, act_row, n_tok, 1, y, y_stride,
                         [&](const uint8_t* wb, int64_t nb, const uint8_t* a, int64_t, float* yb) { wk.gemv(n_in, wb, w_row, (int)nb, a, yb); },
                         [&](const uint8_t* wb, int64_t nb, const uint8_t* a, int64_t na, float* yb) {
                           wk.gemv_rows(n_in, wb, w_row, (int)nb, a, act_row, (int)na, yb, y_stride);
                         });
  } else if (r == kGemv) {
    rows_alone(w, w_row, n_rows, 4, act, act_row, n_tok, y, y_stride, [&](const uint8_t* wb, int64_t nb, const uint8_t* a, float* yb) {
      wk.gemv(n_in, wb, w_row, (int)nb, a, yb);
    });
  } else {
    // kVecDot: tiles of weight rows, so that for several tokens a tile is reused while in cache.
    constexpr int64_t kRowTile = 16;
    for (int64_t rt = 0; rt < n_rows; rt += kRowTile) {
      const int64_t rt_end = rt + kRowTile < n_rows ? rt + kRowTile : n_rows;
      for (int64_t t = 0; t < n_tok; ++t) {
        const uint8_t* a = act + t * act_row;
        float* yt = y + t * y_stride;
        for (int64_t r = rt; r < rt_end; ++r) yt[r] = wk.vec_dot(n_in, w + r * w_row, a);
      }
    }
  }
}

// Rows r0 .. r1 of one output for n_tok activation rows at act, in the format act_format gives it
// (alone: as matmul_group's).
static void output_rows(const Kernels& K, const MatmulOutput& o, int64_t n_in, const uint8_t* act, int64_t n_tok,
                        bool alone, int64_t r0, int64_t r1) {
  const int64_t n_kernel = alone ? 1 : n_tok;
  const size_t act_row = act_row_bytes(act_format(K, o, n_in, n_kernel), n_in), w_row = row_bytes(o.wtype, n_in);
  const uint8_t* w = static_cast<const uint8_t*>(o.w);
  const WeightKernels& wk = K.weight[o.wtype];
  const Route r = route(K, o, n_in, n_kernel);
  const int64_t tile_rows = repack_rows_of(o.layout);
  if (o.layout != QC_LAYOUT_STORED && (r0 % tile_rows != 0 || (r1 - r0) % tile_rows != 0))
    throw std::logic_error("matmul: repacked rows split off a tile");  // MatmulOutput::layout's rule
  if (r == kLayoutGemv && n_tok > 1 && K.layout[o.layout].gemv_rows) {
    const gemv_rows_fn gemv_rows = K.layout[o.layout].gemv_rows;
    auto rows_fn = [&](const uint8_t* wb, int64_t nb, const uint8_t* a, int64_t na, float* yb) {
      gemv_rows(n_in, wb, w_row, (int)nb, a, act_row, (int)na, yb, (size_t)o.n_out);
    };
    if (const int64_t n_first = K.layout[o.layout].gemv_rows_first)
      rows_first_then_rest(w + r0 * w_row, w_row, r1 - r0, tile_rows, act, act_row, n_tok, n_first, o.y + r0,
                           (size_t)o.n_out, rows_fn, rows_fn);
    else  // every row at once over each tile of weights
      rows_fn(w + r0 * w_row, r1 - r0, act, n_tok, o.y + r0);
  } else if (r == kLayoutGemv) {
    const gemv_fn gemv = K.layout[o.layout].gemv;
    rows_alone(w + r0 * w_row, w_row, r1 - r0, tile_rows, act, act_row, n_tok, o.y + r0, (size_t)o.n_out,
               [&](const uint8_t* wb, int64_t nb, const uint8_t* a, float* yb) { gemv(n_in, wb, w_row, (int)nb, a, yb); });
  } else if (r == kLayoutGemm || r == kUnrepack) {
    // A block of rows at a time, about kBlockBytes, so that it stays in L2 beside the activations
    // while every chunk of tokens passes: read where it is by the layout's gemm, or unpacked back
    // to the stored layout in this thread's buffer and multiplied as stored (unpacking is a copy,
    // small beside a product over tens or hundreds of tokens).
    constexpr size_t kBlockBytes = 64 * 1024;
    const int64_t tile = std::lcm<int64_t>(wk.gemm_rows, tile_rows);
    int64_t block = (int64_t)(kBlockBytes / w_row);
    block = block < tile ? tile : block - block % tile;
    thread_local std::vector<uint8_t> unpacked;
    if (r == kUnrepack && unpacked.size() < (size_t)block * w_row) unpacked.resize((size_t)block * w_row);
    for (int64_t rb = r0; rb < r1; rb += block) {
      const int64_t nb = r1 - rb < block ? r1 - rb : block;
      if (r == kLayoutGemm) {
        gemm_chunks(K.layout[o.layout].gemm, wk.gemm_min_tokens, n_in, w + rb * w_row, w_row, nb, act, act_row, n_tok,
                    o.y + rb, (size_t)o.n_out);
      } else {
        unrepack_rows(o.layout, w + rb * w_row, nb, n_in, unpacked.data());
        stored_rows(wk, n_in, unpacked.data(), w_row, nb, act, act_row, n_tok, o.y + rb, (size_t)o.n_out, alone);
      }
    }
  } else {
    stored_rows(wk, n_in, w + r0 * w_row, w_row, r1 - r0, act, act_row, n_tok, o.y + r0, (size_t)o.n_out, alone);
  }
}

// matmul_group, or with each: output i multiplies row i of x (n_outs rows), as one token alone.
static void group(ThreadPool& pool, const Kernels& K, const MatmulOutput* outs, int n_outs, int64_t n_in,
                  const float* x, int64_t n_tok, void* act_scratch, bool alone, bool each) {
  if (n_tok == 1 || each) alone = true;  // the same thing
  const int64_t n_kernel = alone ? 1 : n_tok;  // the token count the kernels are chosen for
  const int64_t n_x = each ? n_outs : n_tok;    // rows of x
  const ActLayout L = act_layout(K, outs, n_outs, n_in, n_x, alone);
  uint8_t* scratch = static_cast<uint8_t*>(act_scratch);

  // 1. Quantize the input once per activation format.
  auto quantize_rows = [&](int64_t t0, int64_t t1) {
    for (int j = 0; j < L.n; ++j) {
      const size_t act_row = act_row_bytes(L.fmt[j], n_in);
      for (int64_t t = t0; t < t1; ++t) K.quantize_act[L.fmt[j]](x + t * n_in, scratch + L.offset[j] + t * act_row, n_in);
    }
  };
  if (n_tok == 1 || each) {
    quantize_rows(0, n_x);  // one row per output, a few: cheaper on this thread than a barrier
  } else {
    pool.run([&](int ith, int nth) {
      int64_t t0, t1;
      split_range(n_tok, ith, nth, &t0, &t1);
      quantize_rows(t0, t1);
    });
  }

  // 2. The output rows of all weights form one index space [0, total_rows) split across threads
  // (contiguous ranges: each thread reads only its share of every weight).
  int64_t total_rows = 0;
  for (int i = 0; i < n_outs; ++i) total_rows += outs[i].n_out;
  // in units of the gemm's tile rows for several tokens (WeightKernels::gemm_rows): a tile cut in
  // two by the split would cost both threads a full tile's work; of 4 for one token: the gemv
  // kernels take 4 rows per pass, repacked weights 4 or 16 rows per tile (repack.h)
  int64_t unit = 4;
  for (int i = 0; i < n_outs; ++i) {
    if (outs[i].layout != QC_LAYOUT_STORED) unit = std::lcm<int64_t>(unit, repack_rows_of(outs[i].layout));
    if (n_kernel > 1) unit = std::lcm<int64_t>(unit, K.weight[outs[i].wtype].gemm_rows);
  }
  auto rows = [&](int64_t g0, int64_t g1) {  // rows [g0, g1) of the index space
    g0 = g0 < total_rows ? g0 : total_rows;
    g1 = g1 < total_rows ? g1 : total_rows;
    int64_t base = 0;
    for (int i = 0; i < n_outs && g0 < g1; base += outs[i].n_out, ++i) {
      const MatmulOutput& o = outs[i];
      if (g0 >= base + o.n_out) continue;
      const int64_t r0 = g0 - base, r1 = (g1 < base + o.n_out ? g1 : base + o.n_out) - base;
      const int32_t fmt = act_format(K, o, n_in, n_kernel);
      int j = 0;
      while (L.fmt[j] != fmt) ++j;
      const uint8_t* act = scratch + L.offset[j] + (each ? i * act_row_bytes(fmt, n_in) : 0);
      output_rows(K, o, n_in, act, each ? 1 : n_tok, alone, r0, r1);
      g0 = base + r1;
    }
  };
  if (n_kernel < kGemmMinTokens)  // decode steps, short products: each thread one contiguous share
    return share(pool, total_rows, unit, 0, rows);
  // A prefill product (milliseconds): 8 pieces per thread, each taken by whichever thread is free,
  // so that a thread the machine stalls for a while costs a piece, not its whole share; same rows,
  // same kernels, same bits
  const int64_t n_units = (total_rows + unit - 1) / unit;
  const int64_t piece = (n_units + 8 * pool.size() - 1) / (8 * pool.size()) * unit;
  std::atomic<int64_t> next{0};
  pool.run([&](int, int) {
    for (int64_t g0; (g0 = next.fetch_add(piece, std::memory_order_relaxed)) < total_rows;) rows(g0, g0 + piece);
  });
}

void matmul_group(ThreadPool& pool, const Kernels& K, const MatmulOutput* outs, int n_outs, int64_t n_in,
                  const float* x, int64_t n_tok, void* act_scratch, bool alone) {
  group(pool, K, outs, n_outs, n_in, x, n_tok, act_scratch, alone, false);
}

void matmul_each(ThreadPool& pool, const Kernels& K, const MatmulOutput* outs, int n_outs, int64_t n_in,
                 const float* x, void* act_scratch) {
  group(pool, K, outs, n_outs, n_in, x, 1, act_scratch, true, true);
}

void matmul(ThreadPool& pool, const Kernels& K, const void* W, int32_t wtype, int64_t n_out, int64_t n_in,
            const float* x, int64_t n_tok, float* y, void* act_scratch, int32_t layout, bool alone) {
  const MatmulOutput one{W, wtype, n_out, y, layout};
  matmul_group(pool, K, &one, 1, n_in, x, n_tok, act_scratch, alone);
}

}  // namespace qc
