"""Stage 5 steering: are the emotion neurons sufficient? During generation, push one emotion's FFN neurons (the input
of mlp.down_proj, through ablate's pre-hook with per-row amounts) and read the emotion of the continuations with
scorers that are not the steered model.

Fixed in advance (issue 26):
- Dose: the size of the push written into the residual stream, in units of the stream's median norm after the
  middle layer. Where the FFN writes into the stream directly (Llama, SmolLM2) that is ||W_down Delta a|| (the same
  at every position). Where a norm sits between the FFN and the stream (Gemma's post_feedforward_layernorm), it is
  the mean over the prompts' tokens of ||norm(m + W_down Delta a) - norm(m)||, m the unsteered FFN output there.
  Every own set, every
  random family (emolib.causal.families: same sizes, layers, firing and SD deciles, overlaps), the emotion direction
  and every random direction get the same push at a dose.
- Test dose: per intervention, the largest dose of steer_doses at which the median over its own replies of the
  perplexity ratio to the unsteered reply on the same prompt and noise stays within steer_ppl_factor
  (PPL_FACTOR_NOTE).
- Outcome: per reply, each scorer's P(target emotion), paired with the unsteered reply on the same prompt (common
  random numbers); a degenerate reply (empty, repetitive, or perplexity above steer_ppl_cap x the unsteered median)
  counts as no change, and a condition with more than steer_max_degenerate of its replies degenerate is excluded
  from every test and listed.
- Confirmatory test: emolib.causal.pooled's pooled-over-emotions test (test_row + decide, Holm over the named sets,
  TOST equivalence) per scorer; the direction is the positive control, tested the same way against random
  directions of the same norm. A claim needs both scorers (BOTH_SCORERS_RULE): 'effect' only when both scorers'
  pooled tests reject in the same direction; with one scorer no claim is made.
- The prompting ceiling: the same openings after "Reply as someone who feels <emotion>.", read by the same scorers.

Sampling uses common random numbers: every (prompt, sample) has its own seeded noise stream, the same under every
condition, so the unsteered and steered continuations of a prompt differ only through the steering.

This module is the stage's driver (run_stage), its notes and the notebook's helpers (the named sets, the activation
SDs, saving, steer_text and the widget). The interventions and conditions are emolib.causal.intervene; generation
and the Runner emolib.causal.generation; the scorers emolib.causal.emotion_scorers; the outcome, tests and tables
emolib.causal.outcomes.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch

from ..lm import ablate
from .generation import Runner, choose_random_sets, degenerate, perplexity, reply, row_generator, sample_batch, stop_ids
from .intervene import (
    DIRECTION_SET,
    baseline,
    direction_conditions,
    own_conditions,
    prompt_conditions,
    random_conditions,
)
from .outcomes import PPL_FACTOR_NOTE, chosen_doses, test_doses

# ---------------------------------------------------------------- the stage


def activation_sd(run_dir: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """([L, D] mean, [L, D] SD) of each neuron's down_proj input on the scoring sequences (stage 3's pass)."""
    from . import matched

    sums = matched.load(run_dir)
    if sums is None:
        raise FileNotFoundError(
            f"{Path(run_dir) / matched.STATS_FILE} not found: run notebook 03 for this run "
            "first (its scoring pass stores each neuron's mean and SD)"
        )
    return matched.moments(sums)


def select_sets(p: dict) -> dict:
    """The named sets to steer: steer_sets, or every named set of neurons.json (iterated generically)."""
    from ..identify.neurons import named_sets

    sets = named_sets(p)
    wanted = p["steer_sets"] or list(sets)
    missing = [n for n in wanted if n not in sets]
    if missing:
        raise ValueError(
            f"steer_sets: {', '.join(missing)} not in {Path(p['run_dir']) / 'neurons.json'} (has {', '.join(sets)})"
        )
    return {n: sets[n] for n in wanted}


def run_stage(runner: Runner, p: dict, sets: dict, spread: torch.Tensor) -> tuple[pd.DataFrame, dict]:
    """1. the unsteered model, the prompting ceiling, and every own set and the emotion direction at every dose;
    2. the test dose of each (fluency-matched, PPL_FACTOR_NOTE); 3. at it, random families (neuron sets) and random
    directions, min(20, steer_random_sets) to steer_random_sets per test as the budget allows. Returns the records
    and what was run."""
    from .matched import set_firing

    start, budget = time.time(), 60 * p["steer_budget_min"]
    E, doses = p["emotions"], p["steer_doses"]
    has_dir = runner.load_directions(p["run_dir"])
    first = (
        [baseline()]
        + prompt_conditions(E)
        + own_conditions(sets, E, doses)
        + (direction_conditions([e for e in E if e in runner.directions], doses) if has_dir else [])
    )
    runner.run(first, "unsteered, prompted, own sets and directions")
    rec0 = runner.records(first)
    names = list(sets) + ([DIRECTION_SET] if has_dir else [])
    dose_t = test_doses(rec0, names, doses, p["steer_ppl_factor"])
    dose_of = chosen_doses(dose_t)
    n = p["steer_random_sets"]
    rand = random_conditions(sets, E, dose_of, n, lambda ns: set_firing(p, ns), spread, p["seed"])
    if DIRECTION_SET in dose_of:
        dirs = [e for e in E if e in runner.directions]
        rand += [c for j in range(n) for c in direction_conditions(dirs, [dose_of[DIRECTION_SET]], [j])]
    rand.sort(key=lambda c: c.random)
    least = [c for c in rand if c.random < min(20, n)]
    runner.run(least, f"random families and directions (first {min(20, n)})")
    k = choose_random_sets(runner, rand, n, budget, time.time() - start)
    runner.run([c for c in rand if c.random < k], f"random families and directions (up to {k})")
    elapsed = time.time() - start
    conds = first + [c for c in rand if c.random < k]
    info = {
        "n_random": k,
        "n_random_asked": n,
        "seconds": round(elapsed, 1),
        "budget_s": budget,
        "per_condition_s": runner.per_condition(),
        "n_conditions": len(conds),
        "unit": runner.unit,
        "layer": runner.layer,
        "doses": dose_t,
        "dose_of": dose_of,
        "directions": has_dir,
    }
    return runner.records(conds), info


def budget_note(info: dict) -> str:
    """One line on what the budget allowed (from the stage's info)."""
    per = info["per_condition_s"]
    speed = f"{per:.2f} s per condition measured" if per else "every condition cached"
    cut = (
        f"; the budget cut the random families from {info['n_random_asked']} to {info['n_random']} per test"
        if info["n_random"] < info["n_random_asked"]
        else ""
    )
    return (
        f"{info['n_conditions']} conditions, {info['n_random']} random families (and random directions) per test; "
        f"{info['seconds']:.0f} s of a {info['budget_s'] / 60:g}-minute budget ({speed}){cut}."
    )


def dose_note(info: dict, factor: float) -> str:
    """The pre-specified rule and the doses it chose."""
    chosen = ", ".join(f"{k}: {v:g}" for k, v in info["dose_of"].items()) or "none"
    missing = [n for n in info["doses"].intervention.unique() if n not in info["dose_of"]]
    return (
        f"One dose unit is the residual stream's median norm after decoder layer {info['layer']} over the "
        f"prompts' tokens ({info['unit']:.3g}). Rule, fixed in advance: {PPL_FACTOR_NOTE} "
        f"(steer_ppl_factor = {factor:g}). Test doses: {chosen}."
        + (f" Not tested (no positive dose kept fluency): {', '.join(missing)}." if missing else "")
    )


# ---------------------------------------------------------------- saving, the CLI and the widget


def save_csv(table: pd.DataFrame, run_dir: str | Path, name: str) -> Path:
    """Write a table to run_dir/name atomically."""
    from ..safeio import atomic_save

    path = Path(run_dir) / name
    atomic_save(path, lambda tmp: table.to_csv(tmp, index=False), base=run_dir)
    return path


def steer_text(
    model,
    tok,
    p: dict,
    neurons: dict[int, list[int]],
    dose: float,
    sd: torch.Tensor,
    prompt: str,
    n: int,
    scorers: dict,
) -> pd.DataFrame:
    """n sampled replies to one prompt with the neurons pushed up by dose SDs, each with every scorer's top label and
    P(target) columns per emotion, and its perplexity under the unsteered model."""
    stops = stop_ids(tok)
    bos = [tok.bos_token_id] if tok("x")["input_ids"][0] == tok.bos_token_id else []
    ids = bos + tok(prompt, add_special_tokens=False)["input_ids"]
    gens = [row_generator(p["seed"], 0, k) for k in range(n)]
    with ablate.ablate_rows(model, [neurons], n, mode="add", means=sd, scales=[float(dose)]):
        new = sample_batch(model, tok, [ids] * n, gens, p["steer_max_new_tokens"], stops)
    out = [reply(tok, x, stops) for x in new]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    table = pd.DataFrame(
        {
            "reply": [t for t, _ in out],
            "ppl": perplexity(model, [ids] * n, [k for _, k in out], pad),
            "degenerate": [degenerate(t, k) for t, k in out],
        }
    )
    texts = [f"{prompt} {t}".rstrip() for t, _ in out]
    for name, fn in scorers.items():
        probs = fn(texts)
        table[f"{name} top"] = [p["emotions"][int(j)] for j in probs.argmax(1)]
        for j, e in enumerate(p["emotions"]):
            table[f"{name} P({e})"] = probs[:, j]
    return table


def interactive() -> bool:
    """Whether the notebook runs in a live Jupyter kernel (not headless: the runner sets EMOLIB_HEADLESS)."""
    import os

    if os.environ.get("EMOLIB_HEADLESS") == "1":
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def widget(model, tok, p: dict, sets: dict, sd: torch.Tensor, scorers: dict, prompts: list[str]):
    """An ipywidgets form: emotion, set, dose, prompt -> three sampled replies and their scores."""
    import ipywidgets as w
    from IPython.display import display

    emo = w.Dropdown(options=p["emotions"], description="emotion")
    name = w.Dropdown(options=list(sets), description="set")
    dose = w.FloatSlider(value=2.0, min=0, max=10.0, step=0.5, description="α (SDs)")
    text = w.Textarea(value=prompts[0], description="prompt", layout=w.Layout(width="90%"))
    go, out = w.Button(description="generate"), w.Output()

    def run(_) -> None:
        out.clear_output()
        with out:
            display(
                steer_text(
                    model,
                    tok,
                    p,
                    sets[name.value].by_layer(emo.value),
                    dose.value,
                    sd,
                    text.value.replace("\\n", "\n"),
                    3,
                    scorers,
                )
            )

    go.on_click(run)
    return w.VBox([emo, name, dose, text, go, out])
