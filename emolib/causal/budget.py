"""Stages 3-4: the design fixed in the parameter file, its cost, and a planner that proposes one for a budget.

The design is the params' `n_random_sets` (random families per test), `items_per_emotion`, `pilot_random_sets`,
`titration_shares` x `titration_draws` and notebook 04's `grid_random_sets` and `grid_eval_limit`: the same params
and seed give the same items, random sets and tables on every machine (up to the dtype, which is recorded). Nothing
in a run changes its design from a timing: the scorer's throughput measured here only estimates the time and drives
the progress line.

The planner (`python -m emolib plan PARAMS --budget-min M`, and a cell of notebook 03) times this machine and
proposes the params lines for a budget. Its rule:
1. Throughput: item-masks per second of the batched scorer, timed on this machine with random masks of the paper
   set's size.
2. With a pilot from an earlier run of the same params (instrument.json), per emotion the between-set variance and
   the set x item variance of the random sets' mean change, so the SD of a random set's mean change on n items is
   sqrt(between + within / n); the proposal is the cheapest (R, n) whose detectable shift (the median over emotions
   of the shift with 80% power: t prediction test at Holm's strictest level) is within POWER_SLACK of the smallest
   that fits the budget. Without a pilot: the most items per emotion that fit with n_random_sets families.

Longer than 400 lines: the design, its cost model and the progress lines of stages 3-4 read the same counts; the
planner's command is apart (emolib.causal.planner).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..lm import ablate, batched
from ..progress import mmss
from . import stats

POWER_SLACK = 0.02  # designs whose detectable shift is within 2% of the smallest count as equal; the cheapest wins
R_STEPS = (20, 25, 30, 40, 50, 60, 80, 100, 130, 160, 200)  # the random-set counts the planner considers (>= min)
DESIGN_FILE = "design.json"
TIMING_FILE = "scoring_time.json"
PROGRESS_FILE = "progress.json"
RULE = (
    "the design is the parameter file's: n_random_sets random families per test, items_per_emotion eval items "
    "per emotion (the first in the seeded order), pilot_random_sets random sets per emotion in the descriptive "
    "pilot (seeds disjoint from the families'), titration_shares x titration_draws titrated families, and "
    "notebook 04's grid_random_sets families on grid_eval_limit items; no timing changes it"
)


@dataclass
class Design:
    """A stage 3-4 design (from the parameter file) and its cost in item-masks."""

    n_random: int  # random families per test
    n_items: int  # items per emotion in the tests
    pilot_random: int  # random sets per emotion in the pilot (descriptive)
    grid_items: int  # items per emotion in notebook 04's grids
    grid_random: int  # random series in notebook 04's grids
    titration_shares: list = field(default_factory=list)
    titration_draws: int = 0
    intervention: str = "zero/recomputed"
    dtype: str = ""  # the scoring dtype (the one thing a machine may change)
    item_masks: dict = field(default_factory=dict)  # estimated item-masks per step
    rule: str = RULE
    note: str = ""

    def total_item_masks(self) -> int:
        """The whole design's item-masks."""
        return int(sum(self.item_masks.values()))


# ---------------------------------------------------------------- measuring


def throughput(
    clf, dialogues: list[str], shape: dict[int, list[int]], d_ff: int, masks: int = 8, repeats: int = 2
) -> float:
    """Item-masks per second of batched.score_masks on this machine: `masks` random masks with the neuron counts
    of shape (per layer) on a few of the dialogues, the faster of `repeats` timings (nothing is cached)."""
    b = max(1, clf.batch_size // masks)
    texts = sorted(dialogues, key=len)[len(dialogues) // 2 :][:b] or dialogues[:b]  # typical, not the shortest
    ms = [ablate.random_like(shape, d_ff, 10_000 + s) for s in range(masks)]
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        batched.score_masks(clf, texts, ms, calibration=np.zeros(len(clf.labels)))
        best = min(best, time.perf_counter() - t)
    return masks * len(texts) / best


def components(deltas: np.ndarray) -> tuple[float, float]:
    """(between-set variance, set x item variance) of per-item changes [R sets, n items] (two-way, no replicate)."""
    d = np.asarray(deltas, dtype=float)
    R, n = d.shape
    if R < 2 or n < 2:
        return float("nan"), float("nan")
    resid = d - d.mean(1, keepdims=True) - d.mean(0, keepdims=True) + d.mean()
    within = float((resid**2).sum() / ((R - 1) * (n - 1)))
    between = max(0.0, float(d.mean(1).var(ddof=1)) - within / n)
    return between, within


def predicted_sd(between: float, within: float, n: int) -> float:
    """SD of a random set's mean change over n items."""
    return math.sqrt(between + within / n)


# ---------------------------------------------------------------- cost model (item-masks)


def stage3_cost(
    n_sets: int,
    E: int,
    R: int,
    n: int,
    secondary: int,
    spec: int,
    calibrates: bool,
    pilot_R: int = 0,
    titrations: int = 0,
) -> dict[str, int]:
    """Item-masks of each stage-3 step (one content-free item per mask and mode under recomputed calibration)."""
    cf = 1 if calibrates else 0
    return {
        "pilot": pilot_cost(E, pilot_R, n, 2, calibrates),
        "main test": n_sets * E * (E * n + cf) + n_sets * E * R * (n + cf),
        "other arms": n_sets * E * (1 + secondary) * (n + cf),
        "titration": titrations * E * (n + cf),
        "specificity": n_sets * E * spec * (E - 1) * n,
    }


def pilot_cost(E: int, R: int, n: int, modes: int, calibrates: bool) -> int:
    """Item-masks of the pilot: R random sets on n items per emotion under each intervention."""
    return E * R * modes * (n + (1 if calibrates else 0))


def grid_cost(n_grid_sets: int, n_cells: int, E: int, R: int, n: int, calibrates: bool = False) -> int:
    """Item-masks of notebook 04: per set, cell and emotion the own set and R random sets on n items (and the
    content-free item under each mask when calibration is recomputed)."""
    return n_grid_sets * n_cells * E * (1 + R) * (n + (1 if calibrates else 0))


# ---------------------------------------------------------------- the design


def cost(p: dict, n_sets: int, n_grid_sets: int, R: int, n: int, calibrates: bool) -> dict[str, int]:
    """Item-masks of every step of a design with R families and n items per emotion."""
    E = len(p["emotions"])
    c = stage3_cost(
        n_sets,
        E,
        R,
        n,
        p.get("secondary_random_sets", 3),
        p.get("specificity_random_sets", 1),
        calibrates,
        p.get("pilot_random_sets", 0),
        len(p.get("titration_shares") or []) * p.get("titration_draws", 0),
    )
    c["grids (04)"] = grid_cost(
        n_grid_sets, grid_cells(p), E, p.get("grid_random_sets", 20), min(n, p.get("grid_eval_limit") or n), calibrates
    )
    return c


def fixed_design(p: dict, available: int, n_sets: int, n_grid_sets: int, calibrates: bool, dtype: str = "") -> Design:
    """The parameter file's design: items_per_emotion (at most what every emotion has), n_random_sets families."""
    want = p.get("items_per_emotion") or available
    n = int(min(want, available))
    note = (
        f"every emotion has at least {want} eval items"
        if n == want
        else f"items_per_emotion is {want} but an emotion has only {available} eval items: {available} are used"
    )
    return Design(
        p["n_random_sets"],
        n,
        p.get("pilot_random_sets", 0),
        min(n, p.get("grid_eval_limit") or n),
        p.get("grid_random_sets", 20),
        list(p.get("titration_shares") or []),
        p.get("titration_draws", 0),
        p.get("intervention", "zero/recomputed"),
        dtype,
        cost(p, n_sets, n_grid_sets, p["n_random_sets"], n, calibrates),
        RULE,
        note,
    )


def plan(
    budget_s: float,
    rate: float,
    comps: dict[str, tuple[float, float]] | None,
    p: dict,
    n_sets: int,
    n_grid_sets: int,
    available: int,
    calibrates: bool,
    n_tests: int,
) -> dict:
    """The planner's proposal for a budget (seconds at `rate` item-masks/s): n_random_sets and items_per_emotion,
    with its estimated minutes and, given a pilot's variance components, its detectable shift."""
    R_min, alpha = p["n_random_sets"], 0.05
    steps = sorted({R_min, *(r for r in R_STEPS if r > R_min)}) if comps else [R_min]
    cands = []
    for n in range(1, available + 1):
        sds = [predicted_sd(b, w, n) for b, w in (comps or {}).values() if np.isfinite(b) and np.isfinite(w)]
        for R in steps:
            s = sum(cost(p, n_sets, n_grid_sets, R, n, calibrates).values()) / rate
            if s > budget_s:
                break
            shift = float(np.median(sds)) * stats.delta_for_power(1.0, R, alpha, n_tests) if sds else -n
            cands.append((shift, s, R, n))
    if not cands:
        R, n = R_min, 1
        note = "even one item per emotion does not fit the budget"
    else:
        best = min(c[0] for c in cands)
        _, _, R, n = min((c for c in cands if c[0] <= best + abs(best) * POWER_SLACK), key=lambda c: (c[1], c[0]))
        note = (
            "the cheapest design whose detectable shift is within 2% of the smallest that fits"
            if comps
            else "no pilot to size by power: the most items per emotion that fit with n_random_sets families"
        )
    s = sum(cost(p, n_sets, n_grid_sets, R, n, calibrates).values()) / rate
    sds = [predicted_sd(b, w, n) for b, w in (comps or {}).values() if np.isfinite(b) and np.isfinite(w)]
    return {
        "n_random_sets": R,
        "items_per_emotion": n,
        "minutes": s / 60,
        "budget_min": budget_s / 60,
        "throughput": rate,
        "note": note,
        "delta_80": float(np.median(sds)) * stats.delta_for_power(1.0, R, alpha, n_tests) if sds else None,
    }


def plan_lines(proposal: dict) -> str:
    """The planner's proposal as the parameter-file lines to paste."""
    extra = f", 80% power at {proposal['delta_80']:.2f} nat per emotion (pilot)" if proposal.get("delta_80") else ""
    return (
        f"n_random_sets: {proposal['n_random_sets']}\nitems_per_emotion: {proposal['items_per_emotion']}   "
        f"# about {proposal['minutes']:.0f} min of scoring for 03-04 at {proposal['throughput']:.1f} item-masks/s"
        f" (budget {proposal['budget_min']:g} min){extra}; {proposal['note']}"
    )


def take(items: pd.DataFrame, n: int, emotions: list[str]) -> pd.DataFrame:
    """The first n items of each emotion (eval_table's seeded order, so fewer items are a prefix of more)."""
    return pd.concat([items[items.label == e].head(n) for e in emotions]).reset_index(drop=True)


def available_items(items: pd.DataFrame, emotions: list[str]) -> int:
    """Items per emotion every emotion has."""
    return int(min((items.label == e).sum() for e in emotions))


def save(p: dict, d: Design) -> Path:
    """Write run_dir/design.json: the design and its cost in item-masks, nothing measured (the same on every machine
    for the same params, up to the dtype)."""
    from ..safeio import atomic_write_json, json_safe

    path = Path(p["run_dir"]) / DESIGN_FILE
    atomic_write_json(path, json_safe(asdict(d)), indent=1)
    return path


def load(p: dict) -> dict | None:
    """run_dir/design.json as notebook 03 wrote it, checked against its schema (None if absent)."""
    from .runfiles import load_design

    return load_design(p["run_dir"])


def table(d: Design, rate: float) -> pd.DataFrame:
    """The design's steps with their item-masks and their estimated minutes at this machine's rate."""
    rows = [{"step": k, "item-masks": v, "minutes (estimate)": v / rate / 60} for k, v in d.item_masks.items()]
    rows.append(
        {"step": "total", "item-masks": d.total_item_masks(), "minutes (estimate)": d.total_item_masks() / rate / 60}
    )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- progress line


class Progress:
    """Counts item-masks scored against the design's estimate and writes run_dir/progress.json (stage, step, done,
    total, ETA), which the runner prints as one line under `make book`."""

    def __init__(self, p: dict, stage: str, total: int, rate: float):
        self.path = Path(p["run_dir"]) / PROGRESS_FILE
        self.stage, self.total, self.rate, self.done, self.step_name = stage, int(total), rate, 0, ""
        self.by_step: dict[str, int] = {}  # item-masks scored per step
        self.t0 = time.time()

    def step(self, name: str) -> None:
        """Start a named step."""
        self.step_name = name
        self.write()

    def add(self, k: int) -> None:
        """k more item-masks scored."""
        self.done += k
        self.by_step[self.step_name] = self.by_step.get(self.step_name, 0) + k
        self.write()

    def write(self) -> None:
        """The current state, for the runner."""
        from ..safeio import atomic_write_json

        elapsed = time.time() - self.t0
        rate = self.done / elapsed if self.done and elapsed > 30 else self.rate  # measured, once there is enough
        atomic_write_json(
            self.path,
            {
                "stage": self.stage,
                "step": self.step_name,
                "done": self.done,
                "total": self.total,
                "elapsed_s": elapsed,
                "eta_s": max(0.0, (self.total - self.done) / rate) if self.total else None,
                "time": time.time(),
            },
        )


def progress_line(path: Path) -> str | None:
    """One line for the terminal from a progress file (None if absent or unreadable)."""
    try:
        s = json.loads(Path(path).read_text())
        if not s["total"]:  # no estimate
            return f"  {s['stage']} · {s['step']} · {s['done']:,} item-masks · {mmss(s['elapsed_s'])} elapsed"
        return (
            f"  {s['stage']} · {s['step']} · {s['done']:,} of about {s['total']:,} item-masks · "
            f"{mmss(s['elapsed_s'])} elapsed · about {mmss(s['eta_s'])} left"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------- the notebooks' calls


def grid_cells(p: dict) -> int:
    """Cells per set in notebook 04: the doses and the depth ranges scored."""
    ranges = p.get("grid_ranges") or list(ablate.layer_bins(12, p["layer_bins"]))  # the bins and all
    return len(p["dose_rates"]) + len(ranges)


def pilot_comps(p: dict) -> dict[str, tuple[float, float]] | None:
    """The variance components of an earlier pilot of this run under the params' intervention (None if none)."""
    from .runfiles import load_instrument_file

    inst = load_instrument_file(p["run_dir"])
    if inst is None:
        return None
    rows = [r for r in inst.get("pilot", {}).get("table", []) if r.get("arm") == p.get("intervention")]
    return {r["emotion"]: (r["var_between_sets"], r["var_set_x_item"]) for r in rows} or None


FORCE_RATE = "EMOLIB_THROUGHPUT"  # environment variable: a forced throughput (tests show that it changes no design)


def measure(p: dict, clf, model, shape: dict[int, list[int]], items: pd.DataFrame) -> float:
    """Item-masks per second of the scorer on this machine (for the estimate and the planner only), or the
    EMOLIB_THROUGHPUT environment variable's value when it is set."""
    import os

    from ..lm.models import ffn_shape

    if os.environ.get(FORCE_RATE):
        return float(os.environ[FORCE_RATE])
    return throughput(clf, items.dialogue.tolist(), shape, ffn_shape(model)[1])


def grid_items(p: dict) -> int | None:
    """Items per emotion for notebook 04's grids: the design's (design.json), else grid_eval_limit or the params'."""
    d = load(p)
    if d is not None and "grid_items" in d:
        return int(d["grid_items"])
    return p.get("grid_eval_limit") or p.get("items_per_emotion") or p.get("eval_limit")


def reused_every_score(design: dict) -> bool:
    """Whether notebook 03 scored nothing itself: every score of the run was found in the run's cache."""
    return design.get("stage3_item_masks_scored") == {} or design.get("stage3_scoring_seconds") == 0


def save_timing(p: dict, **values) -> Path:
    """Write (or update) run_dir/scoring_time.json: what this machine measured (throughput, seconds, item-masks);
    kept apart from design.json, which holds only what the params decide."""
    from ..safeio import atomic_write_json, json_safe, read_json

    path = Path(p["run_dir"]) / TIMING_FILE
    old = read_json(path, "timing file") if path.exists() else {}
    atomic_write_json(path, json_safe({**old, **values}), indent=1)
    return path


def load_timing(p: dict) -> dict:
    """run_dir/scoring_time.json ({} if absent)."""
    from ..safeio import read_json

    path = Path(p["run_dir"]) / TIMING_FILE
    return read_json(path, "timing file") if path.exists() else {}


def estimate_line(d: Design, rate: float) -> str:
    """The design's estimated scoring time at this machine's rate (a timing: it estimates, it never decides)."""
    s3 = sum(v for k, v in d.item_masks.items() if k != "grids (04)")
    return (
        f"At {rate:.1f} item-masks/s measured here, this design's scoring takes about {s3 / rate / 60:.1f} min "
        f"in notebook 03 and {d.item_masks.get('grids (04)', 0) / rate / 60:.1f} min in 04 (an estimate: the "
        "design itself comes from the parameter file)."
    )


def progress_for_grids(p: dict) -> Progress:
    """Notebook 04's progress line, against the design's grids and the rate measured in 03 (or no estimate)."""
    d = load(p) or {}
    return Progress(
        p, "04_layer_analysis", d.get("item_masks", {}).get("grids (04)", 0), load_timing(p).get("throughput", 5.0)
    )
