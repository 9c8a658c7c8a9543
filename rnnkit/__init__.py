"""rnnkit: recurrent neural networks for deep sequence modeling, on PyTorch.

Cells (one time step) and layers (drop-in for ``torch.nn.RNN/LSTM/GRU``) are the core; tasks
(language models and more) build on them, with a trainer, run directories and a CLI.
"""

from rnnkit.cells import GRUCell, LSTMCell, RecurrentCell, RNNCell
from rnnkit.layers import GRU, LSTM, RNN, Bidirectional, Recurrent
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
    "LSTMState",
    "detach_state",
    "zero_state",
]
