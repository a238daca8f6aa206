"""Reporting, all notebooks and 06: figures, the notebook helpers, the cross-run summary and the model
comparison."""
