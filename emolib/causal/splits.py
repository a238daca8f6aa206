"""The items stages 3-4 score, drawn from stage 1's splits as seeded samples of at most so many per emotion: the eval
items (the eval split, or the external file when eval_source is file), a dev split of train dialogues for choosing
the instrument, and the eval-topic dialogues before the vote; take_seeded, the seeded sample itself, is shared with
the attribution pass's train sample (emolib.causal.attribution)."""

from __future__ import annotations

import pandas as pd

from ..dataset import data


def eval_table(p: dict, per_emotion: int | None = None) -> pd.DataFrame:
    """The eval items (dialogue, label): stage 1's eval split, or the external file when eval_source is file;
    at most per_emotion per emotion, in a seeded order."""
    if p.get("eval_source") == "file":
        ev = pd.DataFrame(data.load_eval_file(p["eval_path"], p["emotions"]))
    else:
        ev = data.load_splits(p["run_dir"])["eval"].to_pandas()[["dialogue", "label"]]
    return take_seeded(ev, p["emotions"], per_emotion, p["seed"])


def dev_table(p: dict, per_emotion: int) -> pd.DataFrame:
    """A dev split for choosing the instrument: train dialogues (topic-disjoint from eval), per_emotion each."""
    tr = data.load_splits(p["run_dir"])["train"].to_pandas()[["dialogue", "label"]]
    return take_seeded(tr, p["emotions"], per_emotion, p["seed"] + 1)


def unfiltered_eval_table(p: dict, per_emotion: int | None = None) -> pd.DataFrame | None:
    """Every eval-topic dialogue before the vote, labelled with its intended emotion (None if not saved)."""
    try:
        rows = data.load_eval_unfiltered(p["run_dir"])
    except (FileNotFoundError, ValueError):
        return None
    ev = pd.DataFrame(rows)[["dialogue", "label"]]
    return take_seeded(ev[ev.label.isin(p["emotions"])], p["emotions"], per_emotion, p["seed"])


def take_seeded(df: pd.DataFrame, emotions: list[str], per_emotion: int | None, seed: int) -> pd.DataFrame:
    """Shuffle with a seed and keep at most per_emotion items of each emotion, emotion by emotion."""
    df = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    parts = [df[df.label == e].head(per_emotion) if per_emotion else df[df.label == e] for e in emotions]
    return pd.concat(parts).reset_index(drop=True)
