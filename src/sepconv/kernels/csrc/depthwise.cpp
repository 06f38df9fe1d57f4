// Depthwise 2-D convolution (groups == channels, one filter per channel, no bias) on channels_last CPU
// tensors, forward and backward: float, double, and bfloat16 activations (under autocast) with a float
// weight, summed in float.
//
// Why: oneDNN's depthwise backward takes 2-4x its forward and several times its memory bound; in a
// separable network that backward is a large share of the training step.
//
// Layout: input [N, H, W, C] in memory (channels_last), weight re-laid out as [KH][KW][C], so every
// inner loop runs over the contiguous channels in 256-bit vectors (GCC vector extensions: AVX2 where
// the build enables it, two SSE halves otherwise). Each output row is computed from a list of "taps"
// (source row, column offset, weight vector); the same row routine serves the forward (a correlation)
// and grad_input (a gather per input pixel: no write conflicts between threads). grad_weight sums over
// a fixed split of the rows (independent of the thread count) and reduces the chunks in a fixed order,
// in double, so the same input gives the same bits on every run.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <vector>

#include "depthwise_rows.h"

namespace {

at::Tensor depthwise_forward(const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation) {
  const Geometry g = geometry_of(input, weight, stride, padding, dilation, /*bf16_input=*/true);
  const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor y = at::empty({g.n, g.c, g.oh, g.ow}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "sepconv_depthwise_forward", [&] {
    using T = at::opmath_type<scalar_t>;
    const at::Tensor w = taps_by_channel(weight.to(scalar_type_of<T>()));
    forward_rows(g, x.data_ptr<scalar_t>(), w.data_ptr<T>(), y.data_ptr<scalar_t>());
  });
  return y;
}

// The same forward by oneDNN (at::conv2d with groups = C): as fast or faster than depthwise_forward at
// most shapes measured, so it pairs with depthwise_backward as one operator.
at::Tensor depthwise_forward_onednn(const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
                                    at::IntArrayRef padding, at::IntArrayRef dilation) {
  const Geometry g = geometry_of(input, weight, stride, padding, dilation);
  return at::conv2d(input.contiguous(at::MemoryFormat::ChannelsLast), weight, {}, stride, padding, dilation, g.c)
      .contiguous(at::MemoryFormat::ChannelsLast);
}

// Chunks [begin, end) of the backward: each adds its rows' grad_weight terms to its own partial sums
// (in T: a few thousand terms each; the chunks add up in double) and writes the grad_input rows that map
// onto them. Where the storage S is narrower than T, the grad_output rows a chunk needs are widened into
// a buffer once and grad_input is rounded to S row by row.
template <typename T, typename S>
void backward_chunks(const Geometry& g, const S* x, const S* dy, const T* w, S* dx, int64_t chunks, int64_t begin,
                     int64_t end, double* partial) {
  const int64_t taps = g.kh * g.kw, rows = g.n * g.oh;
  std::vector<Tap<T>> tap_list;
  tap_list.reserve(taps);
  std::vector<T> sums(static_cast<size_t>(taps * g.c)), dy_rows, row;
  for (int64_t k = begin; k < end; ++k) {
    std::fill(sums.begin(), sums.end(), T(0));
    const int64_t m0 = rows * k / chunks, m1 = rows * (k + 1) / chunks;
    const T* grad = nullptr;
    int64_t first = 0;
    if constexpr (std::is_same_v<S, T>) {
      grad = dy;
    } else {
      const auto [lo, hi] = rows_needed(g, m0, m1);
      grad = widened_values(dy + lo * g.ow * g.c, dy_rows, (hi - lo) * g.ow * g.c);
      first = lo;
    }
    for (int64_t m = m0; m < m1; ++m) {
      const int64_t n = m / g.oh, oh = m % g.oh;
      grad_weight_row(g, n, oh, x, grad, first, sums.data());
      // Input rows [oh * H / OH, (oh + 1) * H / OH) of image n: every input row exactly once.
      for (int64_t ih = oh * g.h / g.oh; ih < (oh + 1) * g.h / g.oh; ++ih) {
        grad_input_into(g, n, ih, grad, first, w, dx, row, tap_list);
      }
    }
    double* chunk_sums = partial + k * taps * g.c;
    for (int64_t i = 0; i < taps * g.c; ++i) chunk_sums[i] = static_cast<double>(sums[i]);
  }
}

// Returns (grad_input, grad_weight). One pass: each task takes a fixed block of output rows, adds their
// grad_weight terms to its own partial sums and writes the grad_input rows that map onto them, so the
// grad_output rows it reads are still in cache for the second use.
std::tuple<at::Tensor, at::Tensor> depthwise_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                                      const at::Tensor& weight, at::IntArrayRef stride,
                                                      at::IntArrayRef padding, at::IntArrayRef dilation) {
  const Geometry g = geometry_of(input, weight, stride, padding, dilation, /*bf16_input=*/true);
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == g.n && grad_output.size(1) == g.c &&
                  grad_output.size(2) == g.oh && grad_output.size(3) == g.ow,
              "sepconv depthwise: grad_output has shape ", grad_output.sizes(), ", expected [", g.n, ", ", g.c,
              ", ", g.oh, ", ", g.ow, "]");
  const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor dy = grad_output.to(x.scalar_type()).contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor dx = at::empty_like(x, at::MemoryFormat::ChannelsLast);
  const int64_t taps = g.kh * g.kw;
  const int64_t rows = g.n * g.oh;
  const int64_t chunks = row_chunks(rows, rows * g.ow * g.c * taps);
  std::vector<double> partial(static_cast<size_t>(chunks * taps * g.c), 0.0);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "sepconv_depthwise_backward", [&] {
    using T = at::opmath_type<scalar_t>;
    const at::Tensor w = taps_by_channel(weight.to(scalar_type_of<T>()));
    // Small problems run on one thread: waking the others costs more than the work.
    const int64_t work = rows * g.ow * g.c * taps;
    const int64_t grain = std::max<int64_t>(1, chunks * 32768 / std::max<int64_t>(work, 1));
    at::parallel_for(0, chunks, grain, [&](int64_t begin, int64_t end) {
      backward_chunks(g, x.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>(), w.data_ptr<T>(), dx.data_ptr<scalar_t>(),
                      chunks, begin, end, partial.data());
    });
  });
  at::Tensor grad_weight_taps = at::zeros({taps, g.c}, x.options().dtype(at::kDouble));
  double* total = grad_weight_taps.data_ptr<double>();
  for (int64_t k = 0; k < chunks; ++k) {
    const double* p = partial.data() + k * taps * g.c;
    for (int64_t i = 0; i < taps * g.c; ++i) total[i] += p[i];
  }
  at::Tensor grad_weight = grad_weight_taps.t().reshape({g.c, 1, g.kh, g.kw}).to(weight.scalar_type());
  return {dx, grad_weight.contiguous()};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(sepconv, m) {
  m.def("depthwise_forward(Tensor input, Tensor weight, int[2] stride, int[2] padding, int[2] dilation) -> Tensor");
  m.def(
      "depthwise_forward_onednn(Tensor input, Tensor weight, int[2] stride, int[2] padding, int[2] dilation) "
      "-> Tensor");
  m.def(
      "depthwise_backward(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, int[2] padding, "
      "int[2] dilation) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(sepconv, CPU, m) {
  m.impl("depthwise_forward", &depthwise_forward);
  m.impl("depthwise_forward_onednn", &depthwise_forward_onednn);
  m.impl("depthwise_backward", &depthwise_backward);
}
