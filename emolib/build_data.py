"""Stage 1 pipeline: topics -> dialogues -> three annotators + theme vote -> stratified train/eval DatasetDict."""

from __future__ import annotations

import gc
import hashlib
import json
from collections import Counter
from pathlib import Path

import pandas as pd

from . import annotate, data


def _fingerprint(p: dict, keys: list[str]) -> str:
    """Hash of the parameters a cached artefact depends on."""
    return hashlib.sha1(json.dumps({k: p[k] for k in keys}, sort_keys=True).encode()).hexdigest()[:12]


def synthesize(p: dict, cache_dir: Path) -> tuple[list[dict], dict]:
    """The dialogues of the run (template, hf or EmoPrism), cached on disk; also build statistics."""
    keys = ["data_source", "data_path", "topic_pool", "n_topics", "dialogues_per_topic", "explicit_share", "seed",
            "emotions", "synth_model", "synth_max_new_tokens", "synth_retries"]
    path = cache_dir / f"dialogues-{_fingerprint(p, keys)}.json"
    if path.exists():
        saved = json.loads(path.read_text())
        return saved["rows"], saved["stats"]
    if p["data_source"] == "emoprism":
        rows = data.load_emoprism(p["data_path"], p["emotions"])
        stats = {"records_kept_by_emoprism": len(rows)}
    else:
        topics = data.sample_topics(p["topic_pool"], p["n_topics"], p["seed"])
        if p["data_source"] == "template":
            rows = data.synthesize_template(topics, p["emotions"], p["dialogues_per_topic"], p["seed"],
                                            p["explicit_share"])
            stats = {"generated": len(rows)}
        else:
            from .models import load_model
            model, tok = load_model(p["synth_model"], p["dtype"], p["device"], p["device_map"], p["seed"])
            rows, counter = data.synthesize_hf(model, tok, topics, p["emotions"], p["dialogues_per_topic"], p["seed"],
                                               p["synth_max_new_tokens"], p["synth_retries"], p["batch_size"])
            stats = dict(counter)
            del model
            gc.collect()
    cache_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rows": rows, "stats": stats}))
    return rows, stats


def label(rows: list[dict], p: dict, cache_dir: Path) -> pd.DataFrame:
    """Every dialogue with its theme, each annotator's label in its own column, and the voted label (or None)."""
    df = pd.DataFrame(rows)
    if p["data_source"] == "emoprism":
        df["kept"] = True
        return df
    shared = Path(p["run_dir"]).resolve().parent / "cache"  # annotations are shared by runs in one outputs folder
    for name in p["annotators"]:
        df[name] = annotate.annotate(name, df["dialogue"].tolist(), p["emotions"], p, shared)
    df["label"] = [data.vote(t, [r[a] for a in p["annotators"]], p["min_agreement"])
                   for t, (_, r) in zip(df["theme"], df.iterrows())]
    df["kept"] = df["label"].notna()
    return df


def build(p: dict) -> tuple[object, pd.DataFrame, dict]:
    """Run stage 1 and save the DatasetDict (run_dir/data), the annotation table and a dataset card."""
    run_dir = Path(p["run_dir"])
    cache_dir = run_dir / "cache"
    rows, stats = synthesize(p, cache_dir)
    df = label(rows, p, cache_dir)
    kept = df[df["kept"]].drop(columns=["kept"]).to_dict("records")
    train, evl = data.stratified_split(kept, p["eval_fraction"], p["seed"], p["max_per_emotion"], p["emotions"])
    dd = data.to_dataset_dict(train, evl)
    dd.save_to_disk(str(run_dir / "data"))
    stats = {**stats, "kept": int(df["kept"].sum()), "dropped": int((~df["kept"]).sum())}
    counts = {s: Counter(dd[s]["label"]) for s in dd}
    (run_dir / "data" / "README.md").write_text(data.dataset_card(p, counts, stats))
    df.to_csv(run_dir / "annotations.csv", index=False)
    return dd, df, stats


def agreement(df: pd.DataFrame, annotators: list[str]) -> pd.DataFrame:
    """Each annotator's agreement with the theme (accuracy against the intended emotion)."""
    return pd.DataFrame({"annotator": annotators,
                         "agreement_with_theme": [float((df[a] == df["theme"]).mean()) for a in annotators]})
