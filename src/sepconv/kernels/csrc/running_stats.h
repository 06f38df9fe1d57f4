// BatchNorm's running-statistics update after a training forward, shared by the fused kernels.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <cstdint>

namespace {

// running = (1 - momentum) * running + momentum * batch; BatchNorm keeps the unbiased variance.
inline void update_running(const c10::optional<at::Tensor>& running_mean, const c10::optional<at::Tensor>& running_var,
                           const at::Tensor& mean, const at::Tensor& var, int64_t count, double momentum) {
  at::NoGradGuard no_grad;
  if (running_mean.has_value() && running_mean->defined()) {
    running_mean->lerp_(mean.to(running_mean->scalar_type()), momentum);
  }
  if (running_var.has_value() && running_var->defined()) {
    running_var->lerp_((var * (static_cast<double>(count) / static_cast<double>(count - 1))).to(running_var->scalar_type()),
                       momentum);
  }
}

}  // namespace
