// The activations the fused kernels apply after BatchNorm (codes as in sepconv.kernels.ACTIVATION_CODES),
// forward and derivative, shared by bn_act.cpp and dw_bn_act.cpp.
#pragma once

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

namespace {

constexpr int kIdentity = 0;
constexpr int kRelu = 1;
constexpr int kRelu6 = 2;
constexpr int kSilu = 3;
constexpr int kHardswish = 4;

// exp for float in a form the compiler vectorizes (std::exp stays a scalar libm call): Cephes' expf,
// range reduction by ln 2 and a degree-6 polynomial, within 2 ulp of std::exp. Double uses std::exp.
inline float exp_approx(float x) {
  x = std::min(std::max(x, -87.3f), 88.3f);
  const float k = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - k * 0.693359375f;
  r = r + k * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

inline double exp_approx(double x) { return std::exp(x); }

template <int A, typename T>
inline T act_forward(T z) {
  if constexpr (A == kRelu) {
    return z < T(0) ? T(0) : z;  // NaN stays NaN, as in torch.relu: a diverging run must see it
  } else if constexpr (A == kRelu6) {
    return std::min(std::max(z, T(0)), T(6));
  } else if constexpr (A == kSilu) {
    return z / (T(1) + exp_approx(-z));
  } else if constexpr (A == kHardswish) {
    return z * std::min(std::max(z + T(3), T(0)), T(6)) / T(6);
  } else {
    return z;
  }
}

// d act / d z, with PyTorch's conventions at the kinks (ReLU: 0 at 0; ReLU6: 0 at 0 and 6;
// hardswish: z/3 + 1/2 on [-3, 3]).
template <int A, typename T>
inline T act_derivative(T z) {
  // Written as selects, not branches: the compiler turns them into vector blends (a branch on the sign
  // of random data mispredicts half the time and made the backward 20x slower).
  if constexpr (A == kRelu) {
    // The second factor is always 1; without it gcc 12 turns the product back into a branch.
    return static_cast<T>(z > T(0)) * static_cast<T>(z <= std::numeric_limits<T>::infinity());
  } else if constexpr (A == kRelu6) {
    return static_cast<T>(z > T(0)) * static_cast<T>(z < T(6));
  } else if constexpr (A == kSilu) {
    T s = T(1) / (T(1) + exp_approx(-z));
    return s * (T(1) + z * (T(1) - s));
  } else if constexpr (A == kHardswish) {
    return static_cast<T>(z > T(3)) +
           static_cast<T>(z <= T(3)) * static_cast<T>(z >= T(-3)) * (z / T(3) + T(0.5));
  } else {
    return T(1);
  }
}

template <typename Fn>
void dispatch_activation(int64_t act, Fn&& fn) {
  switch (act) {
    case kIdentity: fn(std::integral_constant<int, kIdentity>{}); break;
    case kRelu: fn(std::integral_constant<int, kRelu>{}); break;
    case kRelu6: fn(std::integral_constant<int, kRelu6>{}); break;
    case kSilu: fn(std::integral_constant<int, kSilu>{}); break;
    case kHardswish: fn(std::integral_constant<int, kHardswish>{}); break;
    default: TORCH_CHECK(false, "sepconv fused batch norm: unknown activation code ", act);
  }
}

}  // namespace
