"""losslab: 'why does my training loss go up?' as reproducible experiments."""

__version__ = "0.1.0"
