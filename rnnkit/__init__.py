"""rnnkit: recurrent neural networks for deep sequence modeling, on PyTorch.

Cells (one time step) and layers (drop-in for ``torch.nn.RNN/LSTM/GRU``) are the core; tasks
(language models and more) build on them, with a trainer, run directories and a CLI.
"""

from rnnkit.cells import GRUCell, LSTMCell, RecurrentCell, RNNCell
from rnnkit.layers import GRU, LSTM, RNN, Bidirectional, Recurrent
from rnnkit.modern import MLSTM, QRNN, SRU, MinGRU, MinLSTM
from rnnkit.state import LSTMState, detach_state, zero_state
from rnnkit.version import __version__

__all__ = [
    "__version__",
    "RecurrentCell",
    "RNNCell",
    "LSTMCell",
    "GRUCell",
    "Recurrent",
    "Bidirectional",
    "RNN",
    "LSTM",
    "GRU",
    "MinGRU",
    "MinLSTM",
    "QRNN",
    "SRU",
    "MLSTM",
    "LSTMState",
    "detach_state",
    "zero_state",
    "load",
]


def __getattr__(name: str):
    """``rnnkit.load`` (a run's task model, :func:`rnnkit.api.load`), imported on first use so
    that ``import rnnkit`` does not load every task."""
    if name == "load":
        from rnnkit.api import load

        return load
    raise AttributeError(f"module 'rnnkit' has no attribute {name!r}")
