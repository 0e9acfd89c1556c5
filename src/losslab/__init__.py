"""losslab: 'why does my training loss go up?' as reproducible experiments.

    import losslab
    report = losslab.diagnose(model=..., data=(X, y), loss=..., optimizer=...)
    losslab.check_gradients(loss, grad, params)
    watch = losslab.watch(model, optimizer, loss_fn)  # beside a plain loop; print(watch.report())
    Trainer(callbacks=[losslab.DoctorCallback()])     # inside any Lightning fit

`import losslab` stays light: the doctor (torch) loads on first use of those names.
"""

from typing import Any

from losslab.core.numerics import pin_cpu_numerics

# Before anything imports torch: the same CPU kernels on every machine (core/numerics.py).
pin_cpu_numerics()

__version__ = "0.1.0"
__all__ = ["DoctorCallback", "check_gradients", "diagnose", "watch"]


def __getattr__(name: str) -> Any:
    if name == "DoctorCallback":
        # Deferred: Lightning loads only for the callback, never for the plain-torch doors.
        from losslab.doctor.callback import DoctorCallback

        return DoctorCallback
    if name in __all__:
        # Deferred: torch (~2 s) loads only when the doctor is asked for, not on `import losslab`.
        from losslab import doctor

        return getattr(doctor, name)
    raise AttributeError(f"module 'losslab' has no attribute {name!r}")
