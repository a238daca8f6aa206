"""Run the numbered notebooks in order with papermill into outputs/<run>/, and the comparison notebook."""

from __future__ import annotations

import json
import time
from pathlib import Path

from . import params as params_mod

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
STAGES = ("01", "02", "03", "04")


def notebook_paths(only: list[str] | None = None) -> list[Path]:
    """The stage notebooks 01-04 in order (or those named by --only)."""
    found = {p.name[:2]: p for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")) if p.name[:2] in STAGES}
    wanted = only or sorted(found)
    missing = [n for n in wanted if n not in found]
    if missing:
        raise params_mod.ParamError(f"--only: unknown notebook(s) {', '.join(missing)}; allowed: {', '.join(sorted(found))}")
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
    pm.execute_notebook(str(nb), str(out), parameters=parameters, kernel_name="python3", progress_bar=True,
                        cwd=str(cwd), log_output=False)
    return time.time() - t


def record_timing(run_dir: Path, name: str, seconds: float) -> None:
    """Record a notebook's wall time: latest per notebook in timings.json, every run in timings-history.jsonl."""
    path, history = run_dir / "timings.json", run_dir / "timings-history.jsonl"
    timings = json.loads(path.read_text()) if path.exists() else {}
    if not history.exists():  # keep what earlier runs recorded before the history existed
        history.write_text("".join(json.dumps({"notebook": k, "seconds": v, "finished": None}) + "\n"
                                   for k, v in timings.items()))
    with open(history, "a") as f:
        f.write(json.dumps({"notebook": name, "seconds": round(seconds, 1),
                            "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    timings[name] = round(seconds, 1)
    path.write_text(json.dumps(timings, indent=1))


def run(params_path: str, only: list[str] | None = None, out: str | None = None) -> Path:
    """Validate the parameters, then run the stage notebooks in order into the run folder."""
    p = params_mod.load(params_path)
    run_dir = Path(out) if out else ROOT / "outputs" / p["run_name"]
    nbs = notebook_paths(only)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "params.yaml").write_text(Path(params_path).read_text())
    for i, nb in enumerate(nbs, 1):
        parameters = params_mod.for_notebook(p, nb.name[:2])
        parameters["run_dir"] = str(run_dir.resolve())
        print(f"[{i}/{len(nbs)}] {nb.name} -> {run_dir / nb.name}", flush=True)
        try:
            seconds = execute(nb, run_dir / nb.name, parameters)
        except Exception as err:  # papermill's PapermillExecutionError and kernel failures
            raise RuntimeError(_fail_message(nb, err)) from None
        record_timing(run_dir, nb.stem, seconds)
        print(f"      done in {seconds:.0f} s", flush=True)
    return run_dir


def compare(run_dirs: list[str], out: str | None = None) -> Path:
    """Run notebooks/05_model_comparison.ipynb over finished run folders."""
    bad = [r for r in run_dirs if not (Path(r) / "neurons.json").exists() or not (Path(r) / "ablation.csv").exists()]
    if len(run_dirs) < 2:
        raise params_mod.ParamError("compare: give at least two run folders (outputs/<run>)")
    if bad:
        raise params_mod.ParamError(f"compare: {', '.join(bad)} lack neurons.json or ablation.csv; run stages 01-03 first")
    out_dir = Path(out) if out else ROOT / "outputs" / "comparison"
    out_dir.mkdir(parents=True, exist_ok=True)
    nb = NOTEBOOKS / "05_model_comparison.ipynb"
    seconds = execute(nb, out_dir / nb.name, {"runs": [str(Path(r).resolve()) for r in run_dirs],
                                               "out_dir": str(out_dir.resolve())})
    print(f"comparison written to {out_dir} in {seconds:.0f} s")
    return out_dir

