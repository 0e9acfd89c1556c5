"""The doctor: names the cause of a rising loss with the measured evidence and verifies a
repair across seeds. The Python doors: `diagnose` on factories, `check_gradients` for a
hand-written backward in NumPy or torch, `watch` beside a plain training loop (and, in
doctor/callback.py, `DoctorCallback` inside a Lightning fit)."""

from losslab.doctor.engine import diagnose, examine
from losslab.doctor.gradients import GradientCheck, check_gradients
from losslab.doctor.report import CAUSES, Diagnosis, Finding, Repair
from losslab.doctor.watch import Watch, watch

__all__ = [
    "CAUSES",
    "Diagnosis",
    "Finding",
    "GradientCheck",
    "Repair",
    "Watch",
    "check_gradients",
    "diagnose",
    "examine",
    "watch",
]
