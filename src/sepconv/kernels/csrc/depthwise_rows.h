// The row machinery of the depthwise kernels, shared by depthwise.cpp (the convolution on its own) and
// dw_bn_act.cpp (the convolution fused with BatchNorm and the activation).
//
// Layout: input [N, H, W, C] in memory (channels_last), weight re-laid out as [KH][KW][C], so every
// inner loop runs over the contiguous channels in 256-bit vectors (GCC vector extensions: AVX2 where
// the build enables it, two SSE halves otherwise). Each output row is computed from a list of "taps"
// (source row, column offset, weight vector); the same row routine serves the forward (a correlation)
// and grad_input (a gather per input pixel: no write conflicts between threads).
//
// Storage and arithmetic: the source rows may be stored in a narrower type S than the one the sums run
// in, T (bfloat16 activations under autocast, summed in float): each source vector is widened as it is
// loaded, so a bf16 tensor is read as half the bytes and never copied to float first.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

template <typename T>
struct Simd;
template <>
struct Simd<float> {
  typedef float V __attribute__((vector_size(32)));
  static constexpr int L = 8;
};
template <>
struct Simd<double> {
  typedef double V __attribute__((vector_size(32)));
  static constexpr int L = 4;
};

// Unaligned vector load / store (memcpy compiles to one vmovups).
template <typename V, typename T>
inline V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename T>
inline void store(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

// A vector of T from source storage S: a plain load, or, for bfloat16, eight values widened to float
// (a bfloat16 is the upper half of a float's bits).
template <typename V, typename S>
inline V load_source(const S* p) {
  if constexpr (std::is_same_v<S, c10::BFloat16>) {
    typedef uint16_t U16 __attribute__((vector_size(16)));
    typedef uint32_t U32 __attribute__((vector_size(32)));
    static_assert(sizeof(V) == sizeof(U32), "bfloat16 sources are summed in float");
    const U32 bits = __builtin_convertvector(load<U16>(p), U32) << 16;
    V v;
    std::memcpy(&v, &bits, sizeof(V));
    return v;
  } else {
    return load<V>(p);
  }
}

inline int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}
inline int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }

struct Geometry {
  int64_t n, c, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw;
};

// One term of a row sum: source row (pixels of C values, stored as S), column = a * q + offset, weight
// vector [C] (in the arithmetic type T).
template <typename T, typename S = T>
struct Tap {
  const S* src_row;
  int64_t offset;
  const T* weight;
};

// Outputs j = 0..Q-1 at out + j * out_step: sum over taps of src[(column + j * a + offset) * C + c] * weight[c],
// every tap's column known to be inside its row. Q accumulators per channel vector, so each weight vector
// loaded serves Q FMAs.
template <typename T, typename S, int Q>
inline void interior_block(T* out, int64_t out_step, const std::vector<Tap<T, S>>& taps, int64_t column, int64_t a,
                           int64_t C) {
  using V = typename Simd<T>::V;
  constexpr int L = Simd<T>::L;
  const int64_t vector_channels = C - C % L, src_step = a * C;
  for (int64_t c = 0; c < vector_channels; c += L) {
    V acc[Q];
#pragma GCC unroll 8
    for (int j = 0; j < Q; ++j) acc[j] = V{};
    for (const auto& t : taps) {
      const V wv = load<V>(t.weight + c);
      const S* s = t.src_row + (column + t.offset) * C + c;
#pragma GCC unroll 8
      for (int j = 0; j < Q; ++j) acc[j] += load_source<V>(s + j * src_step) * wv;
    }
#pragma GCC unroll 8
    for (int j = 0; j < Q; ++j) store(out + j * out_step + c, acc[j]);
  }
  for (int64_t c = vector_channels; c < C; ++c) {
    T acc[Q];
#pragma GCC unroll 8
    for (int j = 0; j < Q; ++j) acc[j] = T(0);
    for (const auto& t : taps) {
      const S* s = t.src_row + (column + t.offset) * C + c;
#pragma GCC unroll 8
      for (int j = 0; j < Q; ++j) acc[j] += static_cast<T>(s[j * src_step]) * t.weight[c];
    }
#pragma GCC unroll 8
    for (int j = 0; j < Q; ++j) out[j * out_step + c] = acc[j];
  }
}

// One output next to the border: taps whose column falls outside [0, width) are skipped (zero padding).
template <typename T, typename S>
inline void border_pixel(T* out, const std::vector<Tap<T, S>>& taps, int64_t column, int64_t width, int64_t C) {
  using V = typename Simd<T>::V;
  constexpr int L = Simd<T>::L;
  const int64_t vector_channels = C - C % L;
  for (int64_t c = 0; c < vector_channels; c += L) {
    V acc = {};
    for (const auto& t : taps) {
      const int64_t col = column + t.offset;
      if (col >= 0 && col < width) acc += load_source<V>(t.src_row + col * C + c) * load<V>(t.weight + c);
    }
    store(out + c, acc);
  }
  for (int64_t c = vector_channels; c < C; ++c) {
    T acc = T(0);
    for (const auto& t : taps) {
      const int64_t col = column + t.offset;
      if (col >= 0 && col < width) acc += static_cast<T>(t.src_row[col * C + c]) * t.weight[c];
    }
    out[c] = acc;
  }
}

// K taps on one source row at consecutive columns (offset, offset + 1, ..., offset + K - 1): a "run".
template <typename T, typename S, int K>
struct Run {
  const S* src_row;
  int64_t offset;
  const T* weight[K];
};

// The taps as runs of K, when they are (in any order within a run, as grad_input lists them backwards);
// false otherwise. Only used where a == 1 (consecutive outputs read consecutive source columns).
template <typename T, typename S, int K>
bool as_runs(const std::vector<Tap<T, S>>& taps, std::vector<Run<T, S, K>>& runs) {
  runs.clear();
  if (taps.empty() || taps.size() % K != 0) return false;
  for (size_t i = 0; i < taps.size(); i += K) {
    Run<T, S, K> run;
    run.src_row = taps[i].src_row;
    run.offset = taps[i].offset;
    for (int k = 1; k < K; ++k) run.offset = std::min(run.offset, taps[i + k].offset);
    bool seen[K] = {};
    for (int k = 0; k < K; ++k) {
      const Tap<T, S>& t = taps[i + k];
      const int64_t slot = t.offset - run.offset;
      if (t.src_row != run.src_row || slot >= K || seen[slot]) return false;
      seen[slot] = true;
      run.weight[slot] = t.weight;
    }
    runs.push_back(run);
  }
  return true;
}

// Outputs j = 0..Q-1 (source columns column + j + offset + k) from runs of K taps: each source vector is
// loaded once for the up to K outputs that use it, instead of once per tap (the load ports, not the
// FMAs or memory, bounded the tap-by-tap loop: 37 loads per 36 FMAs at a 3x3 kernel).
template <typename T, typename S, int K, int Q>
inline void interior_runs(T* out, int64_t out_step, const std::vector<Run<T, S, K>>& runs, int64_t column,
                          int64_t C) {
  using V = typename Simd<T>::V;
  constexpr int L = Simd<T>::L;
  const int64_t vector_channels = C - C % L;
  for (int64_t c = 0; c < vector_channels; c += L) {
    V acc[Q];
#pragma GCC unroll 8
    for (int j = 0; j < Q; ++j) acc[j] = V{};
    for (const auto& r : runs) {
      V w[K];
#pragma GCC unroll 8
      for (int k = 0; k < K; ++k) w[k] = load<V>(r.weight[k] + c);
      const S* s = r.src_row + (column + r.offset) * C + c;
#pragma GCC unroll 16
      for (int i = 0; i < Q + K - 1; ++i) {
        const V v = load_source<V>(s + i * C);
#pragma GCC unroll 8
        for (int k = 0; k < K; ++k) {
          const int j = i - k;
          if (j >= 0 && j < Q) acc[j] += v * w[k];
        }
      }
    }
#pragma GCC unroll 8
    for (int j = 0; j < Q; ++j) store(out + j * out_step + c, acc[j]);
  }
  for (int64_t c = vector_channels; c < C; ++c) {
    T acc[Q];
#pragma GCC unroll 8
    for (int j = 0; j < Q; ++j) acc[j] = T(0);
    for (const auto& r : runs) {
      const S* s = r.src_row + (column + r.offset) * C + c;
      for (int j = 0; j < Q; ++j) {
        for (int k = 0; k < K; ++k) acc[j] += static_cast<T>(s[(j + k) * C]) * r.weight[k][c];
      }
    }
#pragma GCC unroll 8
    for (int j = 0; j < Q; ++j) out[j * out_step + c] = acc[j];
  }
}

// The interior outputs [q, hi) by runs of K taps, four at a time; returns where it stopped.
template <typename T, typename S, int K>
int64_t interior_by_runs(T* out, int64_t start, int64_t step, int64_t q, int64_t hi,
                         const std::vector<Tap<T, S>>& taps, int64_t C) {
  thread_local std::vector<Run<T, S, K>> runs;
  if (!as_runs<T, S, K>(taps, runs)) return q;
  for (; q + 4 <= hi; q += 4) interior_runs<T, S, K, 4>(out + (start + step * q) * C, step * C, runs, q, C);
  return q;
}

// out[(start + step * q) * C + c] = sum over taps of src[(a * q + offset) * C + c] * weight[c], for q in
// [0, count); a tap whose column falls outside [0, width) contributes nothing (zero padding).
template <typename T, typename S>
void tap_row(T* out, int64_t start, int64_t step, int64_t count, const std::vector<Tap<T, S>>& taps, int64_t a,
             int64_t width, int64_t C) {
  // Interior: the q for which every tap's column is inside the source row (no checks needed there).
  int64_t lo = 0, hi = count;
  for (const auto& t : taps) {
    lo = std::max(lo, ceil_div(-t.offset, a));
    hi = std::min(hi, floor_div(width - 1 - t.offset, a) + 1);
  }
  lo = std::min(lo, count);
  hi = std::min(std::max(hi, lo), count);
  const int64_t out_step = step * C;
  for (int64_t q = 0; q < lo; ++q) border_pixel(out + (start + step * q) * C, taps, a * q, width, C);
  int64_t q = lo;
  if (a == 1 && taps.size() % 3 == 0) q = interior_by_runs<T, S, 3>(out, start, step, q, hi, taps, C);
  if (a == 1 && taps.size() % 5 == 0 && q == lo) q = interior_by_runs<T, S, 5>(out, start, step, q, hi, taps, C);
  for (; q + 8 <= hi; q += 8) interior_block<T, S, 8>(out + (start + step * q) * C, out_step, taps, a * q, a, C);
  for (; q + 4 <= hi; q += 4) interior_block<T, S, 4>(out + (start + step * q) * C, out_step, taps, a * q, a, C);
  for (; q < hi; ++q) interior_block<T, S, 1>(out + (start + step * q) * C, out_step, taps, a * q, a, C);
  for (; q < count; ++q) border_pixel(out + (start + step * q) * C, taps, a * q, width, C);
}

// bf16_input: the caller also takes a bfloat16 input, with a float32 or bfloat16 weight (summed in float).
Geometry geometry_of(const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
                     at::IntArrayRef padding, at::IntArrayRef dilation, bool bf16_input = false) {
  TORCH_CHECK(input.dim() == 4, "sepconv depthwise: expected a 4-D input, got ", input.dim(), "-D");
  TORCH_CHECK(input.device().is_cpu(), "sepconv depthwise: CPU tensors only");
  if (bf16_input && input.scalar_type() == at::kBFloat16) {
    TORCH_CHECK(weight.scalar_type() == at::kFloat || weight.scalar_type() == at::kBFloat16,
                "sepconv depthwise: a bfloat16 input needs a float32 or bfloat16 weight, got ", weight.scalar_type());
  } else {
    TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble,
                "sepconv depthwise: float32 or float64 only", bf16_input ? " (or bfloat16)" : "", ", got ",
                input.scalar_type());
    TORCH_CHECK(weight.scalar_type() == input.scalar_type(), "sepconv depthwise: weight dtype ",
                weight.scalar_type(), " differs from input dtype ", input.scalar_type());
  }
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
              "sepconv depthwise: stride, padding and dilation need two values each");
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == input.size(1) && weight.size(1) == 1,
              "sepconv depthwise: weight must be [C, 1, KH, KW] with C = ", input.size(1), ", got ",
              weight.sizes());
  Geometry g;
  g.n = input.size(0);
  g.c = input.size(1);
  g.h = input.size(2);
  g.w = input.size(3);
  g.kh = weight.size(2);
  g.kw = weight.size(3);
  g.sh = stride[0];
  g.sw = stride[1];
  g.ph = padding[0];
  g.pw = padding[1];
  g.dh = dilation[0];
  g.dw = dilation[1];
  TORCH_CHECK(g.sh > 0 && g.sw > 0 && g.dh > 0 && g.dw > 0 && g.ph >= 0 && g.pw >= 0,
              "sepconv depthwise: stride and dilation must be positive and padding non-negative");
  g.oh = (g.h + 2 * g.ph - g.dh * (g.kh - 1) - 1) / g.sh + 1;
  g.ow = (g.w + 2 * g.pw - g.dw * (g.kw - 1) - 1) / g.sw + 1;
  TORCH_CHECK(g.h + 2 * g.ph >= g.dh * (g.kh - 1) + 1 && g.w + 2 * g.pw >= g.dw * (g.kw - 1) + 1,
              "sepconv depthwise: kernel larger than the padded input");
  return g;
}

// Weight [C, 1, KH, KW] -> [KH * KW, C], so a tap's weights are one contiguous vector over channels.
at::Tensor taps_by_channel(const at::Tensor& weight) {
  return weight.reshape({weight.size(0), weight.size(2) * weight.size(3)}).t().contiguous();
}

typedef float F8 __attribute__((vector_size(32)));
typedef uint32_t U8 __attribute__((vector_size(32)));
typedef int32_t I8 __attribute__((vector_size(32)));
typedef uint16_t H8 __attribute__((vector_size(16)));

// Eight floats rounded to bfloat16 (to nearest, ties to even; NaN stays a quiet NaN), as c10::BFloat16
// rounds one: the upper halves of the rounded bits.
inline H8 round_to_bfloat16(F8 v) {
  U8 bits;
  std::memcpy(&bits, &v, sizeof(bits));
  const U8 rounded = (bits + (0x7FFFu + ((bits >> 16) & 1u))) >> 16;
  const U8 nan = reinterpret_cast<U8>(v != v);
  const U8 quiet = {0x7FC0, 0x7FC0, 0x7FC0, 0x7FC0, 0x7FC0, 0x7FC0, 0x7FC0, 0x7FC0};
  return __builtin_convertvector((rounded & ~nan) | (quiet & nan), H8);
}

// Stores count values of T as S, leaving in row the values stored (a plain copy when S is T).
template <typename T, typename S>
inline void store_row(T* row, S* out, int64_t count) {
  int64_t i = 0;
  if constexpr (std::is_same_v<S, c10::BFloat16> && std::is_same_v<T, float>) {
    for (; i + 8 <= count; i += 8) {
      store(out + i, round_to_bfloat16(load<F8>(row + i)));
      store(row + i, load_source<F8>(out + i));
    }
  }
  for (; i < count; ++i) {
    const S v = static_cast<S>(row[i]);
    out[i] = v;
    row[i] = static_cast<T>(v);
  }
}

// count values of S as T: in place when S is T, else widened into buffer.
template <typename T, typename S>
inline const T* widened_values(const S* in, std::vector<T>& buffer, int64_t count) {
  if constexpr (std::is_same_v<S, T>) {
    return in;
  } else {
    buffer.resize(static_cast<size_t>(count));
    int64_t i = 0;
    for (; i + 8 <= count; i += 8) store(buffer.data() + i, load_source<F8>(in + i));
    for (; i < count; ++i) buffer[i] = static_cast<T>(in[i]);
    return buffer.data();
  }
}

// The grad_output rows that the chunk of output rows [m0, m1) needs in the backward: its own (grad_weight)
// and those its input rows gather from (grad_input), as [lo, hi) in n * OH + oh numbering.
std::pair<int64_t, int64_t> rows_needed(const Geometry& g, int64_t m0, int64_t m1) {
  int64_t lo = m0, hi = m1;
  for (int64_t m = m0; m < m1; ++m) {
    const int64_t n = m / g.oh, oh = m % g.oh;
    const int64_t ih0 = oh * g.h / g.oh, ih1 = (oh + 1) * g.h / g.oh;
    if (ih0 >= ih1) continue;
    const int64_t first = std::max<int64_t>(0, ceil_div(ih0 + g.ph - (g.kh - 1) * g.dh, g.sh));
    const int64_t last = std::min<int64_t>(g.oh - 1, floor_div(ih1 - 1 + g.ph, g.sh));
    if (first > last) continue;
    lo = std::min(lo, n * g.oh + first);
    hi = std::max(hi, n * g.oh + last + 1);
  }
  return {lo, hi};
}

// The fixed split of a pass's output rows into chunks, each summing into its own partial sums: at most
// 64 chunks, at least 2 rows and about 32K multiply-adds each (small maps would otherwise spend more
// on zeroing, writing and adding up per-chunk sums than on the pass). A function of the shape only,
// so the sums (and their rounding) never depend on the thread count.
inline int64_t row_chunks(int64_t rows, int64_t multiply_adds) {
  return std::max<int64_t>(1, std::min<int64_t>({64, rows / 2, multiply_adds / 32768}));
}

// Rows of about 32 KiB per task: enough work to amortize the task, enough tasks to balance threads.
int64_t row_grain(int64_t row_elements) { return std::max<int64_t>(1, 8192 / std::max<int64_t>(row_elements, 1)); }

// Output row m = n * OH + oh of the forward, written to out (OW * C values).
template <typename T, typename S>
void forward_row(const Geometry& g, int64_t m, const S* x, const T* w, T* out, std::vector<Tap<T, S>>& taps) {
  const int64_t n = m / g.oh, oh = m % g.oh;
  taps.clear();
  for (int64_t kh = 0; kh < g.kh; ++kh) {
    const int64_t ih = oh * g.sh - g.ph + kh * g.dh;
    if (ih < 0 || ih >= g.h) continue;
    const S* row = x + (n * g.h + ih) * g.w * g.c;
    for (int64_t kw = 0; kw < g.kw; ++kw) {
      taps.push_back({row, kw * g.dw - g.pw, w + (kh * g.kw + kw) * g.c});
    }
  }
  tap_row(out, 0, 1, g.ow, taps, g.sw, g.w, g.c);
}

// Output row m of the forward into y (stored as S); returns the row's values as stored, in T: y's own
// row when S is T, else row (a scratch row of T), the sums rounded to S as they are stored.
template <typename T, typename S>
const T* forward_row_stored(const Geometry& g, int64_t m, const S* x, const T* w, S* y, std::vector<T>& row,
                            std::vector<Tap<T, S>>& taps) {
  S* out = y + m * g.ow * g.c;
  if constexpr (std::is_same_v<S, T>) {
    forward_row(g, m, x, w, out, taps);
    return out;
  } else {
    row.resize(static_cast<size_t>(g.ow * g.c));
    forward_row(g, m, x, w, row.data(), taps);
    store_row(row.data(), out, g.ow * g.c);
    return row.data();
  }
}

// The forward, every output row, stored as S (summed in T, then rounded where S is narrower).
template <typename T, typename S>
void forward_rows(const Geometry& g, const S* x, const T* w, S* y) {
  at::parallel_for(0, g.n * g.oh, row_grain(g.ow * g.c * g.kh * g.kw), [&](int64_t begin, int64_t end) {
    std::vector<Tap<T, S>> taps;
    taps.reserve(g.kh * g.kw);
    std::vector<T> row;
    for (int64_t m = begin; m < end; ++m) forward_row_stored(g, m, x, w, y, row, taps);
  });
}

// The ATen dtype of the C++ type T (float -> kFloat, ...).
template <typename T>
at::ScalarType scalar_type_of() {
  return c10::CppTypeToScalarType<T>::value;
}

// grad_input row ih of image n, written to out (W * C values): a gather from grad_output. Input columns
// of one phase r (iw = r + sw * q) see the same kernel columns, and their output column is q + a
// constant: one tap_row per phase. dy holds the grad_output rows from first_row on (a row is n * OH + oh).
template <typename T>
void grad_input_row(const Geometry& g, int64_t n, int64_t ih, const T* dy, int64_t first_row, const T* w, T* out,
                    std::vector<Tap<T>>& taps) {
  for (int64_t r = 0; r < std::min(g.sw, g.w); ++r) {
    taps.clear();
    for (int64_t kh = 0; kh < g.kh; ++kh) {
      const int64_t num = ih + g.ph - kh * g.dh;
      if (num < 0 || num % g.sh != 0 || num / g.sh >= g.oh) continue;
      const T* row = dy + (n * g.oh + num / g.sh - first_row) * g.ow * g.c;
      for (int64_t kw = 0; kw < g.kw; ++kw) {
        const int64_t numw = r + g.pw - kw * g.dw;
        if (floor_div(numw, g.sw) * g.sw != numw) continue;
        taps.push_back({row, numw / g.sw, w + (kh * g.kw + kw) * g.c});
      }
    }
    tap_row(out, r, g.sw, (g.w - r + g.sw - 1) / g.sw, taps, 1, g.ow, g.c);
  }
}

// grad_input row ih of image n into dx (stored as S), from the grad_output rows in dy (first row lo);
// row is a scratch row of T for a narrower S, rounded to S as it is stored.
template <typename T, typename S>
void grad_input_into(const Geometry& g, int64_t n, int64_t ih, const T* dy, int64_t lo, const T* w, S* dx,
                     std::vector<T>& row, std::vector<Tap<T>>& taps) {
  S* out = dx + (n * g.h + ih) * g.w * g.c;
  if constexpr (std::is_same_v<S, T>) {
    grad_input_row(g, n, ih, dy, lo, w, out, taps);
  } else {
    row.resize(static_cast<size_t>(g.w * g.c));
    grad_input_row(g, n, ih, dy, lo, w, row.data(), taps);
    store_row(row.data(), out, g.w * g.c);
  }
}

// The valid output columns of kernel column kw: those whose input column is inside [0, W).
inline void column_range(const Geometry& g, int64_t kw, int64_t* lo, int64_t* hi) {
  const int64_t offset = kw * g.dw - g.pw;
  *lo = std::min(g.ow, std::max<int64_t>(0, ceil_div(-offset, g.sw)));
  *hi = std::max(*lo, std::min(g.ow, floor_div(g.w - 1 - offset, g.sw) + 1));
}

// sums[kw][c] += sum over ow of grad_row[ow, c] * x_row[ow * sw - pw + kw * dw, c], any kernel width:
// one kernel column at a time, four accumulators against the FMA latency.
template <typename T, typename S>
void grad_weight_taps_any(const Geometry& g, const T* grad_row, const S* x_row, T* sums) {
  using V = typename Simd<T>::V;
  constexpr int L = Simd<T>::L;
  constexpr int U = 4;
  const int64_t C = g.c, vector_channels = C - C % L, x_step = g.sw * C;
  for (int64_t kw = 0; kw < g.kw; ++kw) {
    const int64_t offset = kw * g.dw - g.pw;
    int64_t lo, hi;
    column_range(g, kw, &lo, &hi);
    T* acc_out = sums + kw * C;
    for (int64_t c = 0; c < vector_channels; c += L) {
      V acc[U];
#pragma GCC unroll 8
      for (int j = 0; j < U; ++j) acc[j] = V{};
      const T* gp = grad_row + lo * C + c;
      const S* xp = x_row + (lo * g.sw + offset) * C + c;
      int64_t ow = lo;
      for (; ow + U <= hi; ow += U, gp += U * C, xp += U * x_step) {
#pragma GCC unroll 8
        for (int j = 0; j < U; ++j) acc[j] += load<V>(gp + j * C) * load_source<V>(xp + j * x_step);
      }
      for (; ow < hi; ++ow, gp += C, xp += x_step) acc[0] += load<V>(gp) * load_source<V>(xp);
      store(acc_out + c, load<V>(acc_out + c) + ((acc[0] + acc[1]) + (acc[2] + acc[3])));
    }
    for (int64_t c = vector_channels; c < C; ++c) {
      T sum = T(0);
      for (int64_t ow = lo; ow < hi; ++ow) {
        sum += grad_row[ow * C + c] * static_cast<T>(x_row[(ow * g.sw + offset) * C + c]);
      }
      acc_out[c] += sum;
    }
  }
}

// The same for a kernel width known at compile time: all KW accumulators stay in registers, so each
// grad_output vector is loaded once for KW FMAs; two output columns per step against the FMA latency.
template <typename T, typename S, int KW>
void grad_weight_taps(const Geometry& g, const T* grad_row, const S* x_row, T* sums) {
  using V = typename Simd<T>::V;
  constexpr int L = Simd<T>::L;
  const int64_t C = g.c, vector_channels = C - C % L, x_step = g.sw * C;
  int64_t lo_kw[KW], hi_kw[KW], offset[KW];
  int64_t lo = 0, hi = g.ow;  // the columns where every kernel column is valid
  for (int kw = 0; kw < KW; ++kw) {
    offset[kw] = (kw * g.dw - g.pw) * C;
    column_range(g, kw, &lo_kw[kw], &hi_kw[kw]);
    lo = std::max(lo, lo_kw[kw]);
    hi = std::min(hi, hi_kw[kw]);
  }
  hi = std::max(hi, lo);
  for (int64_t c = 0; c < vector_channels; c += L) {
    V acc0[KW], acc1[KW];
#pragma GCC unroll 8
    for (int kw = 0; kw < KW; ++kw) acc0[kw] = acc1[kw] = V{};
    int64_t ow = lo;
    for (; ow + 2 <= hi; ow += 2) {
      const V g0 = load<V>(grad_row + ow * C + c), g1 = load<V>(grad_row + (ow + 1) * C + c);
      const S* xp = x_row + ow * x_step + c;
#pragma GCC unroll 8
      for (int kw = 0; kw < KW; ++kw) {
        acc0[kw] += g0 * load_source<V>(xp + offset[kw]);
        acc1[kw] += g1 * load_source<V>(xp + x_step + offset[kw]);
      }
    }
#pragma GCC unroll 8
    for (int kw = 0; kw < KW; ++kw) {
      // The last odd column, then the border columns where only some kernel columns are valid.
      for (int64_t o = ow; o < hi; ++o) {
        acc0[kw] += load<V>(grad_row + o * C + c) * load_source<V>(x_row + o * x_step + offset[kw] + c);
      }
      for (int64_t o = lo_kw[kw]; o < std::min(lo, hi_kw[kw]); ++o) {
        acc0[kw] += load<V>(grad_row + o * C + c) * load_source<V>(x_row + o * x_step + offset[kw] + c);
      }
      for (int64_t o = std::max(hi, lo_kw[kw]); o < hi_kw[kw]; ++o) {
        acc1[kw] += load<V>(grad_row + o * C + c) * load_source<V>(x_row + o * x_step + offset[kw] + c);
      }
      store(sums + kw * C + c, load<V>(sums + kw * C + c) + (acc0[kw] + acc1[kw]));
    }
  }
  for (int64_t c = vector_channels; c < C; ++c) {
    for (int kw = 0; kw < KW; ++kw) {
      T sum = T(0);
      for (int64_t o = lo_kw[kw]; o < hi_kw[kw]; ++o) {
        sum += grad_row[o * C + c] * static_cast<T>(x_row[o * x_step + offset[kw] + c]);
      }
      sums[kw * C + c] += sum;
    }
  }
}

// Adds to sums[KH * KW][C] the grad_weight terms of output row oh of image n:
// sum over ow of dy[oh, ow, c] * x[oh * sh - ph + kh * dh, ow * sw - pw + kw * dw, c]; dy holds the
// grad_output rows from first_row on.
template <typename T, typename S>
void grad_weight_row(const Geometry& g, int64_t n, int64_t oh, const S* x, const T* dy, int64_t first_row, T* sums) {
  const T* grad_row = dy + (n * g.oh + oh - first_row) * g.ow * g.c;
  for (int64_t kh = 0; kh < g.kh; ++kh) {
    const int64_t ih = oh * g.sh - g.ph + kh * g.dh;
    if (ih < 0 || ih >= g.h) continue;
    const S* x_row = x + (n * g.h + ih) * g.w * g.c;
    T* row_sums = sums + kh * g.kw * g.c;
    switch (g.kw) {
      case 1: grad_weight_taps<T, S, 1>(g, grad_row, x_row, row_sums); break;
      case 2: grad_weight_taps<T, S, 2>(g, grad_row, x_row, row_sums); break;
      case 3: grad_weight_taps<T, S, 3>(g, grad_row, x_row, row_sums); break;
      case 4: grad_weight_taps<T, S, 4>(g, grad_row, x_row, row_sums); break;
      case 5: grad_weight_taps<T, S, 5>(g, grad_row, x_row, row_sums); break;
      default: grad_weight_taps_any<T, S>(g, grad_row, x_row, row_sums);
    }
  }
}

}  // namespace
