"""The notebook lint: what a reader should never meet in an executed notebook, one function per rule.

Every rule takes a notebook (nbformat) and returns problems as "cell N: what" (N counts from 0, as nbformat's
cells); lint_notebook prefixes the notebook's name, lint_run checks every notebook of a run folder.
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np

from .paths import local_roots

MAX_PIXELS = 50_000_000  # a figure larger than this is not decoded (a PNG bomb), but reported
MAX_COLUMNS = 8  # a notebook table shows at most this many columns; the full tables stay in the CSVs
STAGE = re.compile(r"^0[1-5]_")  # stage notebooks (the comparison, 06, has no findings cell or course header)
FINDINGS_TAG = "findings"
FINDINGS_TITLE = "Findings of this run"


def decode_png(data: str | list[str]) -> np.ndarray:
    """A base64 PNG (as stored in a notebook) decoded to an RGB array."""
    import warnings

    from PIL import Image

    try:
        raw = base64.b64decode("".join(data) if isinstance(data, list) else data)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # PIL's DecompressionBombWarning
            img = Image.open(io.BytesIO(raw))
            if img.width * img.height > MAX_PIXELS:
                raise ValueError(f"{img.width} x {img.height} pixels, above {MAX_PIXELS:,}")
            return np.asarray(img.convert("RGB"))
    except Exception as e:  # noqa: BLE001 - binascii.Error, PIL's UnidentifiedImageError and DecompressionBomb*
        raise ValueError(f"an image that cannot be decoded ({type(e).__name__}: {str(e)[:80]})") from None


def same_image(a: np.ndarray, b: np.ndarray, tol: float = 2.0, share: float = 0.995) -> bool:
    """Two decoded images are the same figure: equal shape and nearly every pixel within tol of the other."""
    if a.shape != b.shape:
        return False
    close = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(-1) <= tol
    return bool(close.mean() >= share)


def _code_cells(nb):
    """(index, cell) of every code cell."""
    return [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]


def figures_shown_twice(nb) -> list[str]:
    """A figure whose pixels equal those of a figure shown earlier in the notebook."""
    seen: list[tuple[int, np.ndarray]] = []
    out = []
    for i, cell in _code_cells(nb):
        for o in cell.get("outputs", []):
            png = o.get("data", {}).get("image/png")
            if png is None:
                continue
            try:
                img = decode_png(png)
            except ValueError as e:
                out.append(f"cell {i}: {e}")
                continue
            twin = next((j for j, s in seen if same_image(img, s)), None)
            if twin is not None:
                out.append(f"cell {i}: a figure shown twice (the same pixels as in cell {twin})")
            else:
                seen.append((i, img))
    return out


RAW = re.compile(r"^\s*([\[{(]|[A-Za-z_][\w.]*\(|<[\w.]+ object at 0x)")
PRINTED = re.compile(r"(^|[:=]\s*)[{\[]['\"\d(]")  # a printed dict or list, e.g. "per emotion: {'anger': 3, ..."


def raw_reprs(nb) -> list[str]:
    """A cell result shown as a raw Python repr (a dict, list, tuple or an object such as DatasetDict(...)), or a
    dict or list printed into a line."""
    out = []
    for i, cell in _code_cells(nb):
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            if o.get("output_type") == "stream" and o.get("name") == "stdout":
                line = next((x for x in "".join(o.get("text", "")).splitlines() if PRINTED.search(x)), None)
                if line:
                    out.append(
                        f"cell {i}: a printed raw dict or list ({line.strip()[:60]!r}); show a small "
                        "formatted table instead"
                    )
            if o.get("output_type") == "execute_result" and set(data) == {"text/plain"}:
                text = "".join(data["text/plain"])
                if RAW.match(text):
                    out.append(
                        f"cell {i}: a raw repr as the result ({text.strip().splitlines()[0][:60]!r}); show a "
                        "small formatted table instead"
                    )
    return out


def _header_columns(html: str) -> list[int]:
    """For each table of an HTML output, the columns its header row names (the index corner left out)."""
    counts = []
    for table in re.findall(r"<table.*?</table>", html, flags=re.S | re.I):
        head = re.search(r"<thead.*?</thead>", table, flags=re.S | re.I)
        row = re.search(r"<tr.*?</tr>", head.group(0) if head else table, flags=re.S | re.I)
        if not row:
            continue
        cells = re.findall(r"<th([^>]*)>(.*?)</th>", row.group(0), flags=re.S | re.I)
        counts.append(
            sum(
                1
                for attrs, text in cells
                if "blank" not in attrs and "index_name" not in attrs and re.sub(r"<[^>]+>|&nbsp;|\s", "", text)
            )
        )
    return counts


def wide_tables(nb, limit: int = MAX_COLUMNS) -> list[str]:
    """An HTML table (a DataFrame or Styler) with more than `limit` columns."""
    out = []
    for i, cell in _code_cells(nb):
        for o in cell.get("outputs", []):
            html = o.get("data", {}).get("text/html")
            for n in _header_columns("".join(html) if isinstance(html, list) else html or ""):
                if n > limit:
                    out.append(f"cell {i}: a table of {n} columns (at most {limit}; the full table belongs in a CSV)")
    return out


PATHS = re.compile(r"(?<![\w/.~-])(/home/\w+|/Users/\w+|/root)(?=/)")


def local_paths(nb) -> list[str]:
    """A local absolute path anywhere in the notebook: its metadata, a cell's source, metadata or outputs."""
    pat = re.compile(r"(?<![\w/.~-])(" + "|".join(re.escape(r) for r in local_roots()) + r")(?![\w.~-])")

    def strings(obj):
        if isinstance(obj, str):
            yield obj
        elif isinstance(obj, list):
            for x in obj:
                yield from strings(x)
        elif isinstance(obj, dict):
            for k, v in obj.items():
                if not k.startswith("image/"):
                    yield from strings(v)

    def hits(obj) -> list[str]:
        found = []
        for s in strings(obj):
            found += [m.group(0) for m in pat.finditer(s)] + [m.group(0) for m in PATHS.finditer(s)]
        return found

    out = []
    top = hits(dict(nb.metadata))
    if top:
        out.append(f"notebook metadata: local path(s) {', '.join(sorted(set(top)))}")
    for i, cell in enumerate(nb.cells):
        h = hits(dict(cell))
        if h:
            out.append(f"cell {i}: local path(s) {', '.join(sorted(set(h)))}")
    return out


def findings_first(nb) -> list[str]:
    """A stage notebook opens with the runner's generated 'Findings of this run' cell."""
    first = nb.cells[0] if nb.cells else None
    if first is None or first.cell_type != "markdown" or FINDINGS_TITLE not in first.source:
        return ["cell 0: the notebook does not open with the generated 'Findings of this run' cell"]
    return []


def parameters_collapsed(nb) -> list[str]:
    """The parameter cells (tagged parameters, and papermill's injected-parameters) have their source hidden."""
    out = []
    for i, cell in _code_cells(nb):
        tags = set(cell.metadata.get("tags", []))
        if {"parameters", "injected-parameters"} & tags and not cell.metadata.get("jupyter", {}).get("source_hidden"):
            out.append(f"cell {i}: parameter cell ({', '.join(sorted(tags))}) not collapsed (jupyter.source_hidden)")
    return out


LINK = re.compile(r"\]\((?:\.\./)*(?:notebooks/)?0\d_[\w-]+\.(?:ipynb|html|md)\)")
QUESTIONS = re.compile(r"^#+\s.*\bQuestions\b", flags=re.M | re.I)


def header_and_questions(nb) -> list[str]:
    """A stage notebook has a header (in its first three markdown cells) linking the previous/next notebook, and a
    'Questions' section among its last three markdown cells."""
    md = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "markdown"]
    out = []
    if not any(LINK.search(c.source) for _, c in md[:3]):
        out.append("cell 0: no header with links to the previous/next notebook")
    if not any(QUESTIONS.search(c.source) for _, c in md[-3:]):
        out.append(f"cell {len(nb.cells) - 1}: no 'Questions' section at the end")
    return out


PRINTS = re.compile(r"^\s*(print|display)\(", flags=re.M)


def silent_cells(nb) -> list[str]:
    """A code cell that prints or displays, left with no output at all (e.g. a section that shows nothing)."""
    out = []
    for i, cell in _code_cells(nb):
        if PRINTS.search(cell.source) and not cell.get("outputs"):
            out.append(f"cell {i}: prints or displays, yet shows nothing")
    return out


def stderr_warnings(nb) -> list[str]:
    """A warning left on stderr in the outputs."""
    out = []
    for i, cell in _code_cells(nb):
        for o in cell.get("outputs", []):
            text = "".join(o.get("text", "")) if o.get("output_type") == "stream" and o.get("name") == "stderr" else ""
            if re.search(r"warn", text, flags=re.I):
                out.append(f"cell {i}: a warning on stderr ({text.strip().splitlines()[0][:80]!r})")
    return out


RULES = (figures_shown_twice, raw_reprs, wide_tables, local_paths, parameters_collapsed, silent_cells, stderr_warnings)
STAGE_RULES = (findings_first, header_and_questions)


def lint_notebook(path: str | Path) -> list[str]:
    """Every rule's problems in one executed notebook, as '<notebook> cell N: what'."""
    from ..safeio import read_notebook

    path = Path(path)
    nb = read_notebook(path)  # a regular file, capped, and a valid notebook; else one line naming it
    rules = RULES + (STAGE_RULES if STAGE.match(path.name) else ())
    return [f"{path.name} {problem}" for rule in rules for problem in rule(nb)]


def lint_run(run_dir: str | Path) -> list[str]:
    """Every problem of the executed notebooks of a run folder (outputs/<run>)."""
    d = Path(run_dir)
    if not d.is_dir():
        raise ValueError(f"lint: {d} is not a folder; give a run folder such as outputs/smollm2-135m")
    nbs = sorted(d.glob("*.ipynb"))
    if not nbs:
        raise ValueError(f"lint: {d} holds no executed notebooks (*.ipynb)")
    return [p for nb in nbs for p in lint_notebook(nb)]


def by_rule(problems: list[str]) -> dict[str, int]:
    """How many problems each kind of message has (for a summary line)."""
    out: dict[str, int] = {}
    for p in problems:
        what = re.sub(r"^\S+ (cell \d+|notebook metadata): ", "", p).split(" (")[0]
        out[what] = out.get(what, 0) + 1
    return out
