"""Stage 1 data: EmoPrism topics, dialogue synthesis (template or hf), the real EmoPrism file, splits."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
import zlib
from collections import Counter
from importlib.resources import files
from pathlib import Path

from ..emotions import EMOTIONS, normalize
from ..params import MIN_EVAL_PER_EMOTION, load_eval_file  # noqa: F401 (read and checked with the parameters)

EMOPRISM_FIELDS = ("topic", "dialogue", "theme", "label")
EMOPRISM_ANNOTATORS = ("gpt-4o-mini", "gemini-1.5-flash", "claude-3-haiku-20240307")
TURN = re.compile(r"^\s*([AB])\s*:\s*(\S.*)$")


def load_topics(pool: str = "all") -> list[str]:
    """EmoPrism's topics: the 315 base topics ('base') or all 5,040 ('all'), in their original order."""
    name = {"base": "base_topics.json", "all": "topics.json"}[pool]
    return json.loads(files("emolib").joinpath("data/emoprism-topics", name).read_text())


def sample_topics(pool: str, n: int, seed: int) -> list[str]:
    """n distinct topics drawn from the pool with a seeded RNG."""
    topics = list(dict.fromkeys(load_topics(pool)))
    if n > len(topics):
        raise ValueError(f"n_topics: the {pool} pool has {len(topics)} distinct topics, asked for {n}")
    return random.Random(seed).sample(topics, n)


def dialogue_id(dialogue: str) -> str:
    """A short stable id for a dialogue text."""
    return hashlib.sha1(dialogue.encode()).hexdigest()[:16]


def split_topics(topics: list[str], eval_fraction: float, seed: int) -> dict[str, str]:
    """Each distinct topic's split: a seeded shuffle sends round(n * eval_fraction) topics (1 to n - 1) to 'eval'."""
    distinct = sorted(set(topics))
    if len(distinct) < 2:
        raise ValueError(
            f"n_topics: train and eval need disjoint topics, so at least 2 distinct topics; got {len(distinct)}"
        )
    random.Random(f"topic-split|{seed}").shuffle(distinct)
    n_eval = min(len(distinct) - 1, max(1, round(len(distinct) * eval_fraction)))
    return {t: "eval" if i < n_eval else "train" for i, t in enumerate(distinct)}


def mark_splits(rows: list[dict], splits: dict[str, str]) -> list[dict]:
    """The rows with a 'split' field taken from their topic."""
    return [{**r, "split": splits[r["topic"]]} for r in rows]


def synthesize_template(
    topics: list[str],
    emotions: list[str],
    per_pair: int,
    seed: int,
    explicit_share: float,
    splits: dict[str, str] | None = None,
) -> list[dict]:
    """Dialogues from the offline generator (see synth_template); with splits, each topic from its split's pool."""
    from ..lm.synth_template import generate_dialogues

    if splits is None:
        return generate_dialogues(topics, emotions, per_pair, seed, explicit_share)
    rows = []
    for split in ("train", "eval"):
        part = [t for t in topics if splits[t] == split]
        rows += mark_splits(generate_dialogues(part, emotions, per_pair, seed, explicit_share, split), splits)
    return rows


SYNTH_PROMPT = (
    "Write a short dialogue between two people, A and B, about {topic}. The dialogue should clearly "
    "convey {emotion}. Use 3 to 8 turns; start every line with 'A:' or 'B:', alternating, and write "
    "nothing else."
)


def parse_dialogue(text: str) -> str | None:
    """Keep the A:/B: turns of a generated text; None unless 3-8 alternating turns starting with A."""
    turns = []
    for line in text.strip().splitlines():
        m = TURN.match(line)
        if m:
            turns.append(f"{m.group(1)}: {m.group(2).strip()}")
        elif turns and line.strip():
            break
    if not 3 <= len(turns) <= 8:
        turns = turns[:8]
        if len(turns) < 3:
            return None
    if any(t[0] != "AB"[i % 2] for i, t in enumerate(turns)):
        return None
    return "\n".join(turns)


def synthesize_hf(
    model,
    tokenizer,
    topics: list[str],
    emotions: list[str],
    per_pair: int,
    seed: int,
    max_new_tokens: int = 160,
    retries: int = 2,
    batch_size: int = 8,
) -> tuple[list[dict], Counter]:
    """Dialogues written by a chat model from a (topic, emotion) prompt; off-format outputs retried, then dropped."""
    import torch

    from ..lm.models import model_device
    from ..progress import tqdm

    jobs = [(t, e, k) for t in topics for e in emotions for k in range(per_pair)]
    stats: Counter = Counter()
    done: dict[tuple, str] = {}
    seen: set[str] = set()
    tokenizer.padding_side = "left"
    for attempt in range(retries + 1):
        todo = [j for j in jobs if j not in done]
        if not todo:
            break
        torch.manual_seed(seed + attempt)
        for s in tqdm(range(0, len(todo), batch_size), desc=f"writing dialogues (try {attempt + 1})", leave=False):
            batch = todo[s : s + batch_size]
            texts = [
                tokenizer.apply_chat_template(
                    [{"role": "user", "content": SYNTH_PROMPT.format(topic=t, emotion=e)}],
                    tokenize=False,
                    add_generation_prompt=True,
                )
                + "A:"
                for t, e, _ in batch
            ]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(model_device(model)) for k, v in enc.items()}
            with torch.inference_mode():
                out = model.generate(
                    **enc,
                    do_sample=True,
                    temperature=0.8,
                    top_p=0.95,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                )
            for j, row in zip(batch, out[:, enc["input_ids"].shape[1] :]):
                text = "A:" + tokenizer.decode(row, skip_special_tokens=True)
                if tokenizer.eos_token_id not in row.tolist():  # cut off by max_new_tokens: drop the last turn
                    text = text.rsplit("\n", 1)[0]
                d = parse_dialogue(text)
                stats["generated"] += 1
                if d is None:
                    stats["off_format"] += 1
                elif d in seen:
                    stats["duplicate"] += 1
                else:
                    done[j] = d
                    seen.add(d)
    stats["dropped"] = len(jobs) - len(done)
    rows = [
        {"topic": t, "theme": e, "dialogue": done[(t, e, k)], "style": "generated"}
        for t, e, k in jobs
        if (t, e, k) in done
    ]
    return rows, stats


def _read_json_any(path: Path) -> list:
    """A JSON list or JSON-lines file, optionally gzipped."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        text = f.read()
    text = text.strip()
    if text.startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def load_emoprism(path: str | Path, emotions: list[str]) -> list[dict]:
    """Read and validate the released EmoPrism file; records of the chosen emotions, label mapped to names."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"data_path: file not found: {path}")
    if not path.is_file():
        raise ValueError(f"data_path: {path} is a folder, not an EmoPrism .json or .json.gz file")
    try:
        records = _read_json_any(path)
    except (EOFError, zlib.error) as e:
        raise ValueError(
            f"data_path: {path} is truncated or damaged ({type(e).__name__}: {e}); copy the file again"
        ) from None
    except UnicodeDecodeError as e:
        raise ValueError(f"data_path: {path} is not UTF-8 text (byte {e.object[e.start]:#04x} at {e.start})") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(
            f"data_path: {path} is not a JSON list or JSON-lines file ({' '.join(str(e).split())})"
        ) from None
    if not isinstance(records, list) or not records:
        raise ValueError(f"data_path: {path} holds no records")
    rows = []
    for i, r in enumerate(records):
        missing = [k for k in EMOPRISM_FIELDS if k not in r] if isinstance(r, dict) else list(EMOPRISM_FIELDS)
        if missing:
            raise ValueError(
                f"data_path: record {i} of {path} lacks field(s) {', '.join(missing)}; "
                f"EmoPrism records have {', '.join(EMOPRISM_FIELDS)} and one field per labeller"
            )
        try:
            theme = normalize(r["theme"], f"record {i} theme")
            label = normalize(r["label"], f"record {i} label") if r["label"] not in (None, "") else None
        except ValueError as e:
            raise ValueError(f"data_path: {e}") from None
        if not isinstance(r["dialogue"], str) or not r["dialogue"].strip():
            raise ValueError(f"data_path: record {i} of {path} has an empty dialogue")
        if label is None or theme not in emotions:
            continue
        row = {
            "topic": str(r["topic"]),
            "theme": theme,
            "dialogue": r["dialogue"].strip(),
            "style": "emoprism",
            "label": label,
        }
        for a in EMOPRISM_ANNOTATORS:
            row[a] = normalize(r[a], a) if r.get(a) else None
        rows.append(row)
    return rows


def drop_duplicates(rows: list[dict]) -> tuple[list[dict], int]:
    """Keep the first record of each dialogue text (so no dialogue lands in both splits); also the count removed."""
    seen: set[str] = set()
    out = []
    for r in rows:
        if r["dialogue"] not in seen:
            seen.add(r["dialogue"])
            out.append(r)
    return out, len(rows) - len(out)


def vote(theme: str, annotations: list[str | None], min_agreement: int) -> str | None:
    """EmoPrism's rule: the label that at least min_agreement of the 4 votes (theme + annotators) share, else None."""
    votes = Counter([theme] + [a for a in annotations if a])
    label, n = max(votes.items(), key=lambda kv: (kv[1], kv[0] == theme))
    return label if n >= min_agreement else None


def _model_key(spec: str) -> str:
    """A comparable name for a model spec: a hub preset's hub id, a local path resolved, lower-cased."""
    from ..lm.models import PRESETS

    spec = spec[len("openai:") :] if spec.startswith("openai:") else spec  # an endpoint serving the same model
    preset = PRESETS.get(spec)
    if preset is not None and preset.source == "hub":
        spec = preset.target
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec.lower()


def eval_voters(annotators: list[str], model: str, exclude_studied: bool) -> list[str]:
    """The annotators whose votes count for eval items: all, or all but those that are the studied model."""
    if not exclude_studied:
        return list(annotators)
    return [a for a in annotators if a == "minilm" or _model_key(a) != _model_key(model)]


def scaled_agreement(min_agreement: int, n_votes: int) -> int:
    """min_agreement (set for 4 votes) scaled to n_votes, rounded up: the same share of votes, never fewer."""
    return max(1, -(-min_agreement * n_votes // 4))


def stratified_split(
    rows: list[dict], eval_fraction: float, seed: int, max_per_emotion: int | None, emotions: list[str]
) -> tuple[list[dict], list[dict]]:
    """Seeded split per label into (train, eval), after an optional per-emotion cap; both get every emotion."""
    rng = random.Random(seed)
    train, evl = [], []
    for e in emotions:
        group = [r for r in rows if r["label"] == e]
        rng.shuffle(group)
        if max_per_emotion:
            group = group[:max_per_emotion]
        if len(group) < 2:
            raise ValueError(
                f"only {len(group)} kept dialogue(s) for {e}: both splits need one; "
                "raise n_topics or dialogues_per_topic, or lower min_agreement"
            )
        n_eval = min(len(group) - 1, max(1, round(len(group) * eval_fraction)))
        evl += group[:n_eval]
        train += group[n_eval:]
    return train, evl


def split_by_topic(
    rows: list[dict], eval_fraction: float, seed: int, max_per_emotion: int | None, emotions: list[str]
) -> tuple[list[dict], list[dict]]:
    """(train, eval) by each row's topic split; an optional per-emotion cap is shared eval_fraction : rest."""
    rng = random.Random(seed)
    caps = {"train": None, "eval": None}
    if max_per_emotion:
        caps["eval"] = min(max_per_emotion - 1, max(1, round(max_per_emotion * eval_fraction)))
        caps["train"] = max_per_emotion - caps["eval"]
    out: dict[str, list[dict]] = {"train": [], "eval": []}
    for e in emotions:
        for split in ("train", "eval"):
            group = [r for r in rows if r["label"] == e and r["split"] == split]
            rng.shuffle(group)
            if not group:
                raise ValueError(
                    f"no kept dialogue for {e} in the {split} split (splits are disjoint by topic): "
                    "raise n_topics or dialogues_per_topic, or lower min_agreement"
                )
            out[split] += group[: caps[split]]
    return out["train"], out["eval"]


def to_dataset_dict(train: list[dict], evl: list[dict]):
    """A datasets.DatasetDict with splits train and eval."""
    from datasets import Dataset, DatasetDict

    return DatasetDict({"train": Dataset.from_list(train), "eval": Dataset.from_list(evl)})


def load_splits(run_dir: str | Path):
    """The DatasetDict saved by stage 1 under run_dir/data."""
    from datasets import load_from_disk

    path = Path(run_dir) / "data"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run notebook 01 (stage 1) for this run first")
    return load_from_disk(str(path))


EVAL_UNFILTERED = "eval_unfiltered.jsonl"  # under run_dir/data: every eval-topic dialogue, before the vote


def save_eval_unfiltered(rows: list[dict], folder: str | Path) -> Path:
    """Write the eval-topic dialogues before the vote (label = theme) as JSON lines into the data folder."""
    path = Path(folder) / EVAL_UNFILTERED
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def load_eval_unfiltered(run_dir: str | Path) -> list[dict]:
    """The eval split before the vote, as saved by stage 1: label is the theme (the intended emotion)."""
    path = Path(run_dir) / "data" / EVAL_UNFILTERED
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run notebook 01 (stage 1) for this run first")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def dataset_card(p: dict, counts: dict, stats: dict) -> str:
    """A short markdown card describing how the dataset was built."""
    lines = [
        f"# Emotion dialogues: run `{p['run_name']}`",
        "",
        f"Built by `notebooks/01_data_construction.ipynb` (emolib). Source: `{p['data_source']}`; "
        f"topics: EmoPrism taxonomy (`{p['topic_pool']}` pool, {p['n_topics']} sampled, seed {p['seed']}); "
        f"annotators: {', '.join(p['annotators'])}; kept when at least {p['min_agreement']} of 4 votes "
        "(theme + 3 annotators) agree. Train and eval have disjoint topics (and, for template dialogues, "
        "disjoint situation, reaction and follow-up templates); eval items are voted on by theme + "
        f"{', '.join(stats.get('eval_voters', p['annotators']))}, kept at the same share of votes "
        "(rounded up).",
        "",
        "| split | " + " | ".join(EMOTIONS) + " | total |",
        "|---" * (len(EMOTIONS) + 2) + "|",
    ]
    for split, c in counts.items():
        lines.append(f"| {split} | " + " | ".join(str(c.get(e, 0)) for e in EMOTIONS) + f" | {sum(c.values())} |")
    lines += [
        "",
        "Columns: topic, dialogue, theme (intended emotion), label (voted emotion), style "
        "(explicit / implicit / generated / emoprism), one column per annotator.",
        "",
        "Build statistics: "
        + "; ".join(f"{k}: {', '.join(v) if isinstance(v, list) else v}" for k, v in stats.items()),
        "",
        "Topic taxonomy: EmoPrism (MIT, (c) 2025 Woojin Lee and contributors).",
    ]
    return "\n".join(lines) + "\n"
