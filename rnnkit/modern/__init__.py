"""Parallel-in-time recurrent cells: minGRU, minLSTM, QRNN, SRU and xLSTM's mLSTM.

Each cell computes its gates from the input alone (mLSTM: from the input, with a matrix memory),
so training runs every step's projection as one GEMM and the recurrence as a scan or a fused
loop, while generation steps one token at a time with the state carried. Every cell has a layer
(``MinGRU``, ``MinLSTM``, ``QRNN``, ``SRU``, ``MLSTM``: stacked, bidirectional, ``lengths``,
``reverse``) and a step cell (``MinGRUCell`` ...: ``forward(x, state) -> (h, new_state)``,
``init_state(batch_size)``). See :mod:`rnnkit.modern.base` for the shared contract.
"""

from rnnkit.modern.base import ParallelCell, StackedLayer
from rnnkit.modern.minimal import MinGRU, MinGRUCell, MinLSTM, MinLSTMCell
from rnnkit.modern.mlstm import MLSTM, MLSTMCell, MLSTMState
from rnnkit.modern.qrnn import QRNN, QRNNCell, QRNNState
from rnnkit.modern.sru import SRU, SRUCell

__all__ = [
    "ParallelCell",
    "StackedLayer",
    "MinGRU",
    "MinGRUCell",
    "MinLSTM",
    "MinLSTMCell",
    "QRNN",
    "QRNNCell",
    "QRNNState",
    "SRU",
    "SRUCell",
    "MLSTM",
    "MLSTMCell",
    "MLSTMState",
]
