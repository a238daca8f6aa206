"""Stage 3 helpers: the classifier of the run, mean activations for mean ablation, the append-only result cache,
the named neuron sets and result tables."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from . import classify, models, neurons, prompts


def load_classifier(p: dict):
    """(model, tokenizer, Classifier) for the run's model and prompt parameters."""
    model, tok = models.load_model(p["model"], p["dtype"], p["device"], p["device_map"], p["seed"])
    chat = prompts.use_chat(p["prompt_style"], models.is_instruct(p["model"], tok), tok)
    clf = classify.make_classifier(model, tok, p["emotions"], chat, p["few_shot"], p["prompt_template"],
                                   p["batch_size"], p["calibrate"])
    return model, tok, clf


def means_from_counts(run_dir: str | Path, shape: tuple[int, int] | None = None) -> torch.Tensor | None:
    """Mean input of down_proj per neuron over the train tokens (for mean ablation), from stage 2's counts;
    loaded without running code, and checked against the model's FFN shape when given."""
    from .safeio import clear_hint, load_tensors
    path = Path(run_dir) / "cache" / "counts.pt"
    if not path.exists():
        return None
    state = load_tensors(path)
    sums, tokens = (state.get("sums"), state.get("tokens")) if isinstance(state, dict) else (None, None)
    if not isinstance(sums, torch.Tensor) or not isinstance(tokens, torch.Tensor) or sums.dim() != 2:
        raise ValueError(f"{path}: not stage 2's counts (needs tensors sums [layers, d_ff] and tokens); "
                         f"delete it to recompute ({clear_hint(path)})")
    if shape is not None and tuple(sums.shape) != tuple(shape):
        raise ValueError(f"{path}: counts of an FFN of {sums.shape[0]} layers x {sums.shape[1]} neurons; the loaded "
                         f"model has {shape[0]} x {shape[1]}")
    means = (sums / tokens.sum().clamp(min=1)).float()
    if not torch.isfinite(means).all():
        raise ValueError(f"{path}: mean activations contain NaN or inf; delete it to recompute ({clear_hint(path)})")
    return means


class PredictionCache:
    """Predictions per condition, appended to a JSON-lines file as each condition finishes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: dict[str, list] = {}
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        """Load the cached lines; a torn last line is dropped with a warning, any other bad line is an error."""
        import warnings
        from .safeio import atomic_write_text, clear_hint
        try:
            lines = self.path.read_bytes().decode("utf-8").split("\n")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{self.path}: corrupt prediction cache ({type(e).__name__}); delete it to recompute "
                             f"({clear_hint(self.path)})") from None
        good = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                ok = isinstance(r, dict) and isinstance(r.get("key"), str) and isinstance(r.get("preds"), list)
            except json.JSONDecodeError:
                ok = False
            if not ok and not any(x.strip() for x in lines[n:]):  # the last line, cut short by an interruption
                warnings.warn(f"{self.path}: line {n} is incomplete (an interrupted write); dropped, that condition "
                              "will be recomputed", stacklevel=3)
                atomic_write_text(self.path, "".join(x + "\n" for x in good))
                break
            if not ok:
                raise ValueError(f"{self.path}: line {n} is corrupt; delete the file to recompute its predictions "
                                 f"({clear_hint(self.path)})")
            good.append(line)
            self.rows[r["key"]] = r["preds"]
        else:
            if good and lines[-1].strip():  # complete last line without its newline: end it before appending
                atomic_write_text(self.path, "".join(x + "\n" for x in good))

    def get_or_run(self, key: str, fn) -> list:
        """Cached predictions for key, or run fn() and append its result as one line in one write."""
        from .safeio import append_line
        if key not in self.rows:
            self.rows[key] = fn()
            append_line(self.path, json.dumps({"key": key, "preds": self.rows[key]}))
        return self.rows[key]

    def put_many(self, rows: dict[str, list]) -> None:
        """Store many keys' predictions, appended as lines in one write."""
        from .safeio import append_line
        new = {k: v for k, v in rows.items() if k not in self.rows}
        if new:
            self.rows.update(new)
            append_line(self.path, "\n".join(json.dumps({"key": k, "preds": v}) for k, v in new.items()))


def named_sets(p: dict) -> dict[str, neurons.NeuronSets]:
    """Every named neuron set of the run's neurons.json ('paper' first, then 'selective' when stage 2 found one)."""
    path = Path(p["run_dir"]) / "neurons.json"
    return {name: neurons.load(path, name) for name in neurons.set_names(path)}


def save_table(p: dict, tables: dict[str, pd.DataFrame], name: str) -> pd.DataFrame:
    """Concatenate the per-set tables (column 'set') and write run_dir/<name>."""
    table = pd.concat(list(tables.values()), ignore_index=True)
    from .safeio import atomic_save
    atomic_save(Path(p["run_dir"]) / name, lambda tmp: table.to_csv(tmp, index=False))
    return table


