// BatchNorm's running-statistics update after a training forward, shared by the fused kernels.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>
#include <torch/autograd.h>

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


// For a training operator whose output y came from Fn::apply: apply cannot hand back the batch
// statistics, so Fn's forward left them in its context as "mean" and "var"; update the running
// statistics from them and drop them from the context (the backward does not need them there).
template <class Fn>
void update_running_from_node(const at::Tensor& y, const c10::optional<at::Tensor>& running_mean,
                              const c10::optional<at::Tensor>& running_var, int64_t count, double momentum) {
  auto* node = dynamic_cast<torch::autograd::CppNode<Fn>*>(y.grad_fn().get());
  TORCH_CHECK(node, "sepconv fused batch norm: missing autograd node");
  auto& data = node->ctx_.saved_data;
  update_running(running_mean, running_var, data["mean"].toTensor(), data["var"].toTensor(), count, momentum);
  data.erase("mean");
  data.erase("var");
}

}  // namespace
