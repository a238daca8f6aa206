"""Run the numbered notebooks in order with papermill into outputs/<run>/, and the comparison notebook.

Longer than 400 lines: the run loop, its resume and lock, the timings and the terminal's progress lines are one
command's job (lines counted after `ruff format`).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

from . import params as params_mod
from . import safeio
from .report.paths import local_roots, relative_to_root

ROOT = params_mod.ROOT
NOTEBOOKS = ROOT / "notebooks"
STAGES = ("01", "02", "03", "04", "05")
HEADLESS = "EMOLIB_HEADLESS"  # set while papermill runs a notebook
QUICK_PARAMS = ROOT / "params" / "quick.yaml"
QUICK_TIMINGS = ROOT / "outputs" / "quick-timings.json"  # committed: each stage's time in the last quick run


def notebook_paths(only: list[str] | None = None) -> list[Path]:
    """The stage notebooks 01-05 in order (or those named by --only)."""
    found = {p.name[:2]: p for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")) if p.name[:2] in STAGES}
    wanted = only or sorted(found)
    missing = [n for n in wanted if n not in found]
    if missing:
        raise params_mod.ParamError(
            f"--only: unknown notebook(s) {', '.join(missing)}; allowed: {', '.join(sorted(found))}"
        )
    return [found[n] for n in wanted]


def _fail_message(nb: Path, err: Exception) -> str:
    """Name the notebook and cell of a papermill failure."""
    cell = getattr(err, "exec_count", None) or getattr(err, "cell_index", "?")
    ename, evalue = getattr(err, "ename", type(err).__name__), getattr(err, "evalue", str(err))
    return f"notebook {nb.name} failed in cell [{cell}]: {ename}: {evalue}"


def execute(nb: Path, out: Path, parameters: dict, cwd: Path = ROOT) -> float:
    """Execute one notebook with papermill (kernel python3); returns the wall time in seconds."""
    import papermill as pm

    t = time.time()
    out = Path(out)
    safeio.check_target(out)  # before executing: no link, folder or pipe where the notebook goes
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.", suffix=".ipynb")  # papermill writes here
    os.close(fd)
    before = os.environ.get(HEADLESS)
    os.environ[HEADLESS] = "1"  # the kernel inherits it: interactive widgets are not built (see steer.interactive)
    sockets = tempfile.TemporaryDirectory(prefix="emolib-kernel-")
    try:
        pm.execute_notebook(
            str(nb),
            tmp,
            parameters=parameters,
            kernel_name="python3",
            progress_bar=True,
            cwd=str(cwd),
            log_output=False,
            config=kernel_config(sockets.name),
        )
    finally:
        sockets.cleanup()
        if before is None:
            os.environ.pop(HEADLESS, None)
        else:
            os.environ[HEADLESS] = before
        try:
            if os.path.getsize(tmp):  # what papermill wrote (a failed notebook too, to read its error), cleaned
                clean_outputs(Path(tmp), shown_as=out)
                safeio.check_target(out)
                os.chmod(tmp, 0o644)
                os.replace(tmp, out)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return time.time() - t


def kernel_config(folder: str):
    """Talk to the kernel over local IPC sockets in `folder` (POSIX): nothing listens on TCP, so the kernel has no
    reason to warn that it runs over TCP without encryption. Elsewhere the default (TCP) stays."""
    from traitlets.config import Config

    c = Config()
    if os.name == "posix":
        c.KernelManager.transport = "ipc"
        c.KernelManager.ip = os.path.join(folder, "kernel")
    return c


def clean_outputs(path: Path, shown_as: Path | None = None) -> None:
    """Drop what a reader should not see in an executed notebook: progress-bar widgets and their stderr lines, a
    figure shown twice (pixel-equal to one shown before), every local absolute path (metadata, sources, outputs); and
    collapse the parameter cells. shown_as: the notebook's final path, recorded as papermill's output_path."""
    import nbformat

    from .report import lint

    nb = nbformat.read(path, as_version=4)
    seen: list = []

    def keep(o) -> bool:
        data = o.get("data", {})
        if "application/vnd.jupyter.widget-view+json" in data:
            return False
        if (
            o.get("output_type") == "stream"
            and o.get("name") == "stderr"
            and ("%|" in o.get("text", "") or "it/s]" in o.get("text", ""))
        ):
            return False
        if "image/png" in data:
            try:
                img = lint.decode_png(data["image/png"])
            except ValueError:  # kept as it is; the lint reports it
                return True
            if any(lint.same_image(img, s) for s in seen):
                return False
            seen.append(img)
        return True

    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if keep(o)]
            if {"parameters", "injected-parameters"} & set(cell.metadata.get("tags", [])):
                cell.metadata.setdefault("jupyter", {})["source_hidden"] = True
    nb.metadata.pop("widgets", None)
    if shown_as is not None and isinstance(nb.metadata.get("papermill"), dict):  # not papermill's temporary file
        nb.metadata["papermill"]["output_path"] = str(shown_as)
    write_notebook(path, nbformat.from_dict(strip_local_paths(nb)))


def write_notebook(path: Path, nb, base: Path | None = None) -> None:
    """Write a notebook as nbformat.write does, atomically and never through a link (safeio.check_target)."""
    import nbformat

    text = nbformat.writes(nb)
    safeio.atomic_write_text(path, text if text.endswith("\n") else text + "\n", base)


def _strip(text: str, roots: list[str]) -> str:
    """text with every path under a local root shown relative to the project (inside it) or by its last part."""
    import re

    for root in roots:
        pat = re.compile(r"(?<![\w/.~-])" + re.escape(root) + r"(?![\w.~-])(/[^\s\"'<>()\[\],:;]*)?")
        if root in (str(ROOT), str(ROOT.resolve())):
            text = pat.sub(lambda m: (m.group(1) or "/.").lstrip("/") or ".", text)
        else:
            text = pat.sub(lambda m: Path(m.group(1) or "tmp").name or "tmp", text)
    return text


def strip_local_paths(obj, roots: list[str] | None = None):
    """A notebook (or any JSON value) with local absolute paths replaced in every string but image data."""
    roots = roots or local_roots()
    if isinstance(obj, str):
        return _strip(obj, roots) if any(r in obj for r in roots) else obj
    if isinstance(obj, list):
        return [strip_local_paths(x, roots) for x in obj]
    if isinstance(obj, dict):
        return {k: v if k.startswith("image/") else strip_local_paths(v, roots) for k, v in obj.items()}
    return obj


def record_timing(run_dir: Path, name: str, seconds: float) -> None:
    """Record a notebook's wall time: latest per notebook in timings.json, every run in timings-history.jsonl."""
    path, history = run_dir / "timings.json", run_dir / "timings-history.jsonl"
    try:
        timings = json.loads(path.read_text()) if path.exists() else {}
    except (ValueError, OSError):  # a damaged timings file is rebuilt from this stage on
        timings = {}
    if not isinstance(timings, dict):
        timings = {}
    if not history.exists():  # keep what earlier runs recorded before the history existed
        safeio.atomic_write_text(
            history,
            "".join(json.dumps({"notebook": k, "seconds": v, "finished": None}) + "\n" for k, v in timings.items()),
        )
    safeio.append_line(
        history,
        json.dumps({"notebook": name, "seconds": round(seconds, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}),
    )
    timings[name] = round(seconds, 1)
    safeio.atomic_write_json(path, timings, indent=1)


def record_quick_timing(name: str, seconds: float, path: Path = QUICK_TIMINGS) -> None:
    """Keep the committed record of the last params/quick.yaml run: each stage's seconds and when it was measured."""
    try:
        record = json.loads(path.read_text()) if path.exists() else {}
    except (ValueError, OSError):
        record = {}
    record = record if isinstance(record, dict) else {}
    record[name] = {"seconds": round(seconds, 1), "measured": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count()}
    safeio.atomic_write_json(path, record, indent=1)


def runtime_line(name: str, seconds: float | None, quick: Path = QUICK_TIMINGS, run_dir: Path | None = None) -> str:
    """'This run: N s for this stage; with params/quick.yaml: M s (measured DATE on C CPUs)', from the records."""
    here = f"this run took {seconds:.0f} s for this stage" if seconds is not None else "this run's time is not recorded"
    if run_dir is not None and name == "03_ablation" and reused_every_score(run_dir):
        here += " (every stage-3 score came from the run's cache, so this is not the time of the scoring)"
    try:
        q = json.loads(quick.read_text()).get(name) if quick.exists() else None
    except (ValueError, OSError):
        q = None
    there = (
        f"with `params/quick.yaml` it takes {q['seconds']:.0f} s (measured {q['measured']} on {q['cpus']} CPUs)"
        if isinstance(q, dict) and "seconds" in q
        else "no quick run is recorded yet (`make quick` measures one)"
    )
    return f"Runtime: {here}; {there}."


def reused_every_score(run_dir: Path) -> bool:
    """Whether notebook 03 scored nothing itself (scoring_time.json: every score was found in the run's cache)."""
    from .causal import budget

    return budget.reused_every_score(budget.load_timing({"run_dir": str(run_dir)}))


def add_findings_cell(path: Path, lines: list[str], runtime: str) -> None:
    """Put the generated 'Findings of this run' Markdown cell at the very top of an executed notebook (replacing an
    earlier one)."""
    import nbformat

    from .report import findings, lint

    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if lint.FINDINGS_TAG not in c.metadata.get("tags", [])]
    cell = nbformat.v4.new_markdown_cell(
        f"## {lint.FINDINGS_TITLE}\n\n{findings.markdown(lines)}\n\n*{runtime}*", metadata={"tags": [lint.FINDINGS_TAG]}
    )
    if nb.nbformat_minor < 5:  # cell ids came with nbformat 4.5
        cell.pop("id", None)
    nb.cells.insert(0, cell)
    write_notebook(path, nb)


def check_out_dir(run_dir: Path, flag: str = "--out") -> None:
    """Create the output folder and prove it writable, before any work; one ParamError line otherwise. Never /, the
    home folder, the project or its outputs/ (a run writes and replaces files in its folder)."""
    real = Path(run_dir).expanduser().resolve()
    if real in (Path("/"), Path(os.path.expanduser("~")).resolve(), ROOT.resolve(), (ROOT / "outputs").resolve()):
        raise params_mod.ParamError(
            f"{flag}: {run_dir} is /, the home folder, the project or its outputs/; give a "
            "folder of its own (e.g. outputs/<name>)"
        )
    for parent in [run_dir, *run_dir.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise params_mod.ParamError(f"{flag}: {parent} is a file, not a folder; give a folder for the run")
            break
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=run_dir, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise params_mod.ParamError(
            f"{flag}: cannot write into {run_dir} ({e.strerror or e}); choose a writable folder"
        ) from None


def _saved_params(path: Path) -> dict | None:
    """The validated parameters of an earlier run's params.yaml (None when absent; raw keys if it no longer
    validates)."""
    if not path.exists():
        return None
    try:
        return params_mod.load(path)
    except params_mod.ParamError:
        try:
            raw = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, OSError, UnicodeDecodeError):
            raw = None
        return raw if isinstance(raw, dict) else {"<unreadable params.yaml>": True}


def differing_keys(old: dict, new: dict) -> list[str]:
    """Keys whose values differ between two parameter sets (defaults filled)."""
    return sorted(
        k
        for k in set(old) | set(new)
        if old.get(k, params_mod.SCHEMA[k].default if k in params_mod.SCHEMA else None) != new.get(k)
    )


def check_existing_run(run_dir: Path, p: dict, force: bool) -> None:
    """Refuse to run into a folder whose params.yaml differs from these parameters, unless force."""
    old = _saved_params(run_dir / "params.yaml")
    if old is None or force:
        return
    diff = differing_keys(old, p)
    if diff:
        raise params_mod.ParamError(
            f"--out: {run_dir} holds a run with other parameters (differing: "
            f"{', '.join(diff)}); choose another --out, or add --force to overwrite it"
        )


def check_neurons_match(run_dir: Path, p: dict, stages: list[str]) -> None:
    """Before stages 03-05 run without 02: the folder's neurons.json must match the model and the emotions."""
    path = run_dir / "neurons.json"
    if "02" in stages or not {"03", "04", "05"} & set(stages) or not path.exists():
        return
    try:
        safeio.load_neurons_json(path, model=p["model"], emotions=p["emotions"])
    except ValueError as e:
        raise params_mod.ParamError(f"{e}; rerun stage 02 (--only 02 ...)") from None


def run(params_path: str, only: list[str] | None = None, out: str | None = None, force: bool = False) -> Path:
    """Validate the parameters and the run folder, lock it, then run the stage notebooks in order into it."""
    p = params_mod.load(params_path)
    run_dir = Path(out) if out else ROOT / "outputs" / p["run_name"]
    nbs = notebook_paths(only)
    check_out_dir(run_dir)
    try:
        with safeio.folder_lock(run_dir):
            check_existing_run(run_dir, p, force)
            check_neurons_match(run_dir, p, [nb.name[:2] for nb in nbs])
            safeio.atomic_write_text(run_dir / "params.yaml", Path(params_path).read_text())
            _run_stages(nbs, p, run_dir, quick=Path(params_path).resolve() == QUICK_PARAMS.resolve())
    except safeio.FolderBusy as e:
        raise params_mod.ParamError(str(e)) from None
    return run_dir


def _run_stages(nbs: list[Path], p: dict, run_dir: Path, quick: bool = False) -> None:
    """Execute the stage notebooks in order, recording their wall times (in the quick record too for quick.yaml),
    then write findings.json and open each executed notebook with its findings."""
    from .report import findings

    for i, nb in enumerate(nbs, 1):
        parameters = params_mod.for_notebook(p, nb.name[:2])
        parameters["run_dir"] = relative_to_root(run_dir)
        print(f"[{i}/{len(nbs)}] {nb.name} -> {run_dir / nb.name}", flush=True)
        try:
            with watch_progress(run_dir, nb.stem):
                seconds = execute(nb, run_dir / nb.name, parameters)
        except Exception as err:  # papermill's PapermillExecutionError and kernel failures
            raise RuntimeError(_fail_message(nb, err)) from None
        record_timing(run_dir, nb.stem, seconds)
        if quick:
            record_quick_timing(nb.stem, seconds)
        found = findings.write(run_dir)
        add_findings_cell(
            run_dir / nb.name,
            found.get(nb.stem + findings.SUMMARY) or found.get(nb.stem, []),
            runtime_line(nb.stem, seconds, run_dir=run_dir),
        )
        print(f"      done in {seconds:.0f} s", flush=True)


def closing_lines(run_dir: Path) -> list[str]:
    """The three lines a finished run ends with: where its outputs are, its headline result (from findings.json),
    and how to open it."""
    from .report import findings

    shown = relative_to_root(run_dir)
    path = Path(run_dir) / findings.FILE
    found = json.loads(path.read_text()) if path.exists() else {}
    head = [x for x in found.get("headline", []) if x.startswith(("Stage 3's answer", "Detection curve"))]
    result = (
        " ".join(head)
        if head
        else (f"the stages run did not reach the causal tests (notebook 03); see {shown}/{findings.FILE}")
    )
    return [
        f"Outputs: {shown}/ (executed notebooks 0*.ipynb, tables, figures/, findings.json)",
        f"Result: {result}",
        f"Open: `make lab` (JupyterLab with the project's kernel), or the notebooks {shown}/0*.ipynb",
    ]


@contextmanager
def watch_progress(run_dir: Path, stage: str = "", every: float = 20.0):
    """While the block runs, print the notebook's progress line whenever it changed, at most every `every` seconds:
    the stage's estimate where it has one (emolib.causal.budget.Progress, notebooks 03-04), else its current progress
    bar
    (emolib.progress, which the kernel finds through EMOLIB_PROGRESS)."""
    from . import progress
    from .causal.budget import PROGRESS_FILE, progress_line

    path, bar = run_dir / PROGRESS_FILE, run_dir / "progress-bar.json"
    for f in (path, bar):
        f.unlink(missing_ok=True)
    old_env = os.environ.get(progress.ENV)
    os.environ[progress.ENV] = str(bar.resolve())
    stop = threading.Event()

    def loop() -> None:
        last = None
        while not stop.wait(every):
            line = progress_line(path) or progress.bar_line(str(bar), stage)
            if line and line != last:
                print(line, flush=True)
                last = line

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(timeout=1)
        for f in (path, bar):
            f.unlink(missing_ok=True)
        if old_env is None:
            os.environ.pop(progress.ENV, None)
        else:
            os.environ[progress.ENV] = old_env


def compare(run_dirs: list[str], out: str | None = None) -> Path:
    """Run notebooks/06_model_comparison.ipynb over finished run folders."""
    bad = [
        r for r in run_dirs if not (Path(r) / "neurons.json").exists() or not (Path(r) / "own_vs_random.csv").exists()
    ]
    if len(run_dirs) < 2:
        raise params_mod.ParamError("compare: give at least two run folders (outputs/<run>)")
    if bad:
        raise params_mod.ParamError(
            f"compare: {', '.join(bad)} lack neurons.json or own_vs_random.csv; run stages 01-03 first"
        )
    from .report import compare as compare_mod

    try:
        shared, left_out = compare_mod.shared_emotions(compare_mod.load_runs(run_dirs))
    except ValueError as e:
        raise params_mod.ParamError(str(e)) from None
    if any(left_out.values()):
        print(
            f"note: the runs are compared on the emotions they share ({', '.join(shared)}); left out: "
            + "; ".join(f"{n}: {', '.join(v)}" for n, v in left_out.items() if v),
            flush=True,
        )
    out_dir = Path(out) if out else ROOT / "outputs" / "comparison"
    check_out_dir(out_dir)
    nb = NOTEBOOKS / "06_model_comparison.ipynb"
    try:
        seconds = execute(
            nb,
            out_dir / nb.name,
            {"runs": [relative_to_root(Path(r)) for r in run_dirs], "out_dir": relative_to_root(out_dir)},
        )
    except Exception as err:  # papermill's PapermillExecutionError and kernel failures
        raise RuntimeError(_fail_message(nb, err)) from None
    print(f"comparison written to {out_dir} in {seconds:.0f} s")
    return out_dir
