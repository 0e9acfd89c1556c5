"""The training machinery: models and the Ensemble of seeds, the datamodule, the
LightningModules (autograd and hand-written backward), schedules, building them from a
config, and the process set-up."""
