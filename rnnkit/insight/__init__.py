"""Why RNNs forget: gradient flow across time and long-term-memory benchmarks.

The package owns two instruments and what reports them; the commands built on them,
``rnnkit diagnose gradients`` and ``rnnkit bench memory``, live in :mod:`rnnkit.cli.diagnose`.

* :mod:`~rnnkit.insight.memory_tasks` — the bit, adding and copy generators, success criteria
  and baselines;
* :mod:`~rnnkit.insight.layers` — the fresh layers measured (``MEMORY_CELLS``, :class:`CellSpec`);
* :mod:`~rnnkit.insight.memory` — one model trained on one memory task (:func:`train_memory`);
* :mod:`~rnnkit.insight.sweep` and :mod:`~rnnkit.insight.pool` — cells × lengths × seeds, in
  this process or in worker processes (:func:`run_memory_benchmark`);
* :mod:`~rnnkit.insight.jacobians` — step Jacobians ∂s_t/∂s_{t−1} and their spectral norms;
* :mod:`~rnnkit.insight.gradient_flow` — ‖∂L_T/∂s_t‖ against distance T − t
  (:func:`gradient_flow`), and the probe of a trained language model;
* :mod:`~rnnkit.insight.writers`, :mod:`~rnnkit.insight.tables`, :mod:`~rnnkit.insight.plots` —
  CSV files, text tables and PNGs of both.
"""

from rnnkit.insight.gradient_flow import GradientFlow, gradient_flow, language_model_probe
from rnnkit.insight.jacobians import step_jacobian_matrices, step_jacobians
from rnnkit.insight.layers import MEMORY_CELLS, CellSpec, make_memory_layer, scale_recurrent_init
from rnnkit.insight.memory import (
    DEFAULT_LR,
    MemoryConfig,
    MemoryModel,
    MemoryResult,
    build_memory_model,
    memory_batch,
    train_memory,
)
from rnnkit.insight.memory_tasks import (
    ADDING_BASELINE_MSE,
    MEMORY_TASKS,
    adding_task,
    bit_task,
    copy_task,
    memory_metric_name,
    memory_success,
    memory_success_text,
)
from rnnkit.insight.plots import plot_gradient_flow, plot_memory_curves, plot_memory_results
from rnnkit.insight.sweep import TASK_DEFAULTS, run_memory_benchmark
from rnnkit.insight.tables import gradient_table, memory_table
from rnnkit.insight.writers import write_gradient_csv, write_memory_csv, write_memory_curves_csv

__all__ = [
    # memory tasks
    "MEMORY_TASKS",
    "MEMORY_CELLS",
    "ADDING_BASELINE_MSE",
    "DEFAULT_LR",
    "TASK_DEFAULTS",
    "bit_task",
    "adding_task",
    "copy_task",
    "memory_batch",
    "memory_metric_name",
    "memory_success",
    "memory_success_text",
    "make_memory_layer",
    "scale_recurrent_init",
    "MemoryConfig",
    "MemoryResult",
    "MemoryModel",
    "build_memory_model",
    "train_memory",
    "run_memory_benchmark",
    "memory_table",
    # gradient flow
    "CellSpec",
    "GradientFlow",
    "gradient_flow",
    "step_jacobians",
    "step_jacobian_matrices",
    "language_model_probe",
    "gradient_table",
    # writers
    "write_gradient_csv",
    "plot_gradient_flow",
    "write_memory_csv",
    "write_memory_curves_csv",
    "plot_memory_results",
    "plot_memory_curves",
]
