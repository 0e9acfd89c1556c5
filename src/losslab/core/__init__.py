"""The ground floor: configs, data tables, files, outcomes and plain result records.

Nothing here imports torch, Lightning, MLflow or matplotlib (an import-linter contract in
pyproject.toml says so), so a bad override or data file is answered before any of them
loads.
"""
