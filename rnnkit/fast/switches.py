"""The fast path's switches, read at call time by the modules of :mod:`rnnkit.fast`.

Set them as ``rnnkit.fast.NAME = value`` (the package forwards the assignment here) or on this
module directly; benchmarks and tests flip them to compare paths.
"""

# "auto": oneDNN for float32 on CPU where available, torch.mm otherwise; "torch": always torch.mm.
GEMM_BACKEND = "auto"
# Compile the time loops with TorchScript (the same functions run as Python when False).
SCRIPT = True
# On CPU, do each step's gate arithmetic in rnnkit's native kernels (rnnkit/native, built on first
# use) where they could be built; False = the torch-op loops.
NATIVE = True
# Weight gradients: "native" = rnnkit/native/weight_grad.cpp for float32 where the tile GEMM is
# compiled (AVX-512), torch.mm elsewhere; "mm" = always ``torch.mm`` on the transposed view (the
# BLAS reads it in place).
WGRAD_BACKEND = "native"
# Run the GRU, LSTM and Elman RNN on the fused sequences of rnnkit/native (gru_fused.cpp,
# lstm_steps.cpp, rnn_fused.cpp: their own tile GEMM, one thread team for the whole sequence)
# where that GEMM is compiled for the dtype: float32 needs AVX-512, float64 always runs (the
# tests). False = the step-by-step loops around oneDNN / torch.mm.
FUSED = True
