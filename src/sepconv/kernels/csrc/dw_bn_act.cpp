// Depthwise convolution + BatchNorm (training mode: batch statistics) + activation, fused, on
// channels_last CPU tensors: float, double, and bfloat16 activations (under autocast) with float
// parameters and statistics.
//
// Why: in a separable network the depthwise step is memory-bound, and run as three operators it reads
// and writes the whole activation tensor again at each: forward, convolution (read x, write z),
// statistics (read z), normalize + activate (read z, write y): five passes; backward, statistics
// (read z, dy), grad of z (read z, dy, write dz), the convolution's backward (read dz, x, write dx):
// eight. Here the forward accumulates the statistics while each output row is still in cache (four
// passes), and the backward computes grad of z a few rows at a time into a per-thread buffer that the
// convolution's backward reads at once (six passes: dz never goes to memory).
//
// Exactness: the same per-element formulas as bn_act.cpp and depthwise.cpp; every sum runs over a fixed
// split of the rows (independent of the thread count) and adds up the chunks in double, in order, so
// the same input gives the same bits on every run and at any thread count.
//
// bfloat16 (storage S = bfloat16, arithmetic T = float): x, z, y, grad_output and grad_input are stored
// as bfloat16, so the memory-bound passes move half the bytes; every sum runs in float (double across
// chunks). z is rounded to bfloat16 as it is stored and the statistics are taken over the stored values,
// as the separate operators under autocast would see them; grad of z stays float in its buffer.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

#include "activation.h"
#include "depthwise_rows.h"
#include "running_stats.h"

namespace {

typedef double D4 __attribute__((vector_size(32)));

inline D4 widened(const double* p) { return load<D4>(p); }
inline D4 widened(const float* p) {
  typedef float F4 __attribute__((vector_size(16)));
  return __builtin_convertvector(load<F4>(p), D4);
}

// sum1[c] += sum over the row's pixels of z[p, c], sum2[c] += the same of z^2, in double. Eight
// channels at a time with the pixel loop inside, so the sums stay in registers.
template <typename T>
void add_row_moments(const T* z, int64_t pixels, int64_t C, double* sum1, double* sum2) {
  const int64_t blocked = C - C % 8;
  for (int64_t c = 0; c < blocked; c += 8) {
    D4 s0 = {}, s1 = {}, q0 = {}, q1 = {};
    const T* p = z + c;
    for (int64_t i = 0; i < pixels; ++i, p += C) {
      const D4 v0 = widened(p), v1 = widened(p + 4);
      s0 += v0;
      s1 += v1;
      q0 += v0 * v0;
      q1 += v1 * v1;
    }
    store(sum1 + c, load<D4>(sum1 + c) + s0);
    store(sum1 + c + 4, load<D4>(sum1 + c + 4) + s1);
    store(sum2 + c, load<D4>(sum2 + c) + q0);
    store(sum2 + c + 4, load<D4>(sum2 + c + 4) + q1);
  }
  for (int64_t c = blocked; c < C; ++c) {
    double s = 0, q = 0;
    for (int64_t i = 0; i < pixels; ++i) {
      const double v = static_cast<double>(z[i * C + c]);
      s += v;
      q += v * v;
    }
    sum1[c] += s;
    sum2[c] += q;
  }
}

// Per-channel BatchNorm coefficients in the kernel's precision.
template <typename T>
struct Coefficients {
  std::vector<T> scale, shift, mean;  // forward: y = act(z * scale + shift)
  std::vector<T> gain, mean_g, slope;  // backward: dz = gain * (g - mean_g - (z - mean) * slope)
  explicit Coefficients(int64_t C) : scale(C), shift(C), mean(C), gain(C), mean_g(C), slope(C) {}
};

void check_norm_params(const at::Tensor& input, const at::Tensor& bn_weight, const at::Tensor& bn_bias) {
  TORCH_CHECK(bn_weight.numel() == input.size(1) && bn_bias.numel() == input.size(1),
              "sepconv fused depthwise batch norm: weight and bias need ", input.size(1), " elements");
}

// Where count values of T meant for out are computed: out itself when S is T, else buffer, which
// finish_values then stores as S.
template <typename T, typename S>
inline T* values_for(S* out, std::vector<T>& buffer, int64_t count) {
  if constexpr (std::is_same_v<S, T>) {
    return out;
  } else {
    buffer.resize(static_cast<size_t>(count));
    return buffer.data();
  }
}

template <typename T, typename S>
inline void finish_values(T* values, S* out, int64_t count) {
  if constexpr (!std::is_same_v<S, T>) store_row(values, out, count);
}

// Pixels per block where a pass widens bfloat16 values into float first: about 8 KiB of each.
inline int64_t pixel_block(int64_t C) { return std::max<int64_t>(1, 2048 / std::max<int64_t>(C, 1)); }

// Returns (y, z, mean, biased variance): y = act(batch_norm(z)), z the depthwise convolution of input;
// y and z in the input's dtype, the statistics in its arithmetic type (float for bfloat16).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> dw_bn_act_forward(
    const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bn_weight, const at::Tensor& bn_bias,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, double eps, int64_t act) {
  const Geometry g = geometry_of(input, weight, stride, padding, dilation, /*bf16_input=*/true);
  check_norm_params(input, bn_weight, bn_bias);
  const int64_t rows = g.n * g.oh, pixels = rows * g.ow, C = g.c;
  TORCH_CHECK(pixels > 1, "Expected more than 1 value per channel when training, got output size [", g.n, ", ",
              g.c, ", ", g.oh, ", ", g.ow, "]");
  const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
  const auto options = x.options().memory_format(at::MemoryFormat::ChannelsLast);
  at::Tensor z = at::empty({g.n, C, g.oh, g.ow}, options);
  at::Tensor y = at::empty({g.n, C, g.oh, g.ow}, options);
  at::Tensor mean, var;
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "sepconv_dw_bn_act_forward", [&] {
    using S = scalar_t;
    using T = at::opmath_type<S>;
    mean = at::empty({C}, x.options().dtype(scalar_type_of<T>()));
    var = at::empty({C}, x.options().dtype(scalar_type_of<T>()));
    const at::Tensor w = taps_by_channel(weight.to(scalar_type_of<T>()));
    const S* xp = x.data_ptr<S>();
    const T* wp = w.data_ptr<T>();
    S* zp = z.data_ptr<S>();
    const int64_t work = pixels * C * g.kh * g.kw;
    const int64_t chunks = row_chunks(rows, work);
    std::vector<double> partial(static_cast<size_t>(chunks * 2 * C), 0.0);
    const int64_t grain = std::max<int64_t>(1, chunks * 32768 / std::max<int64_t>(work, 1));
    at::parallel_for(0, chunks, grain, [&](int64_t begin, int64_t end) {
      std::vector<Tap<T, S>> taps;
      taps.reserve(g.kh * g.kw);
      std::vector<T> row;
      for (int64_t k = begin; k < end; ++k) {
        double* sum1 = partial.data() + k * 2 * C;
        double* sum2 = sum1 + C;
        for (int64_t m = rows * k / chunks; m < rows * (k + 1) / chunks; ++m) {
          // the moments of the values stored (rounded to S where it is narrower)
          add_row_moments(forward_row_stored(g, m, xp, wp, zp, row, taps), g.ow, C, sum1, sum2);
        }
      }
    });
    Coefficients<T> co(C);
    const at::Tensor gamma = bn_weight.to(scalar_type_of<T>()).contiguous();
    const at::Tensor beta = bn_bias.to(scalar_type_of<T>()).contiguous();
    for (int64_t c = 0; c < C; ++c) {
      double s1 = 0, s2 = 0;
      for (int64_t k = 0; k < chunks; ++k) {
        s1 += partial[k * 2 * C + c];
        s2 += partial[k * 2 * C + C + c];
      }
      const double mu = s1 / pixels;
      const double v = std::max(s2 / pixels - mu * mu, 0.0);
      const double sc = static_cast<double>(gamma.data_ptr<T>()[c]) / std::sqrt(v + eps);
      co.scale[c] = static_cast<T>(sc);
      co.shift[c] = static_cast<T>(static_cast<double>(beta.data_ptr<T>()[c]) - mu * sc);
      mean.data_ptr<T>()[c] = static_cast<T>(mu);
      var.data_ptr<T>()[c] = static_cast<T>(v);
    }
    S* yp = y.data_ptr<S>();
    dispatch_activation(act, [&](auto a) {
      constexpr int A = decltype(a)::value;
      at::parallel_for(0, pixels, std::max<int64_t>(1, 32768 / C), [&](int64_t begin, int64_t end) {
        std::vector<T> z_values, y_values;
        for (int64_t p0 = begin; p0 < end; p0 += pixel_block(C)) {
          const int64_t count = std::min(pixel_block(C), end - p0) * C;
          const T* zr = widened_values(zp + p0 * C, z_values, count);
          T* yr = values_for(yp + p0 * C, y_values, count);
          for (int64_t i = 0; i < count; i += C) {
            for (int64_t c = 0; c < C; ++c) yr[i + c] = act_forward<A>(zr[i + c] * co.scale[c] + co.shift[c]);
          }
          finish_values(yr, yp + p0 * C, count);
        }
      });
    });
  });
  return {y, z, mean, var};
}

// Returns (grad_input, grad_weight, grad_bn_weight, grad_bn_bias) of y = act(batch_norm(depthwise(input))),
// from the saved convolution output z and batch statistics.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> dw_bn_act_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& z_saved,
    const at::Tensor& bn_weight, const at::Tensor& bn_bias, const at::Tensor& mean_saved,
    const at::Tensor& var_saved, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
    double eps, int64_t act) {
  const Geometry g = geometry_of(input, weight, stride, padding, dilation, /*bf16_input=*/true);
  check_norm_params(input, bn_weight, bn_bias);
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == g.n && grad_output.size(1) == g.c &&
                  grad_output.size(2) == g.oh && grad_output.size(3) == g.ow && z_saved.sizes() == grad_output.sizes(),
              "sepconv fused depthwise batch norm: grad_output has shape ", grad_output.sizes(), ", expected [", g.n,
              ", ", g.c, ", ", g.oh, ", ", g.ow, "]");
  const int64_t rows = g.n * g.oh, pixels = rows * g.ow, C = g.c, taps = g.kh * g.kw;
  const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor z = z_saved.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor dy = grad_output.to(x.scalar_type()).contiguous(at::MemoryFormat::ChannelsLast);
  TORCH_CHECK(z.scalar_type() == x.scalar_type(), "sepconv fused depthwise batch norm: z dtype ", z.scalar_type(),
              " differs from input dtype ", x.scalar_type());
  at::Tensor dx = at::empty_like(x, at::MemoryFormat::ChannelsLast);
  at::Tensor grad_gamma = at::empty({C}, x.options().dtype(at::kDouble));
  at::Tensor grad_beta = at::empty({C}, x.options().dtype(at::kDouble));
  at::Tensor grad_weight_taps = at::zeros({taps, C}, x.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "sepconv_dw_bn_act_backward", [&] {
    using S = scalar_t;
    using T = at::opmath_type<S>;
    const at::Tensor w = taps_by_channel(weight.to(scalar_type_of<T>()));
    const S* xp = x.data_ptr<S>();
    const S* zp = z.data_ptr<S>();
    const S* dyp = dy.data_ptr<S>();
    const T* wp = w.data_ptr<T>();
    S* dxp = dx.data_ptr<S>();
    const at::Tensor gamma = bn_weight.to(at::kDouble).contiguous();
    const at::Tensor beta = bn_bias.to(at::kDouble).contiguous();
    const at::Tensor mean = mean_saved.to(at::kDouble).contiguous();
    const at::Tensor var = var_saved.to(at::kDouble).contiguous();
    Coefficients<T> co(C);
    std::vector<double> invstd(C);
    for (int64_t c = 0; c < C; ++c) {
      invstd[c] = 1.0 / std::sqrt(var.data_ptr<double>()[c] + eps);
      const double sc = gamma.data_ptr<double>()[c] * invstd[c];
      co.scale[c] = static_cast<T>(sc);
      co.shift[c] = static_cast<T>(beta.data_ptr<double>()[c] - mean.data_ptr<double>()[c] * sc);
      co.mean[c] = static_cast<T>(mean.data_ptr<double>()[c]);
    }
    const int64_t work = pixels * C * taps;
    const int64_t chunks = row_chunks(rows, work);
    const int64_t grain = std::max<int64_t>(1, chunks * 32768 / std::max<int64_t>(work, 1));
    dispatch_activation(act, [&](auto a) {
      constexpr int A = decltype(a)::value;
      // Pass 1: per-channel sums of g = dy * act'(z * scale + shift) and of g * (z - mean).
      std::vector<double> partial(static_cast<size_t>(chunks * 2 * C), 0.0);
      at::parallel_for(0, chunks, grain, [&](int64_t begin, int64_t end) {
        std::vector<T> z_values, g_values;
        for (int64_t k = begin; k < end; ++k) {
          double* sum_g = partial.data() + k * 2 * C;
          double* sum_gz = sum_g + C;
          const int64_t last = pixels * (k + 1) / chunks;
          for (int64_t p0 = pixels * k / chunks; p0 < last; p0 += pixel_block(C)) {
            const int64_t count = std::min(pixel_block(C), last - p0) * C;
            const T* zr = widened_values(zp + p0 * C, z_values, count);
            const T* gr = widened_values(dyp + p0 * C, g_values, count);
            for (int64_t i = 0; i < count; i += C) {
              for (int64_t c = 0; c < C; ++c) {
                const T zv = zr[i + c];
                const T gv = gr[i + c] * act_derivative<A>(zv * co.scale[c] + co.shift[c]);
                sum_g[c] += static_cast<double>(gv);
                sum_gz[c] += static_cast<double>(gv * (zv - co.mean[c]));
              }
            }
          }
        }
      });
      for (int64_t c = 0; c < C; ++c) {
        double sg = 0, sgz = 0;
        for (int64_t k = 0; k < chunks; ++k) {
          sg += partial[k * 2 * C + c];
          sgz += partial[k * 2 * C + C + c];
        }
        grad_beta.data_ptr<double>()[c] = sg;
        grad_gamma.data_ptr<double>()[c] = sgz * invstd[c];
        co.gain[c] = static_cast<T>(gamma.data_ptr<double>()[c] * invstd[c]);
        co.mean_g[c] = static_cast<T>(sg / pixels);
        co.slope[c] = static_cast<T>(sgz / pixels * invstd[c] * invstd[c]);
      }
      // Pass 2: each chunk of output rows computes the grad_z rows it needs into its own buffer, then
      // adds their grad_weight terms and writes the grad_input rows that map onto them.
      std::vector<double> weight_partial(static_cast<size_t>(chunks * taps * C), 0.0);
      at::parallel_for(0, chunks, grain, [&](int64_t begin, int64_t end) {
        std::vector<Tap<T>> tap_list;
        tap_list.reserve(taps);
        std::vector<T> sums(static_cast<size_t>(taps * C));
        std::vector<T> dz, z_values, g_values;
        std::vector<T> row;
        for (int64_t k = begin; k < end; ++k) {
          const int64_t m0 = rows * k / chunks, m1 = rows * (k + 1) / chunks;
          const auto [lo, hi] = rows_needed(g, m0, m1);
          dz.resize(static_cast<size_t>((hi - lo) * g.ow * C));
          for (int64_t p0 = lo * g.ow; p0 < hi * g.ow; p0 += pixel_block(C)) {
            const int64_t count = std::min(pixel_block(C), hi * g.ow - p0) * C;
            const T* zr = widened_values(zp + p0 * C, z_values, count);
            const T* gr = widened_values(dyp + p0 * C, g_values, count);
            T* out = dz.data() + (p0 - lo * g.ow) * C;
            for (int64_t i = 0; i < count; i += C) {
              for (int64_t c = 0; c < C; ++c) {
                const T zv = zr[i + c];
                const T gv = gr[i + c] * act_derivative<A>(zv * co.scale[c] + co.shift[c]);
                out[i + c] = co.gain[c] * (gv - co.mean_g[c] - (zv - co.mean[c]) * co.slope[c]);
              }
            }
          }
          std::fill(sums.begin(), sums.end(), T(0));
          for (int64_t m = m0; m < m1; ++m) {
            const int64_t n = m / g.oh, oh = m % g.oh;
            grad_weight_row(g, n, oh, xp, dz.data(), lo, sums.data());
            for (int64_t ih = oh * g.h / g.oh; ih < (oh + 1) * g.h / g.oh; ++ih) {
              grad_input_into(g, n, ih, dz.data(), lo, wp, dxp, row, tap_list);
            }
          }
          double* chunk_sums = weight_partial.data() + k * taps * C;
          for (int64_t i = 0; i < taps * C; ++i) chunk_sums[i] = static_cast<double>(sums[i]);
        }
      });
      double* total = grad_weight_taps.data_ptr<double>();
      for (int64_t k = 0; k < chunks; ++k) {
        const double* p = weight_partial.data() + k * taps * C;
        for (int64_t i = 0; i < taps * C; ++i) total[i] += p[i];
      }
    });
  });
  at::Tensor grad_weight = grad_weight_taps.t().reshape({C, 1, g.kh, g.kw}).to(weight.scalar_type()).contiguous();
  return {dx, grad_weight, grad_gamma.to(bn_weight.scalar_type()), grad_beta.to(bn_bias.scalar_type())};
}

using Forward = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, at::IntArrayRef, at::IntArrayRef,
    at::IntArrayRef, double, int64_t);
using Backward = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&, const at::Tensor&, const at::Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef,
    double, int64_t);

// Through the dispatcher (not a direct call), so profilers and dispatch modes see the two kernels.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> dispatch_forward(
    const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bn_weight, const at::Tensor& bn_bias,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, double eps, int64_t act) {
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("sepconv::dw_bn_act_forward", "").typed<Forward>();
  return op.call(input, weight, bn_weight, bn_bias, stride, padding, dilation, eps, act);
}

class DwBnActFunction : public torch::autograd::Function<DwBnActFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const at::Tensor& bn_weight, const at::Tensor& bn_bias, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, double eps, int64_t act) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, z, mean, var] = dispatch_forward(input, weight, bn_weight, bn_bias, stride, padding, dilation, eps, act);
    ctx->save_for_backward({input, weight, z, bn_weight, bn_bias, mean, var});
    ctx->saved_data["stride"] = stride.vec();
    ctx->saved_data["padding"] = padding.vec();
    ctx->saved_data["dilation"] = dilation.vec();
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["act"] = act;
    ctx->saved_data["mean"] = mean;  // returned to dw_bn_act_train for the running statistics
    ctx->saved_data["var"] = var;
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    static auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("sepconv::dw_bn_act_backward", "").typed<Backward>();
    auto s = ctx->get_saved_variables();
    const auto stride = ctx->saved_data["stride"].toIntVector();
    const auto padding = ctx->saved_data["padding"].toIntVector();
    const auto dilation = ctx->saved_data["dilation"].toIntVector();
    auto [dx, dw, dgamma, dbeta] = op.call(grads[0], s[0], s[1], s[2], s[3], s[4], s[5], s[6], stride, padding,
                                           dilation, ctx->saved_data["eps"].toDouble(), ctx->saved_data["act"].toInt());
    return {dx, dw, dgamma, dbeta, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor dw_bn_act_train(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bn_weight,
                           const at::Tensor& bn_bias, const c10::optional<at::Tensor>& running_mean,
                           const c10::optional<at::Tensor>& running_var, double momentum, double eps, int64_t act,
                           at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  const bool needs_grad = input.requires_grad() || weight.requires_grad() || bn_weight.requires_grad() ||
                          bn_bias.requires_grad();
  if (!needs_grad || !at::GradMode::is_enabled()) {
    auto [y, z, mean, var] = dispatch_forward(input, weight, bn_weight, bn_bias, stride, padding, dilation, eps, act);
    update_running(running_mean, running_var, mean, var, z.numel() / std::max<int64_t>(z.size(1), 1), momentum);
    return y;
  }
  at::Tensor y = DwBnActFunction::apply(input, weight, bn_weight, bn_bias, stride, padding, dilation, eps, act);
  update_running_from_node<DwBnActFunction>(y, running_mean, running_var, y.numel() / std::max<int64_t>(y.size(1), 1),
                                            momentum);
  return y;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(sepconv, m) {
  m.def(
      "dw_bn_act_train(Tensor input, Tensor weight, Tensor bn_weight, Tensor bn_bias, Tensor(a!)? running_mean, "
      "Tensor(b!)? running_var, float momentum, float eps, int act, int[2] stride, int[2] padding, int[2] dilation) "
      "-> Tensor");
  m.def(
      "dw_bn_act_forward(Tensor input, Tensor weight, Tensor bn_weight, Tensor bn_bias, int[2] stride, "
      "int[2] padding, int[2] dilation, float eps, int act) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "dw_bn_act_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor z, Tensor bn_weight, "
      "Tensor bn_bias, Tensor mean, Tensor var, int[2] stride, int[2] padding, int[2] dilation, float eps, int act) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
}

// CompositeImplicitAutograd: the op runs its own autograd (above); Python only calls it for CPU tensors.
TORCH_LIBRARY_IMPL(sepconv, CompositeImplicitAutograd, m) {
  m.impl("dw_bn_act_train", &dw_bn_act_train);
}

TORCH_LIBRARY_IMPL(sepconv, CPU, m) {
  m.impl("dw_bn_act_forward", &dw_bn_act_forward);
  m.impl("dw_bn_act_backward", &dw_bn_act_backward);
}
