"""Reporting, every notebook and 06: figures, notebook helpers and formatted tables, the findings of each stage,
the notebook lint, the README block and cross-run summary, the model comparison and the static site."""
