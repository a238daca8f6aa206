"""Small conveniences for the notebooks: set-up from papermill parameters, figure titles, saving figures."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import params as params_mod
from ..lm.models import set_threads
from .paths import relative_to_root

PRETTY = {
    "smollm2-135m-instruct": "SmolLM2-135M-Instruct",
    "gemma3-270m": "Gemma-3-270M",
    "llama-3.1-8b-instruct": "Llama-3.1-8B-Instruct",
    "llama-3.1-70b-instruct": "Llama-3.1-70B-Instruct",
    "tiny-random-llama": "tiny random Llama",
}


def setup(namespace: dict, notebook: str) -> dict:
    """Validate this notebook's parameters (one clear error on bad input), seed everything, make the run folder."""
    p = params_mod.from_namespace(namespace, notebook)
    random.seed(p["seed"])
    np.random.seed(p["seed"])
    torch.manual_seed(p["seed"])
    set_threads()
    Path(p["run_dir"], "figures").mkdir(parents=True, exist_ok=True)
    print(f"run {p['run_name']} · model {p['model']} · outputs in {relative_to_root(p['run_dir'])}")
    return p


def run_title(p: dict) -> str:
    """The model and run, for every figure title."""
    return f"{PRETTY.get(p['model'], p['model'])} · run {p['run_name']}"


def show(fig, p: dict, name: str) -> None:
    """Check and save a figure as run_dir/figures/<name>.png, display it once and close it (returns None, so the
    inline backend cannot draw it a second time)."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    from .plots_common import save

    try:
        save(fig, p["run_dir"], name)
        display(fig)
    finally:
        plt.close(fig)


def save_table(p: dict, tables: dict[str, pd.DataFrame], name: str) -> pd.DataFrame:
    """Concatenate the per-set tables (column 'set') and write run_dir/<name>."""
    table = pd.concat(list(tables.values()), ignore_index=True)
    from ..safeio import atomic_save

    atomic_save(Path(p["run_dir"]) / name, lambda tmp: table.to_csv(tmp, index=False), base=p["run_dir"])
    return table


def show_source(*fns) -> None:
    """Display the source of functions (the method's core lines) as a highlighted Python block."""
    import inspect
    import textwrap

    from IPython.display import Markdown, display

    parts = [f"# {fn.__module__}.{fn.__qualname__}\n{textwrap.dedent(inspect.getsource(fn)).rstrip()}" for fn in fns]
    display(Markdown("```python\n" + "\n\n".join(parts) + "\n```"))
