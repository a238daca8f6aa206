"""Emotion names, as EmoPrism spells them, and their aliases."""

from __future__ import annotations

EMOTIONS: tuple[str, ...] = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
ALIASES: dict[str, str] = {
    "joy": "happiness",
    "happy": "happiness",
    "angry": "anger",
    "sad": "sadness",
    "afraid": "fear",
    "surprised": "surprise",
    "disgusted": "disgust",
}


def normalize(name: str, key: str = "emotion") -> str:
    """Map an emotion name or alias (e.g. 'joy') to its EmoPrism name, or raise a clear ValueError."""
    value = str(name).strip().lower()
    value = ALIASES.get(value, value)
    if value not in EMOTIONS:
        raise ValueError(f"{key}: unknown emotion {name!r}; allowed: {', '.join(EMOTIONS)} (or 'joy' for happiness)")
    return value


def normalize_all(names: list[str], key: str = "emotions") -> list[str]:
    """Normalise a list of emotion names, keeping the canonical order and dropping repeats."""
    wanted = {normalize(n, key) for n in names}
    return [e for e in EMOTIONS if e in wanted]
