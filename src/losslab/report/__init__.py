"""What a person reads, drawn from results or files: DVC metrics and plot data, tables,
figures and the summary. Nothing here trains or talks to MLflow; matplotlib loads only in
`report.figures` (imported by the summary and by the figure worker, never by training)."""
