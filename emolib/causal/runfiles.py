"""The schemas of the run files stages 3-4 write and read back: design.json (the design the params fixed) and
instrument.json (the chosen prompt, the dev table and the pilot). A file that does not fit is one ValueError line
naming the file, the key and what is allowed, before anything uses it; nothing is trusted as it is read."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..params import SCHEMA
from ..safeio import read_json

DESIGN_FILE = "design.json"
INSTRUMENT_FILE = "instrument.json"
ARMS = SCHEMA["intervention"].choices  # the four arms a design or a pilot may name
STYLES = SCHEMA["prompt_style"].choices  # an instrument's prompt style (auto: chat if the tokenizer has a template)
MAX_SHOTS = int(SCHEMA["few_shot"].high)


def _bad(path: Path, key: str, allowed: str, got: Any) -> ValueError:
    return ValueError(f"{path}: {key} must be {allowed}, got {got!r}; rerun the notebook that wrote it (or delete it)")


def _int(d: dict, key: str, path: Path, low: int, required: bool = True) -> None:
    """d[key] is an int >= low (bool is not an int here)."""
    if key not in d:
        if required:
            raise _bad(path, key, f"an integer >= {low}", "nothing")
        return
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise _bad(path, key, f"an integer >= {low}", v)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_design(d: Any, path: Path) -> dict:
    """design.json as notebook 03 writes it: counts are integers in range, the arm one of the four, the titration
    shares in (0, 1], the item-masks counts >= 0."""
    if not isinstance(d, dict):
        raise _bad(path, "the file", "a JSON object", type(d).__name__)
    for key, low in (("n_random", 2), ("n_items", 1), ("pilot_random", 0), ("grid_items", 1), ("grid_random", 0)):
        _int(d, key, path, low, required=key in ("n_random", "n_items"))
    _int(d, "titration_draws", path, 0, required=False)
    shares = d.get("titration_shares", [])
    if not isinstance(shares, list) or not all(_number(x) and 0 < x <= 1 for x in shares):
        raise _bad(path, "titration_shares", "a list of shares in (0, 1]", shares)
    if "intervention" in d and d["intervention"] not in ARMS:
        raise _bad(path, "intervention", f"one of {', '.join(ARMS)}", d["intervention"])
    masks = d.get("item_masks", {})
    if not isinstance(masks, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in masks.values()
    ):
        raise _bad(path, "item_masks", "an object of integer counts >= 0", masks)
    return d


def check_instrument(d: Any, path: Path) -> dict:
    """instrument.json as notebook 03 writes it: the chosen prompt style, few-shot count and calibration flag (a
    JSON boolean, never a string), and the pilot's chosen arm and table rows when there is a pilot."""
    if not isinstance(d, dict):
        raise _bad(path, "the file", "a JSON object", type(d).__name__)
    chosen = d.get("chosen")
    if not isinstance(chosen, dict):
        raise _bad(path, "chosen", "an object (prompt_style, few_shot, calibrate)", chosen)
    if chosen.get("prompt_style") not in STYLES:
        raise _bad(path, "chosen.prompt_style", f"one of {', '.join(STYLES)}", chosen.get("prompt_style"))
    shots = chosen.get("few_shot")
    if isinstance(shots, bool) or not isinstance(shots, int) or not 0 <= shots <= MAX_SHOTS:
        raise _bad(path, "chosen.few_shot", f"an integer from 0 to {MAX_SHOTS}", shots)
    if not isinstance(chosen.get("calibrate"), bool):
        raise _bad(path, "chosen.calibrate", "true or false", chosen.get("calibrate"))
    pilot = d.get("pilot", {})
    if not isinstance(pilot, dict):
        raise _bad(path, "pilot", "an object", pilot)
    if pilot.get("chosen") is not None and pilot["chosen"] not in ARMS:
        raise _bad(path, "pilot.chosen", f"one of {', '.join(ARMS)}", pilot["chosen"])
    rows = pilot.get("table", [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise _bad(path, "pilot.table", "a list of objects", rows)
    for r in rows:
        for key in ("var_between_sets", "var_set_x_item"):
            if key in r and not (_number(r[key]) and r[key] >= 0):
                raise _bad(path, f"pilot.table[].{key}", "a number >= 0", r[key])
    return d


def load_design(run_dir: str | Path) -> dict | None:
    """run_dir/design.json, checked (None if absent)."""
    path = Path(run_dir) / DESIGN_FILE
    return check_design(read_json(path, "design file"), path) if path.exists() else None


def load_instrument_file(run_dir: str | Path) -> dict | None:
    """run_dir/instrument.json, checked (None if absent)."""
    path = Path(run_dir) / INSTRUMENT_FILE
    return check_instrument(read_json(path, "instrument file"), path) if path.exists() else None
