"""The static site (emolib.report.site): link rewriting on a made-up repository, and the real site in headless
Chromium."""

from __future__ import annotations

import base64
import functools
import http.server
import re
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import nbformat
import pytest

from emolib.report import site

ROOT = Path(__file__).resolve().parent.parent
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cfc0f01f0005000201ff5bd3a3f60000000049454e44ae426082"
)


def tiny_repo(root: Path) -> None:
    """Two runs of two notebooks each, linking the ways the showcase notebooks do."""
    (root / "notebooks").mkdir(parents=True)
    (root / "notebooks" / "01_x.ipynb").write_text("{}")
    (root / "README.md").write_text(
        "# Tiny book\n\nA book.\n\n<!-- results:start -->\n| a | b |\n|---|---|\n"
        "| 1 | 2 |\n<!-- results:end -->\n[nb](notebooks/01_x.ipynb)\n"
    )
    for run in ("smollm2-135m", "gemma3-270m"):
        d = root / "outputs" / run
        (d / "figures").mkdir(parents=True)
        (d / "figures" / "x.png").write_bytes(PNG)
        (d / "table.csv").write_text("a,b\n1,2\n")
        (d / "big.safetensors").write_bytes(b"\0" * 10)
        for name in ("01_x", "02_y"):
            md = (
                "# Title of " + name + "\n\n[← 01](01_x.ipynb) [02](02_y.ipynb#Title-of-02_y) "
                "[other run](../gemma3-270m/02_y.ipynb) ![fig](figures/x.png) [csv](table.csv) "
                "[readme](../../README.md) [weights](big.safetensors) [run](../smollm2-135m/) "
                "[web](https://example.org/) [here](#Title-of-" + name + ")"
            )
            params = nbformat.v4.new_code_cell("seed = 0", metadata={"jupyter": {"source_hidden": True}})
            nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(md), params])
            nbformat.write(nb, d / f"{name}.ipynb")


def test_links_rewritten(tmp_path):
    tiny_repo(tmp_path / "repo")
    index = site.build(tmp_path / "site", tmp_path / "repo", runs=("smollm2-135m", "gemma3-270m"))
    out = index.parent
    page = (out / "outputs" / "smollm2-135m" / "01_x.html").read_text()
    for href in (
        'href="01_x.html"',
        'href="02_y.html#Title-of-02_y"',
        'href="../gemma3-270m/02_y.html"',
        'src="figures/x.png"',
        'href="table.csv"',
        'href="../../README.html"',
        'href="../../index.html#smollm2-135m"',
        'href="https://example.org/"',
    ):
        assert href in page, href
    assert 'title="in the repository: outputs/smollm2-135m/big.safetensors' in page  # too big a type: plain text
    assert (out / "outputs" / "smollm2-135m" / "figures" / "x.png").read_bytes() == PNG
    assert (out / "outputs" / "smollm2-135m" / "table.csv").exists() and (out / "README.html").exists()
    assert "cdnjs" not in page and "require.js" not in page
    assert '<nav class="site-nav"><a href="../../index.html">Index</a>' in page
    assert '<details class="site-hidden-input"><summary>' in page  # collapsed parameter cells stay collapsed
    readme = (out / "README.html").read_text()
    assert 'title="in the repository: notebooks/01_x.ipynb' in readme  # stripped notebooks are not on the site
    home = index.read_text()
    assert "Tiny book" in home and "<td>2</td>" in home and 'href="outputs/gemma3-270m/02_y.html"' in home


def test_math_and_alt_text(tmp_path, capsys):
    tiny_repo(tmp_path / "repo")
    d = tmp_path / "repo" / "outputs" / "smollm2-135m"
    md = (
        "## Entropy of $\\hat P(u,e)$\n\nInline $H(u) = -\\sum_e \\hat P \\log \\hat P$, code `$P(x)$`, "
        "price \\$5 and \\$6.\n\n$$\\mathrm{act}(W_{gate}x) > 0$$\n\n```\n$not math$\n```\n\n"
        "Broken $\\notacommand x$."
    )
    fig = nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(PNG).decode()})
    show = nbformat.v4.new_code_cell(
        'book.show(plots_identify.entropy_hist(H),\n          P, "02_entropy")', outputs=[fig]
    )
    loop = nbformat.v4.new_code_cell('for n in sets:\n    book.show(fig, P, f"04_ranges_{n}")', outputs=[fig])
    (d / "figures" / "02_entropy.png").write_bytes(PNG)
    (d / "figures" / "04_ranges_paper.png").write_bytes(PNG)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(md), show, loop]), d / "02_y.ipynb")
    out = site.build(tmp_path / "site", tmp_path / "repo", runs=("smollm2-135m",)).parent
    page = (out / "outputs" / "smollm2-135m" / "02_y.html").read_text()
    assert page.count('<math display="inline">') == 2 and page.count('<math display="block">') == 1
    assert "ns0:" not in page  # math in a heading survives nbconvert's anchor links
    assert "<code>$P(x)$</code>" in page and "$not math$" in page and "price $5 and $6." in page
    assert "$\\notacommand x$" in page  # kept as TeX, with one warning naming page and formula
    assert (
        "warning: outputs/smollm2-135m/02_y.html: formula kept as TeX (unknown command): \\notacommand x"
        in capsys.readouterr().out
    )
    alts = re.findall(r'<img alt="([^"]*)"', page)
    assert alts == [
        "Figure 02_entropy.png in section “Entropy of hat P(u,e)”",
        "Figure 04_ranges_paper.png in section “Entropy of hat P(u,e)”",
    ]


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="README.md"):
        site.build(tmp_path / "site", tmp_path)
    (tmp_path / "README.md").write_text("# x\n")
    with pytest.raises(ValueError, match="runs: no executed notebooks"):
        site.build(tmp_path / "site", tmp_path)


# ---- the real site in a real browser ----------------------------------------------------------------------------


def browser() -> tuple[str, str] | None:
    """Chromium and chromedriver from the distribution's packages, if installed."""
    chrome = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    driver = shutil.which("chromedriver")
    return (chrome, driver) if chrome and driver else None


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The site built from the committed showcase runs, served on localhost (checks for a browser first)."""
    if browser() is None:
        pytest.skip("no Chromium/chromedriver installed (Debian/Ubuntu: apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
    if not site.pages(ROOT):
        pytest.skip("no committed showcase runs under outputs/ to build the site from")
    out = tmp_path_factory.mktemp("site") / "site"
    site.build(out, ROOT)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(out)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield out, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def fetch(url: str) -> tuple[int, str]:
    """HTTP status and body of url (the body only for HTML)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode("utf-8", "replace") if url.split("#")[0].endswith(".html") else ""
    except urllib.error.HTTPError as e:
        return e.code, ""


# visible text outside code and MathML that still looks like TeX: a backslash command or an opening $ before P(
TEX_VISIBLE = r"""
const found = [], walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let n = walk.nextNode(); n; n = walk.nextNode()) {
  const el = n.parentElement;
  if (!el || el.closest('pre, code, math, script, style, .jp-InputArea-editor, .jp-RenderedText')) continue;
  const m = n.textContent.match(/\\(?:hat|log|ln|sum|mathrm|frac|times|cdot)\b|\$\$|\$[A-Za-z]\(/);
  if (m && el.getClientRects().length) found.push(n.textContent.trim().slice(0, 80));
}
return found;
"""


def test_site_in_browser(served, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    out, base = served
    chrome, driver_path = browser()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    driver.set_page_load_timeout(120)
    problems, bodies = [], {}
    pages = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.html"))
    try:
        for page in pages:
            driver.get(base + page)
            if driver.execute_script("return document.readyState") != "complete":
                problems.append(f"{page}: did not finish loading")
            problems += [
                f"{page}: console: {e['message']}" for e in driver.get_log("browser") if e["level"] == "SEVERE"
            ]
            images = driver.execute_script(
                "return Array.from(document.images).map("
                "i => [i.getAttribute('src').slice(0, 80), i.complete, i.naturalWidth, "
                "i.getAttribute('alt') || ''])"
            )
            problems += [f"{page}: image not loaded: {src}" for src, ok, w, _ in images if not ok or w == 0]
            problems += [f"{page}: image without alt text: {src}" for src, _, _, alt in images if not alt.strip()]
            tex = driver.execute_script(TEX_VISIBLE)
            problems += [f"{page}: raw TeX in the text: {t}" for t in tex]
            maths = driver.execute_script("return document.querySelectorAll('.jp-MarkdownCell math').length")
            if "02_neuron_identification" in page and not maths:
                problems.append(f"{page}: no <math> elements (the TeX was not converted to MathML)")
            links = driver.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
            for link in links:
                if not link.startswith(base):
                    continue
                url, _, frag = link.partition("#")
                if url not in bodies:
                    bodies[url] = fetch(url)
                status, body = bodies[url]
                if status != 200:
                    problems.append(f"{page}: link {link} answers HTTP {status}")
                elif frag and url.endswith(".html"):
                    names = {re.escape(frag), re.escape(urllib.parse.unquote(frag))}  # HTML: exact id, then decoded
                    if not any(re.search(rf'\b(?:id|name)="{n}"', body) for n in names):
                        problems.append(f"{page}: link {link}: no anchor #{frag} in the page")
    finally:
        driver.quit()
    assert len(pages) >= len(site.pages(ROOT)) + 1
    if any((ROOT / "outputs" / run / "cards.json").is_file() for run in site.RUNS):  # neuron cards (issue 28)
        assert any("/cards-" in p for p in pages), "no card page was opened"
    assert not problems, "\n".join(problems)
