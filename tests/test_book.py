"""The whole book runs end to end through papermill on the tiny random model, and resumes without redoing work."""

import json
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from emolib import runner
from emolib.causal import instrument
from emolib.identify import neurons
from emolib.report import findings, lint

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def run_dir(tiny_book):
    """The tiny book's run, executed once per session (see conftest.py)."""
    return tiny_book


def test_every_stage_writes_its_outputs(run_dir):
    for name in ["01_data_construction", "02_neuron_identification", "03_ablation", "04_layer_analysis"]:
        nb = nbformat.read(run_dir / f"{name}.ipynb", as_version=4)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors, name
    from datasets import load_from_disk

    dd = load_from_disk(str(run_dir / "data"))
    assert set(dd) == {"train", "eval"}
    for split in dd.values():
        assert {"topic", "dialogue", "theme", "label", "style", "minilm"} <= set(split.column_names)
        assert set(split["label"]) == {"anger", "disgust", "fear", "happiness", "sadness", "surprise"}
    ns = neurons.load(run_dir / "neurons.json")
    assert ns.meta["n_selected"] == round(0.02 * 4 * 128)
    assert "paper" in ns.meta["named_sets"] and ns.meta["named_sets"]["paper"]["null"]["n_null"] == 5
    assert {"variant", "n_selected", "p_cutoff", "fdr", "jaccard", "beats_null"} <= set(
        pd.read_csv(run_dir / "variants.csv").columns
    )
    assert (run_dir / "probabilities.safetensors").exists() and (run_dir / "neuron_diagnostics.csv").exists()
    # the second method's set: as many neurons per emotion as the paper set, with its null and matched settings
    named = ns.meta["named_sets"]
    assert {e: len(v) for e, v in named["directions"]["neurons"].items()} == {
        e: len(v) for e, v in named["paper"]["neurons"].items()
    }
    assert named["directions"]["null"]["n_null"] == 5 and named["directions"]["settings"] == named["paper"]["settings"]
    from emolib.identify import directions

    assert tuple(directions.load_directions(run_dir).shape) == (6, 4, 64)
    ov = pd.read_csv(run_dir / "own_vs_random.csv")
    assert {
        "set",
        "emotion",
        "n_neurons",
        "n_items",
        "n_random",
        "arm",
        "own_d_margin",
        "own_minus_random_margin",
        "omr_margin_lo",
        "omr_margin_hi",
        "p",
        "p_holm",
        "verdict",
        "power",
        "delta_80",
    } <= set(ov.columns)
    assert set(ov.emotion) == {"anger", "disgust", "fear", "happiness", "sadness", "surprise"}
    assert list(dict.fromkeys(ov["set"]))[:3] == ["attribution", "weights", "paper"]  # the controls come first
    assert "directions" in set(ov["set"])  # stages 3-4 test the directions set like every other named set
    inst = json.loads((run_dir / "instrument.json").read_text())
    assert inst["chosen"]["prompt_style"] in ("chat", "plain")
    design = json.loads((run_dir / "design.json").read_text())
    assert design["intervention"] == "zero/recomputed" == inst["pilot"]["chosen"]  # the params', not the pilot's
    assert inst["pilot"]["quietest"] in instrument.ARMS and "descriptive" in inst["pilot"]["rule"]
    assert set(ov["arm"].dropna()) == {design["intervention"]}
    assert (
        neurons.load(run_dir / "neurons.json", "attribution").meta["named_sets"]["attribution"]["arm"]
        == design["intervention"]
    )
    pt = pd.read_csv(run_dir / "pooled.csv")
    assert set(pt[pt.primary]["set"]) == {"attribution", "weights", "paper", "directions"}
    assert set(pt[pt.primary & (pt.role == "test")]["set"]) == {"paper", "directions"}
    assert {"p_holm", "p_equivalence_holm", "equivalence_bound", "in_sds", "verdict"} <= set(pt.columns)
    tit = pd.read_csv(run_dir / "titration.csv")
    assert sorted(set(tit.share)) == [0.5, 1.0] and len(tit) == 4
    assert (run_dir / "activation_stats.safetensors").exists() and (run_dir / "specificity.csv").exists()
    dose = pd.read_csv(run_dir / "dose_response.csv")
    assert set(dose.rate) == {0.01, 0.02} and {"n_neurons", "own_minus_random_margin"} <= set(dose.columns)
    gc = pd.read_csv(run_dir / "grid_contrasts.csv")
    assert set(gc.contrast) == {"dose slope", "top minus bottom"} and {"p", "p_holm", "verdict", "role"} <= set(gc)
    assert "directions" in set(dose["set"]) and "directions" in set(gc["set"])
    assert (run_dir / "grid_contrasts_per_emotion.csv").exists()
    sw = pd.read_csv(run_dir / "layer_sweep.csv")
    assert set(sw["range"]) == {"bottom", "top", "all"}
    figures = {p.name for p in (run_dir / "figures").glob("*.png")}
    assert {
        "02_layer_heatmap.png",
        "02_null.png",
        "03_own_vs_random_margin.png",
        "04_dose_response.png",
        "04_ranges_paper.png",
        "04_contrasts.png",
        "03_masked_by_true_attribution.png",
        "02_direction_cosines.png",
        "02_direction_stability.png",
        "02_direction_null.png",
        "02_methods_depth.png",
    } <= figures
    for name in ["02_neuron_identification", "03_ablation"]:  # what a reader sees: no widgets, no local paths
        text = (run_dir / f"{name}.ipynb").read_text()
        assert "widget-view+json" not in text and "/outputs/" not in text.replace(str(run_dir), "")
        nb = nbformat.read(run_dir / f"{name}.ipynb", as_version=4)
        assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        assert not lint.figures_shown_twice(nb), f"{name} shows a figure twice"
    assert set(json.loads((run_dir / "timings.json").read_text())) == {
        "01_data_construction",
        "02_neuron_identification",
        "03_ablation",
        "04_layer_analysis",
        "05_steering",
    }
    history = [json.loads(x) for x in (run_dir / "timings-history.jsonl").read_text().splitlines()]
    assert [h["notebook"] for h in history][:5] == [
        "01_data_construction",
        "02_neuron_identification",
        "03_ablation",
        "04_layer_analysis",
        "05_steering",
    ]


def test_findings_are_generated_and_open_every_stage_notebook(run_dir):
    """findings.json holds every stage's generated sentences; each executed stage notebook opens with them and the
    stage's runtime, and the runner's own lint rules pass (figures once, no local paths, parameters collapsed,
    findings first, no stderr warning)."""
    found = json.loads((run_dir / findings.FILE).read_text())
    summaries = {findings.STAGES[n] + findings.SUMMARY for n in findings.SUMMARIES}
    assert set(found) == set(findings.STAGES.values()) | summaries | {"headline"}
    assert found == findings.build(run_dir)  # the file is what the tables say now
    assert found["02_neuron_identification"][0].startswith("The paper's setting:")
    assert found["03_ablation"][0].startswith("Stage 3's answer, one pooled test per named set")
    # stage 3's top cell is its summary: the pooled answer first, then the per-emotion lines
    summary = found["03_ablation" + findings.SUMMARY]
    assert summary[0] == found["03_ablation"][0] and len(summary) < len(found["03_ablation"])
    for name in findings.STAGES.values():
        nb = nbformat.read(run_dir / f"{name}.ipynb", as_version=4)
        top = nb.cells[0]
        assert (
            top.cell_type == "markdown" and lint.FINDINGS_TITLE in top.source and "Runtime: this run took" in top.source
        )
        assert all(f"- {line}" in top.source for line in found.get(name + findings.SUMMARY) or found[name])
        assert sum(lint.FINDINGS_TITLE in c.source for c in nb.cells) == 1
        for rule in (
            lint.figures_shown_twice,
            lint.local_paths,
            lint.parameters_collapsed,
            lint.findings_first,
            lint.stderr_warnings,
        ):
            assert rule(nb) == [], (name, rule.__name__)
    lines = runner.closing_lines(run_dir)
    assert len(lines) == 3 and lines[1].startswith("Result: Stage 3's answer") and "make lab" in lines[2]


def test_tiny_book_passes_the_whole_lint(run_dir):
    """Every lint rule on the tiny book's executed notebooks (the course headers and questions come from the
    notebooks' sources)."""
    problems = lint.lint_run(run_dir)
    assert not problems, f"by rule {lint.by_rule(problems)}:\n" + "\n".join(problems)


def test_steering_stage_writes_its_tables(run_dir):
    nb = nbformat.read(run_dir / "05_steering.ipynb", as_version=4)
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    tests = pd.read_csv(run_dir / "steering_tests.csv")
    assert set(tests.emotion) <= {"anger", "disgust", "fear", "happiness", "sadness", "surprise"} and len(tests)
    assert {"own", "own_minus_random", "p", "p_holm", "verdict", "power", "n_random"} <= set(tests)
    assert set(tests.scorer) == {"minilm"} and set(tests.intervention) <= {"paper", "direction"}
    claims = pd.read_csv(run_dir / "steering_claims.csv")
    assert (claims.claim == "no claim (one scorer only)").all()  # the tiny book has one scorer
    assert (run_dir / "steering_doses.csv").exists() and (run_dir / "steering_samples.csv").exists()
    assert (run_dir / "figures" / "05_steering_tradeoff.png").exists()
    text = (run_dir / "05_steering.ipynb").read_text()
    assert "headless run" in text and "widget-view+json" not in text


def test_rerun_reuses_cached_work(run_dir, tiny_book_rerun):
    """tiny_book_rerun is a copy of run_dir (modification times kept), rerun with only=["02", "03", "04"], with
    the scorer's throughput forced far from the first run's (EMOLIB_THROUGHPUT): the same params give the same
    design, items, random sets and tables."""
    rerun = tiny_book_rerun
    first_rate = json.loads((run_dir / "scoring_time.json").read_text())["throughput"]
    assert json.loads((rerun / "scoring_time.json").read_text())["throughput"] == 0.5 != first_rate
    for name in (
        "design.json",
        "random_sets.csv",
        "own_vs_random.csv",
        "pooled.csv",
        "titration.csv",
        "grid_contrasts.csv",
        "grid_contrasts_per_emotion.csv",
        "specificity.csv",
    ):
        assert (rerun / name).read_bytes() == (run_dir / name).read_bytes(), name
    assert (rerun / "cache" / "scores.jsonl").read_text() == (run_dir / "cache" / "scores.jsonl").read_text()
    assert (rerun / "cache" / "counts.pt").stat().st_mtime == (run_dir / "cache" / "counts.pt").stat().st_mtime
    history = [json.loads(x)["notebook"] for x in (rerun / "timings-history.jsonl").read_text().splitlines()]
    assert history[len(runner.STAGES) :] == ["02_neuron_identification", "03_ablation", "04_layer_analysis"]  # rerun


def test_every_verdict_is_recomputed_from_random_sets_csv(run_dir):
    """random_sets.csv alone gives every per-emotion p, interval, Holm p and verdict of own_vs_random.csv, and the
    pooled table of every arm."""
    from emolib.causal import pooled

    rs = pd.read_csv(run_dir / "random_sets.csv")
    design = json.loads((run_dir / "design.json").read_text())
    arm, delta = design["intervention"], 0.25
    ov = pd.read_csv(run_dir / "own_vs_random.csv").dropna(subset=["p"]).set_index(["set", "emotion"])
    per = pooled.per_emotion(rs, arm, delta, 0.25).set_index(["set", "emotion"])
    assert set(per.index) == set(ov.index)
    for k, r in ov.iterrows():
        assert per.loc[k, "p"] == pytest.approx(r.p, rel=1e-9, abs=1e-12)
        assert per.loc[k, "p_holm"] == pytest.approx(r.p_holm, rel=1e-9, abs=1e-12)
        assert (per.loc[k, "lo"], per.loc[k, "hi"]) == pytest.approx((r.omr_margin_lo, r.omr_margin_hi), abs=1e-9)
        assert per.loc[k, "power"] == pytest.approx(r.power, abs=1e-9) or not np.isfinite(r.power)
    saved = pd.read_csv(run_dir / "pooled.csv")
    again = pooled.pooled_all(rs, list(instrument.ARMS), arm, delta, 0.25)
    cols = ["own_minus_random", "lo", "hi", "p", "p_holm", "p_equivalence_holm", "equivalence_bound"]
    assert np.allclose(again[cols].to_numpy(float), saved[cols].to_numpy(float), equal_nan=True, atol=1e-12)
    assert again.verdict.fillna("").tolist() == saved.verdict.fillna("").tolist()


def test_comparison_notebook(run_dir, tmp_path):
    other = tmp_path / "copy-run"
    shutil.copytree(run_dir, other, ignore=shutil.ignore_patterns("cache", "data"))
    out = runner.compare([str(run_dir), str(other)], out=str(tmp_path / "comparison"))
    nb = nbformat.read(out / "06_model_comparison.ipynb", as_version=4)
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert (out / "figures" / "06_depth_profiles.png").exists()
    assert (out / "figures" / f"06_methods_depth_{run_dir.name}.png").exists()
    text = "".join(
        "".join(o.get("text", "")) + str(o.get("data", {}).get("text/markdown", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    assert "own vs random, `directions` set" in text  # the generated side-by-side reading


def test_failing_notebook_is_named(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text((ROOT / "params/test-tiny.yaml").read_text())
    with pytest.raises(RuntimeError, match="notebook 02_neuron_identification.ipynb failed in cell"):
        runner.run(str(bad), only=["02"], out=str(tmp_path / "empty-run"))  # no stage-1 data there


def test_readme_results_block_matches_the_committed_runs():
    """The README's numbers are generated from the committed outputs, never typed in."""
    from emolib.report import summary as report

    runs = [ROOT / "outputs" / "smollm2-135m", ROOT / "outputs" / "gemma3-270m"]
    if not all((r / "own_vs_random.csv").exists() for r in runs):
        pytest.skip("the showcase runs are not committed in this checkout")
    text = (ROOT / "README.md").read_text()
    block = text.split(report.START, 1)[1].split(report.END, 1)[0]
    assert block.strip() == report.markdown(runs).strip()


def test_clean_outputs_keeps_no_local_folder_in_the_metadata(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {
        "input_path": str(ROOT / "notebooks" / "03_ablation.ipynb"),
        "output_path": str(ROOT / "outputs" / "x" / "03_ablation.ipynb"),
    }
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    runner.clean_outputs(path)
    pm = nbformat.read(path, as_version=4).metadata["papermill"]
    assert pm["input_path"] == "notebooks/03_ablation.ipynb" and pm["output_path"] == "outputs/x/03_ablation.ipynb"


def test_clean_outputs_strips_every_local_path(tmp_path):
    """Parameters, sources and outputs: under the project shown relative to it, under /tmp or the home by name."""
    home = str(Path.home())
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {
        "parameters": {
            "run_dir": "/tmp/pytest-of-x/pytest-1/book0/run",
            "runs": [str(ROOT / "outputs" / "a"), f"{home}/runs/b"],
        }
    }
    cell = nbformat.v4.new_code_cell(
        "run_dir = '/tmp/pytest-of-x/pytest-1/book0/run'", metadata={"tags": ["injected-parameters"]}
    )
    cell.outputs = [nbformat.v4.new_output("stream", text=f"outputs in {ROOT}/outputs/a and /tmp/q/r\n")]
    nb.cells = [cell]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    runner.clean_outputs(path)
    out = nbformat.read(path, as_version=4)
    assert out.metadata.papermill.parameters == {"run_dir": "run", "runs": ["outputs/a", "b"]}
    assert out.cells[0].source == "run_dir = 'run'" and out.cells[0].outputs[0].text == "outputs in outputs/a and r\n"
    assert out.cells[0].metadata.jupyter.source_hidden is True
    assert lint.local_paths(out) == []
