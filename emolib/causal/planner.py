"""`python -m emolib plan PARAMS`: time this machine's scorer and propose stage 3-4's design for a budget.

It prints the parameter-file lines (n_random_sets, items_per_emotion) to paste; a run never sizes itself. It uses
the run folder's eval split, instrument and `paper` set when notebooks 01-03 have run, and otherwise template
dialogues, the params' prompt and random masks of the paper set's expected size (top_rate of all neurons, split
over the emotions).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..lm import models
from . import budget, instrument, splits


def shape_guess(p: dict, n_layers: int, d_ff: int) -> dict[int, list[int]]:
    """A mask of one emotion's expected size (top_rate x all neurons / emotions), spread evenly over the layers."""
    k = max(1, round(p["top_rate"] * n_layers * d_ff / len(p["emotions"])))
    return {layer: list(range(k // n_layers + (1 if layer < k % n_layers else 0))) for layer in range(n_layers)}


def planning_items(p: dict) -> pd.DataFrame:
    """The run's eval items when stage 1 has run, else template dialogues of every emotion."""
    try:
        return splits.eval_table(p, p.get("eval_limit"))
    except (FileNotFoundError, ValueError, OSError):
        from ..lm.synth_template import generate_dialogues

        rows = generate_dialogues(["a trip", "a new job", "the weekend"], p["emotions"], 4, p["seed"])
        return pd.DataFrame({"dialogue": [r["dialogue"] for r in rows], "label": [r["theme"] for r in rows]})


def propose(p: dict, budget_min: float) -> dict:
    """Load the model, time the scorer here and return the planner's proposal for budget_min minutes."""
    from ..identify import neurons

    model, tok, clf, _ = instrument.load_instrument(p)
    L, D = models.ffn_shape(model)
    path = Path(p["run_dir"]) / "neurons.json"
    names = neurons.set_names(path) if path.exists() else ["paper", "selective", "directions"]
    shape = neurons.load(path, "paper").by_layer(p["emotions"][0]) if path.exists() else shape_guess(p, L, D)
    items = planning_items(p)
    rate = budget.measure(p, clf, model, shape, items)
    sets = list(dict.fromkeys(["attribution", "weights", *names]))
    grid = [n for n in sets if p.get("grid_sets") is None or n in p["grid_sets"]]
    available = budget.available_items(items, p["emotions"]) if len(items) else 1
    if not np.isfinite(rate) or rate <= 0:
        raise RuntimeError("plan: could not time the scorer on this machine")
    return budget.plan(
        60 * budget_min,
        rate,
        budget.pilot_comps(p),
        p,
        len(sets),
        len(grid),
        available,
        clf.calibrate,
        len(p["emotions"]),
    )
