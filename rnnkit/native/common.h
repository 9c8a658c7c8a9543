// Shared pieces of rnnkit's native kernels.
//
// rnnkit.fast runs a recurrent layer as one recurrent GEMM per step plus the gate arithmetic.
// Written with torch ops that arithmetic is five to fifteen separate passes per step, each on a
// (B, ·) tile small enough that torch runs it on one thread; the kernels do each step's gate
// arithmetic in one pass, and write the buffers the backward pass needs in the layouts fast.py
// uses. Two drivers run them: the fused sequences (gru_fused.cpp, rnn_fused.cpp and the
// *_fused_* functions of lstm_steps.cpp), which compute the recurrent products with the tile GEMM
// of tile_gemm.h inside one thread team per sequence, and the step loops (gru_steps.cpp,
// lstm_steps.cpp), which call oneDNN / torch.mm each step (CPUs without AVX-512, and the LSTM
// with fewer than 8 batch rows per thread).
//
// Every kernel takes 2-D tiles whose rows are contiguous (stride(1) == 1) with any row stride, so
// views such as xp[t] or rz[t][:, H:] are passed without copies. float and double are supported;
// float uses the branch-free exp below so the row loops vectorise, double uses std::exp (the
// float64 path exists for the tests against the reference cells).
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>

namespace rnnkit_native {

// e^x for float: Cody–Waite range reduction x = k ln2 + r, |r| ≤ ln2/2, and Cephes' degree-6
// polynomial for e^r (about 1 ulp); the clamps keep 2^k a normal float and let NaN through
// (a comparison with NaN is false, so NaN reaches the polynomial and stays NaN).
inline float exp_f(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float k = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - k * 0.693359375f + k * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

inline float exp_t(float x) { return exp_f(x); }
inline double exp_t(double x) { return std::exp(x); }

// σ(x) = 1 / (1 + e^−x);  tanh(x) = 2σ(2x) − 1
template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + exp_t(-x));
}
template <typename T>
inline T tanh_(T x) {
  return T(2) / (T(1) + exp_t(T(-2) * x)) - T(1);
}

// A 2-D tile: base pointer and row stride (elements), rows contiguous.
template <typename T>
struct Tile {
  T* p;
  int64_t ld;
  T* row(int64_t b) const { return p + b * ld; }
};

template <typename T>
Tile<T> tile(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2, "rnnkit native: ", name, " must be 2-D, got ", t.dim(), "-D");
  TORCH_CHECK(t.size(1) == 1 || t.stride(1) == 1, "rnnkit native: ", name,
              " needs contiguous rows");
  return {t.data_ptr<T>(), t.stride(0)};
}

template <typename T>
Tile<T> maybe_tile(const std::optional<at::Tensor>& t, const char* name) {
  return t.has_value() ? tile<T>(*t, name) : Tile<T>{nullptr, 0};
}

// Split the batch rows between threads once a tile is big enough to pay for it.
template <typename F>
void over_rows(int64_t B, int64_t H, F&& body) {
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(H, 1));
  at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) body(b);
  });
}

template <typename T>
const T* row_or_null(const Tile<T>& t, int64_t b) {
  return t.p != nullptr ? t.row(b) : nullptr;
}

// s_t = s + α ⊙ (s̃ − s), in place over s̃ (lengths and zoneout)
template <typename T>
void blend_row(int64_t H, const T* __restrict__ h, const T* __restrict__ alpha,
               T* __restrict__ out) {
  for (int64_t j = 0; j < H; ++j) out[j] = h[j] + alpha[j] * (out[j] - h[j]);
}

// Sum of x[0..n) (vectorised: the OpenMP SIMD reduction allows reassociating just this sum)
template <typename T>
inline T row_sum(const T* __restrict__ x, int64_t n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; ++j) s += x[j];
  return s;
}

// The data of an optional tensor, or null.
template <typename T>
T* data_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

// A sequence buffer: contiguous (T, B, width).
inline void check_seq(const at::Tensor& t, int64_t T_, int64_t B, int64_t width,
                      const char* name) {
  TORCH_CHECK(t.dim() == 3 && t.size(0) == T_ && t.size(1) == B && t.size(2) == width &&
                  t.is_contiguous(),
              "rnnkit native: ", name, " must be a contiguous (", T_, ", ", B, ", ", width,
              ") tensor, got ", t.sizes());
}

// An optional (T, B, width) sequence with contiguous rows and any step and row strides, such as
// the gradient of a batch-first output (a transposed view): row (t, b) at p + t·st + b·sb.
template <typename T>
struct SeqRows {
  const T* p = nullptr;
  int64_t st = 0, sb = 0;
  const T* row(int64_t t, int64_t b) const { return p + t * st + b * sb; }
  explicit operator bool() const { return p != nullptr; }
};

template <typename T>
SeqRows<T> seq_rows(const std::optional<at::Tensor>& t, int64_t T_, int64_t B, int64_t width,
                    const char* name) {
  if (!t.has_value()) return {};
  TORCH_CHECK(t->dim() == 3 && t->size(0) == T_ && t->size(1) == B && t->size(2) == width &&
                  (width <= 1 || t->stride(2) == 1),
              "rnnkit native: ", name, " must be a (", T_, ", ", B, ", ", width,
              ") tensor with contiguous rows, got sizes ", t->sizes(), ", strides ", t->strides());
  return {t->data_ptr<T>(), t->stride(0), t->stride(1)};
}

// The backward's running ∂L/∂state before the last step: the output gradient at T − 1 (a
// contiguous copy, it is updated in place), or zeros.
inline at::Tensor last_grad_or_zeros(const std::optional<at::Tensor>& g, int64_t B, int64_t H,
                                     const at::TensorOptions& options) {
  return g.has_value() ? g->select(0, g->size(0) - 1).clone(at::MemoryFormat::Contiguous)
                       : at::zeros({B, H}, options);
}

// x Wᵀ (+ b): ``w`` is oneDNN's packed weight (mkldnn::_reorder_linear_weight) when ``onednn``,
// else Wᵀ as a view (the caller's rnnkit.fast._pack decides; the same GEMMs as its _mm)
inline at::Tensor step_mm(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& b,
                   bool onednn) {
  if (onednn) {
    static const auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
    torch::jit::Stack stack;
    stack.reserve(6);
    stack.emplace_back(x);
    stack.emplace_back(w);
    stack.emplace_back(b.has_value() ? c10::IValue(*b) : c10::IValue());
    stack.emplace_back(std::string("none"));
    stack.emplace_back(c10::List<std::optional<at::Scalar>>());
    stack.emplace_back(std::string(""));
    op.callBoxed(&stack);
    return stack[0].toTensor();
  }
  return b.has_value() ? at::addmm(*b, x, w) : at::mm(x, w);
}

inline std::optional<at::Tensor> at_step(const std::optional<at::Tensor>& t, int64_t step) {
  return t.has_value() ? std::optional<at::Tensor>(t->select(0, step)) : std::nullopt;
}

#define RNNKIT_DISPATCH(tensor, name, ...)                                              \
  do {                                                                                 \
    if ((tensor).scalar_type() == at::kFloat) {                                        \
      name<float>(__VA_ARGS__);                                                        \
    } else if ((tensor).scalar_type() == at::kDouble) {                                \
      name<double>(__VA_ARGS__);                                                       \
    } else {                                                                           \
      TORCH_CHECK(false, "rnnkit native: float32 or float64 only, got ",           \
                  (tensor).scalar_type());                                             \
    }                                                                                  \
  } while (0)

#define RNNKIT_DISPATCH_RETURN(tensor, name, ...)                                       \
  [&]() -> at::Tensor {                                                                \
    if ((tensor).scalar_type() == at::kFloat) return name<float>(__VA_ARGS__);         \
    TORCH_CHECK((tensor).scalar_type() == at::kDouble,                                 \
                "rnnkit native: float32 or float64 only, got ", (tensor).scalar_type()); \
    return name<double>(__VA_ARGS__);                                                  \
  }()

}  // namespace rnnkit_native
