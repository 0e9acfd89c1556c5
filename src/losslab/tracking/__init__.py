"""MLflow: where runs go (`uri`), the config as params (`params`), the client with losslab's
run layout (`store`, loaded only in the writer process), the writer process that forwards
calls (`writer`), and the mapping of a verdict to runs (`log`)."""
