"""Stage 2 pipeline: record firing counts on the train split, select emotion neurons, check split-half stability.

Longer than 400 lines: stage 2's pipeline (record, select, variants, null, stability) is one sequence of steps over
the same counts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..dataset import data
from ..lm import models, prompts
from ..params import VARIANTS  # noqa: F401 (the selection variants, defined with the parameters they validate)
from ..progress import tqdm
from . import directions, neurons, record

PARAMS_SAVED = (
    "record_tensor",
    "record_tokens",
    "record_framing",
    "top_rate",
    "filter_quantile",
    "min_count",
    "assign",
    "selection_scope",
    "seed",
    "n_null",
    "selective_variant",
    "prompt_style",
    "few_shot",
    "prompt_template",
    "find_directions",
    "direction_site",
    "direction_tokens",
)

ALPHA = 0.05  # a variant beats the null when p(cut-off) < ALPHA and its empirical FDR <= ALPHA
STABLE_FACTOR = 5.0  # ... and is stable when its split-half Jaccard is >= this many times the eligible-pool chance


def counts_path(run_dir: str | Path, tokens: str = "dialogue") -> Path:
    """Where stage 2 keeps its counts (not committed: large); the answer-token pass has its own file."""
    return Path(run_dir) / "cache" / ("counts.pt" if tokens == "dialogue" else "counts-answer.pt")


def load_counts(run_dir: str | Path, tokens: str = "dialogue") -> dict:
    """Stage 2's recording, loaded safely (tensors and numbers only)."""
    from ..safeio import load_tensors

    path = counts_path(run_dir, tokens)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run notebook 02 (stage 2) for this run first")
    return load_tensors(path)


def paper_settings(p: dict) -> dict:
    """The run's own selection setting (named set 'paper'; the defaults are LAPE's exact setting)."""
    return dict(
        tensor=p["record_tensor"],
        tokens=p["record_tokens"],
        filter_quantile=p["filter_quantile"],
        assign=p["assign"],
        scope=p["selection_scope"],
    )


def needs_answer_pass(p: dict) -> bool:
    """Whether stage 2 records the prompt's answer position as well (a second, prompt-framed pass)."""
    return p["answer_pass"] or p["record_tokens"] == "answer"


def record_train(p: dict, model=None, tokenizer=None, tokens: str = "dialogue") -> dict:
    """Firing counts over the train split (both tensors, per emotion and half, and under p['n_null'] label
    permutations); cached in run_dir/cache. tokens=answer records the classification prompt's last position."""
    final = counts_path(p["run_dir"], tokens)
    dd = data.load_splits(p["run_dir"])
    train = dd["train"]
    by_emotion = {e: [d for d, lab in zip(train["dialogue"], train["label"]) if lab == e] for e in p["emotions"]}
    framing = "prompt" if tokens == "answer" else p["record_framing"]
    site = p["direction_site"] if wants_directions(p, tokens) else None
    topics = None
    if site and "topic" in train.column_names:  # (without topics the directions are centred globally)
        topics = {e: [t for t, lab in zip(train["topic"], train["label"]) if lab == e] for e in p["emotions"]}
    key = _key(p, by_emotion, tokens, framing, [site, topics] if site else None)
    if final.exists():
        state = load_counts(p["run_dir"], tokens)
        if state.get("key") == key and (tokens != "dialogue" or "top_values" in state):  # (earlier: no card top-k)
            state["counts"] = state[f"counts_{p['record_tensor']}"]
            return state
    if model is None:
        model, tokenizer = models.load_model(p["model"], p["dtype"], p["device"], p["device_map"], p["seed"])
    parts = None
    if framing == "prompt":
        chat = prompts.use_chat(p["prompt_style"], models.is_instruct(p["model"], tokenizer), tokenizer)
        parts = prompts.build(tokenizer, p["emotions"], chat, p["few_shot"], p["prompt_template"])
    state = record.record_counts(
        model,
        tokenizer,
        by_emotion,
        p["record_tensor"],
        tokens,
        framing,
        parts,
        p["batch_size"],
        p["seed"],
        state_path=final.with_suffix(".partial.pt"),
        n_null=p["n_null"],
        direction_site=site,
        topics=topics,
        top_k=record.TOP_K if tokens == "dialogue" else 0,
    )
    if site:
        directions.finish(state, model)
    state["key"] = key
    state["shape"] = list(models.ffn_shape(model))
    state["dtype"] = str(model.dtype).replace("torch.", "")
    rank, world = record.dist_rank_world()
    if rank == 0:  # every rank holds the reduced counts; one writes them
        from ..safeio import atomic_save

        atomic_save(final, lambda tmp: torch.save(state, tmp))
    if world > 1:
        torch.distributed.barrier()
    partial = final.with_suffix(".partial.pt")
    (partial.with_name(f"{partial.stem}.rank{rank}{partial.suffix}") if world > 1 else partial).unlink(missing_ok=True)
    return state


def wants_directions(p: dict, tokens: str) -> bool:
    """Whether the pass over `tokens` also records emotion directions (only the direction_tokens pass does)."""
    return bool(p.get("find_directions")) and p.get("direction_tokens", "dialogue") == tokens


def _key(p: dict, by_emotion: dict, tokens: str, framing: str, extra: list | None = None) -> str:
    """What the counts depend on (extra: the direction settings and topics, when the pass records directions)."""
    import hashlib
    import json

    dtype = str(models.resolve_dtype(p["dtype"], models.resolve_device(p["device"])))
    return hashlib.sha1(
        json.dumps(
            [
                record.STATE_VERSION,
                p["model"],
                dtype,
                tokens,
                framing,
                p["seed"],
                p["n_null"],
                p["prompt_style"],
                p["few_shot"],
                p["prompt_template"],
                by_emotion,
            ]
            + ([extra] if extra else [])
        ).encode()
    ).hexdigest()


def select_variant(
    state: dict, settings: dict, top_rate: float, min_count: int, half: int | None = None, null: int | None = None
) -> dict:
    """Run one variant's selection on the whole train split, one half of it, or one null permutation."""
    t = settings["tensor"]
    if null is not None:
        counts, tokens = state[f"null_{t}"][null].long(), state["null_tokens"][null]
    elif half is not None:
        counts, tokens = state[f"counts_{t}"][half], state["tokens"][half]
    else:
        counts, tokens = state[f"counts_{t}"].sum(0), state["tokens"].sum(0)
    return neurons.select(
        counts,
        tokens,
        state["emotions"],
        top_rate,
        settings["filter_quantile"],
        settings["assign"],
        min_count,
        settings["scope"],
    )


def select_all(state: dict, p: dict) -> dict:
    """The run's own ('paper') selection on the whole train split (both halves)."""
    return select_variant(state, paper_settings(p), p["top_rate"], p["min_count"])


def _median_ratio(result: dict, tokens: torch.Tensor) -> float:
    """Median highest/lowest firing-probability ratio of a selection's neurons."""
    if not result["selected"]:
        return math.nan
    ratio = neurons.selectivity(result["P"], tokens)
    return float(np.median([float(ratio[l, i]) for l, i, _ in result["selected"]]))


def null_summary(state: dict, settings: dict, real: dict, top_rate: float, min_count: int) -> dict:
    """The variant's statistics under every label permutation: entropy cut-off, false selections at the real
    cut-off, median selectivity of what the null selects; with permutation p-values and an empirical FDR."""
    K = int(state["n_null"])
    if K == 0:
        return {"n_null": 0}
    cut, false, sel = [], [], []
    for k in range(K):
        r = select_variant(state, settings, top_rate, min_count, null=k)
        cut.append(neurons.summary_cutoff(r))
        false.append(neurons.false_selections(r, real["cutoff"], state["emotions"]))
        sel.append(_median_ratio(r, state["null_tokens"][k]))
    real_cut = neurons.summary_cutoff(real)
    real_sel = _median_ratio(real, state["tokens"].sum(0))
    n_sel = len(real["selected"])
    return {
        "n_null": K,
        "cutoff_real": real_cut,
        "cutoff_null": cut,
        "p_cutoff": (1 + sum(c <= real_cut for c in cut)) / (1 + K),
        "false_null": false,
        "expected_false": float(np.mean(false)),
        "fdr": float(np.mean(false)) / n_sel if n_sel else math.nan,
        "selectivity_real": real_sel,
        "selectivity_null": sel,
        "p_selectivity": (1 + sum(s >= real_sel for s in sel if math.isfinite(s))) / (1 + K),
    }


def split_half(state: dict, settings: dict, top_rate: float, min_count: int, n_eligible: int, seed: int) -> dict:
    """Jaccard of the selections made on the two halves of the train split, against the chance overlap of random
    sets of those sizes drawn from the eligible pool."""
    a, b = [
        {tuple(x[:2]) for x in select_variant(state, settings, top_rate, min_count, half=h)["selected"]} for h in (0, 1)
    ]
    return {
        "jaccard": len(a & b) / len(a | b) if a | b else math.nan,
        "chance": neurons.pool_jaccard(len(a), len(b), n_eligible, 100, seed),
    }


def thirds(result: dict, n_layers: int) -> str:
    """Share of a selection in the bottom / middle / top third of the depth, as 'b/m/t' percentages."""
    if not result["selected"]:
        return "-"
    parts = neurons.bin_shares([l for l, _, _ in result["selected"]], n_layers, 3)
    return "/".join(f"{100 * v:.0f}" for v in parts)


def evaluate_variants(states: dict[str, dict], p: dict) -> tuple[pd.DataFrame, dict, dict]:
    """Every variant (the run's own 'paper' setting first) from the recordings: its selection, null summary and
    stability. Returns the variant table, the selections and the null summaries, by variant name."""
    todo = {"paper": paper_settings(p), **VARIANTS}
    rows, results, nulls = [], {}, {}
    for name, st in tqdm(list(todo.items()), desc="variants and their nulls"):
        if st["tokens"] not in states or (name != "paper" and st == todo["paper"]):
            continue
        state = states[st["tokens"]]
        res = select_variant(state, st, p["top_rate"], p["min_count"])
        nul = null_summary(state, st, res, p["top_rate"], p["min_count"])
        half = split_half(state, st, p["top_rate"], p["min_count"], res["n_eligible"], p["seed"])
        L = state["counts_act"].shape[2]
        results[name], nulls[name] = res, nul
        rows.append(
            {
                "variant": name,
                **{k: ("none" if v is None else v) for k, v in st.items()},
                "n_eligible": res["n_eligible"],
                "n_selected": len(res["selected"]),
                "median_selectivity": _median_ratio(res, state["tokens"].sum(0)),
                "null_selectivity": float(np.nanmedian(nul["selectivity_null"])) if nul["n_null"] else math.nan,
                "cutoff": neurons.summary_cutoff(res),
                "null_cutoff": float(np.median(nul["cutoff_null"])) if nul["n_null"] else math.nan,
                "p_cutoff": nul.get("p_cutoff", math.nan),
                "expected_false": nul.get("expected_false", math.nan),
                "fdr": nul.get("fdr", math.nan),
                "jaccard": half["jaccard"],
                "jaccard_chance": half["chance"],
                "depth_b/m/t_%": thirds(res, L),
            }
        )
    table = pd.DataFrame(rows).set_index("variant")
    table["beats_null"] = (table["p_cutoff"] < ALPHA) & (table["fdr"] <= ALPHA)
    table["stable"] = table["jaccard"] >= STABLE_FACTOR * table["jaccard_chance"]
    return table, results, nulls


def choose_selective(table: pd.DataFrame, choice: str) -> tuple[str | None, str]:
    """The variant for the second named set, and why: a named variant, or (auto) the rule fixed before looking:
    among the variants other than paper that beat the null and are stable, the highest median selectivity."""
    if choice != "auto":
        if choice not in table.index:
            raise ValueError(
                f"selective_variant: {choice!r} was not computed in this run; computed: {', '.join(table.index)}"
            )
        r = table.loc[choice]
        return choice, (
            f"chosen by the parameters (selective_variant: {choice}); it "
            f"{'beats' if r.beats_null else 'does not beat'} the null and is "
            f"{'stable' if r.stable else 'not stable'} by the book's rule"
        )
    ok = table[(table.index != "paper") & table.beats_null & table.stable]
    if ok.empty:
        return None, (
            "no variant other than paper both beats the null (p < 0.05, FDR <= 0.05) and is stable "
            f"(split-half Jaccard >= {STABLE_FACTOR:g}x chance), so there is no selective set"
        )
    best = ok["median_selectivity"].idxmax()
    return best, (
        f"auto rule: of the {len(ok)} variant(s) other than paper that beat the null and are stable, "
        f"{best} has the highest median selectivity ({ok.loc[best, 'median_selectivity']:.2f}x)"
    )


def named_set_entry(name: str, settings: dict, res: dict, state: dict, nul: dict, why: str) -> dict:
    """A named set for neurons.json: its settings, neurons per emotion, per-neuron diagnostics and null summary."""
    return {
        "variant": name,
        "settings": settings,
        "why": why,
        "neurons": res["sets"],
        "n_selected": len(res["selected"]),
        "n_eligible": res["n_eligible"],
        "threshold": res["threshold"],
        "cutoff": res["cutoff"],
        "diagnostics": neurons.diagnostics(
            res["P"], res["entropy"], state["tokens"].sum(0), res["sets"], state["emotions"]
        ),
        "null": {k: v for k, v in nul.items()},
    }


def save_neurons(
    p: dict, states: dict[str, dict], results: dict, nulls: dict, table: pd.DataFrame, chosen: str | None, why: str
) -> Path:
    """Write run_dir/neurons.json (named sets 'paper' and 'selective' when one qualifies), the variant table
    (variants.csv), per-neuron diagnostics (neuron_diagnostics.csv) and the firing probabilities
    (probabilities.safetensors, float16, emotions x layers x neurons)."""
    run = Path(p["run_dir"])
    state = states["dialogue"]
    paper_state = states[p["record_tokens"]]
    named = {
        "paper": named_set_entry(
            "paper",
            paper_settings(p),
            results["paper"],
            paper_state,
            nulls["paper"],
            "the run's own setting (LAPE's exact setting by default)",
        )
    }
    if chosen:
        st = {"paper": paper_settings(p), **VARIANTS}[chosen]
        named["selective"] = named_set_entry(chosen, st, results[chosen], states[st["tokens"]], nulls[chosen], why)
    dstate = states.get(p.get("direction_tokens", "dialogue"))
    if p.get("find_directions") and dstate is not None and "contrib" in dstate:
        sizes = [len(results["paper"]["sets"][e]) for e in state["emotions"]]
        named["directions"] = directions.named_set_entry(dstate, p, named["paper"], sizes)
        named["directions"]["diagnostics"] = neurons.diagnostics(  # its neurons' firing, in the paper's recording
            results["paper"]["P"],
            results["paper"]["entropy"],
            paper_state["tokens"].sum(0),
            named["directions"]["neurons"],
            state["emotions"],
        )
        directions.save(run, dstate, p["direction_tokens"])
    extra = {
        "named_sets": named,
        "selective_choice": {"variant": chosen, "why": why},
        "min_count": p["min_count"],
        "dtype": state.get("dtype"),
        "variants": json.loads(table.reset_index().to_json(orient="records")),
    }
    path = run / "neurons.json"
    neurons.save(
        path,
        p["model"],
        {k: p[k] for k in PARAMS_SAVED},
        results["paper"],
        paper_state["tokens"].sum(0),
        state["emotions"],
        tuple(state["shape"]),
        extra,
    )
    from ..safeio import atomic_save

    atomic_save(run / "variants.csv", lambda tmp: table.to_csv(tmp), base=run)
    diag = pd.DataFrame(
        [
            {"set": n, **{k: v for k, v in r.items() if k != "p"}, **{f"P_{e}": v for e, v in r["p"].items()}}
            for n, entry in named.items()
            for r in entry["diagnostics"]
        ]
    )
    diag["emotions"] = diag["emotions"].map("+".join)
    atomic_save(run / "neuron_diagnostics.csv", lambda tmp: diag.to_csv(tmp, index=False), base=run)
    save_probabilities(run / "probabilities.safetensors", states, p)
    return path


def save_probabilities(path: Path, states: dict[str, dict], p: dict) -> None:
    """Firing probabilities per recording and tensor as float16 [E, L, D], with the token totals, in safetensors."""
    from safetensors.torch import save_file

    out = {}
    for tokens, st in states.items():
        T = st["tokens"].sum(0)
        out[f"{tokens}_tokens"] = T.contiguous()
        for t in record.TENSORS:
            out[f"{tokens}_P_{t}"] = neurons.probabilities(st[f"counts_{t}"].sum(0), T).half().contiguous()
    from ..safeio import atomic_save

    atomic_save(
        path, lambda tmp: save_file(out, tmp, metadata={"model": p["model"], "emotions": ",".join(p["emotions"])})
    )


def stability(state: dict, p: dict, n_draws: int = 200, result: dict | None = None) -> pd.DataFrame:
    """Select on each half of the train split; per emotion, Jaccard overlap of the two sets against random sets of
    the same sizes drawn from the eligible pool (also written to run_dir/stability.csv)."""
    st = paper_settings(p)
    halves = [select_variant(state, st, p["top_rate"], p["min_count"], half=h)["sets"] for h in (0, 1)]
    pool = (result or select_all(state, p))["n_eligible"]
    L, D = state["shape"]
    rows = []
    for e in state["emotions"]:
        a, b = halves[0][e], halves[1][e]
        rows.append(
            {
                "emotion": e,
                "n_half_a": len(a),
                "n_half_b": len(b),
                "jaccard": neurons.jaccard(a, b),
                "random_jaccard": neurons.pool_jaccard(len(a), len(b), pool, n_draws, p["seed"]),
                "random_jaccard_all_neurons": neurons.random_jaccard(len(a), len(b), L * D, n_draws, p["seed"])
                if a and b
                else float("nan"),
            }
        )
    table = pd.DataFrame(rows).set_index("emotion")
    from ..safeio import atomic_save

    atomic_save(Path(p["run_dir"]) / "stability.csv", lambda tmp: table.to_csv(tmp), base=p["run_dir"])
    return table


def depth_table(results: dict[str, dict], names: list[str], n_layers: int) -> pd.DataFrame:
    """Per layer (at relative depth (l + 0.5) / L): share of each named selection, of the eligible pool, and of
    all neurons."""
    out = {"relative depth": [neurons.relative_depth(l, n_layers) for l in range(n_layers)]}
    for n in names:
        layers = np.array([l for l, _, _ in results[n]["selected"]], dtype=int)
        out[f"selected ({n})"] = np.bincount(layers, minlength=n_layers) / max(1, len(layers))
        el = results[n]["eligible"].sum(1).double()
        out[f"eligible pool ({n})"] = (el / el.sum().clamp(min=1)).numpy()
    out["all neurons"] = np.full(n_layers, 1 / n_layers)
    return pd.DataFrame(out, index=pd.RangeIndex(n_layers, name="layer"))


def counts_table(result: dict, emotions: list[str], n_layers: int) -> pd.DataFrame:
    """Neurons per (layer, emotion): the study's key table."""
    t = pd.DataFrame(0, index=pd.RangeIndex(n_layers, name="layer"), columns=emotions)
    for e in emotions:
        for layer, _ in result["sets"][e]:
            t.loc[layer, e] += 1
    return t


def overlap_table(sets: dict[str, list], emotions: list[str]) -> pd.DataFrame:
    """Neurons shared by each pair of emotions (diagonal: set sizes)."""
    S = {e: {tuple(x) for x in sets[e]} for e in emotions}
    return pd.DataFrame([[len(S[a] & S[b]) for b in emotions] for a in emotions], index=emotions, columns=emotions)


def emotions_per_neuron(result: dict) -> pd.Series:
    """How many selected neurons serve 1, 2, ... emotions under the assignment rule."""
    owners: dict[tuple, int] = {}
    for pairs in result["sets"].values():
        for layer, idx in pairs:
            owners[(layer, idx)] = owners.get((layer, idx), 0) + 1
    return pd.Series(list(owners.values())).value_counts().sort_index().rename_axis("emotions served")


def _picks(result: dict, emotions: list[str]) -> list[tuple[str, tuple[int, int]]]:
    """(emotion, neuron) pairs: per emotion, its lowest-entropy neuron not already picked for an earlier emotion."""
    rank = {(l, i): h for l, i, h in result["selected"]}
    out: list[tuple[str, tuple[int, int]]] = []
    for e in emotions:
        taken = {n for _, n in out}
        own = sorted((rank[(l, i)], l, i) for l, i in result["sets"][e] if (l, i) not in taken)
        if own:
            out.append((e, own[0][1:]))
    return out


def profile_picks(result: dict, emotions: list[str]) -> list[tuple[int, int]]:
    """Per emotion, its lowest-entropy neuron not already picked for an earlier emotion."""
    return [n for _, n in _picks(result, emotions)]


def picked_for(result: dict, emotions: list[str]) -> list[str]:
    """The emotion each of profile_picks' neurons was picked for (same order)."""
    return [e for e, _ in _picks(result, emotions)]
