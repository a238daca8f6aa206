"""Stage 1 pipeline: topics -> split by topic -> dialogues -> annotators + theme vote -> train/eval DatasetDict."""

from __future__ import annotations

import gc
import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import pandas as pd

from .. import safeio
from . import annotate, data, endpoint


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (so a cache keyed on it changes when the file does, whatever its path)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fingerprint(p: dict, keys: list[str]) -> str:
    """Hash of the parameters a cached artefact depends on; data_path stands for its file's content."""
    vals = {k: p[k] for k in keys}
    if vals.get("data_path"):
        vals["data_path"] = "sha256:" + file_sha256(Path(p["data_path"]).expanduser())
    return hashlib.sha1(json.dumps(vals, sort_keys=True).encode()).hexdigest()[:12]


def _read_cache(path: Path) -> tuple[list[dict], dict]:
    """A dialogues cache file's rows and stats; a damaged file is one line naming it and the command that clears it."""
    try:
        saved = safeio.read_json(path, "dialogues cache")
        ok = isinstance(saved, dict) and isinstance(saved.get("rows"), list) and isinstance(saved.get("stats"), dict)
    except ValueError as e:
        reason, ok = str(e).split(": ", 1)[1], False
    else:
        reason = "missing rows or stats"
        if ok:  # every row: a dict with a non-empty dialogue, and topic and theme strings
            bad = next(
                (
                    (i, r)
                    for i, r in enumerate(saved["rows"], 1)
                    if not (
                        isinstance(r, dict)
                        and isinstance(r.get("dialogue"), str)
                        and r["dialogue"].strip()
                        and isinstance(r.get("topic"), str)
                        and isinstance(r.get("theme"), str)
                    )
                ),
                None,
            )
            if bad is not None:
                ok, reason = (
                    False,
                    (f"row {bad[0]} is not a dialogue with topic and theme strings ({str(bad[1])[:60]})"),
                )
    if not ok:
        raise ValueError(
            f"{path}: corrupt dialogues cache ({reason}); delete it to rebuild ({safeio.clear_hint(path)})"
        )
    return saved["rows"], saved["stats"]


def synthesize(p: dict, cache_dir: Path) -> tuple[list[dict], dict]:
    """The dialogues of the run (template, hf, openai or EmoPrism), cached on disk; also build statistics."""
    keys = [
        "data_source",
        "data_path",
        "topic_pool",
        "n_topics",
        "dialogues_per_topic",
        "explicit_share",
        "seed",
        "emotions",
        "synth_model",
        "synth_max_new_tokens",
        "synth_retries",
        "eval_fraction",
    ]
    if p["data_source"] == "openai":  # what endpoint dialogues depend on ('auto' resolved to the served model)
        p = {**p, "endpoint_model": endpoint.resolve_model(endpoint.synth_endpoint(p)).model}
        keys += ["endpoint_model", "endpoint_temperature", "endpoint_max_tokens", "endpoint_malformed_retries"]
    path = cache_dir / f"dialogues-{_fingerprint(p, keys)}.json"
    if path.exists():
        return _read_cache(path)
    if p["data_source"] == "emoprism":
        rows, removed = data.drop_duplicates(data.load_emoprism(p["data_path"], p["emotions"]))
        stats = {"records_kept_by_emoprism": len(rows), "duplicates_removed": removed}
    else:
        topics = data.sample_topics(p["topic_pool"], p["n_topics"], p["seed"])
        if p["data_source"] == "template":
            splits = data.split_topics(topics, p["eval_fraction"], p["seed"])  # each split has its own pool
            rows = data.synthesize_template(
                topics, p["emotions"], p["dialogues_per_topic"], p["seed"], p["explicit_share"], splits
            )
            stats = {"generated": len(rows)}
        elif p["data_source"] == "openai":
            rows, counter = endpoint.synthesize(
                topics, p["emotions"], p["dialogues_per_topic"], endpoint.synth_endpoint(p), endpoint.cache_dir(p)
            )
            stats = dict(counter)
        else:
            from ..lm.models import load_model

            model, tok = load_model(p["synth_model"], p["dtype"], p["device"], p["device_map"], p["seed"])
            rows, counter = data.synthesize_hf(
                model,
                tok,
                topics,
                p["emotions"],
                p["dialogues_per_topic"],
                p["seed"],
                p["synth_max_new_tokens"],
                p["synth_retries"],
                p["batch_size"],
            )
            stats = dict(counter)
            del model
            gc.collect()
    rows, removed = data.drop_duplicates(rows)  # a no-op for template and hf dialogues, which are distinct
    if removed:
        stats["duplicates_removed"] = stats.get("duplicates_removed", 0) + removed
    if stats.get("duplicates_removed"):
        print(f"{stats['duplicates_removed']} duplicate dialogue(s) removed before the split (first copy kept)")
    safeio.atomic_write_json(path, {"rows": rows, "stats": stats}, base=cache_dir.parent)
    return rows, stats


def vote(rows: list[dict], p: dict, cache_dir: Path) -> pd.DataFrame:
    """Every dialogue with its theme, each annotator's vote in its own column, and the voted label (or None)."""
    df = pd.DataFrame(rows)
    if p["data_source"] == "emoprism":
        df["kept"] = True
        return df
    from ..lm.classify import lm_voter

    shared = Path(p["run_dir"]).resolve().parent / "cache"  # annotations are shared by runs in one outputs folder
    for name in p["annotators"]:
        df[name] = annotate.annotate(name, df["dialogue"].tolist(), p["emotions"], p, shared, lm_voter=lm_voter)
    voters = {"train": p["annotators"], "eval": voters_on_eval(p)}
    need = {s: data.scaled_agreement(p["min_agreement"], 1 + len(v)) for s, v in voters.items()}
    df["label"] = [
        data.vote(r["theme"], [r[a] for a in voters[r["split"]]], need[r["split"]]) for _, r in df.iterrows()
    ]
    df["kept"] = df["label"].notna()
    return df


def voters_on_eval(p: dict) -> list[str]:
    """The annotators whose votes count for eval items (EmoPrism's own labellers for data_source: emoprism)."""
    if p["data_source"] == "emoprism":
        return list(data.EMOPRISM_ANNOTATORS)
    return data.eval_voters(p["annotators"], p["model"], p["eval_exclude_studied"])


def with_splits(rows: list[dict], p: dict) -> list[dict]:
    """Rows with their topic's split; template rows already carry the split whose pool they were drawn from."""
    if rows and all("split" in r for r in rows):
        return rows
    topics = [r["topic"] for r in rows]
    if p["data_source"] != "emoprism":  # split the sampled topics, as the template source does
        topics += data.sample_topics(p["topic_pool"], p["n_topics"], p["seed"])
    return data.mark_splits(rows, data.split_topics(topics, p["eval_fraction"], p["seed"]))


def build(p: dict) -> tuple[object, pd.DataFrame, dict]:
    """Run stage 1 and save the DatasetDict (run_dir/data), the annotation table and a dataset card."""
    run_dir = Path(p["run_dir"])
    cache_dir = run_dir / "cache"
    if endpoint.uses_endpoints(p):
        endpoint.check_keys(p)  # a missing API-key variable fails here, before any work
    rows, stats = synthesize(p, cache_dir)
    df = vote(with_splits(rows, p), p, cache_dir)
    kept = df[df["kept"]].drop(columns=["kept"]).to_dict("records")
    train, evl = data.split_by_topic(kept, p["eval_fraction"], p["seed"], p["max_per_emotion"], p["emotions"])
    dd = data.to_dataset_dict(*[[{k: v for k, v in r.items() if k != "split"} for r in part] for part in (train, evl)])
    stats = {
        **stats,
        "kept": int(df["kept"].sum()),
        "dropped": int((~df["kept"]).sum()),
        "train_topics": int(df.loc[df["split"] == "train", "topic"].nunique()),
        "eval_topics": int(df.loc[df["split"] == "eval", "topic"].nunique()),
        "eval_unfiltered": int((df["split"] == "eval").sum()),
        "eval_voters": voters_on_eval(p),
    }
    counts = {s: Counter(dd[s]["label"]) for s in dd}
    import tempfile

    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=".data.tmp-"))  # a fresh folder, written whole, moved into place
    os.chmod(tmp, 0o755)
    dd.save_to_disk(str(tmp))
    (tmp / "README.md").write_text(data.dataset_card(p, counts, stats))
    data.save_eval_unfiltered(unfiltered_eval(df), tmp)
    safeio.replace_dir(tmp, run_dir / "data")
    safeio.atomic_save(run_dir / "annotations.csv", lambda f: df.to_csv(f, index=False))
    return dd, df, stats


def agreement(df: pd.DataFrame, annotators: list[str]) -> pd.DataFrame:
    """Each annotator's agreement with the theme (accuracy against the intended emotion)."""
    return pd.DataFrame(
        {"annotator": annotators, "agreement_with_theme": [float((df[a] == df["theme"]).mean()) for a in annotators]}
    )


def unfiltered_eval(df: pd.DataFrame) -> list[dict]:
    """Every eval-topic dialogue before the vote: label = theme, vote = the voted label (None when dropped)."""
    ev = df[df["split"] == "eval"].drop(columns=["split", "kept"]).rename(columns={"label": "vote"})
    ev = ev.astype(object).where(ev.notna(), None)
    return [{**r, "label": r["theme"]} for r in ev.to_dict("records")]


def eval_construction(df: pd.DataFrame, p: dict) -> pd.DataFrame:
    """How the eval split was built: disjoint topics and template pools, who voted on it, its size before the vote."""
    from ..lm import synth_template as st

    topics = {s: set(df.loc[df["split"] == s, "topic"]) for s in ("train", "eval")}
    voters = voters_on_eval(p)
    ev = df[df["split"] == "eval"]
    rows = [
        (
            "topics: train / eval / shared",
            f"{len(topics['train'])} / {len(topics['eval'])} / {len(topics['train'] & topics['eval'])}",
        )
    ]
    if p["data_source"] == "template":
        for k in st.PARTITIONED:
            tr, evp = ([t for e in p["emotions"] for t in st.pool(e, s)[k]] for s in ("train", "eval"))
            rows.append(
                (
                    f"{k} (all emotions): train pool / eval pool / shared",
                    f"{len(tr)} / {len(evp)} / {len(set(tr) & set(evp))}",
                )
            )
        leaks = sum(bool(st.foreign_templates(r.dialogue, r.topic, r.theme, r.split)) for r in df.itertuples())
        rows.append(("dialogues using a template of the other split's pool", str(leaks)))
    need = data.scaled_agreement(p["min_agreement"], 1 + len(voters))
    train_voters = voters if p["data_source"] == "emoprism" else p["annotators"]
    rows += [
        (
            "votes on train items",
            f"theme + {', '.join(train_voters)}; kept at >= {p['min_agreement']} of {1 + len(train_voters)}",
        ),
        (
            "votes on eval items",
            f"theme + {', '.join(voters) or 'no annotator'}; kept at >= {need} of {1 + len(voters)}",
        ),
        ("eval items before the vote (eval_unfiltered) / kept", f"{len(ev)} / {int(ev['kept'].sum())}"),
    ]
    if p.get("eval_source") == "file":
        ext = data.load_eval_file(p["eval_path"], p["emotions"])
        counts = Counter(r["label"] for r in ext)
        rows.append(
            (
                "external eval file",
                f"{p['eval_path']}: {len(ext)} items (" + ", ".join(f"{e} {counts[e]}" for e in p["emotions"]) + ")",
            )
        )
    return pd.DataFrame(rows, columns=["check", "value"])
