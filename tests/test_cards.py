"""Neuron cards (issue 28): the recording's streaming top-k, a planted one-token neuron's card, escaping, the site's
card pages and notebook 02's section in the tiny book."""

from __future__ import annotations

import copy
import json

import nbformat
import pytest
import torch
from bs4 import BeautifulSoup

from emolib.emotions import EMOTIONS
from emolib.identify import cards, record, weights
from emolib.lm import models
from emolib.lm.synth_template import generate_dialogues
from emolib.report import cards as view


@pytest.fixture(scope="module")
def by_emotion():
    rows = generate_dialogues(["cats", "knitting", "rain"], list(EMOTIONS), 1, 3)
    return {e: [r["dialogue"] for r in rows if r["theme"] == e] for e in EMOTIONS}


def _maxima(model, tok, texts: list[str]) -> torch.Tensor:
    """[N, L, D] each dialogue's maximum of act_fn's output over its own tokens, one dialogue at a time."""
    grab = {}
    mlps = models.ffn_layers(model)
    hs = [m.act_fn.register_forward_hook(lambda mod, a, o, i=i: grab.__setitem__(i, o[0])) for i, m in enumerate(mlps)]
    out = []
    try:
        with torch.inference_mode():
            for d in texts:
                ids, a, b = record.encode(tok, d, "raw", None)
                model.model(input_ids=torch.tensor([ids]))
                out.append(torch.stack([grab[i][a:b].amax(0) for i in range(len(mlps))]))
    finally:
        for h in hs:
            h.remove()
    return torch.stack(out)


def test_streaming_top_k_is_the_top_k_of_the_dialogue_maxima(tiny, by_emotion):
    model, tok = tiny
    st = record.record_counts(model, tok, by_emotion, batch_size=4, n_null=2, top_k=5)
    texts = [d for e in EMOTIONS for d in by_emotion[e]]
    mx = _maxima(model, tok, texts)  # [N, L, D]
    best = mx.topk(5, dim=0).values.permute(1, 0, 2)  # [L, k, D]
    assert st["top_values"].shape == best.shape and st["top_items"] == len(texts)
    assert torch.allclose(st["top_values"], best, atol=1e-5)
    # every kept dialogue's own maximum is the value kept for it (ties aside, the same dialogues)
    kept = mx.permute(1, 0, 2).gather(1, st["top_ids"])  # [L, k, D]
    assert torch.allclose(kept, st["top_values"], atol=1e-5)
    # the counts are those of the recording without cards
    plain = record.record_counts(model, tok, by_emotion, batch_size=4, n_null=2)
    for key in ("counts_act", "counts_product", "null_act", "tokens"):
        assert torch.equal(plain[key], st[key]), key
    assert "top_values" not in plain


def test_top_k_resumes_from_a_partial_state(tiny, by_emotion, tmp_path):
    model, tok = tiny
    whole = record.record_counts(model, tok, by_emotion, batch_size=4, top_k=3)
    path, calls = tmp_path / "partial.pt", []

    def stop(mod, args, kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # interrupted during the third batch, after two were saved

    h = model.model.register_forward_pre_hook(stop, with_kwargs=True)
    try:
        with pytest.raises(KeyboardInterrupt):
            record.record_counts(model, tok, by_emotion, batch_size=4, top_k=3, state_path=path, save_every=0)
    finally:
        h.remove()
    assert torch.load(path, weights_only=False)["done"] == 2
    again = record.record_counts(model, tok, by_emotion, batch_size=4, top_k=3, state_path=path)
    assert torch.equal(again["top_values"], whole["top_values"]) and torch.equal(again["top_ids"], whole["top_ids"])


def _planted(
    model,
    tok,
    texts: list[str],
    token: str = " about",
    up: str = " happy",
    down: str = " gloomy",
    layer: int = 0,
    index: int = 7,
):
    """A copy of the tiny model whose neuron (layer, index) reads the direction that tells `token`'s positions from
    the others' in its MLP input (gate and up rows), so its activation is large only on that token, and whose
    down_proj column is W_U[up] - W_U[down] (divided by the final norm's scale)."""
    m = copy.deepcopy(model)
    mlp = m.model.layers[layer].mlp
    t = tok(token, add_special_tokens=False)["input_ids"][0]
    seen, ids_all = [], []
    h = mlp.gate_proj.register_forward_pre_hook(lambda mod, a: seen.append(a[0][0]))
    try:
        with torch.no_grad():
            for d in texts:
                ids = record.encode(tok, d, "raw", None)[0]
                ids_all.append(torch.tensor(ids))
                m.model(input_ids=torch.tensor([ids]))
    finally:
        h.remove()
    X, ids = torch.cat(seen), torch.cat(ids_all)
    v = X[ids == t].mean(0) - X[ids != t].mean(0)
    v = v / v.norm()
    W = weights.unembedding(m)
    g = weights.norm_scale(weights.final_norm(m))
    u, s = tok(up, add_special_tokens=False)["input_ids"][0], tok(down, add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        mlp.gate_proj.weight[index] = 2 * v
        mlp.up_proj.weight[index] = 2 * v
        mlp.down_proj.weight[:, index] = (W[u] - W[s]) / g
    return m, t


def test_a_planted_one_token_neuron_gets_its_card(tiny, by_emotion):
    model, tok = tiny
    texts = [d for e in EMOTIONS for d in by_emotion[e]]
    m, t = _planted(model, tok, texts)
    with_t = sum(t in record.encode(tok, d, "raw", None)[0] for d in texts)
    assert 8 <= with_t < len(texts)  # enough dialogues hold the token, and not all of them
    st = record.record_counts(m, tok, by_emotion, batch_size=4, top_k=8)
    p = {"seed": 0, "record_framing": "raw", "batch_size": 4}
    E, L, D = len(EMOTIONS), 4, st["counts_act"].shape[-1]
    score = torch.ones(L, D)
    score[0, 7] = 0.0  # the planted neuron ranks first
    named = {
        "planted": {
            "neurons": {"anger": [[0, 7], [1, 3]]},
            "score": score,
            "lowest": True,
            "criterion": "test",
            "P": torch.rand(E, L, D),
        }
    }
    out = cards.build(p, m, tok, st, named, dialogues=by_emotion)
    card = next(c for c in out["cards"] if (c["layer"], c["index"]) == (0, 7))
    assert card["rank"] == 1 and len(card["top"]) == 8 and len(card["random"]) == cards.N_RANDOM
    word = tok.decode([t])
    for c in card["top"]:  # every top context holds the token, at its maximum
        assert c["tokens"][c["at"]] == word, c["tokens"]
        assert c["max"] == pytest.approx(c["recorded_max"], rel=1e-3)
    assert card["promoted"][0][0] == " happy" and card["suppressed"][0][0] == " gloomy"
    html = view.card_html(card, out)
    assert "layer 0, index 7" in html and 'class="emolib-card"' in html


def test_card_html_escapes_every_text(tiny):
    model, tok = tiny
    hostile = '"><img src=x onerror=alert(1)>'
    ctx = {
        "tokens": ["<script>", "alert(1)", "</script>", "&amp;"],
        "acts": [0.5, 2.0, -1.0, 0.1],
        "max": 2.0,
        "at": 1,
        "emotion": hostile,
        "dialogue": 0,
    }
    card = {
        "set": "<b>set</b>",
        "emotion": hostile,
        "rank": 1,
        "layer": 0,
        "index": 1,
        "criterion": "<i>c</i>",
        "score": 1.0,
        "firing_rate": {hostile: 0.5, "anger": 0.2},
        "top": [ctx],
        "random": [ctx],
        "promoted": [["<script>", 1.0]],
        "suppressed": [["</div>", -1.0]],
    }
    meta = {
        "tensor": "<act>",
        "window": 12,
        "dialogues_per_emotion": {hostile: 1, "anger": 1},
        "k": 8,
        "n_random": 1,
        "per_set": 5,
        "emotions": [hostile, "anger"],
        "sets": ["<b>set</b>"],
        "cards": [card],
    }
    for html in (view.card_html(card, meta), view.set_page(meta, "<b>set</b>", "<run>")):
        soup = BeautifulSoup(html, "html.parser")
        assert not soup.find_all(["script", "img", "b", "i"])
        assert not [a for tag in soup.find_all(True) for a in tag.attrs if a.lower().startswith("on")]
        assert "<script>" in soup.get_text() and "&amp;" in soup.get_text()
    # and a dialogue that contains markup, through the model and the tokenizer
    by = {"anger": ["A: <script>alert(1)</script> is what they wrote!\nB: How rude."], "fear": ["A: I am scared."]}
    st = record.record_counts(model, tok, by, batch_size=2, top_k=2)
    named = {
        "x": {
            "neurons": {"anger": [[1, 2]]},
            "score": torch.zeros(4, 128),
            "lowest": True,
            "criterion": "c",
            "P": torch.rand(2, 4, 128),
        }
    }
    out = cards.build({"seed": 0, "record_framing": "raw", "batch_size": 2}, model, tok, st, named, dialogues=by)
    html = view.card_html(out["cards"][0], out)
    soup = BeautifulSoup(html, "html.parser")
    assert not soup.find_all("script") and "alert(1)</script>" in soup.get_text()  # the dialogue, as text


def test_own_share_counts_top_contexts_of_the_cards_emotion():
    ctx = lambda e: {"emotion": e}  # noqa: E731
    meta = {
        "sets": ["a"],
        "dialogues_per_emotion": {"x": 1, "y": 3},
        "cards": [
            {"set": "a", "emotion": "x", "top": [ctx("x"), ctx("x"), ctx("y"), ctx("y")]},
            {"set": "a", "emotion": "y", "top": [ctx("y"), ctx("x")]},
        ],
    }
    t = cards.own_share(meta).loc["a"]
    assert (t["top contexts"], t["own emotion"]) == (6, 3)
    assert t["chance share"] == pytest.approx((4 * 0.25 + 2 * 0.75) / 6)


def test_site_has_card_pages_linked_from_the_index_and_notebook_02(tmp_path):
    from test_site import tiny_repo

    from emolib.report import site

    repo = tmp_path / "repo"
    tiny_repo(repo)
    d = repo / "outputs" / "smollm2-135m"
    nb = nbformat.read(d / "02_y.ipynb", as_version=4)
    nb.cells.insert(0, nbformat.v4.new_markdown_cell("## Findings of this run\n\n- x"))
    nb.cells.append(nbformat.v4.new_markdown_cell(f"## {view.SHOWN_TITLE}\n\nCards."))
    nbformat.write(nb, d / "02_y.ipynb")
    ctx = {"tokens": ["<script>", " hi"], "acts": [1.0, 0.2], "max": 1.0, "at": 0, "emotion": "anger", "dialogue": 0}
    card = {
        "set": "paper",
        "emotion": "anger",
        "rank": 1,
        "layer": 0,
        "index": 1,
        "criterion": "entropy",
        "score": 1.0,
        "firing_rate": {"anger": 0.5, "fear": 0.2},
        "top": [ctx],
        "random": [ctx],
        "promoted": [["a", 1.0]],
        "suppressed": [["b", -1.0]],
    }
    meta = {
        "tensor": "act",
        "window": 12,
        "dialogues_per_emotion": {"anger": 1, "fear": 1},
        "k": 8,
        "n_random": 1,
        "per_set": 5,
        "emotions": ["anger", "fear"],
        "sets": ["paper", "../evil"],
        "cards": [card],
    }
    (d / "cards.json").write_text(json.dumps(meta))
    out = site.build(tmp_path / "site", repo, runs=("smollm2-135m", "gemma3-270m")).parent
    page = out / "outputs" / "smollm2-135m" / "cards-paper.html"
    assert page.exists() and not list(out.rglob("*evil*"))  # a set without cards has no page
    html = page.read_text()
    assert '<nav class="site-nav">' in html and "<script" not in html and "&lt;script&gt;" in html
    home = (out / "index.html").read_text()
    assert 'href="outputs/smollm2-135m/cards-paper.html"' in home
    assert ">Title of 01x</a>" in home and "Findings of this run</a>" not in home  # links named by title
    nb02 = (out / "outputs" / "smollm2-135m" / "02_y.html").read_text()
    assert 'href="cards-paper.html"' in nb02


def test_notebook_02_shows_cards(tiny_book):
    nb = nbformat.read(tiny_book / "02_neuron_identification.ipynb", as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and view.SHOWN_TITLE in c.source)
    assert "## Questions" in next(c.source for c in nb.cells[at + 1 :] if c.cell_type == "markdown")
    outs = [o for o in nb.cells[at + 1].outputs if "data" in o]
    html = [o["data"]["text/html"] for o in outs if "emolib-card" in o["data"].get("text/html", "")]
    text = [o["data"]["text/markdown"] for o in outs if "text/markdown" in o["data"]]
    saved = cards.load(tiny_book)
    assert saved and len(html) == len([s for s in saved["sets"] if any(c["set"] == s for c in saved["cards"])])
    assert any("top contexts** come from" in t and "expected by chance" in t for t in text)
    assert not BeautifulSoup("".join(html), "html.parser").find_all("script")


def test_card_page_in_browser(tmp_path):
    """A card page with hostile text, opened in headless Chromium: it loads without console errors, runs no script,
    draws its chart, and notebook 02's link to it works (skips without Chromium)."""
    import functools
    import http.server
    import threading

    from test_site import Quiet, browser, tiny_repo

    from emolib.report import site

    if browser() is None:
        pytest.skip("no Chromium/chromedriver installed (Debian/Ubuntu: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    repo = tmp_path / "repo"
    tiny_repo(repo)
    d = repo / "outputs" / "smollm2-135m"
    nb = nbformat.read(d / "02_y.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell(f"## {view.SHOWN_TITLE}\n\nCards."))
    nbformat.write(nb, d / "02_y.ipynb")
    ctx = {
        "tokens": ["<script>window.pwned=1</script>", "<img src=x onerror='window.pwned=2'>", " hi"],
        "acts": [1.0, -0.5, 0.2],
        "max": 1.0,
        "at": 0,
        "emotion": "anger",
        "dialogue": 0,
    }
    card = {
        "set": "paper",
        "emotion": "anger",
        "rank": 1,
        "layer": 0,
        "index": 1,
        "criterion": "entropy",
        "score": 1.0,
        "firing_rate": {"anger": 0.5, "fear": 0.2},
        "top": [ctx],
        "random": [ctx],
        "promoted": [["<b>a</b>", 1.0]],
        "suppressed": [["b", -1.0]],
    }
    meta = {
        "tensor": "act",
        "window": 12,
        "dialogues_per_emotion": {"anger": 1, "fear": 1},
        "k": 8,
        "n_random": 1,
        "per_set": 5,
        "emotions": ["anger", "fear"],
        "sets": ["paper"],
        "cards": [card],
    }
    (d / "cards.json").write_text(json.dumps(meta))
    out = site.build(tmp_path / "site", repo, runs=("smollm2-135m",)).parent
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(out)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    chrome, driver_path = browser()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        driver.get(base + "outputs/smollm2-135m/02_y.html")
        link = driver.execute_script(
            "return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"
            ".find(h => h.includes('cards-paper.html'))"
        )
        assert link and link.startswith(base)
        driver.get(link)
        assert driver.execute_script("return document.readyState") == "complete"
        assert driver.execute_script("return window.pwned === undefined")
        assert driver.execute_script("return document.querySelectorAll('.emolib-card svg rect').length") == 2
        assert "<script>window.pwned=1</script>" in driver.execute_script("return document.body.innerText")
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()
        server.shutdown()
