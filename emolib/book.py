"""Small conveniences for the notebooks: set-up from papermill parameters, figure titles, saving figures."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from . import params as params_mod
from .models import set_threads

PRETTY = {"smollm2-135m-instruct": "SmolLM2-135M-Instruct", "gemma3-270m": "Gemma-3-270M",
          "llama-3.1-8b-instruct": "Llama-3.1-8B-Instruct", "llama-3.1-70b-instruct": "Llama-3.1-70B-Instruct",
          "tiny-random-llama": "tiny random Llama"}


def setup(namespace: dict, notebook: str) -> dict:
    """Validate this notebook's parameters (one clear error on bad input), seed everything, make the run folder."""
    p = params_mod.from_namespace(namespace, notebook)
    random.seed(p["seed"])
    np.random.seed(p["seed"])
    torch.manual_seed(p["seed"])
    set_threads()
    Path(p["run_dir"], "figures").mkdir(parents=True, exist_ok=True)
    print(f"run {p['run_name']} · model {p['model']} · outputs in {shown_path(p['run_dir'])}")
    return p


def shown_path(path: str | Path) -> str:
    """A path as a reader should see it: relative to the project when inside it (no local folders in outputs)."""
    root = Path(__file__).resolve().parent.parent
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)


def label(p: dict) -> str:
    """The model and run, for every figure title."""
    return f"{PRETTY.get(p['model'], p['model'])} · run {p['run_name']}"


def show(fig, p: dict, name: str):
    """Save a figure as run_dir/figures/<name>.png and return it for display."""
    from .plots import save
    save(fig, p["run_dir"], name)
    return fig



def show_source(*fns) -> None:
    """Display the source of functions (the method's core lines) as a highlighted Python block."""
    import inspect
    import textwrap

    from IPython.display import Markdown, display
    parts = [f"# {fn.__module__}.{fn.__qualname__}\n{textwrap.dedent(inspect.getsource(fn)).rstrip()}" for fn in fns]
    display(Markdown("```python\n" + "\n\n".join(parts) + "\n```"))
