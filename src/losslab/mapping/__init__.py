"""`losslab map`: where training breaks, for every learning rate × one knob × seed at once.

`train` builds the grid's configurations exactly as `losslab run` would and trains them as
one batched program; `track` writes maps/<scenario>.csv and .png and logs the MLflow run.
"""
