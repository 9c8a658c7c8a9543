// The Elman RNN h̃_t = g(x̂_t + W_hh h_{t−1} + b_hh), g = tanh or relu, over whole sequences on the
// tile GEMM of tile_gemm.h, each thread running its own slice of the batch rows (no barriers).
// Buffers as rnnkit.fast._RNNFunction: hs (T, B, H) the states, ht the cell outputs h̃ (the same
// tensor unless α blends the states, s_t = s_{t−1} + α_t ⊙ (h̃_t − s_{t−1})).
#include <torch/library.h>

#include "common.h"
#include "tile_gemm.h"

namespace rnnkit_native {
namespace {

void check_rnn_weights(const at::Tensor& w, const at::Tensor& h0, int64_t B, int64_t H) {
  check_panels(w, H, H, kPanel, "weights");
  TORCH_CHECK(h0.dim() == 2 && h0.size(0) == B && h0.size(1) == H && h0.is_contiguous(),
              "rnnkit native RNN: h0 must be contiguous (B, H)");
}

// w: W_hhᵀ as 16-column panels (⌈H/16⌉, H, 16).
template <typename T>
void rnn_fused_forward_impl(const at::Tensor& xp, const at::Tensor& h0, const at::Tensor& w,
                            const std::optional<at::Tensor>& b,
                            const std::optional<at::Tensor>& alpha, bool relu,
                            const at::Tensor& hs, const at::Tensor& ht) {
  const int64_t T_ = xp.size(0), B = xp.size(1), H = xp.size(2);
  for (const auto* t : {&xp, &hs, &ht}) check_seq(*t, T_, B, H, "xp / hs / ht");
  if (alpha.has_value()) check_seq(*alpha, T_, B, H, "alpha");
  TORCH_CHECK(alpha.has_value() || hs.data_ptr() == ht.data_ptr(),
              "rnnkit native RNN: without alpha the states are the cell outputs (hs is ht)");
  check_rnn_weights(w, h0, B, H);
  const T *X = xp.data_ptr<T>(), *W = w.data_ptr<T>(), *H0 = h0.data_ptr<T>();
  const T *bias = data_or_null<T>(b);
  const T* AL = data_or_null<T>(alpha);
  T *HS = hs.data_ptr<T>(), *HT = ht.data_ptr<T>();

#pragma omp parallel num_threads(row_team(B))
  {
    const auto [b0, b1] = my_rows(B);
    alignas(64) T buf[kTileBuf];
    for (int64_t t = 0; t < T_; ++t) {
      const T* hp = t == 0 ? H0 : HS + (t - 1) * B * H;
      T* out = HT + t * B * H;
      rows_mm<T>(b0, b1, H, H, hp, H, W, out, H, buf);
      for (int64_t bb = b0; bb < b1; ++bb) {
        const int64_t row = t * B + bb;
        T* __restrict__ o = HT + row * H;
        const T* __restrict__ x = X + row * H;
        for (int64_t j = 0; j < H; ++j) {
          const T z = o[j] + x[j] + (bias != nullptr ? bias[j] : T(0));
          o[j] = relu ? (z > T(0) ? z : T(0)) : tanh_(z);
        }
        if (AL != nullptr) {
          T* __restrict__ s = HS + row * H;
          const T* __restrict__ h = hp + bb * H;
          const T* __restrict__ a = AL + row * H;
          for (int64_t j = 0; j < H; ++j) s[j] = h[j] + a[j] * (o[j] - h[j]);
        }
      }
    }
  }
}

// w_t: W_hh as 16-column panels (⌈H/16⌉, H, 16). Writes ∂L/∂z_t into dz; returns ∂L/∂h_0.
//   g = α ⊙ ∂L/∂s_t (or ∂L/∂s_t);  ∂z_t = g ⊙ g'(z_t) (1 − h̃² or [h̃ > 0]);
//   ∂L/∂s_{t−1} = ∂z_t W_hh + (∂L/∂s_t − g) + ∂L/∂y_{t−1}.
template <typename T>
at::Tensor rnn_fused_backward_impl(const std::optional<at::Tensor>& gy, const at::Tensor& ht,
                                   const std::optional<at::Tensor>& alpha, bool relu,
                                   const at::Tensor& w_t, const at::Tensor& dz) {
  const int64_t T_ = ht.size(0), B = ht.size(1), H = ht.size(2);
  for (const auto* t : {&ht, &dz}) check_seq(*t, T_, B, H, "ht / dz");
  if (alpha.has_value()) check_seq(*alpha, T_, B, H, "alpha");
  const SeqRows<T> GY = seq_rows<T>(gy, T_, B, H, "gy");
  at::Tensor carry = last_grad_or_zeros(gy, B, H, ht.options());
  check_rnn_weights(w_t, carry, B, H);
  at::Tensor mm = at::zeros({B, H}, ht.options());
  const T *W = w_t.data_ptr<T>(), *HT = ht.data_ptr<T>();
  const T *AL = data_or_null<T>(alpha);
  T *DZ = dz.data_ptr<T>(), *C = carry.data_ptr<T>(), *MM = mm.data_ptr<T>();

#pragma omp parallel num_threads(row_team(B))
  {
    const auto [b0, b1] = my_rows(B);
    alignas(64) T buf[kTileBuf];
    for (int64_t t = T_ - 1; t >= 0; --t) {
      for (int64_t bb = b0; bb < b1; ++bb) {
        const int64_t row = t * B + bb;
        T* __restrict__ c = C + bb * H;
        T* __restrict__ d = DZ + row * H;
        const T* __restrict__ h = HT + row * H;
        const T* __restrict__ m = MM + bb * H;
        if (t < T_ - 1)
          for (int64_t j = 0; j < H; ++j) c[j] += m[j];
        for (int64_t j = 0; j < H; ++j) {
          const T g = AL != nullptr ? c[j] * AL[row * H + j] : c[j];
          d[j] = g * (relu ? (h[j] > T(0) ? T(1) : T(0)) : T(1) - h[j] * h[j]);
          c[j] -= g;  // what reaches s_{t−1} around the cell (0 without α)
        }
        if (GY && t > 0) {
          const T* __restrict__ y = GY.row(t - 1, bb);
          for (int64_t j = 0; j < H; ++j) c[j] += y[j];
        }
      }
      rows_mm<T>(b0, b1, H, H, DZ + t * B * H, H, W, MM, H, buf);
    }
    for (int64_t j = b0 * H; j < b1 * H; ++j) C[j] += MM[j];
  }
  return carry;
}

void rnn_fused_forward(const at::Tensor& xp, const at::Tensor& h0, const at::Tensor& w,
                       const std::optional<at::Tensor>& b, const std::optional<at::Tensor>& alpha,
                       bool relu, const at::Tensor& hs, const at::Tensor& ht) {
  RNNKIT_DISPATCH(xp, rnn_fused_forward_impl, xp, h0, w, b, alpha, relu, hs, ht);
}

at::Tensor rnn_fused_backward(const std::optional<at::Tensor>& gy, const at::Tensor& ht,
                              const std::optional<at::Tensor>& alpha, bool relu,
                              const at::Tensor& w_t, const at::Tensor& dz) {
  return RNNKIT_DISPATCH_RETURN(ht, rnn_fused_backward_impl, gy, ht, alpha, relu, w_t, dz);
}

}  // namespace
}  // namespace rnnkit_native

TORCH_LIBRARY_FRAGMENT(rnnkit_native, m) {
  using namespace rnnkit_native;
  m.def(
      "rnn_fused_forward(Tensor xp, Tensor h0, Tensor w, Tensor? b, Tensor? alpha, bool relu, "
      "Tensor(a!) hs, Tensor(b!) ht) -> ()",
      &rnn_fused_forward);
  m.def(
      "rnn_fused_backward(Tensor? gy, Tensor ht, Tensor? alpha, bool relu, Tensor w_t, "
      "Tensor(a!) dz) -> Tensor",
      &rnn_fused_backward);
}
