// Fused BatchNorm (training mode: batch statistics) + activation on the CPU, forward and backward.
//
// Why: in a separable network the memory-bound steps (BatchNorm, activation) outweigh the convolutions.
// Stock PyTorch makes five passes over the activation tensor in the forward (statistics, normalize,
// activation read + write) and eight in the backward; these kernels make three and five, and keep only
// the BatchNorm input for the backward (the pre-activation is recomputed, which costs no memory traffic).
//
// Layouts: channels_last 4-D tensors are read as [M = N*H*W, C] rows; contiguous ones as [N, C, S].
// Reductions accumulate in double over a fixed split of the rows (independent of the thread count), so
// the same input gives the same bits on every run.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

#include "activation.h"
#include "running_stats.h"

namespace {

// Below this many elements a pass runs on one thread.
constexpr int64_t kParallelElements = 32768;

// A fixed split of `rows` into chunks: at most 64, at least 32 rows each.
inline int64_t chunk_count(int64_t rows) {
  return std::max<int64_t>(1, std::min<int64_t>(64, rows / 32));
}

struct Layout {
  bool channels_last;
  int64_t n, c, s;  // batch, channels, spatial size (H*W)
};

Layout layout_of(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 4, "sepconv fused batch norm: expected a 4-D input, got ", x.dim(), "-D");
  Layout l;
  // As BatchNorm does: a (possibly strided) channels_last tensor stays channels_last.
  l.channels_last = x.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  l.n = x.size(0);
  l.c = x.size(1);
  l.s = x.size(2) * x.size(3);
  return l;
}

at::Tensor in_layout(const at::Tensor& t, const Layout& l) {
  return l.channels_last ? t.contiguous(at::MemoryFormat::ChannelsLast) : t.contiguous();
}

// Per-channel sums of `value(i, c)` and `value2(i, c)` over all positions, in double.
template <typename F>
void channel_sums(const Layout& l, double* sum1, double* sum2, F&& terms) {
  const int64_t C = l.c;
  if (l.channels_last) {
    const int64_t M = l.n * l.s;
    const int64_t chunks = chunk_count(M);
    std::vector<double> partial(static_cast<size_t>(chunks * 2 * C), 0.0);
    // Small tensors stay on one thread: waking the pool costs more than the sums.
    const int64_t grain = M * C < kParallelElements ? chunks : 1;
    at::parallel_for(0, chunks, grain, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        double* a = partial.data() + k * 2 * C;
        double* b = a + C;
        const int64_t row0 = M * k / chunks, row1 = M * (k + 1) / chunks;
        for (int64_t m = row0; m < row1; ++m) {
          terms.row(m, a, b);
        }
      }
    });
    std::fill(sum1, sum1 + C, 0.0);
    std::fill(sum2, sum2 + C, 0.0);
    for (int64_t k = 0; k < chunks; ++k) {
      const double* a = partial.data() + k * 2 * C;
      for (int64_t c = 0; c < C; ++c) {
        sum1[c] += a[c];
        sum2[c] += a[C + c];
      }
    }
  } else {
    const int64_t grain = std::max<int64_t>(1, kParallelElements / std::max<int64_t>(l.n * l.s, 1));
    at::parallel_for(0, C, grain, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        double a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        double b[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int64_t n = 0; n < l.n; ++n) {
          terms.plane(n, c, a, b);
        }
        double s1 = 0, s2 = 0;
        for (int j = 0; j < 8; ++j) {
          s1 += a[j];
          s2 += b[j];
        }
        sum1[c] = s1;
        sum2[c] = s2;
      }
    });
  }
}

// Sums of x and x^2 per channel.
template <typename scalar_t>
struct MomentTerms {
  const scalar_t* x;
  int64_t C, S;
  void row(int64_t m, double* a, double* b) const {
    const scalar_t* r = x + m * C;
    for (int64_t c = 0; c < C; ++c) {
      double v = static_cast<double>(r[c]);
      a[c] += v;
      b[c] += v * v;
    }
  }
  void plane(int64_t n, int64_t c, double* a, double* b) const {
    const scalar_t* p = x + (n * C + c) * S;
    int64_t i = 0;
    for (; i + 8 <= S; i += 8) {
      for (int j = 0; j < 8; ++j) {
        double v = static_cast<double>(p[i + j]);
        a[j] += v;
        b[j] += v * v;
      }
    }
    for (; i < S; ++i) {
      double v = static_cast<double>(p[i]);
      a[0] += v;
      b[0] += v * v;
    }
  }
};

// Sums of g and g * (x - mean) per channel, g = dy * act'(x * scale + shift).
template <typename scalar_t, int A>
struct GradTerms {
  using opmath_t = at::opmath_type<scalar_t>;
  const scalar_t* x;
  const scalar_t* dy;
  const opmath_t* scale;
  const opmath_t* shift;
  const opmath_t* mean;
  int64_t C, S;
  void row(int64_t m, double* a, double* b) const {
    const scalar_t* xr = x + m * C;
    const scalar_t* gr = dy + m * C;
    for (int64_t c = 0; c < C; ++c) {
      opmath_t xv = static_cast<opmath_t>(xr[c]);
      opmath_t g = static_cast<opmath_t>(gr[c]) * act_derivative<A>(xv * scale[c] + shift[c]);
      a[c] += static_cast<double>(g);
      b[c] += static_cast<double>(g * (xv - mean[c]));
    }
  }
  void plane(int64_t n, int64_t c, double* a, double* b) const {
    const int64_t offset = (n * C + c) * S;
    const scalar_t* xp = x + offset;
    const scalar_t* gp = dy + offset;
    const opmath_t sc = scale[c], sh = shift[c], mu = mean[c];
    for (int64_t i = 0; i < S; ++i) {
      opmath_t xv = static_cast<opmath_t>(xp[i]);
      opmath_t g = static_cast<opmath_t>(gp[i]) * act_derivative<A>(xv * sc + sh);
      a[i & 7] += static_cast<double>(g);
      b[i & 7] += static_cast<double>(g * (xv - mu));
    }
  }
};

// out[i, c] = f(i, c) for every element, in the input's layout.
template <typename F>
void elementwise(const Layout& l, F&& body) {
  if (l.channels_last) {
    const int64_t M = l.n * l.s;
    at::parallel_for(0, M, std::max<int64_t>(1, kParallelElements / std::max<int64_t>(l.c, 1)),
                     [&](int64_t begin, int64_t end) {
                       for (int64_t m = begin; m < end; ++m) body.row(m);
                     });
  } else {
    at::parallel_for(0, l.n * l.c, std::max<int64_t>(1, kParallelElements / std::max<int64_t>(l.s, 1)),
                     [&](int64_t begin, int64_t end) {
                       for (int64_t p = begin; p < end; ++p) body.plane(p / l.c, p % l.c);
                     });
  }
}

template <typename scalar_t, int A>
struct ForwardBody {
  using opmath_t = at::opmath_type<scalar_t>;
  const scalar_t* x;
  scalar_t* y;
  const opmath_t* scale;
  const opmath_t* shift;
  int64_t C, S;
  void row(int64_t m) const {
    const scalar_t* xr = x + m * C;
    scalar_t* yr = y + m * C;
    for (int64_t c = 0; c < C; ++c) {
      yr[c] = static_cast<scalar_t>(act_forward<A>(static_cast<opmath_t>(xr[c]) * scale[c] + shift[c]));
    }
  }
  void plane(int64_t n, int64_t c) const {
    const int64_t offset = (n * C + c) * S;
    const scalar_t* xp = x + offset;
    scalar_t* yp = y + offset;
    const opmath_t sc = scale[c], sh = shift[c];
    for (int64_t i = 0; i < S; ++i) {
      yp[i] = static_cast<scalar_t>(act_forward<A>(static_cast<opmath_t>(xp[i]) * sc + sh));
    }
  }
};

template <typename scalar_t, int A>
struct BackwardBody {
  using opmath_t = at::opmath_type<scalar_t>;
  const scalar_t* x;
  const scalar_t* dy;
  scalar_t* dx;
  const opmath_t* scale;
  const opmath_t* shift;
  const opmath_t* mean;
  const opmath_t* gain;     // weight * invstd
  const opmath_t* mean_g;   // mean of g
  const opmath_t* slope;    // mean of g * (x - mean), times invstd^2
  int64_t C, S;
  void row(int64_t m) const {
    const scalar_t* xr = x + m * C;
    const scalar_t* gr = dy + m * C;
    scalar_t* dr = dx + m * C;
    for (int64_t c = 0; c < C; ++c) {
      opmath_t xv = static_cast<opmath_t>(xr[c]);
      opmath_t g = static_cast<opmath_t>(gr[c]) * act_derivative<A>(xv * scale[c] + shift[c]);
      dr[c] = static_cast<scalar_t>(gain[c] * (g - mean_g[c] - (xv - mean[c]) * slope[c]));
    }
  }
  void plane(int64_t n, int64_t c) const {
    const int64_t offset = (n * C + c) * S;
    const scalar_t* xp = x + offset;
    const scalar_t* gp = dy + offset;
    scalar_t* dp = dx + offset;
    const opmath_t sc = scale[c], sh = shift[c], mu = mean[c], ga = gain[c], mg = mean_g[c], sl = slope[c];
    for (int64_t i = 0; i < S; ++i) {
      opmath_t xv = static_cast<opmath_t>(xp[i]);
      opmath_t g = static_cast<opmath_t>(gp[i]) * act_derivative<A>(xv * sc + sh);
      dp[i] = static_cast<scalar_t>(ga * (g - mg - (xv - mu) * sl));
    }
  }
};

at::ScalarType stat_type(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

void check_params(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  TORCH_CHECK(x.device().is_cpu(), "sepconv fused batch norm: CPU tensors only");
  TORCH_CHECK(weight.numel() == x.size(1) && bias.numel() == x.size(1),
              "sepconv fused batch norm: weight and bias need ", x.size(1), " elements");
}

// Returns (y, mean, biased variance); mean and variance in float (double for double inputs).
std::tuple<at::Tensor, at::Tensor, at::Tensor> bn_act_forward(const at::Tensor& input, const at::Tensor& weight,
                                                              const at::Tensor& bias, double eps, int64_t act) {
  Layout l = layout_of(input);
  check_params(input, weight, bias);
  const int64_t count = l.n * l.s;
  TORCH_CHECK(count > 1, "Expected more than 1 value per channel when training, got input size ", input.sizes());
  at::Tensor x = in_layout(input, l);
  at::Tensor y = at::empty_like(x);
  const at::ScalarType st = stat_type(x);
  at::Tensor mean = at::empty({l.c}, x.options().dtype(st));
  at::Tensor var = at::empty({l.c}, x.options().dtype(st));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "sepconv_bn_act_forward", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    std::vector<double> sum(l.c), sumsq(l.c);
    channel_sums(l, sum.data(), sumsq.data(), MomentTerms<scalar_t>{x.data_ptr<scalar_t>(), l.c, l.s});
    at::Tensor w = weight.to(at::CppTypeToScalarType<opmath_t>::value).contiguous();
    at::Tensor b = bias.to(at::CppTypeToScalarType<opmath_t>::value).contiguous();
    std::vector<opmath_t> scale(l.c), shift(l.c);
    for (int64_t c = 0; c < l.c; ++c) {
      const double mu = sum[c] / count;
      const double v = std::max(sumsq[c] / count - mu * mu, 0.0);
      const double invstd = 1.0 / std::sqrt(v + eps);
      const double sc = static_cast<double>(w.data_ptr<opmath_t>()[c]) * invstd;
      scale[c] = static_cast<opmath_t>(sc);
      shift[c] = static_cast<opmath_t>(static_cast<double>(b.data_ptr<opmath_t>()[c]) - mu * sc);
      if (st == at::kDouble) {
        mean.data_ptr<double>()[c] = mu;
        var.data_ptr<double>()[c] = v;
      } else {
        mean.data_ptr<float>()[c] = static_cast<float>(mu);
        var.data_ptr<float>()[c] = static_cast<float>(v);
      }
    }
    dispatch_activation(act, [&](auto a) {
      elementwise(l, ForwardBody<scalar_t, decltype(a)::value>{x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
                                                                scale.data(), shift.data(), l.c, l.s});
    });
  });
  return {y, mean, var};
}

// Returns (grad_input, grad_weight, grad_bias) for y = act(batch_norm(x)), from saved mean and variance.
std::tuple<at::Tensor, at::Tensor, at::Tensor> bn_act_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                                               const at::Tensor& weight, const at::Tensor& bias,
                                                               const at::Tensor& mean, const at::Tensor& var,
                                                               double eps, int64_t act) {
  Layout l = layout_of(input);
  check_params(input, weight, bias);
  const int64_t count = l.n * l.s;
  at::Tensor x = in_layout(input, l);
  at::Tensor dy = in_layout(grad_output.to(x.scalar_type()), l);
  at::Tensor dx = at::empty_like(x);
  at::Tensor grad_weight = at::empty({l.c}, weight.options());
  at::Tensor grad_bias = at::empty({l.c}, bias.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "sepconv_bn_act_backward", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const auto ot = at::CppTypeToScalarType<opmath_t>::value;
    at::Tensor w = weight.to(ot).contiguous(), b = bias.to(ot).contiguous();
    at::Tensor mu_t = mean.to(at::kDouble).contiguous(), var_t = var.to(at::kDouble).contiguous();
    std::vector<opmath_t> scale(l.c), shift(l.c), mu(l.c), gain(l.c), mean_g(l.c), slope(l.c);
    std::vector<double> invstd(l.c);
    for (int64_t c = 0; c < l.c; ++c) {
      invstd[c] = 1.0 / std::sqrt(var_t.data_ptr<double>()[c] + eps);
      const double sc = static_cast<double>(w.data_ptr<opmath_t>()[c]) * invstd[c];
      scale[c] = static_cast<opmath_t>(sc);
      shift[c] = static_cast<opmath_t>(static_cast<double>(b.data_ptr<opmath_t>()[c]) -
                                       mu_t.data_ptr<double>()[c] * sc);
      mu[c] = static_cast<opmath_t>(mu_t.data_ptr<double>()[c]);
    }
    dispatch_activation(act, [&](auto a) {
      constexpr int A = decltype(a)::value;
      std::vector<double> sum_g(l.c), sum_gx(l.c);
      channel_sums(l, sum_g.data(), sum_gx.data(),
                   GradTerms<scalar_t, A>{x.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>(), scale.data(),
                                          shift.data(), mu.data(), l.c, l.s});
      at::Tensor gw = at::empty({l.c}, at::kDouble), gb = at::empty({l.c}, at::kDouble);
      for (int64_t c = 0; c < l.c; ++c) {
        gb.data_ptr<double>()[c] = sum_g[c];
        gw.data_ptr<double>()[c] = sum_gx[c] * invstd[c];
        gain[c] = static_cast<opmath_t>(static_cast<double>(w.data_ptr<opmath_t>()[c]) * invstd[c]);
        mean_g[c] = static_cast<opmath_t>(sum_g[c] / count);
        slope[c] = static_cast<opmath_t>(sum_gx[c] / count * invstd[c] * invstd[c]);
      }
      grad_weight.copy_(gw);
      grad_bias.copy_(gb);
      elementwise(l, BackwardBody<scalar_t, A>{x.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>(),
                                               dx.data_ptr<scalar_t>(), scale.data(), shift.data(), mu.data(),
                                               gain.data(), mean_g.data(), slope.data(), l.c, l.s});
    });
  });
  return {dx, grad_weight, grad_bias};
}

// The training step's entry point: forward, running-statistics update and autograd in C++, so a call
// costs one dispatch (a Python autograd.Function around the pair above cost ~70 us per call, more than
// the kernel itself on MobileNet's small late-stage tensors).
// Through the dispatcher (not a direct call), so profilers and dispatch modes see the two kernels.
std::tuple<at::Tensor, at::Tensor, at::Tensor> dispatch_forward(const at::Tensor& input, const at::Tensor& weight,
                                                                const at::Tensor& bias, double eps, int64_t act) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("sepconv::bn_act_forward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                             const at::Tensor&, double, int64_t)>();
  return op.call(input, weight, bias, eps, act);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dispatch_backward(const at::Tensor& grad_output,
                                                                 const at::Tensor& input, const at::Tensor& weight,
                                                                 const at::Tensor& bias, const at::Tensor& mean,
                                                                 const at::Tensor& var, double eps, int64_t act) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("sepconv::bn_act_backward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, const at::Tensor&, double, int64_t)>();
  return op.call(grad_output, input, weight, bias, mean, var, eps, act);
}

class BnActFunction : public torch::autograd::Function<BnActFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const at::Tensor& bias, double eps, int64_t act) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, mean, var] = dispatch_forward(input, weight, bias, eps, act);
    ctx->save_for_backward({input, weight, bias, mean, var});
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["act"] = act;
    ctx->saved_data["var"] = var;  // returned to bn_act_train for the running statistics
    ctx->saved_data["mean"] = mean;
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto [dx, dw, db] = dispatch_backward(grads[0], saved[0], saved[1], saved[2], saved[3], saved[4],
                                        ctx->saved_data["eps"].toDouble(), ctx->saved_data["act"].toInt());
    return {dx, dw, db, at::Tensor(), at::Tensor()};
  }
};

at::Tensor bn_act_train(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                        const c10::optional<at::Tensor>& running_mean, const c10::optional<at::Tensor>& running_var,
                        double momentum, double eps, int64_t act) {
  const int64_t count = input.numel() / std::max<int64_t>(input.size(1), 1);
  if (!(input.requires_grad() || weight.requires_grad() || bias.requires_grad()) || !at::GradMode::is_enabled()) {
    auto [y, mean, var] = dispatch_forward(input, weight, bias, eps, act);
    update_running(running_mean, running_var, mean, var, count, momentum);
    return y;
  }
  at::Tensor y = BnActFunction::apply(input, weight, bias, eps, act);
  update_running_from_node<BnActFunction>(y, running_mean, running_var, count, momentum);
  return y;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(sepconv, m) {
  m.def(
      "bn_act_train(Tensor input, Tensor weight, Tensor bias, Tensor(a!)? running_mean, Tensor(b!)? running_var, "
      "float momentum, float eps, int act) -> Tensor");
  m.def("bn_act_forward(Tensor input, Tensor weight, Tensor bias, float eps, int act) -> (Tensor, Tensor, Tensor)");
  m.def(
      "bn_act_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor bias, Tensor mean, Tensor var, "
      "float eps, int act) -> (Tensor, Tensor, Tensor)");
}

// CompositeImplicitAutograd: the op runs its own autograd (above) on every backend it is called with;
// Python only calls it for CPU tensors.
TORCH_LIBRARY_IMPL(sepconv, CompositeImplicitAutograd, m) {
  m.impl("bn_act_train", &bn_act_train);
}

TORCH_LIBRARY_IMPL(sepconv, CPU, m) {
  m.impl("bn_act_forward", &bn_act_forward);
  m.impl("bn_act_backward", &bn_act_backward);
}
