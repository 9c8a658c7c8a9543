// The elementwise recurrences of minGRU, minLSTM, QRNN and SRU as one fused CPU loop each way.
//
// All four cells compute their gates from x_t alone (one GEMM for every step, done by torch), so
// what is left per step is elementwise in the hidden unit j: a state s_t[j] from s_{t−1}[j] and
// the step's G pre-activations u_t[k·H + j]. One driver walks time for every batch row (rows are
// independent, so threads split the batch) and calls the cell's scalar step; the backward walks
// time back carrying ∂L/∂s. Layouts are batch-first and contiguous: u (B, T, G·H), states and
// outputs (B, T, H). With lengths, row b stops after lengths[b] steps: its state freezes, its
// outputs and pre-activation gradients past the end are zero.
//
// Cells (σ the logistic sigmoid, g(x) = x + ½ for x ≥ 0 and σ(x) below, as in minGRU's log-space
// version; s is the recurrent state, y the output):
//   0 minGRU   u = [k̃, z̃]:      z = σ(z̃), s = (1 − z) s_{t−1} + z g(k̃), y = s
//   1 minLSTM  u = [k̃, f̃, ĩ]:   f = σ(f̃), i = σ(ĩ), s = (f s_{t−1} + i g(k̃)) / (f + i), y = s
//   2 QRNN     u = [z̃, f̃, õ]:   z = tanh z̃, f = σ(f̃), o = σ(õ), s = f s_{t−1} + (1 − f) z, y = o s
//   3 SRU      u = [x̃, f̃, r̃, x̂], v = [v_f, v_r]:  f = σ(f̃ + v_f s_{t−1}), r = σ(r̃ + v_r s_{t−1}),
//              s = f s_{t−1} + (1 − f) x̃, y = r s + (1 − r) x̂   (x̂: the highway input)
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/zeros_like.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace rnnkit_modern {
namespace {

// e^x for float without a libm call, so the unit loops vectorise: x = k ln2 + r with |r| ≤ ln2/2
// (ln2 split in two so k ln2 is exact), e^r by its Taylor series to r⁷/7! (truncation below
// 6e−9 relative, under float's half ulp), 2^k built in the exponent bits. Clamped to the normal
// range; NaN passes through the comparisons untouched.
inline float exp_fast(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float k = std::floor(x * 1.4426950408889634f + 0.5f);
  const float r = (x - k * 0.693145751953125f) - k * 1.428606765330187e-6f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}
inline double exp_fast(double x) { return std::exp(x); }  // float64: the tests' precision

template <typename T>
inline T sig(T x) {
  return T(1) / (T(1) + exp_fast(-x));
}
template <typename T>
inline T tanh_fast(T x) {
  return T(2) / (T(1) + exp_fast(T(-2) * x)) - T(1);
}
// g(x) = x + ½ (x ≥ 0), σ(x) (x < 0): positive and continuous with g(0) = ½; g′ = 1 or σ(1 − σ)
template <typename T>
inline T g_act(T x, T& slope) {
  const T s = sig(x);
  slope = x >= T(0) ? T(1) : s * (T(1) - s);
  return x >= T(0) ? x + T(0.5) : s;
}

// Each cell: G pre-activation chunks, V per-unit parameter vectors, whether y is the state, and
//   fwd(u, H, j, v, s_prev) -> (s, y)
//   bwd(u, H, j, v, s_prev, s, dy, ds) -> du[k·H + j], dv[k·H + j] (accumulated), ∂L/∂s_prev
// where ds is ∂L/∂s_t arriving from step t + 1 (or from the final state).
struct MinGRU {
  static constexpr int G = 2, V = 0;
  static constexpr bool kYIsState = true;
  template <typename T>
  static inline void fwd(const T* u, int64_t H, int64_t j, const T*, T sp, T& s, T& y) {
    T slope;
    const T g = g_act(u[j], slope), z = sig(u[H + j]);
    s = sp + z * (g - sp);
    y = s;
  }
  template <typename T>
  static inline T bwd(const T* u, int64_t H, int64_t j, const T*, T sp, T, T dy, T ds, T* du,
                      T*) {
    T slope;
    const T g = g_act(u[j], slope), z = sig(u[H + j]);
    const T gs = ds + dy;
    du[j] = gs * z * slope;                          // through z g(k̃)
    du[H + j] = gs * (g - sp) * z * (T(1) - z);      // ∂s/∂z = g − s_{t−1}, then σ′
    return gs * (T(1) - z);
  }
};

struct MinLSTM {
  static constexpr int G = 3, V = 0;
  static constexpr bool kYIsState = true;
  template <typename T>
  static inline void fwd(const T* u, int64_t H, int64_t j, const T*, T sp, T& s, T& y) {
    T slope;
    const T g = g_act(u[j], slope), f = sig(u[H + j]), i = sig(u[2 * H + j]);
    s = (f * sp + i * g) / (f + i);  // f′ = f / (f + i), i′ = i / (f + i)
    y = s;
  }
  template <typename T>
  static inline T bwd(const T* u, int64_t H, int64_t j, const T*, T sp, T, T dy, T ds, T* du,
                      T*) {
    T slope;
    const T g = g_act(u[j], slope), f = sig(u[H + j]), i = sig(u[2 * H + j]);
    const T S = f + i, gs = ds + dy;
    // ∂f′/∂f = i/S², ∂f′/∂i = −f/S², ∂i′/∂f = −i/S², ∂i′/∂i = f/S²
    const T dfp = gs * sp, dip = gs * g, q = (dfp - dip) / (S * S);
    du[j] = gs * (i / S) * slope;
    du[H + j] = i * q * f * (T(1) - f);
    du[2 * H + j] = -f * q * i * (T(1) - i);
    return gs * (f / S);
  }
};

struct QRNN {
  static constexpr int G = 3, V = 0;
  static constexpr bool kYIsState = false;
  template <typename T>
  static inline void fwd(const T* u, int64_t H, int64_t j, const T*, T sp, T& s, T& y) {
    const T z = tanh_fast(u[j]), f = sig(u[H + j]), o = sig(u[2 * H + j]);
    s = z + f * (sp - z);  // f s_{t−1} + (1 − f) z: fo-pooling
    y = o * s;
  }
  template <typename T>
  static inline T bwd(const T* u, int64_t H, int64_t j, const T*, T sp, T s, T dy, T ds, T* du,
                      T*) {
    const T z = tanh_fast(u[j]), f = sig(u[H + j]), o = sig(u[2 * H + j]);
    const T gs = ds + dy * o;
    du[j] = gs * (T(1) - f) * (T(1) - z * z);
    du[H + j] = gs * (sp - z) * f * (T(1) - f);
    du[2 * H + j] = dy * s * o * (T(1) - o);
    return gs * f;
  }
};

struct SRU {
  static constexpr int G = 4, V = 2;
  static constexpr bool kYIsState = false;
  template <typename T>
  static inline void fwd(const T* u, int64_t H, int64_t j, const T* v, T sp, T& s, T& y) {
    const T f = sig(u[H + j] + v[j] * sp), r = sig(u[2 * H + j] + v[H + j] * sp);
    s = u[j] + f * (sp - u[j]);
    y = u[3 * H + j] + r * (s - u[3 * H + j]);  // highway: r s + (1 − r) x̂
  }
  template <typename T>
  static inline T bwd(const T* u, int64_t H, int64_t j, const T* v, T sp, T s, T dy, T ds,
                      T* du, T* dv) {
    const T f = sig(u[H + j] + v[j] * sp), r = sig(u[2 * H + j] + v[H + j] * sp);
    const T ar = dy * (s - u[3 * H + j]) * r * (T(1) - r);  // ∂L/∂(r̃ + v_r s_{t−1})
    const T gs = ds + dy * r;
    const T af = gs * (sp - u[j]) * f * (T(1) - f);  // ∂L/∂(f̃ + v_f s_{t−1})
    du[j] = gs * (T(1) - f);
    du[H + j] = af;
    du[2 * H + j] = ar;
    du[3 * H + j] = dy * (T(1) - r);
    dv[j] += af * sp;
    dv[H + j] += ar * sp;
    return gs * f + af * v[j] + ar * v[H + j];
  }
};

void check_inputs(const at::Tensor& u, const at::Tensor& s0, const std::optional<at::Tensor>& v,
                  const std::optional<at::Tensor>& lengths, int G, int V) {
  TORCH_CHECK(u.dim() == 3 && u.is_contiguous() && u.size(2) % G == 0,
              "rnnkit modern: u must be a contiguous (B, T, ", G, "·H) tensor, got ", u.sizes());
  const int64_t B = u.size(0), H = u.size(2) / G;
  TORCH_CHECK(s0.dim() == 2 && s0.size(0) == B && s0.size(1) == H && s0.is_contiguous() &&
                  s0.scalar_type() == u.scalar_type(),
              "rnnkit modern: the initial state must be a contiguous (", B, ", ", H,
              ") tensor of u's dtype, got ", s0.sizes());
  if (V > 0) {
    TORCH_CHECK(v.has_value() && v->is_contiguous() && v->numel() == V * H &&
                    v->scalar_type() == u.scalar_type(),
                "rnnkit modern: this cell needs ", V, "·H per-unit weights");
  }
  if (lengths.has_value()) {
    TORCH_CHECK(lengths->dim() == 1 && lengths->size(0) == B &&
                    lengths->scalar_type() == at::kLong && lengths->is_contiguous(),
                "rnnkit modern: lengths must be a contiguous int64 (B,) tensor");
  }
}

template <typename Cell, typename T>
void forward_impl(const at::Tensor& u, const at::Tensor& s0, const std::optional<at::Tensor>& v,
                  const std::optional<at::Tensor>& lengths, const at::Tensor& y,
                  const std::optional<at::Tensor>& states, const at::Tensor& s_last) {
  check_inputs(u, s0, v, lengths, Cell::G, Cell::V);
  const int64_t B = u.size(0), T_ = u.size(1), H = u.size(2) / Cell::G;
  TORCH_CHECK(y.is_contiguous() && y.numel() == B * T_ * H, "rnnkit modern: y must be (B, T, H)");
  TORCH_CHECK(s_last.is_contiguous() && s_last.numel() == B * H,
              "rnnkit modern: s_last must be (B, H)");
  TORCH_CHECK(Cell::kYIsState || states.has_value(), "rnnkit modern: this cell needs states");
  const T *U = u.data_ptr<T>(), *S0 = s0.data_ptr<T>();
  const T* Vp = v.has_value() ? v->data_ptr<T>() : nullptr;
  const int64_t* L = lengths.has_value() ? lengths->data_ptr<int64_t>() : nullptr;
  T *Y = y.data_ptr<T>(), *SL = s_last.data_ptr<T>();
  T* S = states.has_value() ? states->data_ptr<T>() : Y;
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t len = L != nullptr ? L[b] : T_;
      const T* sp = S0 + b * H;
      for (int64_t t = 0; t < len; ++t) {
        const int64_t row = b * T_ + t;
        const T* __restrict__ ur = U + row * Cell::G * H;
        T* __restrict__ sr = S + row * H;
        T* __restrict__ yr = Y + row * H;
        const T* __restrict__ spr = sp;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          T s, o;
          Cell::fwd(ur, H, j, Vp, spr[j], s, o);
          sr[j] = s;
          if (!Cell::kYIsState) yr[j] = o;
        }
        sp = sr;
      }
      std::memcpy(SL + b * H, sp, H * sizeof(T));
      for (int64_t t = len; t < T_; ++t) {  // past the end: zero outputs, the state held
        std::memset(Y + (b * T_ + t) * H, 0, H * sizeof(T));
        if (!Cell::kYIsState) std::memcpy(S + (b * T_ + t) * H, sp, H * sizeof(T));
      }
    }
  });
}

template <typename Cell, typename T>
at::Tensor backward_impl(const at::Tensor& u, const at::Tensor& s0,
                         const std::optional<at::Tensor>& v,
                         const std::optional<at::Tensor>& lengths, const at::Tensor& states,
                         const at::Tensor& gy, const std::optional<at::Tensor>& gs_last,
                         const at::Tensor& du, const std::optional<at::Tensor>& dv_rows) {
  check_inputs(u, s0, v, lengths, Cell::G, Cell::V);
  const int64_t B = u.size(0), T_ = u.size(1), H = u.size(2) / Cell::G;
  for (const auto* t : {&states, &gy})
    TORCH_CHECK(t->is_contiguous() && t->numel() == B * T_ * H,
                "rnnkit modern: states and gy must be contiguous (B, T, H)");
  TORCH_CHECK(du.is_contiguous() && du.sizes() == u.sizes(), "rnnkit modern: du must be like u");
  if (Cell::V > 0)
    TORCH_CHECK(dv_rows.has_value() && dv_rows->is_contiguous() &&
                    dv_rows->numel() == B * Cell::V * H,
                "rnnkit modern: dv_rows must be (B, V·H)");
  at::Tensor ds0 = gs_last.has_value() ? gs_last->contiguous().clone() : at::zeros_like(s0);
  const T *U = u.data_ptr<T>(), *S0 = s0.data_ptr<T>(), *S = states.data_ptr<T>();
  const T *GY = gy.data_ptr<T>(), *Vp = v.has_value() ? v->data_ptr<T>() : nullptr;
  const int64_t* L = lengths.has_value() ? lengths->data_ptr<int64_t>() : nullptr;
  T *DU = du.data_ptr<T>(), *C = ds0.data_ptr<T>();
  T* DV = dv_rows.has_value() ? dv_rows->data_ptr<T>() : nullptr;
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t len = L != nullptr ? L[b] : T_;
      T* __restrict__ c = C + b * H;  // ∂L/∂s_t, carried back in place
      T* __restrict__ dvr = DV != nullptr ? DV + b * Cell::V * H : nullptr;
      for (int64_t t = len - 1; t >= 0; --t) {
        const int64_t row = b * T_ + t;
        const T* __restrict__ ur = U + row * Cell::G * H;
        const T* __restrict__ sr = S + row * H;
        const T* __restrict__ spr = t > 0 ? S + (row - 1) * H : S0 + b * H;
        const T* __restrict__ gyr = GY + row * H;
        T* __restrict__ dur = DU + row * Cell::G * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) c[j] = Cell::bwd(ur, H, j, Vp, spr[j], sr[j], gyr[j], c[j], dur, dvr);
      }
      for (int64_t t = len; t < T_; ++t)
        std::memset(DU + (b * T_ + t) * Cell::G * H, 0, Cell::G * H * sizeof(T));
    }
  });
  return ds0;
}

template <typename F>
auto dispatch(int64_t cell, const at::Tensor& u, F&& f) {
  const bool dbl = u.scalar_type() == at::kDouble;
  TORCH_CHECK(dbl || u.scalar_type() == at::kFloat, "rnnkit modern: float32 or float64 only");
  TORCH_CHECK(u.device().is_cpu(), "rnnkit modern: CPU tensors only");
  switch (cell) {
    case 0: return dbl ? f(MinGRU{}, double{}) : f(MinGRU{}, float{});
    case 1: return dbl ? f(MinLSTM{}, double{}) : f(MinLSTM{}, float{});
    case 2: return dbl ? f(QRNN{}, double{}) : f(QRNN{}, float{});
    case 3: return dbl ? f(SRU{}, double{}) : f(SRU{}, float{});
  }
  TORCH_CHECK(false, "rnnkit modern: unknown cell id ", cell);
}

void scan_forward(int64_t cell, const at::Tensor& u, const at::Tensor& s0,
                  const std::optional<at::Tensor>& v, const std::optional<at::Tensor>& lengths,
                  const at::Tensor& y, const std::optional<at::Tensor>& states,
                  const at::Tensor& s_last) {
  dispatch(cell, u, [&](auto c, auto t) {
    forward_impl<decltype(c), decltype(t)>(u, s0, v, lengths, y, states, s_last);
    return 0;
  });
}

at::Tensor scan_backward(int64_t cell, const at::Tensor& u, const at::Tensor& s0,
                         const std::optional<at::Tensor>& v,
                         const std::optional<at::Tensor>& lengths, const at::Tensor& states,
                         const at::Tensor& gy, const std::optional<at::Tensor>& gs_last,
                         const at::Tensor& du, const std::optional<at::Tensor>& dv_rows) {
  return dispatch(cell, u, [&](auto c, auto t) {
    return backward_impl<decltype(c), decltype(t)>(u, s0, v, lengths, states, gy, gs_last, du,
                                                   dv_rows);
  });
}

}  // namespace
}  // namespace rnnkit_modern

TORCH_LIBRARY(rnnkit_modern, m) {
  m.def(
      "scan_forward(int cell, Tensor u, Tensor s0, Tensor? v, Tensor? lengths, Tensor(a!) y, "
      "Tensor(b!)? states, Tensor(c!) s_last) -> ()",
      &rnnkit_modern::scan_forward);
  m.def(
      "scan_backward(int cell, Tensor u, Tensor s0, Tensor? v, Tensor? lengths, Tensor states, "
      "Tensor gy, Tensor? gs_last, Tensor(a!) du, Tensor(b!)? dv_rows) -> Tensor",
      &rnnkit_modern::scan_backward);
}
