"""The doctor: names the cause of a rising loss with the measured evidence and verifies a
repair across seeds. This slice holds the Python door (`diagnose` on factories, and
`check_gradients` for a hand-written backward in NumPy or torch)."""

from losslab.doctor.engine import diagnose, examine
from losslab.doctor.gradients import GradientCheck, check_gradients
from losslab.doctor.report import CAUSES, Diagnosis, Finding, Repair

__all__ = [
    "CAUSES",
    "Diagnosis",
    "Finding",
    "GradientCheck",
    "Repair",
    "check_gradients",
    "diagnose",
    "examine",
]
