"""Static HTML site of the committed showcase runs (nbconvert's lab template): python -m emolib site [--out site].

Longer than 400 lines: the site's build and its sanitising (no script, no link outside the repository, no overwrite
of a folder it does not own) are one command; the safety rules are reviewed together.
"""

from __future__ import annotations

import ast
import base64
import html
import io
import os
import re
import shutil
import tempfile
import time
import urllib.parse
from pathlib import Path

import jinja2
import nbformat
import numpy as np
from bs4 import BeautifulSoup
from latex2mathml.converter import convert as tex_to_mathml
from nbconvert import HTMLExporter
from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

from .. import safeio
from .summary import END, START

RUNS = ("smollm2-135m", "gemma3-270m", "comparison")
COPY_MAX_BYTES = 5_000_000  # linked files up to this size are copied onto the site; larger ones become plain text
COPY_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".csv", ".json", ".jsonl", ".yaml", ".yml", ".txt"}
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.I)  # http:, https:, data:, mailto:, protocol-relative

# nbconvert's lab template without its CDN scripts (require.js, MathJax, mermaid, widget manager): the site works
# offline and a missing CDN never logs a console error; a data: favicon stops the browser asking the server for one.
TEMPLATE = r"""{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block input_group -%}
{%- if cell.metadata.get('jupyter', {}).get('source_hidden') -%}
<details class="site-hidden-input"><summary>code hidden in the notebook (click to show)</summary>
{{ super() }}
</details>
{%- else -%}
{{ super() }}
{%- endif -%}
{% endblock input_group %}
{% block data_png scoped %}{{ super() | replace('<img ',
  '<img alt="' ~ (output.metadata.get('alt', '') | escape_html) ~ '" ', 1) }}{% endblock data_png %}
{% block data_jpg scoped %}{{ super() | replace('<img ',
  '<img alt="' ~ (output.metadata.get('alt', '') | escape_html) ~ '" ', 1) }}{% endblock data_jpg %}
{% block extra_css %}
<link rel="icon" href="data:,">
<style type="text/css">
nav.site-nav { position: sticky; top: 0; z-index: 10; display: flex; gap: 1.5em; padding: 0.5em 1em;
  background: #f3f3f3; border-bottom: 1px solid #ccc; font-family: var(--jp-ui-font-family, sans-serif); }
nav.site-nav a { text-decoration: none; }
nav.site-nav .site-nav-here { font-weight: bold; }
span.repo-path { font-family: var(--jp-code-font-family, monospace); }
details.site-hidden-input > summary { cursor: pointer; color: var(--jp-ui-font-color2, #666); padding: 0.2em 0; }
</style>
{% endblock extra_css %}
"""


MARKER = ".emolib-site"  # written into every site folder: only a folder holding it is ever replaced
MARKER_TEXT = "This folder is written by `python -m emolib site`; the next build replaces all of it.\n"
LEGACY = re.compile(r".*\.html|outputs|notebooks")  # what a site built before the marker existed holds


def inside(path: Path, root: Path) -> bool:
    """Whether a path, every link in it followed, lies inside root."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):
        return False


SAFE_TAGS = [
    "a",
    "abbr",
    "b",
    "blockquote",
    "br",
    "caption",
    "code",
    "col",
    "colgroup",
    "dd",
    "del",
    "details",
    "div",
    "dl",
    "dt",
    "em",
    "figcaption",
    "figure",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "i",
    "img",
    "ins",
    "kbd",
    "li",
    "ol",
    "p",
    "pre",
    "q",
    "s",
    "samp",
    "small",
    "span",
    "strong",
    "style",
    "sub",
    "summary",
    "sup",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "tr",
    "u",
    "ul",
    "var",
]
SAFE_ATTRIBUTES = [
    "class",
    "id",
    "title",
    "alt",
    "src",
    "href",
    "colspan",
    "rowspan",
    "width",
    "height",
    "align",
    "border",
    "style",
    "name",
    "open",
    "valign",
    "start",
    "type",
    "scope",
]
UNSAFE_TAGS = (
    "script",
    "iframe",
    "frame",
    "frameset",
    "object",
    "embed",
    "applet",
    "base",
    "form",
    "meta",
    "noscript",
    "portal",
)
URL_ATTRIBUTES = ("href", "src", "xlink:href", "action", "formaction", "srcdoc", "data", "poster", "background")


MATHML_TAGS = [
    "math",
    "semantics",
    "annotation",
    "mrow",
    "mi",
    "mn",
    "mo",
    "ms",
    "mtext",
    "mspace",
    "msub",
    "msup",
    "msubsup",
    "mfrac",
    "msqrt",
    "mroot",
    "mover",
    "munder",
    "munderover",
    "mtable",
    "mtr",
    "mtd",
    "mstyle",
    "mpadded",
    "mphantom",
    "menclose",
    "mfenced",
    "merror",
]
MATHML_ATTRIBUTES = [
    "display",
    "mathvariant",
    "stretchy",
    "fence",
    "separator",
    "lspace",
    "rspace",
    "accent",
    "accentunder",
    "displaystyle",
    "scriptlevel",
    "columnalign",
    "linethickness",
    "movablelimits",
    "form",
    "largeop",
    "symmetric",
    "minsize",
    "maxsize",
    "depth",
    "encoding",
    "notation",
]


def clean_html(text: str) -> str:
    """HTML from a notebook (a rendered markdown cell, an HTML output) through a maintained sanitiser (bleach, as
    nbconvert's own SanitizeHTML): tables, figures, text, math and CSS kept; script, handlers, forms and embedding
    tags dropped (as escaped text); javascript: URLs removed."""
    import bleach

    try:
        from bleach.css_sanitizer import CSSSanitizer

        css = CSSSanitizer()
    except ImportError:  # bleach without tinycss2: style attributes are then dropped
        css = None
    return bleach.clean(
        text,
        tags=SAFE_TAGS + MATHML_TAGS,
        attributes={"*": SAFE_ATTRIBUTES + MATHML_ATTRIBUTES},
        protocols=["http", "https", "mailto", "data"],
        css_sanitizer=css,
        strip=False,
        strip_comments=True,
    )


SAFE_OUTPUTS = {"text/plain", "text/html", "text/markdown", "text/latex", "image/png", "image/jpeg"}


def sanitise(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of a notebook whose HTML outputs went through clean_html and whose outputs of other kinds that could
    run script (JavaScript, SVG, widgets) are dropped; raw cells are shown as text. (Markdown is cleaned as it is
    rendered, in SiteExporter.markdown2html.)"""
    import copy

    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "raw":
            cell.cell_type, cell.source = "markdown", "```\n" + cell.source.replace("```", "` ` `") + "\n```"
            cell.pop("outputs", None)
        for o in cell.get("outputs", []):
            data = o.get("data")
            if isinstance(data, dict):
                for k in [k for k in data if k not in SAFE_OUTPUTS]:
                    del data[k]
                if "text/html" in data:
                    h = data["text/html"]
                    data["text/html"] = clean_html("".join(h) if isinstance(h, list) else str(h))
    return nb


def defuse(soup) -> list[str]:
    """Remove from a parsed page whatever could run script: script and embedding tags, on* handlers, and links or
    sources with a javascript:, vbscript: or (outside images) data: URL; returns what was removed, as warnings."""
    removed = []
    for tag in soup.find_all(UNSAFE_TAGS):
        removed.append(f"<{tag.name}> removed")
        tag.decompose()
    for tag in soup.find_all(True):
        for attr in list(tag.attrs):
            value = tag.attrs[attr]
            value = " ".join(value) if isinstance(value, list) else str(value)
            url = re.sub(r"[\s\x00-\x1f]+", "", html.unescape(value)).lower()
            if attr.lower().startswith("on"):
                removed.append(f"handler {attr} removed from <{tag.name}>")
                del tag.attrs[attr]
            elif attr.lower() in URL_ATTRIBUTES and (
                url.startswith(("javascript:", "vbscript:"))
                or (url.startswith("data:") and not (tag.name == "img" and url.startswith("data:image/")))
            ):
                removed.append(f"a {url.split(':')[0]}: link removed from <{tag.name}>")
                del tag.attrs[attr]
    return removed


def check_out(out: Path, root: Path) -> Path:
    """The site's folder, checked before anything is written: a new folder, an empty one, or one a build wrote
    (it holds MARKER); never a symbolic link, the repository, its outputs/, the home folder or /, or a folder that
    holds any of them. One ValueError line otherwise; nothing is deleted."""
    out = Path(os.path.abspath(out))
    if os.path.islink(out):
        raise ValueError(
            f"--out: {out} is a symbolic link; the site is written into a real folder, never through a "
            "link (give another folder)"
        )
    real = out.parent.resolve() / out.name
    home = Path(os.path.expanduser("~")).resolve()
    guarded = {root, root / "outputs", home, Path("/")}
    if any(g == real or g.is_relative_to(real) for g in guarded) or real.is_relative_to(root / "outputs"):
        raise ValueError(
            f"--out: {out} is (or holds) the repository, its outputs/, the home folder or /; the "
            "site needs a folder of its own (e.g. --out site)"
        )
    if not os.path.lexists(out):
        return out
    if not out.is_dir():
        raise ValueError(f"--out: {out} is a file; give a folder for the site")
    entries = list(out.iterdir())
    ours = (out / MARKER).is_file() and not (out / MARKER).is_symlink()
    legacy = any(e.name == "index.html" for e in entries) and all(LEGACY.fullmatch(e.name) for e in entries)
    if entries and not (ours or legacy):
        raise ValueError(
            f"--out: {out} is a folder the site did not write (it lacks {MARKER}); the site replaces "
            "only its own folder: give a new or empty folder, or remove this one yourself"
        )
    return out


def pages(root: Path, runs: tuple[str, ...] = RUNS) -> list[Path]:
    """The executed notebooks of the showcase runs, in reading order, relative to the repository root."""
    found = []
    for run in runs:
        found += sorted(p.relative_to(root) for p in (root / "outputs" / run).glob("0*.ipynb"))
    return found


def title_of(nb: nbformat.NotebookNode, fallback: str) -> str:
    """The notebook's title: its first level-1 markdown heading (the findings box that the runner puts first is a
    level-2 one), else its first heading, else fallback."""
    for pattern in (r"^#\s+(.+)$", r"^#+\s+(.+)$"):
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                m = re.search(pattern, cell.source, re.M)
                if m:
                    return re.sub(r"[*_`]", "", m.group(1)).strip()
    return fallback


class MathRenderer(IPythonRenderer):
    """nbconvert's markdown renderer with TeX math turned into MathML at build time (no MathJax needed)."""

    def __init__(self, *args, warn=print, **kw):
        super().__init__(*args, **kw)
        self.warn = warn

    def mathml(self, body: str, display: str) -> str | None:
        """body as MathML, or None (after a warning) where latex2mathml fails or leaves a TeX command unknown."""
        try:
            out = tex_to_mathml(body, display=display)
        except Exception as e:  # latex2mathml raises its own errors and plain ones on malformed TeX
            self.warn(f"formula kept as TeX ({type(e).__name__}): {body.strip()}")
            return None
        if re.search(r"\\[A-Za-z]", re.sub(r"<[^>]*>", "", out)):
            self.warn(f"formula kept as TeX (unknown command): {body.strip()}")
            return None
        # HTML needs no xmlns; with one, nbconvert's heading anchors (ElementTree) write ns0: prefixes
        return out.replace(' xmlns="http://www.w3.org/1998/Math/MathML"', "", 1)

    def inline_math(self, body: str) -> str:
        """$...$ as inline MathML."""
        return self.mathml(body, "inline") or super().inline_math(body)

    def block_math(self, body: str) -> str:
        """$$...$$ as display MathML."""
        return self.mathml(body, "block") or super().block_math(body)


class SiteExporter(HTMLExporter):
    """HTMLExporter whose markdown renderer writes math as MathML; warnings name the page being exported."""

    page = ""
    warnings: list[str] = []

    @jinja2.pass_context
    def markdown2html(self, context, source: str) -> str:
        """Markdown to HTML as nbconvert does it, with MathML for the math."""
        cell = context.get("cell", {})
        renderer = MathRenderer(
            escape=False,
            attachments=cell.get("attachments", {}),
            embed_images=self.embed_images,
            path=context.get("resources", {}).get("metadata", {}).get("path", ""),
            anchor_link_text=self.anchor_link_text,
            exclude_anchor_links=self.exclude_anchor_links,
            warn=lambda w: self.warnings.append(f"{self.page}: {w}"),
            **self.lexer_options,
        )
        return clean_html(MarkdownWithMath(renderer=renderer).render(source))


def exporter() -> SiteExporter:
    """nbconvert's HTML exporter on the lab template, with this site's head (no CDN scripts, inline favicon)."""
    loader = jinja2.DictLoader({"emolib-site.html.j2": TEMPLATE})
    ex = SiteExporter(template_name="lab", extra_loaders=[loader], template_file="emolib-site.html.j2")
    ex.warnings = []
    return ex


def shown_names(source: str) -> list[str]:
    """The figure names given to book.show(fig, P, name) or plots_common.save(fig, dir, name) in a cell, as regexes.

    An f-string's fields match .+ (a figure saved in a loop); which file an image is then is told by add_alt_texts.
    """
    try:
        code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
        tree = ast.parse(code)
    except SyntaxError:
        return []
    names = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("show", "save")
            and len(node.args) >= 3
        ):
            arg = node.args[2]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.append(re.escape(arg.value))
            elif isinstance(arg, ast.JoinedStr):
                names.append("".join(re.escape(v.value) if isinstance(v, ast.Constant) else ".+" for v in arg.values))
    return names


def thumbnail(data: bytes) -> np.ndarray:
    """A small grey copy of an image, to tell which saved figure a displayed one is (dpi differs, so bytes do)."""
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    if img.width * img.height > 50_000_000:
        raise ValueError(f"an image of {img.width} x {img.height} pixels")
    return np.asarray(img.convert("L").resize((32, 32)), dtype=np.float32)


def safe_thumbnail(read) -> np.ndarray | None:
    """thumbnail(read()), or None where the file is not a regular one, too large, or not an image (a PNG bomb,
    random bytes): such a figure simply gets no file name in its alt text."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # PIL's DecompressionBombWarning: an image too large to decode
            return thumbnail(read())
    except Exception:  # noqa: BLE001 - ValueError from read_regular, PIL's errors, binascii.Error
        return None


def plain(markdown: str) -> str:
    """A markdown heading as plain text (no emphasis, code or math marks)."""
    return re.sub(r"\s+", " ", re.sub(r"[*_`$#\\]|<[^>]*>", "", markdown)).strip()


def add_alt_texts(nb: nbformat.NotebookNode, figures: Path) -> None:
    """Set metadata.alt on every image output: the nearest heading above, and the saved figure's file name."""
    heading, thumbs = "", {}
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            found = re.findall(r"^#+\s+(.+)$", cell.source, re.M)
            heading = plain(found[-1]) if found else heading
            continue
        outs = [o for o in cell.get("outputs", []) if {"image/png", "image/jpeg"} & set(o.get("data", {}))]
        if not outs:
            continue
        patterns = shown_names(cell.source)
        files = (
            sorted(f for f in figures.glob("*.png") if any(re.fullmatch(p, f.stem) for p in patterns))
            if figures.is_dir() and patterns
            else []
        )
        for o in outs:
            name = None
            if len(files) == 1:
                name = files[0].name
            elif files:
                for f in files:
                    if f not in thumbs:
                        thumbs[f] = safe_thumbnail(lambda: safeio.read_regular(f, "figure", COPY_MAX_BYTES))  # noqa: B023 (called at once)
                shown = safe_thumbnail(lambda: base64.b64decode(o.data.get("image/png") or o.data["image/jpeg"]))  # noqa: B023 (called at once)
                known = [f for f in files if thumbs[f] is not None]
                if shown is not None and known:
                    name = min(known, key=lambda f: float(np.abs(thumbs[f] - shown).mean())).name
            parts = [f"Figure {name}" if name else "Figure", heading and f"in section “{heading}”"]
            o.setdefault("metadata", {})["alt"] = " ".join(p for p in parts if p)


def readme_parts(root: Path) -> tuple[str, str, str]:
    """The README's title, first paragraph and results block (markdown)."""
    text = (root / "README.md").read_text(encoding="utf-8")
    title = re.search(r"^#\s+(.+)$", text, re.M)
    body = text[title.end() :] if title else text
    intro = next((p.strip() for p in re.split(r"\n\s*\n", body) if p.strip() and not p.lstrip().startswith("#")), "")
    results = text.split(START, 1)[1].split(END, 1)[0].strip() if START in text and END in text else ""
    return (title.group(1).strip() if title else "Experiment book"), intro, results


def index_notebook(root: Path, found: list[Path], titles: dict[Path, str]) -> nbformat.NotebookNode:
    """The index page as a notebook of markdown cells: the book's title, what it is, every run and notebook, results."""
    title, intro, results = readme_parts(root)
    lines = [
        f"# {title}",
        "",
        intro,
        "",
        "This site renders the executed notebooks of the committed showcase runs, with their figures. "
        "It is built by `make site` (`python -m emolib site`) from `outputs/`; the [README](README.md) says how "
        "to run the book yourself.",
        "",
    ]
    runs: dict[str, list[Path]] = {}
    for p in found:
        runs.setdefault(p.parts[1], []).append(p)
    cells = [nbformat.v4.new_markdown_cell("\n".join(lines))]
    listing = ["## Runs", ""]
    for run, nbs in runs.items():
        listing.append(f'### <a id="{run}"></a>`{run}`')
        listing.append("")
        listing += [f"- [{titles[p]}]({p.as_posix()}) (`{p.name}`)" for p in nbs]
        listing.append("")
    cells.append(nbformat.v4.new_markdown_cell("\n".join(listing)))
    if results:
        cells.append(nbformat.v4.new_markdown_cell("## Results (the README's results block)\n\n" + results))
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["title"] = title
    return nb


def markdown_notebook(path: Path) -> nbformat.NotebookNode:
    """A markdown file as a one-cell notebook, so it renders with the same template."""
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell(safeio.read_text(path, "markdown file", COPY_MAX_BYTES))]
    )
    nb.metadata["title"] = path.name
    return nb


class Site:
    """One build: rewrites each page's links against the repository and copies what they point to."""

    def __init__(self, root: Path, out: Path, found: list[Path]):
        self.root, self.out = root, out
        self.html = {p: p.with_suffix(".html") for p in found}  # source notebook -> page, both relative to root
        self.queue: list[Path] = []  # markdown files linked from a page, rendered in turn
        self.warnings: list[str] = []

    def target(self, page: Path, value: str) -> str | None:
        """The rewritten link for value on page, or None where it points outside the site (becomes plain text)."""
        if not value or value.startswith("#") or EXTERNAL.match(value):
            return value
        path, sep, frag = value.partition("#")
        path = path.split("?", 1)[0]
        if os.path.isabs(path):  # an absolute path is a local file, never part of the site (nor copied onto itself)
            return None
        rel = Path(os.path.normpath(page.parent / path))
        if rel.parts and rel.parts[0] == "..":
            return None
        src = self.root / rel
        if src.exists() and not inside(src, self.root):  # through a link: outside the repository, never shown
            return None
        if rel in self.html:
            new = self.html[rel]
        elif rel.suffix == ".md" and src.is_file():
            new = rel.with_suffix(".html")
            if new not in self.html.values() and rel not in self.queue:
                self.queue.append(rel)
        elif (
            src.is_dir()
            and len(rel.parts) == 2
            and rel.parts[0] == "outputs"
            and any(p.parts[1] == rel.parts[1] for p in self.html)
        ):
            return os.path.relpath("index.html", page.parent).replace(os.sep, "/") + "#" + rel.parts[1]
        elif src.is_file() and rel.suffix.lower() in COPY_SUFFIXES and src.stat().st_size <= COPY_MAX_BYTES:
            if not inside(src, self.root):  # a link to a file outside the repository: never copied
                self.warnings.append(f"{page}: {value} is a link to a file outside the repository; not copied")
                return None
            try:
                data = safeio.read_regular(src, "linked file", COPY_MAX_BYTES)
            except ValueError as e:
                self.warnings.append(f"{page}: {e}; not copied")
                return None
            (self.out / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.out / rel).write_bytes(data)
            new = rel
        elif src.exists():
            return None
        else:
            self.warnings.append(f"{page}: link to a missing file {value}")
            return value
        return os.path.relpath(new, page.parent).replace(os.sep, "/") + (sep + frag if sep else "")

    def rewrite(self, page: Path, text: str, nav: str) -> str:
        """Point links at pages and copied files; links to the repository outside the site become plain text;
        whatever could run script (script and embedding tags, on* handlers, javascript: links) is removed."""
        soup = BeautifulSoup(text, "html.parser")
        self.warnings += [f"{page}: {w}" for w in defuse(soup.body or soup)]  # the head is the template's own
        for tag in soup.find_all(["a", "img", "source", "link", "script"]):
            attr = "href" if tag.name in ("a", "link") else "src"
            if not tag.has_attr(attr):
                continue
            new = self.target(page, tag[attr])
            if new is not None:
                tag[attr] = new
            elif tag.name == "a":
                path = os.path.normpath(page.parent / tag[attr].partition("#")[0])
                tag.name = "span"
                del tag["href"]
                tag["class"] = "repo-path"
                tag["title"] = f"in the repository: {Path(path).as_posix()} (not part of this site)"
            else:
                self.warnings.append(f"{page}: {tag.name} points outside the site: {tag[attr]}")
        for tag in soup.find_all(src=True):
            if tag["src"].startswith(("http:", "https:", "//")):
                self.warnings.append(f"{page}: loads {tag['src']} from the network")
        if soup.body is not None:
            soup.body.insert(0, BeautifulSoup(nav, "html.parser"))
        return str(soup)

    def nav(self, page: Path, prev: Path | None, nxt: Path | None, label: str) -> str:
        """The header bar: index, previous and next notebook, the page's own name."""

        def link(p: Path, text: str) -> str:  # names are escaped: a file name is text, never markup
            return (
                f'<a href="{html.escape(urllib.parse.quote(os.path.relpath(p, page.parent)))}">{html.escape(text)}</a>'
            )

        items = [link(Path("index.html"), "Index")]
        items.append(link(self.html[prev], f"← {prev.parts[1]}/{prev.stem}") if prev else "<span>← (first)</span>")
        items.append(link(self.html[nxt], f"{nxt.parts[1]}/{nxt.stem} →") if nxt else "<span>(last) →</span>")
        items.append(f'<span class="site-nav-here">{html.escape(label)}</span>')
        return '<nav class="site-nav">' + " ".join(items) + "</nav>"

    def write_html(self, page: Path, body: str, nav: str) -> None:
        """A page written without nbconvert (the neuron cards): body (escaped HTML) in a plain document."""
        title = BeautifulSoup(body, "html.parser").find("h1")
        doc = (
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<title>{html.escape(title.get_text() if title else page.stem)}</title><link rel="icon" href="data:,">'
            f"<style>{PLAIN_CSS}</style></head><body><main>{body}</main></body></html>"
        )
        dest = self.out / page
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(self.rewrite(page, doc, nav), encoding="utf-8")

    def write(self, page: Path, nb: nbformat.NotebookNode, nav: str, ex: HTMLExporter) -> None:
        """Export one notebook to its page (its markdown and HTML outputs sanitised first, see sanitise)."""
        ex.page = page.as_posix()
        nb = sanitise(nb)
        body, _ = ex.from_notebook_node(nb, resources={"metadata": {"name": nb.metadata.get("title", page.stem)}})
        dest = self.out / page
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(self.rewrite(page, body, nav), encoding="utf-8")


def build(out: str | Path = "site", root: str | Path = ".", runs: tuple[str, ...] = RUNS) -> Path:
    """Write the site (index.html, one page per executed notebook, linked files) into out; return index.html."""
    t0 = time.perf_counter()
    root, out = Path(root).resolve(), Path(os.path.abspath(out))
    if not (root / "README.md").is_file():
        raise ValueError(f"root: {root} has no README.md; give the repository's root folder")
    found = pages(root, runs)
    if not found:
        raise ValueError(
            f"runs: no executed notebooks under {root / 'outputs'} for {', '.join(runs)}; "
            "the site is built from the committed showcase runs"
        )
    final = check_out(out, root)
    final.parent.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.building-"))  # fresh: no planted link
    os.chmod(out, 0o755)
    try:
        n = _build_into(out, root, found)
        (out / MARKER).write_text(MARKER_TEXT)
        safeio.replace_dir(out, final)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    print(f"site: {n} pages in {final} (open {final / 'index.html'}), built in {time.perf_counter() - t0:.1f} s")
    return final / "index.html"


def _build_into(out: Path, root: Path, found: list[Path]) -> int:
    """Write every page into the (new, empty) folder out; returns the number of pages."""
    site, ex = Site(root, out, found), exporter()
    nbs = {p: safeio.read_notebook(root / p) for p in found}
    titles = {p: title_of(nb, p.stem) for p, nb in nbs.items()}
    cards = card_pages(root, found)
    for _run, entries in cards.items():  # card pages are pages of the site: links to them are kept
        site.html.update({page: page for _, page, _ in entries})
    for i, p in enumerate(found):
        prev, nxt = (found[i - 1] if i else None), (found[i + 1] if i + 1 < len(found) else None)
        nb = nbs[p]
        nb.metadata["title"] = f"{p.parts[1]} · {titles[p]}"
        add_alt_texts(nb, root / p.parent / "figures")
        if p.stem.startswith("02_") and cards.get(p.parts[1]):
            add_card_links(nb, p, cards[p.parts[1]])
        site.write(p.with_suffix(".html"), nb, site.nav(p, prev, nxt, f"{p.parts[1]} / {p.stem}"), ex)
    index = Path("index.html")
    index_nb = index_notebook(root, found, titles)
    if cards:
        index_nb.cells.insert(2, card_index_cell(cards))
    site.write(index, index_nb, site.nav(index, None, found[0], "Index"), ex)
    for run, entries in cards.items():
        for name, page, page_html in entries:
            site.write_html(page, page_html, site.nav(page, None, None, f"{run} / neuron cards · {name}"))
    done: set[Path] = set()
    while site.queue:
        md = site.queue.pop(0)
        if md not in done:
            done.add(md)
            page = md.with_suffix(".html")
            site.write(page, markdown_notebook(root / md), site.nav(page, None, None, md.as_posix()), ex)
    for w in site.warnings + ex.warnings:
        print(f"warning: {w}")
    return len(found) + 1 + len(done) + sum(map(len, cards.values()))


# ---- neuron cards (issue 28): one page per run and named set, from the run's cards.json ---------------------------

PLAIN_CSS = """body { margin: 0; font-family: sans-serif; } main { padding: 0 1.5em 2em; }
nav.site-nav { position: sticky; top: 0; z-index: 10; display: flex; gap: 1.5em; padding: 0.5em 1em;
  background: #f3f3f3; border-bottom: 1px solid #ccc; }
nav.site-nav a { text-decoration: none; } nav.site-nav .site-nav-here { font-weight: bold; }
span.repo-path { font-family: monospace; }"""


def card_file(run: str, name: str) -> Path:
    """The page of one run's cards of one named set (the name reduced to safe characters)."""
    return Path("outputs") / run / f"cards-{re.sub(r'[^A-Za-z0-9_-]', '_', name)}.html"


def card_pages(root: Path, found: list[Path]) -> dict[str, list[tuple[str, Path, str]]]:
    """Per run with a cards.json: (set name, page, page body) for each named set that has cards."""
    from ..identify.cards import load
    from .cards import set_page

    out = {}
    for run in dict.fromkeys(p.parts[1] for p in found):
        cards = load(root / "outputs" / run)
        if cards:
            out[run] = [
                (name, card_file(run, name), set_page(cards, name, run))
                for name in cards["sets"]
                if any(c["set"] == name for c in cards["cards"])
            ]
    return {run: entries for run, entries in out.items() if entries}


def card_links(page: Path, entries: list[tuple[str, Path, str]]) -> str:
    """Markdown links from page to a run's card pages, named by their set."""
    return " · ".join(
        f"[{html.escape(name)}]({os.path.relpath(p, page.parent).replace(os.sep, '/')})" for name, p, _ in entries
    )


def add_card_links(nb: nbformat.NotebookNode, page: Path, entries: list[tuple[str, Path, str]]) -> None:
    """Notebook 02 on the site: a line linking every card page of its run, after the cards' section heading (at the
    end when the notebook has no such section)."""
    from .cards import SHOWN_TITLE

    cell = nbformat.v4.new_markdown_cell(
        "On this site, every neuron card of this run, one page per named set: " + card_links(page, entries) + "."
    )
    at = next(
        (i + 1 for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and SHOWN_TITLE in c.source), len(nb.cells)
    )
    nb.cells.insert(at, cell)


def card_index_cell(cards: dict[str, list[tuple[str, Path, str]]]) -> nbformat.NotebookNode:
    """The index's list of card pages, per run."""
    lines = [
        "## Neuron cards",
        "",
        "What the first selected neurons of each named set fire on and what they write "
        "(notebook 02, section “What a selected neuron looks like”).",
        "",
    ]
    lines += [f"- `{html.escape(run)}`: " + card_links(Path("index.html"), entries) for run, entries in cards.items()]
    return nbformat.v4.new_markdown_cell("\n".join(lines))
