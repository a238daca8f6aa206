"""Offline, deterministic template generator of two-speaker emotional dialogues.

Stands in for the GPT-4o-mini writer of the EmoPrism dataset (Lee et al. 2025): given a
topic and one of Ekman's six emotions it composes a short A/B dialogue about the topic
that conveys the emotion, either naming it (``explicit``) or only through the situation
and the speakers' reactions (``implicit``).

Dialogues are assembled from per-emotion phrase tables (situations, listener reactions,
follow-ups, closings, shared echoes, explicit naming lines) and shared neutral pools
(openers, lead-ins, connective turns).  Turn count (3..8), who experienced the event
(A or B), whether the listener shares the feeling, and sentence order are all drawn from
the RNG, so the emotion cannot be read off one fixed phrase.

Every situation template contains the ``{topic}`` slot, so dialogues of different topics
never coincide; each (topic, emotion, k) gets its own RNG derived from a SHA-256 hash, so
adding or removing topics never changes the dialogues of the others.

Caveat: the implicit style guarantees that no ``EMOTION_LEXICON`` word comes from the
templates; a topic string that itself contains such a word (e.g. "Happy Hour") will
still carry it into the dialogue.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from importlib.resources import files

EMOTIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
STYLES = ("explicit", "implicit")
SPLITS = ("train", "eval")
# The story-bearing tables, partitioned per emotion between the train and the eval pool (see pool()).
PARTITIONED = ("situations", "reactions", "followups")

_MAX_ATTEMPTS = 50
_MAX_SENTENCES = 3

# ---------------------------------------------------------------------------
# The phrase tables live in phrases/*.json next to this module (package data):
#   lexicon.json   the words/phrases that count as *naming* an emotion. Implicit dialogues
#                  contain none of these (word-boundary, case-insensitive); explicit dialogues
#                  contain at least one of their own emotion's entries.
#   emotions.json  per-emotion tables. Everything except explicit_self / explicit_other is free
#                  of lexicon words and is used by both styles. Situations are first person
#                  (spoken by the one who lived it); reactions/closings_listener by the other one.
#   neutral.json   shared neutral pools (no lexicon words, no emotion of their own):
#                  openers_tell (A opens and tells the story in the same turn), openers_ask (A asks;
#                  B tells the story), leads (optional lead-in of the teller when asked), prompts
#                  (listener turns that prompt the teller to go on), connectives (optional short
#                  connective before a teller's follow-up).
# ---------------------------------------------------------------------------


def _load_phrases(name: str) -> dict:
    """One phrase table from phrases/<name>.json, its lists as tuples (nested dicts kept)."""
    raw = json.loads(files(__package__ or "emolib").joinpath("phrases", f"{name}.json").read_text(encoding="utf-8"))
    return {k: tuple(v) if isinstance(v, list) else {kk: tuple(vv) for kk, vv in v.items()} for k, v in raw.items()}


EMOTION_LEXICON: dict[str, tuple[str, ...]] = _load_phrases("lexicon")
EMOTION_TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = _load_phrases("emotions")
NEUTRAL_TEMPLATES: dict[str, tuple[str, ...]] = _load_phrases("neutral")


def _lexicon_pattern(entry: str) -> re.Pattern[str]:
    """Compile a word-boundary, case-insensitive pattern for one lexicon entry."""
    body = r"\s+".join(re.escape(part) for part in entry.split())
    return re.compile(r"\b" + body + r"\b", re.IGNORECASE)


_LEXICON_RE = {e: [(w, _lexicon_pattern(w)) for w in ws] for e, ws in EMOTION_LEXICON.items()}


def lexicon_hits(text: str) -> dict[str, list[str]]:
    """Map each emotion to the lexicon entries found in text (only emotions with hits)."""
    hits: dict[str, list[str]] = {}
    for emotion, patterns in _LEXICON_RE.items():
        found = [w for w, p in patterns if p.search(text)]
        if found:
            hits[emotion] = found
    return hits


_SENT_END = re.compile(r"[.!?]+(?=\s|$)")


def _n_sentences(template: str) -> int:
    """Number of sentences in a template (counted before topic substitution)."""
    return max(1, len(_SENT_END.findall(template)))


def _check_emotion(emotion: str) -> None:
    """Raise ValueError naming emotion if it is not one of EMOTIONS."""
    if emotion not in EMOTIONS:
        raise ValueError(f"unknown emotion {emotion!r}; expected one of {EMOTIONS}")


def _check_style(style: str) -> None:
    """Raise ValueError naming style if it is not one of STYLES."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")


def _check_split(split: str | None) -> None:
    """Raise ValueError naming split if it is not None or one of SPLITS."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected None or one of {SPLITS}")


def in_eval_pool(index: int) -> bool:
    """Whether the template at this index of a partitioned table belongs to the eval pool (i % 5 in {1, 3}: 40%)."""
    return index % 5 in (1, 3)


def pool(emotion: str, split: str | None) -> dict[str, tuple[str, ...]]:
    """An emotion's phrase tables for a split: PARTITIONED tables keep only that split's part; None = everything."""
    _check_emotion(emotion)
    _check_split(split)
    bank = EMOTION_TEMPLATES[emotion]
    if split is None:
        return dict(bank)
    return {
        k: tuple(t for i, t in enumerate(v) if in_eval_pool(i) == (split == "eval")) if k in PARTITIONED else v
        for k, v in bank.items()
    }


class _Pool:
    """Draws templates from a tuple without replacement (refills when exhausted)."""

    def __init__(self, rng: random.Random, items: tuple[str, ...]):
        self._rng = rng
        self._items = items
        self._left: list[str] = []

    def draw(self) -> str:
        """Return the next template, never repeating one until the pool is used up."""
        if not self._left:
            self._left = list(self._items)
            self._rng.shuffle(self._left)
        return self._left.pop()


class _Turn:
    """One turn under construction: optional pre/post units around core units."""

    def __init__(self, speaker: str, role: str, core: list[str]):
        self.speaker = speaker
        self.role = role
        self.pre: list[str] = []
        self.core = core
        self.post: list[str] = []

    def size(self) -> int:
        """Total sentence count of the turn."""
        return sum(_n_sentences(u) for u in self.pre + self.core + self.post)

    def add(self, unit: str, front: bool) -> bool:
        """Add unit before or after the core if it keeps the turn within the sentence cap."""
        if self.size() + _n_sentences(unit) > _MAX_SENTENCES:
            return False
        self._place(unit, front)
        return True

    def force(self, unit: str, front: bool) -> None:
        """Add unit, dropping optional pre/post units until it fits the sentence cap."""
        while self.size() + _n_sentences(unit) > _MAX_SENTENCES and (self.pre or self.post):
            (self.pre if self.pre else self.post).pop(0)
        self._place(unit, front)

    def _place(self, unit: str, front: bool) -> None:
        """Put unit right before the core (front) or right after it (keeps openers first, prompts last)."""
        if front:
            self.pre.append(unit)
        else:
            self.post.insert(0, unit)

    def render(self, topic: str) -> str:
        """Render as 'A: ...' with the topic substituted."""
        text = " ".join(self.pre + self.core + self.post).replace("{topic}", topic)
        return f"{self.speaker}: {text}"


def generate_dialogue(topic: str, emotion: str, rng: random.Random, style: str, split: str | None = None) -> str:
    """One dialogue from the split's pool (None = all): 3-8 turns 'A: ...' / 'B: ...' joined by '\n', from A."""
    _check_emotion(emotion)
    _check_style(style)
    _check_split(split)
    if not isinstance(topic, str) or not topic.strip():
        raise ValueError(f"topic must be a non-empty string, got {topic!r}")
    bank = {k: _Pool(rng, v) for k, v in pool(emotion, split).items()}
    neutral = {k: _Pool(rng, v) for k, v in NEUTRAL_TEMPLATES.items()}

    n = rng.randint(3, 8)
    teller = rng.choice(("A", "B"))
    shared = rng.random() < 0.35  # the listener voices the feeling too
    speakers = ["A" if i % 2 == 0 else "B" for i in range(n)]
    start = 0 if teller == "A" else 1
    turns: list[_Turn] = []

    if teller == "B":
        turns.append(_Turn("A", "ask", [neutral["openers_ask"].draw()]))
    situation = _Turn(teller, "situation", [bank["situations"].draw()])
    if teller == "A" and rng.random() < 0.45:
        situation.add(neutral["openers_tell"].draw(), front=True)
    elif teller == "B" and rng.random() < 0.4:
        situation.add(neutral["leads"].draw(), front=True)
    turns.append(situation)

    for i in range(start + 1, n):
        last = i == n - 1
        if speakers[i] == teller:
            if last and (n >= 4 or rng.random() < 0.5):
                turns.append(_Turn(teller, "closing", [bank["closings"].draw()]))
            else:
                t = _Turn(teller, "followup", [bank["followups"].draw()])
                # A connective ("Yeah.", "I know.") reads badly as the answer to a question.
                if rng.random() < 0.3 and not (turns[-1].core + turns[-1].post)[-1].endswith("?"):
                    t.add(neutral["connectives"].draw(), front=True)
                turns.append(t)
        else:
            listener = speakers[i]
            if i == start + 1:
                t = _Turn(listener, "reaction", [bank["reactions"].draw()])
                if not last and rng.random() < 0.35:
                    t.add(neutral["prompts"].draw(), front=False)
            elif last:
                key = "closings_listener" if rng.random() < 0.6 else "reactions"
                t = _Turn(listener, "reaction", [bank[key].draw()])
            else:
                u = rng.random()
                if u < 0.3:
                    t = _Turn(listener, "prompt", [neutral["prompts"].draw()])
                else:
                    t = _Turn(listener, "reaction", [bank["reactions"].draw()])
                    if u > 0.75:
                        t.add(neutral["prompts"].draw(), front=False)
            turns.append(t)

    listener_turns = [t for t in turns[start + 1 :] if t.speaker != teller]
    if shared:
        target = rng.choice(listener_turns)
        target.force(bank["echoes"].draw(), front=rng.random() < 0.4)

    if style == "explicit":
        teller_turns = [t for t in turns if t.speaker == teller]
        reacting = [t for t in listener_turns if t.role == "reaction"]
        n_explicit = 2 if rng.random() < 0.35 else 1
        chosen: list[_Turn] = []
        for _ in range(n_explicit):
            use_listener = reacting and (rng.random() < (0.5 if shared else 0.3))
            candidates = [t for t in (reacting if use_listener else teller_turns) if t not in chosen]
            if not candidates:
                candidates = [t for t in teller_turns + reacting if t not in chosen]
            if not candidates:
                break
            t = rng.choice(candidates)
            chosen.append(t)
            key = "explicit_self" if t.speaker == teller else "explicit_other"
            t.force(bank[key].draw(), front=rng.random() < 0.5)

    return "\n".join(t.render(topic) for t in turns)


def foreign_templates(dialogue: str, topic: str, emotion: str, split: str) -> list[str]:
    """The PARTITIONED templates of the other split's pool that occur in a dialogue of this split (should be none)."""
    _check_split(split)
    bank = pool(emotion, "eval" if split == "train" else "train")
    return [t for k in PARTITIONED for t in bank[k] if t.replace("{topic}", topic) in dialogue]


def _derived_rng(seed: int, topic: str, emotion: str, k: int, attempt: int) -> random.Random:
    """Stable per-(seed, topic, emotion, k, attempt) RNG from SHA-256 (independent of hash())."""
    key = f"{seed}|{topic}|{emotion}|{k}" + (f"|{attempt}" if attempt else "")
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def generate_dialogues(
    topics: list[str],
    emotions: list[str],
    per_pair: int,
    seed: int,
    explicit_share: float = 0.5,
    split: str | None = None,
) -> list[dict]:
    """per_pair dialogues for every (topic, emotion) from the split's pool (None = all); dicts with keys topic,
    theme, dialogue, style. Deterministic for a seed; no duplicate dialogue strings."""
    for emotion in emotions:
        _check_emotion(emotion)
    _check_split(split)
    if not isinstance(per_pair, int) or per_pair < 0:
        raise ValueError(f"per_pair must be a non-negative int, got {per_pair!r}")
    if not 0.0 <= explicit_share <= 1.0:
        raise ValueError(f"explicit_share must be in [0, 1], got {explicit_share!r}")
    out: list[dict] = []
    seen: set[str] = set()
    for topic in topics:
        for emotion in emotions:
            for k in range(per_pair):
                for attempt in range(_MAX_ATTEMPTS):
                    rng = _derived_rng(seed, topic, emotion, k, attempt)
                    style = "explicit" if rng.random() < explicit_share else "implicit"
                    dialogue = generate_dialogue(topic, emotion, rng, style, split)
                    if dialogue not in seen:
                        break
                else:
                    raise RuntimeError(
                        f"could not draw a new dialogue for topic={topic!r}, emotion={emotion!r}, "
                        f"k={k} after {_MAX_ATTEMPTS} attempts (seed={seed}); "
                        "per_pair is too large for the template space or topics repeat"
                    )
                seen.add(dialogue)
                out.append({"topic": topic, "theme": emotion, "dialogue": dialogue, "style": style})
    return out
