"""What the random controls of stages 3-5 are matched on, and the matched draws: each neuron's highest firing rate
(stage 2's recording, with a named set's settings), its mean and SD on the instrument's scoring sequence (stage 3's
pass, stored in activation_stats.safetensors: the means of mean ablation, the SD deciles of matching and the shape of
steering's pushes), a short hash of such a tensor for cache keys, and n random sets matched to an own set per layer,
firing decile and SD decile. Stage 3 (emolib.causal.effects), notebook 04's grids (emolib.causal.grids) and stage 5
(emolib.causal.steer) share them from here."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ..identify import neurons
from ..lm import ablate

# ---------------------------------------------------------------- activation moments (stage 3's scoring pass)

STATS_FILE = "activation_stats.safetensors"


def moments(sums: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """([L, D] mean, [L, D] SD) of the down_proj input over the scoring sequences' non-pad positions."""
    n = max(1, sums["count"])
    mean = sums["sum"] / n
    var = (sums["sumsq"] / n - mean**2).clamp(min=0)
    return mean.float(), var.sqrt().float()


def neuron_hash(t: torch.Tensor) -> str:
    """A short hash of a tensor's values (the means of mean ablation, for the scoring cache key)."""
    return hashlib.sha1(t.detach().float().cpu().numpy().tobytes()).hexdigest()[:16]


def save(run_dir: str | Path, sums: dict, tag: str) -> Path:
    """Write the pass's sums (and the tag they belong to) to run_dir/activation_stats.safetensors."""
    from safetensors.torch import save_file

    from ..safeio import atomic_save

    path = Path(run_dir) / STATS_FILE
    tensors = {k: (v.contiguous() if torch.is_tensor(v) else torch.tensor(v)) for k, v in sums.items()}
    atomic_save(path, lambda tmp: save_file(tensors, str(tmp), metadata={"tag": tag}))
    return path


def load(run_dir: str | Path, tag: str | None = None) -> dict | None:
    """The stored sums, or None when absent or made for another instrument or other dialogues (tag)."""
    from safetensors import safe_open

    from ..safeio import check_target, clear_hint

    path = Path(run_dir) / STATS_FILE
    if not path.exists():
        return None
    fix = f"it is stage 3's cache: delete it ({clear_hint(path)}) and rerun notebook 03 to recompute it"
    try:
        check_target(path)  # a regular file, not a link to one elsewhere
        with safe_open(str(path), "pt") as f:
            if tag is not None and (f.metadata() or {}).get("tag") != tag:
                return None
            out = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - SafetensorError (torn, not safetensors), OSError, a link
        raise ValueError(
            f"{path}: cannot be read ({type(e).__name__}: {' '.join(str(e).split())[:100]}); {fix}"
        ) from None
    return check_stats(out, path, fix)


def check_stats(out: dict, path: Path, fix: str) -> dict:
    """The schema of activation_stats.safetensors: a positive integer count, sum and sumsq of one [L, D] shape, every
    value finite, and SDs no larger than an activation can be; one ValueError line naming the file otherwise."""

    def bad(what: str) -> None:
        raise ValueError(f"{path}: {what}; {fix}")

    missing = [k for k in ("count", "sum", "sumsq") if k not in out]
    if missing:
        bad(f"lacks {', '.join(missing)}")
    c = out["count"]
    if c.numel() != 1 or not torch.isfinite(c.double()).all() or float(c) < 1 or float(c) != int(float(c)):
        bad(f"'count' must be one positive whole number, got {c.flatten()[:3].tolist()}")
    out["count"] = int(float(c))
    if out["sum"].dim() != 2 or out["sum"].shape != out["sumsq"].shape:
        bad(
            f"'sum' and 'sumsq' must share one [layers, neurons] shape, got {list(out['sum'].shape)} and "
            f"{list(out['sumsq'].shape)}"
        )
    for k, v in out.items():
        if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all():
            bad(f"'{k}' holds NaN or infinite values")
    mean, sd = moments(out)
    if (
        not (torch.isfinite(sd).all() and torch.isfinite(mean).all())
        or float(sd.max()) > 1e6
        or float(mean.abs().max()) > 1e6
    ):
        bad(f"its activation SDs reach {float(sd.max()):.3g}, beyond any activation (at most 1e6)")
    return out


# ---------------------------------------------------------------- matched random sets


def firing_rates(run_dir: str | Path, settings: dict) -> torch.Tensor:
    """[L, D] each neuron's highest firing probability over emotions, for the set's tensor and tokens."""
    from safetensors.torch import load_file

    P = load_file(str(Path(run_dir) / "probabilities.safetensors"))[f"{settings['tokens']}_P_{settings['tensor']}"]
    return P.float().max(0).values


def matched_sets(
    own: dict[int, list[int]], firing: torch.Tensor, n: int, seed: int, spread: torch.Tensor | None = None
) -> list[dict[int, list[int]]]:
    """n random sets matched to own per layer, firing decile and (given spread) activation-SD decile, never drawing
    own neurons (seeded: set j is the same draw wherever own is the same)."""
    return [dict(ablate.random_matched(own, firing, seed * 1000 + j, exclude=own, spread=spread)) for j in range(n)]


def set_firing(p: dict, ns: neurons.NeuronSets) -> torch.Tensor:
    """[L, D] firing rates that a set's random sets are matched on (the paper's recording for sets without one)."""
    return firing_rates(p["run_dir"], set_settings(ns))


def set_settings(ns: neurons.NeuronSets) -> dict:
    """The recording settings (tokens, tensor) a set was selected from; the paper set's for the attribution set."""
    named = ns.meta.get("named_sets", {})
    return (named.get(ns.name) or {}).get("settings") or named["paper"]["settings"]
