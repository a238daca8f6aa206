"""Stages 3-4 sized by power within a time budget (`effects_budget_min`).

The rule, fixed before any own set is scored:
1. Throughput: item-masks per second, timed on this machine with random masks of the paper set's size; after the
   pilot, the pilot's own rate (when it scored at least MIN_MEASURED item-masks).
2. The pilot gets at most PILOT_SHARE of the budget: n_random_sets (the minimum R) random sets on the first
   n_pilot items per emotion, under every intervention.
3. From the pilot's per-item margin changes, per emotion: the between-set variance and the set x item variance, so
   the SD of a random set's mean change on n items is sqrt(between + within / n).
4. The main test's R (>= n_random_sets) and items per emotion n (>= n_pilot) are the cheapest design whose
   detectable shift (the median over emotions of the shift with 80% power: primary arm, t prediction test at Holm's
   strictest level) is within POWER_SLACK of the smallest that fits the rest of the budget, after notebook 04's
   grids (their size fixed by the params) are reserved. (Power at one fixed shift can sit at 0 or 1 for every
   design; the detectable shift always ranks them.)
The pilot sees random sets only, so sizing on it does not look at any own set's effect.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import ablate, stats
from ..lm import batched

PILOT_SHARE = 0.25    # the pilot's share of the budget, at most
POWER_SLACK = 0.02    # designs whose detectable shift is within 2% of the smallest count as equal; the cheapest wins
R_STEPS = (20, 25, 30, 40, 50, 60, 80, 100, 130, 160, 200)  # the random-set counts the search considers (>= min)
MIN_PILOT_ITEMS = 4
MIN_MEASURED = 50     # item-masks the pilot must have scored for its rate to replace the first timing
DESIGN_FILE = "design.json"
PROGRESS_FILE = "progress.json"
RULE = " ".join(__doc__.split("The rule, fixed before any own set is scored:\n")[1].split("\nThe pilot sees")[0].split()
                ).replace("PILOT_SHARE", f"{PILOT_SHARE:.0%}").replace("POWER_SLACK", f"{POWER_SLACK:.0%}").replace(
                "MIN_MEASURED", str(MIN_MEASURED))


@dataclass
class Design:
    """A stage 3-4 design, its estimated cost and its predicted power."""
    budget_s: float | None
    throughput: float                  # item-masks per second on this machine
    n_pilot: int                       # items per emotion in the pilot
    pilot_random: int                  # random sets in the pilot (the minimum R)
    n_random: int                      # random sets per test in the main test
    n_items: int                       # items per emotion in the main test
    grid_items: int                    # items per emotion in notebook 04's grids
    grid_random: int                   # random series in notebook 04's grids
    item_masks: dict = field(default_factory=dict)   # estimated item-masks per step
    seconds: dict = field(default_factory=dict)      # estimated seconds per step
    power: float = float("nan")        # predicted median power of the main test at power_delta
    power_by_emotion: dict = field(default_factory=dict)
    delta_80: float = float("nan")     # predicted median shift (nat) with 80% power
    rule: str = ""
    note: str = ""

    def total_seconds(self) -> float:
        """The whole design's estimated scoring time."""
        return float(sum(self.seconds.values()))


# ---------------------------------------------------------------- measuring

def throughput(clf, dialogues: list[str], shape: dict[int, list[int]], d_ff: int, masks: int = 8,
               repeats: int = 2) -> float:
    """Item-masks per second of batched.score_masks on this machine: `masks` random masks with the neuron counts
    of shape (per layer) on a few of the dialogues, the faster of `repeats` timings (nothing is cached)."""
    b = max(1, clf.batch_size // masks)
    texts = sorted(dialogues, key=len)[len(dialogues) // 2:][:b] or dialogues[:b]  # typical, not the shortest
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
    within = float((resid ** 2).sum() / ((R - 1) * (n - 1)))
    between = max(0.0, float(d.mean(1).var(ddof=1)) - within / n)
    return between, within


def predicted_sd(between: float, within: float, n: int) -> float:
    """SD of a random set's mean change over n items."""
    return math.sqrt(between + within / n)


# ---------------------------------------------------------------- cost model (item-masks)

def stage3_cost(n_sets: int, E: int, R: int, n: int, secondary: int, spec: int, calibrates: bool,
                pilot_n: int = 0, pilot_R: int = 0) -> dict[str, int]:
    """Item-masks each stage-3 step scores beyond the pilot (what the pilot already scored is not counted twice)."""
    cf = 1 if calibrates else 0  # one content-free item per mask and mode under recomputed calibration
    own_all = n_sets * E * (E * n + cf)
    main = n_sets * E * R * (n + cf) - E * min(R, pilot_R) * (min(n, pilot_n) + cf)
    other = (n_sets - 1) * E * (1 + secondary) * (n + cf) + E * ((1 + R) * (n + cf) - min(R, pilot_R) * (
        min(n, pilot_n) + cf))  # the other intervention: the pilot set with all R random sets, the rest secondary
    specificity = n_sets * E * spec * (E - 1) * n
    return {"main test": main + own_all, "other arms": other, "specificity": specificity}


def pilot_cost(E: int, R: int, n: int, modes: int, calibrates: bool) -> int:
    """Item-masks of the pilot: R random sets on n items per emotion under each intervention."""
    return E * R * modes * (n + (1 if calibrates else 0))


def grid_cost(n_grid_sets: int, n_cells: int, E: int, R: int, n: int, calibrates: bool = False) -> int:
    """Item-masks of notebook 04: per set, cell and emotion the own set and R random sets on n items (and the
    content-free item under each mask when calibration is recomputed)."""
    return n_grid_sets * n_cells * E * (1 + R) * (n + (1 if calibrates else 0))


# ---------------------------------------------------------------- the design

def pilot_items(budget_s: float | None, rate: float, E: int, R: int, modes: int, calibrates: bool,
                available: int) -> int:
    """Items per emotion for the pilot: as many as PILOT_SHARE of the budget buys (at least MIN_PILOT_ITEMS, at
    most what there is); all available without a budget."""
    if budget_s is None:
        return available
    per_item = E * R * modes
    n = int(PILOT_SHARE * budget_s * rate // per_item) - (1 if calibrates else 0)
    return int(min(available, max(MIN_PILOT_ITEMS, n)))


def choose(budget_s: float | None, rate: float, comps: dict[str, tuple[float, float]], p: dict, n_sets: int,
           available: int, n_pilot: int, calibrates: bool, n_tests: int, grid_sets: int, grid_cells: int,
           modes: int = 2) -> Design:
    """The main test's R and items per emotion by the module's rule; without a budget, the params' fixed design."""
    E = len(p["emotions"])
    R_min = p["n_random_sets"]
    delta, alpha = p.get("power_delta", 0.25), 0.05
    sec, spec = p.get("secondary_random_sets", 3), p.get("specificity_random_sets", 1)
    g_R = p.get("grid_random_sets", 20)

    def cost(R: int, n: int) -> dict[str, int]:
        c = {"pilot": pilot_cost(E, R_min, n_pilot, modes, calibrates)}
        c.update(stage3_cost(n_sets, E, R, n, sec, spec, calibrates, n_pilot, R_min))
        c["grids (04)"] = grid_cost(grid_sets, grid_cells, E, g_R, grid_n(n), calibrates)
        return c

    def grid_n(n: int) -> int:
        return min(n, p.get("grid_eval_limit") or n)

    def power(R: int, n: int) -> dict[str, float]:
        return {e: stats.t_power(delta, predicted_sd(b, w, n), R, alpha, n_tests)
                for e, (b, w) in comps.items() if np.isfinite(b) and np.isfinite(w)}

    def design(R: int, n: int, note: str) -> Design:
        c = cost(R, n)
        pw = power(R, n)
        d80 = [predicted_sd(b, w, n) * stats.delta_for_power(1.0, R, alpha, n_tests)
               for b, w in comps.values() if np.isfinite(b) and np.isfinite(w)]
        return Design(budget_s, rate, n_pilot, R_min, R, n, grid_n(n), g_R, c,
                      {k: v / rate for k, v in c.items()}, float(np.median(list(pw.values()))) if pw else np.nan,
                      pw, float(np.median(d80)) if d80 else np.nan, rule=RULE, note=note)

    if budget_s is None:
        return design(R_min, available, "no budget: the params' design (n_random_sets, eval_limit)")
    steps = sorted({R_min, *(r for r in R_STEPS if r > R_min)})
    unit: dict[int, float] = {}  # the detectable shift at unit SD, per R
    cands = []
    for n in range(n_pilot, available + 1):
        sds = [predicted_sd(b, w, n) for b, w in comps.values() if np.isfinite(b) and np.isfinite(w)] or [1.0]
        for R in steps:
            s = sum(cost(R, n).values()) / rate
            if s > budget_s:
                break
            unit.setdefault(R, stats.delta_for_power(1.0, R, alpha, n_tests))
            cands.append((float(np.median(sds)) * unit[R], s, R, n))
    if not cands:
        d = design(R_min, n_pilot, "")
        d.note = (f"the budget ({budget_s / 60:.1f} min) is below the smallest design's estimate "
                  f"({d.total_seconds() / 60:.1f} min): the smallest design runs")
        return d
    best = min(c[0] for c in cands)
    _, _, R, n = min((c for c in cands if c[0] <= best * (1 + POWER_SLACK)), key=lambda c: (c[1], c[0]))
    return design(R, n, f"the cheapest design whose detectable shift is within {POWER_SLACK:.0%} of the smallest "
                        f"({best:.2f} nat) that fits the budget")


def take(items: pd.DataFrame, n: int, emotions: list[str]) -> pd.DataFrame:
    """The first n items of each emotion (eval_table's seeded order, so fewer items are a prefix of more)."""
    return pd.concat([items[items.label == e].head(n) for e in emotions]).reset_index(drop=True)


def available_items(items: pd.DataFrame, emotions: list[str]) -> int:
    """Items per emotion every emotion has."""
    return int(min((items.label == e).sum() for e in emotions))


def save(p: dict, d: Design, **extra) -> Path:
    """Write (or update) run_dir/design.json: the design, its estimate and what was measured."""
    from ..safeio import atomic_write_json, json_safe, read_json
    path = Path(p["run_dir"]) / DESIGN_FILE
    old = read_json(path, "design file") if path.exists() else {}
    atomic_write_json(path, json_safe({**old, **asdict(d), **extra}), indent=1)
    return path


def load(p: dict) -> dict | None:
    """run_dir/design.json as notebook 03 wrote it (None if absent)."""
    from ..safeio import read_json
    path = Path(p["run_dir"]) / DESIGN_FILE
    return read_json(path, "design file") if path.exists() else None


def table(d: Design) -> pd.DataFrame:
    """The design's steps with their estimated item-masks and minutes."""
    rows = [{"step": k, "item-masks": v, "minutes (estimate)": d.seconds[k] / 60} for k, v in d.item_masks.items()]
    rows.append({"step": "total", "item-masks": sum(d.item_masks.values()),
                 "minutes (estimate)": d.total_seconds() / 60})
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
        atomic_write_json(self.path, {"stage": self.stage, "step": self.step_name, "done": self.done,
                                      "total": self.total, "elapsed_s": elapsed,
                                      "eta_s": max(0.0, (self.total - self.done) / rate) if self.total else None,
                                      "time": time.time()})


def progress_line(path: Path) -> str | None:
    """One line for the terminal from a progress file (None if absent or unreadable)."""
    try:
        s = json.loads(Path(path).read_text())
        if not s["total"]:  # no estimate
            return f"  {s['stage']} · {s['step']} · {s['done']:,} item-masks · {_mmss(s['elapsed_s'])} elapsed"
        return (f"  {s['stage']} · {s['step']} · {s['done']:,} of about {s['total']:,} item-masks · "
                f"{_mmss(s['elapsed_s'])} elapsed · about {_mmss(s['eta_s'])} left")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _mmss(seconds: float) -> str:
    """Seconds as 'M min S s'."""
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s"


# ---------------------------------------------------------------- the notebooks' calls

def budget_seconds(p: dict) -> float | None:
    """effects_budget_min in seconds (None: the params' fixed design)."""
    return None if p.get("effects_budget_min") is None else 60.0 * p["effects_budget_min"]


def grid_cells(p: dict) -> int:
    """Cells per set in notebook 04: the doses and the depth ranges scored."""
    ranges = p.get("grid_ranges") or list(ablate.layer_bins(12, p["layer_bins"]))  # the bins and all
    return len(p["dose_rates"]) + len(ranges)


def size_pilot(p: dict, clf, model, shape: dict[int, list[int]], items: pd.DataFrame) -> tuple[float, int]:
    """(measured item-masks per second, pilot items per emotion) before the pilot runs."""
    from ..lm.models import ffn_shape
    rate = throughput(clf, items.dialogue.tolist(), shape, ffn_shape(model)[1])
    n = pilot_items(budget_seconds(p), rate, len(p["emotions"]), p["n_random_sets"], 2, clf.calibrate,
                    available_items(items, p["emotions"]))
    return rate, n


def after_pilot(p: dict, pilot: pd.DataFrame, arm: str, rate: float, n_pilot: int, set_names: list[str],
                items: pd.DataFrame, calibrates: bool, measured: tuple[int, float] = (0, 0.0)) -> Design:
    """The design from the pilot's variance components under the primary arm (the attribution set counted);
    measured = (item-masks, seconds) the pilot scored, whose rate replaces the first timing when large enough."""
    if measured[0] >= MIN_MEASURED and measured[1] > 0:
        rate = measured[0] / measured[1]
    rows = pilot[pilot.arm == arm]
    comps = {r.emotion: (r.var_between_sets, r.var_set_x_item) for r in rows.itertuples()}
    names = list(dict.fromkeys(["attribution", *set_names]))
    grid = [n for n in names if p.get("grid_sets") is None or n in p["grid_sets"]]
    d = choose(budget_seconds(p), rate, comps, p, len(names), available_items(items, p["emotions"]), n_pilot,
               calibrates, len(names) * len(p["emotions"]), len(grid), grid_cells(p))
    return d


def grid_items(p: dict) -> int | None:
    """Items per emotion for notebook 04's grids: the design's under a budget, else grid_eval_limit or eval_limit."""
    d = load(p)
    if budget_seconds(p) is not None and d is not None:
        return int(d["grid_items"])
    return p.get("grid_eval_limit") or p.get("eval_limit")


def reused_every_score(design: dict) -> bool:
    """Whether notebook 03 scored nothing itself: every score of design.json's run was found in the run's cache."""
    return design.get("stage3_item_masks_scored") == {} or design.get("stage3_scoring_seconds") == 0


def achieved(p: dict, d: Design, table: pd.DataFrame, seconds: float, by_step: dict[str, int]) -> str:
    """Record the power the main test reached and the scoring time beside the design's prediction; one sentence."""
    tested = table[table["power"].notna()] if "power" in table else table.iloc[:0]
    reached = float(tested["power"].median()) if len(tested) else float("nan")
    by_set = {k: float(v) for k, v in tested.groupby("set", sort=False)["power"].median().items()}
    save(p, d, achieved_power=reached, achieved_power_by_set=by_set, stage3_scoring_seconds=seconds,
         stage3_item_masks_scored=by_step)
    est = sum(v for k, v in d.seconds.items() if k != "grids (04)")
    return (f"Predicted median power {d.power:.0%} (pilot set, {p.get('power_delta', 0.25):g} nat); reached: median "
            f"{reached:.0%} over all tests (" + ", ".join(f"{k} {v:.0%}" for k, v in by_set.items()) +
            f"). Scoring took {seconds / 60:.1f} min against an estimate of {est / 60:.1f} min for notebook 03.")


def progress_for_grids(p: dict) -> Progress:
    """Notebook 04's progress line, against the design's estimate for the grids (or no estimate)."""
    d = load(p) or {}
    return Progress(p, "04_layer_analysis", d.get("item_masks", {}).get("grids (04)", 0), d.get("throughput", 5.0))
