"""Classification metrics: per-emotion accuracy, macro-F1, confusion matrices, bootstrap intervals.

The book's one accuracy rule is emolib.causal.stats.correct, applied wherever scores exist: an item is right when its
true
label scores highest, and a tie between k labels counts 1/k (a fair random tie-break). Ties are common with
bfloat16 scores; the argmax of a tie picks the first label in list order (anger) and so would favour it, and
"margin > 0" would count every tie wrong. Given only predicted labels (generation), right means equal.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def confusion(true: list[str], pred: list[str | None], labels: list[str]) -> pd.DataFrame:
    """Counts of (true, predicted); a missing prediction goes to the column 'none'."""
    cols = labels + ["none"]
    m = pd.DataFrame(0, index=pd.Index(labels, name="true"), columns=pd.Index(cols, name="predicted"))
    for t, p in zip(true, pred):
        m.loc[t, p if p in labels else "none"] += 1
    if m["none"].sum() == 0:
        m = m.drop(columns="none")
    return m


def correct(true: list[str], pred: list[str | None], labels: list[str], scores: np.ndarray | None = None) -> np.ndarray:
    """Per item 0..1 by the book's one rule: stats.correct on the scores when given, else prediction == label."""
    if scores is not None:
        from .stats import correct as by_scores

        return by_scores(np.asarray(scores), np.asarray([labels.index(x) for x in true], dtype=int))
    return np.asarray([float(x == y) for x, y in zip(true, pred)])


def per_emotion_accuracy(
    true: list[str], pred: list[str | None], labels: list[str], scores: np.ndarray | None = None
) -> dict[str, float]:
    """Accuracy (recall) within each true emotion, plus 'overall' (ties count 1/k when scores are given)."""
    t, ok = np.asarray(true), correct(true, pred, labels, scores)
    out = {e: float(ok[t == e].mean()) if (t == e).any() else float("nan") for e in labels}
    out["overall"] = float(ok.mean()) if len(t) else float("nan")
    return out


def macro_f1(true: list[str], pred: list[str | None], labels: list[str]) -> float:
    """Unweighted mean of per-label F1."""
    t, p = np.asarray(true), np.asarray([x or "" for x in pred])
    f1s = []
    for e in labels:
        tp = ((p == e) & (t == e)).sum()
        prec = tp / max(1, (p == e).sum())
        rec = tp / max(1, (t == e).sum())
        f1s.append(0.0 if tp == 0 else 2 * prec * rec / (prec + rec))
    return float(np.mean(f1s))


def bootstrap_ci(correct: np.ndarray, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile 95% interval of the mean of a 0/1 vector."""
    correct = np.asarray(correct, dtype=float)
    if n_boot == 0 or len(correct) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = correct[rng.integers(0, len(correct), (n_boot, len(correct)))].mean(1)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def bootstrap_diff_ci(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Paired percentile 95% interval of mean(b) - mean(a) over the same items."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if n_boot == 0 or len(a) == 0:
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, len(a), (n_boot, len(a)))
    d = b[idx].mean(1) - a[idx].mean(1)
    return float(np.quantile(d, 0.025)), float(np.quantile(d, 0.975))


def summary(
    true: list[str],
    pred: list[str | None],
    labels: list[str],
    n_boot: int = 1000,
    seed: int = 0,
    scores: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per emotion and overall: n, accuracy (the one rule: ties count 1/k when scores are given) and its 95%
    bootstrap interval."""
    t = np.asarray(true)
    ok = correct(true, pred, labels, scores)
    rows = []
    for e in labels + ["overall"]:
        sel = np.ones(len(t), bool) if e == "overall" else t == e
        lo, hi = bootstrap_ci(ok[sel], n_boot, seed)
        rows.append(
            {
                "emotion": e,
                "n": int(sel.sum()),
                "accuracy": float(ok[sel].mean()) if sel.any() else np.nan,
                "ci_low": lo,
                "ci_high": hi,
            }
        )
    return pd.DataFrame(rows).set_index("emotion")
