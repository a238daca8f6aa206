"""The course's exercise notebooks: copies of the stage notebooks (from their jupytext twins) in which every block
between `# BEGIN SOLUTION` and `# END SOLUTION` becomes a stub that raises NotImplementedError, saying what to
implement, which check to run and where the reference solution is."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat

from .params import ROOT

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
STAGES = ("01", "02", "03", "04", "05")


def _title(cells: list, i: int) -> str:
    """The exercise's name: the nearest markdown heading 'Exercise: ...' above cell i (else the cell's number)."""
    for c in reversed(cells[:i]):
        m = re.search(r"^#+\s*Exercise:\s*(.+)$", c.source, re.M) if c.cell_type == "markdown" else None
        if m:
            return m.group(1).strip()
    return f"cell {i + 1}"


def _task(source: str) -> str:
    """'implement NAME (its docstring)' from the cell's first function, or a plain 'fill in the blank'."""
    try:
        fn = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef))
    except (StopIteration, SyntaxError):
        return "fill in the code where the stub is"
    doc = (ast.get_docstring(fn) or "").split("\n")[0].rstrip(".")
    return f"implement {fn.name}" + (f" ({doc})" if doc else "")


def _check(cells: list, i: int) -> str:
    """The check that follows cell i (e.g. 'checks.check_entropy(my_entropy)'), or a generic pointer."""
    for c in cells[i + 1 :]:
        m = re.search(r"checks\.check_\w+\([^)]*\)", c.source) if c.cell_type == "code" else None
        if m:
            return m.group(0)
        if c.cell_type == "code" and BEGIN in c.source:
            break
    return "the check in emolib.checks"


def stub(source: str, message: str) -> str:
    """The cell's source with each solution block replaced by a raise of NotImplementedError(message)."""
    out, inside = [], False
    for line in source.splitlines():
        if line.strip() == BEGIN:
            if inside:
                raise ValueError(f"a second {BEGIN} before {END}")
            indent = line[: len(line) - len(line.lstrip())]
            out += [
                f"{indent}# YOUR CODE HERE (then run the check below)",
                f"{indent}raise NotImplementedError({message!r})",
            ]
            inside = True
        elif line.strip() == END:
            if not inside:
                raise ValueError(f"{END} without {BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{BEGIN} without {END}")
    return "\n".join(out)


def exercise_notebook(py: Path) -> tuple[nbformat.NotebookNode, list[str]]:
    """A stage notebook's exercise copy from its jupytext twin, and the names of the exercises stubbed in it."""
    import jupytext

    nb = jupytext.read(py)
    origin = f"notebooks/{py.name}"
    names = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or BEGIN not in cell.source:
            continue
        name = _title(nb.cells, i)
        msg = (
            f"Exercise '{name}' (notebook {py.name[:2]}): {_task(cell.source)} where it says YOUR CODE HERE, then "
            f"run that cell and its check, {_check(nb.cells, i)}, which says what is right or wrong. The reference "
            f"solution is in {origin}, "
            "between its BEGIN SOLUTION and END SOLUTION markers."
        )
        try:
            cell.source = stub(cell.source, msg)
        except ValueError as e:
            raise ValueError(f"{origin}, exercise '{name}': {e}") from None
        names.append(name)
    nb.metadata["emolib"] = {"exercise_copy": origin}  # what --out may overwrite on the next call (see overwritable)
    if names:
        nb.cells.insert(
            0,
            nbformat.v4.new_markdown_cell(
                f"*Exercise copy of `{origin}`, written by `make exercises`.* Its exercises: "
                + "; ".join(f"**{n}**" for n in names)
                + ". Each raises `NotImplementedError` until you write it; the "
                "check after it says what is right or wrong."
            ),
        )
    return nb, names


def inject(nb: nbformat.NotebookNode, params_path: str | Path, stage: str, out: Path) -> nbformat.NotebookNode:
    """Set a parameter file's values in the copy (papermill's injected-parameters cell), its run_dir relative to the
    copy's folder, so a learner opening it in Jupyter works on that run (e.g. the one `make quick` wrote)."""
    import os

    from papermill.parameterize import parameterize_notebook

    from . import params as params_mod

    p = params_mod.load(str(params_path))
    values = {
        **params_mod.for_notebook(p, stage),
        "run_dir": os.path.relpath(ROOT / "outputs" / p["run_name"], out.resolve()),
    }
    nb.metadata.setdefault("papermill", {})  # papermill reads these, as its own notebooks have them
    for c in nb.cells:
        c.metadata.setdefault("tags", [])
    nb = parameterize_notebook(nb, values, kernel_name="python3", language="python")
    for c in nb.cells:
        if not c.metadata.get("tags"):
            c.metadata.pop("tags", None)
    nb.metadata.pop("papermill", None)
    return nb


def write(
    out: str | Path = "exercises", notebooks: str | Path | None = None, params: str | Path | None = None
) -> dict[Path, list[str]]:
    """Write the exercise copies of the stage notebooks (01-05) into out, with a parameter file's values set when
    given; returns each copy and its exercises."""
    src = Path(notebooks) if notebooks else ROOT / "notebooks"
    pys = sorted(p for p in src.glob("[0-9][0-9]_*.py") if p.name[:2] in STAGES)
    if not pys:
        raise ValueError(f"--notebooks: no stage notebooks (01_*.py ... 05_*.py) in {src}")
    from .runner import write_notebook
    from .safeio import check_target

    out = Path(out)
    targets = [out / f"{py.stem}.ipynb" for py in pys]
    for path in targets:  # before any work: no link, folder, pipe or executed notebook where a copy goes
        check_target(path)
        if path.is_file() and not overwritable(path):
            raise ValueError(
                f"--out: {path} is not an exercise copy, or one you have run (an executed notebook, or "
                "your own work); write the exercises into another folder, or move it away"
            )
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for py, path in zip(pys, targets):
        nb, names = exercise_notebook(py)
        if params:
            nb = inject(nb, params, py.name[:2], out)
        write_notebook(path, nb)
        written[path] = names
    return written


def overwritable(path: Path) -> bool:
    """Whether an existing file may be replaced by an exercise copy: it is one (its first cell says so, and no
    cell has run), so neither an executed notebook of a run nor a notebook of the learner's own is overwritten."""
    from .safeio import read_text

    try:
        nb = nbformat.reads(read_text(path, "notebook", 50 * 2**20), as_version=4)
    except Exception:  # noqa: BLE001 - not a readable notebook: not ours
        return False
    first = nb.cells[0].source if nb.cells else ""
    ran = any(c.get("execution_count") or c.get("outputs") for c in nb.cells if c.cell_type == "code")
    ours = "exercise_copy" in (nb.metadata.get("emolib") or {}) or "*Exercise copy of `notebooks/" in first
    return ours and not ran
