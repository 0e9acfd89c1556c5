"""Thin Lightning callbacks that call probes during a fit and keep plain records.

A scenario switches them on in its config (`scenario.callbacks`); `HealthRecorder` is on
for every run.
"""

from losslab.recorders.base import Recorder
from losslab.recorders.health import HealthRecorder
from losslab.recorders.regression import RegressionHealth
from losslab.recorders.scratch import ScratchHealth
from losslab.recorders.units import DeadUnits

__all__ = ["DeadUnits", "HealthRecorder", "Recorder", "RegressionHealth", "ScratchHealth"]
