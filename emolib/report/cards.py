"""Neuron cards as HTML (issue 28): for notebook 02's output and the site's card pages. Every text that comes from
data (tokens, emotions, set names) is escaped with html.escape; there is no script and no event handler, and the
firing-rate chart is inline SVG."""

from __future__ import annotations

from html import escape

POS, NEG = (214, 96, 0), (40, 100, 200)  # shading of positive and negative activations
SHOWN_TITLE = "What a selected neuron looks like"


def _e(x) -> str:
    return escape(str(x), quote=True)


def token_html(t: str) -> str:
    """A decoded token as visible text: newlines as ↵, tabs as →, the rest escaped (spaces kept by the CSS)."""
    return _e(t.replace("\n", "↵").replace("\t", "→"))


def shade(v: float, scale: float) -> str:
    """Inline background of a token with activation v, on a card's scale (its largest top activation)."""
    a = min(1.0, abs(v) / scale) if scale > 0 else 0.0
    r, g, b = POS if v >= 0 else NEG
    return f"background:rgba({r},{g},{b},{0.85 * a:.2f})"


def context_html(c: dict, scale: float) -> str:
    """One context: the dialogue's emotion, its maximum, and its tokens shaded by activation (the maximum
    underlined; a token's activation in its tooltip)."""
    spans = []
    for k, (t, v) in enumerate(zip(c["tokens"], c["acts"])):
        mark = ";text-decoration:underline;font-weight:bold" if k == c["at"] else ""
        spans.append(f'<span style="{shade(v, scale)}{mark}" title="{_e(f"{v:.3g}")}">{token_html(t)}</span>')
    left, right = ("…" if c.get("cut_left") else ""), ("…" if c.get("cut_right") else "")
    return (
        '<div class="emolib-card-context" style="margin:3px 0;line-height:1.7">'
        f'<span style="display:inline-block;min-width:11em;color:#444">[{_e(c["emotion"])}] '
        f"max {c['max']:.3g}</span> "
        f'<span style="font-family:monospace;white-space:pre-wrap">{left}{"".join(spans)}{right}</span></div>'
    )


def bars_svg(rates: dict[str, float], own: str, width: int = 260) -> str:
    """A small horizontal bar chart of the firing rate per emotion (inline SVG; the card's own emotion darker)."""
    names = list(rates)
    row, left, right = 16, 78, 44
    h = row * len(names) + 6
    top = max([v for v in rates.values()] + [1e-12])
    label = "; ".join(f"{n} {v:.1%}" for n, v in rates.items())
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" role="img" '
        f'aria-label="{_e("firing rate per emotion: " + label)}" style="font:11px sans-serif">',
        f"<title>{_e('firing rate per emotion: ' + label)}</title>",
    ]
    for k, n in enumerate(names):
        y, w = 3 + k * row, (width - left - right) * rates[n] / top
        fill = "#b35900" if n == own else "#f0b27a"
        parts.append(
            f'<text x="{left - 4}" y="{y + 11}" text-anchor="end">{_e(n)}</text>'
            f'<rect x="{left}" y="{y + 2}" width="{w:.1f}" height="{row - 5}" fill="{fill}"></rect>'
            f'<text x="{left + w + 3:.1f}" y="{y + 11}">{_e(f"{rates[n]:.1%}")}</text>'
        )
    return "".join(parts) + "</svg>"


def token_list(pairs: list) -> str:
    """Promoted or suppressed tokens, each in a monospace box with its logit in the tooltip."""
    return " ".join(
        f'<code style="background:#f3f3f3;padding:0 3px;white-space:pre" title="{_e(f"{v:.3g}")}">'
        f"{token_html(t)}</code>"
        for t, v in pairs
    )


def card_html(card: dict, meta: dict) -> str:
    """One neuron's card (meta: cards.json's run-level fields)."""
    scale = max([c["max"] for c in card["top"]] + [0.0]) or 1.0
    crit = f"{card['criterion']} {card['score']:.4g}"
    head = (
        f"Neuron (layer {card['layer']}, index {card['index']}) · set {card['set']} · selected for "
        f"{card['emotion']} (rank {card['rank']} by {crit})"
    )
    n_own = sum(c["emotion"] == card["emotion"] for c in card["top"])
    total = sum(meta["dialogues_per_emotion"].values())
    chance = meta["dialogues_per_emotion"].get(card["emotion"], 0) / total if total else 0.0
    tops = "".join(context_html(c, scale) for c in card["top"])
    rnd = "".join(context_html(c, scale) for c in card["random"])
    return (
        f'<div class="emolib-card" id="{_e(card_id(card))}" style="border:1px solid #bbb;border-radius:6px;'
        'padding:8px 12px;margin:12px 0;font:13px sans-serif;max-width:1000px">'
        f'<div style="font-weight:bold;margin-bottom:4px">{_e(head)}</div>'
        '<div style="display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start">'
        f'<div><div style="color:#444">firing rate ({_e(meta["tensor"])} &gt; 0) per emotion</div>'
        f"{bars_svg(card['firing_rate'], card['emotion'])}</div>"
        '<div style="max-width:620px"><div style="color:#444">down_proj column through the unembedding</div>'
        f'<div style="margin:3px 0">promotes: {token_list(card["promoted"])}</div>'
        f'<div style="margin:3px 0">suppresses: {token_list(card["suppressed"])}</div></div></div>'
        f'<div style="margin-top:6px;color:#444">Top {len(card["top"])} train dialogues by the neuron\'s maximum '
        f"({_e(n_own)} from {_e(card['emotion'])}; {_e(f'{chance:.0%}')} of train dialogues are "
        f"{_e(card['emotion'])}), {meta['window']} tokens either side of the maximum:</div>{tops}"
        f'<div style="margin-top:6px;color:#444">{len(card["random"])} random train dialogues (the same for every '
        f"card), around their maximum, same shading:</div>{rnd}</div>"
    )


def card_id(card: dict) -> str:
    """An anchor for a card: set, emotion, layer and index."""
    return f"card-{card['set']}-{card['emotion']}-{card['layer']}-{card['index']}"


def card_sentence(card: dict, meta: dict) -> str:
    """The generated sentence under a shown card: its top contexts of its own emotion, against chance (markdown,
    with every name escaped)."""
    n = len(card["top"])
    own = sum(c["emotion"] == card["emotion"] for c in card["top"])
    total = sum(meta["dialogues_per_emotion"].values())
    share = meta["dialogues_per_emotion"].get(card["emotion"], 0) / total if total else 0.0
    word = "more than" if own > n * share else "no more than"
    return (
        f"Set **{_e(card['set'])}**, neuron (layer {card['layer']}, index {card['index']}), the first of "
        f"{_e(card['emotion'])}'s neurons by {_e(card['criterion'])}: **{own} of its {n} top contexts** come from "
        f"{_e(card['emotion'])} dialogues, against {n * share:.1f} expected by chance ({_e(card['emotion'])} is "
        f"{share:.0%} of the train dialogues), so {word} chance. Its firing rate ranges from "
        f"{min(card['firing_rate'].values()):.0%} to {max(card['firing_rate'].values()):.0%} across emotions."
    )


def share_sentence(table) -> str:
    """One sentence per set from cards.own_share's table (markdown, names escaped)."""
    parts = [
        f"**{_e(name)}** {int(r['own emotion'])} of {int(r['top contexts'])} ({r['share']:.0%}; chance "
        f"{r['chance share']:.0%})"
        for name, r in table.iterrows()
        if r["top contexts"]
    ]
    return (
        "Over all cards, the top contexts that come from the card's own emotion: " + "; ".join(parts) + "."
        if parts
        else "No card has top contexts."
    )


def set_page(cards: dict, name: str, run: str) -> str:
    """The body of a site page with every card of one named set, grouped by emotion (escaped HTML)."""
    from ..identify.cards import own_share

    cs = [c for c in cards["cards"] if c["set"] == name]
    t = own_share(cards).loc[name] if name in cards["sets"] else None
    intro = (
        f"<p>The {cards['per_set']} first neurons of each emotion in the named set {_e(name)} of run "
        f"{_e(run)}, ranked by the set's own criterion ({_e(cs[0]['criterion']) if cs else 'none'}). Each card "
        f"shows the neuron's firing rate per emotion, the tokens its down_proj column promotes and suppresses "
        f"through the unembedding, its top {cards['k']} train dialogues by its maximum activation "
        f"({_e(cards['tensor'])}) and {cards['n_random']} random train dialogues, each as {cards['window']} "
        "tokens either side of the maximum, shaded by activation (orange positive, blue negative; the "
        "maximum underlined; hover a token for its value).</p>"
    )
    if t is not None and t["top contexts"]:
        intro += (
            f"<p>{int(t['own emotion'])} of the {int(t['top contexts'])} top contexts come from the card's own "
            f"emotion ({t['share']:.0%}); by chance {t['chance share']:.0%}.</p>"
        )
    body = [f"<h1>Neuron cards · {_e(run)} · set {_e(name)}</h1>", intro]
    for e in cards["emotions"]:
        own = [c for c in cs if c["emotion"] == e]
        if own:
            body.append(f'<h2 id="{_e(f"{name}-{e}")}">{_e(e)}</h2>' + "".join(card_html(c, cards) for c in own))
    return "\n".join(body)
