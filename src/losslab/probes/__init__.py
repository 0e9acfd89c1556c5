"""Probes: pure-torch instruments that turn a model, its parameters and data into numbers.

A probe is a function of plain inputs (a module or a template architecture plus
parameters, possibly stacked with a leading replica dimension as torch.func's
stack_module_state makes them; the data; the loss) that returns numbers, one per replica
where parameters are stacked. Probes never modify what they are given, and this package
imports only the standard library, numpy and torch: no Lightning, MLflow or Hydra, and no
other losslab module, so any script, notebook or test can measure a model in milliseconds.

- curvature: λ_max of the loss Hessian and the stability bound 2/λ_max of gradient descent;
- gradients: hand-written vs autograd gradients, gradient norms;
- units: dead ReLU units, saturated sigmoid/tanh units;
- inputs: feature scales, non-finite values, targets outside the head's range, the fit
  score (R² or accuracy) and the class margin;
- pitfalls: a broadcast loss, 'accuracy' on a regression target.
"""

from losslab.probes.curvature import (
    Params,
    adam_bound,
    adam_preconditioner,
    critical_lr,
    hvp,
    lambda_max,
    lambda_max_stacked,
    smallest_unstable_prefix,
    top_eigenvalue,
)
from losslab.probes.gradients import (
    finite_differences,
    gradient_check,
    layer_norms,
    relative_errors,
    relative_errors_np,
    tensor_norms,
    total_norm,
)
from losslab.probes.inputs import (
    class_margin,
    fit_score,
    head_range,
    input_stats,
    nonfinite,
    targets_outside,
    task_of,
)
from losslab.probes.pitfalls import loss_broadcast, metric_misuse
from losslab.probes.units import dead_units, preactivations, saturated_units, stacked_forward, unit_report

__all__ = [
    "Params",
    "adam_bound",
    "adam_preconditioner",
    "class_margin",
    "critical_lr",
    "dead_units",
    "finite_differences",
    "fit_score",
    "gradient_check",
    "head_range",
    "hvp",
    "input_stats",
    "lambda_max",
    "lambda_max_stacked",
    "layer_norms",
    "loss_broadcast",
    "metric_misuse",
    "nonfinite",
    "preactivations",
    "relative_errors",
    "relative_errors_np",
    "saturated_units",
    "smallest_unstable_prefix",
    "stacked_forward",
    "targets_outside",
    "task_of",
    "tensor_norms",
    "top_eigenvalue",
    "total_norm",
    "unit_report",
]
