"""Command line: python -m emolib run | compare | classify | steer | report | lint | check | plan | exercises | site."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import warnings
from pathlib import Path

from . import params as params_mod
from .emotions import normalize

MAX_INPUT_BYTES = 256 * 2**20  # classify --input: a JSON-lines file above this is refused (it is read whole)


def read_jsonl(path: str) -> list[dict]:
    """Read a JSON-lines file of dialogues (field dialogue or text; label optional), checking every line."""
    from .safeio import read_regular

    p = Path(path)
    if not p.exists():
        raise ValueError(f"--input: file not found: {path}")
    if p.is_dir():
        raise ValueError(f"--input: {path} is a folder; give a JSON-lines file")
    try:  # a regular file of at most MAX_INPUT_BYTES (a pipe or /dev/zero is refused, never read)
        content = read_regular(p, "input", MAX_INPUT_BYTES).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"--input: {path} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
            "give a JSON-lines file"
        ) from None
    except ValueError as e:
        raise ValueError(f"--input: {e}") from None
    rows = []
    for n, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"--input: line {n} of {path} is not JSON ({e.msg})") from None
        except RecursionError:
            raise ValueError(f"--input: line {n} of {path} is nested too deeply to be a record") from None
        text = r.get("dialogue", r.get("text")) if isinstance(r, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"--input: line {n} of {path} needs a non-empty 'dialogue' or 'text' string field")
        if r.get("label") is not None:
            r["label"] = normalize(r["label"], f"--input line {n} label")
        rows.append(r)
    if not rows:
        raise ValueError(f"--input: {path} has no dialogues")
    return rows


def check_scale(mode: str, scale: float | None) -> None:
    """--scale is required, finite and in range with --mode scale, and refused otherwise."""
    spec = params_mod.SCHEMA["ablation_scale"]
    if mode != "scale":
        if scale is not None:
            raise ValueError(f"--scale is only used with --mode scale (mode is {mode})")
        return
    if scale is None:
        raise ValueError("--mode scale needs --scale FACTOR (e.g. --scale 0.5)")
    if not math.isfinite(scale) or not spec.low <= scale <= spec.high:
        raise ValueError(f"--scale must be a finite number from {spec.low} to {spec.high}, got {scale}")


def check_output(output: str, input_path: str) -> None:
    """--output must not be the input, and its folder must exist and be writable (checked before any model loads)."""
    out, src = Path(output), Path(input_path)
    if out.is_dir():
        raise ValueError(f"--output: {out} is a folder; give a file path such as {out / 'predictions.jsonl'}")
    if out.resolve() == src.resolve() or (out.exists() and src.exists() and os.path.samefile(out, src)):
        raise ValueError(f"--output: {out} is the input file; write the predictions to another file")
    folder = out.parent
    if not folder.is_dir():
        raise ValueError(
            f"--output: folder {folder} does not exist"
            + (" (it is a file)" if folder.exists() else "; create it first")
        )
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"--output: cannot write into {folder} ({e.strerror or e})") from None


def cmd_classify(a: argparse.Namespace) -> None:
    """Classify a JSON-lines file, optionally with emotion neurons ablated."""
    from . import safeio
    from .causal import metrics
    from .identify import neurons, record
    from .lm import ablate, classify, models
    from .lm.classify import predict

    p = params_mod.load(a.params)
    check_scale(a.mode, a.scale)
    check_output(a.output, a.input)
    rows = read_jsonl(a.input)
    unknown = [r["label"] for r in rows if r.get("label") and r["label"] not in p["emotions"]]
    if unknown:
        raise ValueError(f"--input: label {unknown[0]!r} is not among the run's emotions ({', '.join(p['emotions'])})")
    mask: dict[int, list[int]] = {}
    means = None
    nj = None
    if a.ablate:
        if not a.neurons:
            raise ValueError("--ablate needs --neurons PATH (a neurons.json written by stage 2)")
        nj = safeio.load_neurons_json(a.neurons, model=p["model"])
        ns = neurons.load(a.neurons)
        target = a.ablate if a.ablate == "all" else normalize(a.ablate, "--ablate")
        if target != "all" and target not in ns.emotions:
            raise ValueError(f"--ablate: {target!r} is not in {a.neurons} (has {', '.join(ns.emotions)}, or all)")
        mask = ns.union() if target == "all" else ns.by_layer(target)
        if a.mode == "mean":
            means = record.means_from_counts(Path(a.neurons).parent)
            if means is None:
                raise ValueError("--mode mean needs the run's cache/counts.pt next to neurons.json")
    p["run_dir"] = str(Path(a.output).parent)
    _, _, clf = classify.load_classifier(p)
    if nj is not None:  # the file's FFN shape, and so every [layer, index], must fit the loaded model
        shape = models.ffn_shape(clf.model)
        safeio.check_neurons(nj, a.neurons, shape=shape)
        if means is not None and tuple(means.shape) != tuple(shape):
            raise ValueError(
                f"{Path(a.neurons).parent / 'cache' / 'counts.pt'}: counts of an FFN of "
                f"{means.shape[0]} x {means.shape[1]}; the loaded model has {shape[0]} x {shape[1]}"
            )
    scale = a.scale if a.mode == "scale" else 0.5
    p["ablation_scale"] = scale
    dialogues = [r.get("dialogue", r.get("text")) for r in rows]
    with ablate.ablate(clf.model, mask, a.mode, means, scale):
        preds, scores = predict(clf, dialogues, p["protocol"], p["max_new_tokens"], progress="classifying")
    lines = []
    for i, (r, pr) in enumerate(zip(rows, preds)):
        out = {**r, "prediction": pr}
        if scores is not None:
            out["scores"] = {e: round(float(s), 4) for e, s in zip(clf.labels, scores[i])}
        try:
            lines.append(json.dumps(out, allow_nan=False) + "\n")
        except ValueError:
            raise RuntimeError(
                f"--output: the scores of input line {i + 1} are not finite (NaN or inf); nothing written to {a.output}"
            ) from None
    safeio.atomic_write_text(a.output, "".join(lines))
    labelled = [(r["label"], pr) for r, pr in zip(rows, preds) if r.get("label")]
    print(f"wrote {len(rows)} predictions to {a.output}")
    if clf.truncated:
        print(f"  {clf.truncated} dialogue(s) longer than the model's context were cut from the left (their end kept)")
    if labelled:
        acc = metrics.per_emotion_accuracy([t for t, _ in labelled], [pr for _, pr in labelled], p["emotions"])
        for e, v in acc.items():
            n = sum(1 for t, _ in labelled if t == e) if e != "overall" else len(labelled)
            if n:
                print(f"  {e:<10} accuracy {v:6.1%}  (n={n})")


ALPHA_MAX = 100.0  # the steer command's largest dose, in activation SDs
MAX_PROMPT_CHARS = 4000  # steer --prompt: an opening, well within any model's context


def check_steer_args(a: argparse.Namespace, p: dict) -> tuple[str, str]:
    """Validate steer's arguments before any model loads: (emotion, prompt), or one ValueError line."""
    if not math.isfinite(a.alpha) or not 0 <= a.alpha <= ALPHA_MAX:
        raise ValueError(f"--alpha must be a finite number of SDs from 0 to {ALPHA_MAX:g}, got {a.alpha}")
    if not 1 <= a.n <= 64:
        raise ValueError(f"--n must be from 1 to 64 replies, got {a.n}")
    tokens = params_mod.SCHEMA["steer_max_new_tokens"]
    if a.max_new_tokens is not None and not tokens.low <= a.max_new_tokens <= tokens.high:
        raise ValueError(f"--max-new-tokens must be from {tokens.low:g} to {tokens.high:g}, got {a.max_new_tokens}")
    prompt = a.prompt.replace("\\n", "\n")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(
            f"--prompt is {len(prompt):,} characters; an opening of at most {MAX_PROMPT_CHARS:,} is "
            "steered (a dialogue's first turn or two)"
        )
    if not prompt.strip():
        raise ValueError("--prompt must not be empty (e.g. --prompt 'A: How was the trip?\\nB:')")
    emotion = normalize(a.emotion, "--emotion")
    if emotion not in p["emotions"]:
        raise ValueError(f"--emotion: {emotion!r} is not among the run's emotions ({', '.join(p['emotions'])})")
    return emotion, prompt


def cmd_steer(a: argparse.Namespace) -> None:
    """Print sampled replies to one prompt with one emotion's neurons pushed up by alpha SDs, and their scores."""
    from . import safeio
    from .causal import emotion_scorers, steer
    from .causal.matched import STATS_FILE
    from .identify import neurons
    from .lm import models

    p = params_mod.load(a.params)
    emotion, prompt = check_steer_args(a, p)
    nj = safeio.load_neurons_json(a.neurons, model=p["model"])
    names = neurons.set_names_of(nj)
    if a.set not in names:
        raise ValueError(f"--set: {a.set!r} is not in {a.neurons} (has {', '.join(names)})")
    ns = neurons.load(a.neurons, a.set)
    if emotion not in ns.emotions:
        raise ValueError(
            f"--emotion: {emotion!r} has no neurons in set {a.set} of {a.neurons} (has {', '.join(ns.emotions)})"
        )
    run_dir = Path(a.neurons).parent
    if not (run_dir / STATS_FILE).exists():
        raise ValueError(
            f"--neurons: {run_dir / STATS_FILE} is missing next to it (stage 3 writes each neuron's SD "
            "there); run notebook 03 for this run first"
        )
    emotion_scorers.resolve_scorer(p["model"], p["steer_scorer"])  # the scorer is never the steered model
    p["run_dir"] = str(run_dir)
    p["steer_max_new_tokens"] = a.max_new_tokens or p["steer_max_new_tokens"]
    _, sd = steer.activation_sd(run_dir)
    model, tok = models.load_model(p["model"], p["dtype"], p["device"], p["device_map"], p["seed"])
    from .lm.classify import context_length

    n_ctx, n_prompt = context_length(model), len(tok(prompt).input_ids)
    if n_ctx is not None and n_prompt + p["steer_max_new_tokens"] > n_ctx:
        raise ValueError(
            f"--prompt is {n_prompt} tokens; with {p['steer_max_new_tokens']} new tokens it passes the "
            f"model's context of {n_ctx}; shorten it"
        )
    shape = models.ffn_shape(model)
    safeio.check_neurons(nj, a.neurons, shape=shape)
    if tuple(sd.shape) != tuple(shape):
        raise ValueError(
            f"{run_dir / STATS_FILE}: statistics of an FFN of {sd.shape[0]} x {sd.shape[1]}; the loaded "
            f"model has {shape[0]} x {shape[1]}"
        )
    scorers = emotion_scorers.load_scorers(p, steered=model)
    table = steer.steer_text(model, tok, p, ns.by_layer(emotion), a.alpha, sd, prompt, a.n, scorers)
    print(f"{p['model']} · set {a.set} · {emotion} neurons +{a.alpha:g} SD · prompt {prompt!r}")
    for i, r in table.iterrows():
        flag = f" [{r['degenerate']}]" if r["degenerate"] else ""
        print(f"\n[{i + 1}] {r['reply']!r}{flag}  (perplexity under the unsteered model {r['ppl']:.1f})")
        for name in scorers:
            print(f"    {name}: top {r[f'{name} top']}, P({emotion}) = {r[f'{name} P({emotion})']:.2f}")


def cmd_plan(a: argparse.Namespace) -> None:
    """Print the planner's params lines for a budget (one clear error before loading a model)."""
    p = params_mod.load(a.params)
    minutes = a.budget_min if a.budget_min is not None else p.get("effects_budget_min")
    if minutes is None or not math.isfinite(minutes) or not 0 < minutes <= 100_000:
        raise params_mod.ParamError(
            "plan: --budget-min (or the params' effects_budget_min) must be a number of "
            f"minutes in (0, 100000], got {minutes!r}"
        )
    from .causal import budget, planner

    p = {**p, "run_dir": str(params_mod.ROOT / "outputs" / p["run_name"])}  # its stages 01-03, where they ran
    print(budget.plan_lines(planner.propose(p, minutes)))


def main(argv: list[str] | None = None) -> int:
    """Entry point; bad input exits 2 with one line naming what is wrong."""
    ap = argparse.ArgumentParser(prog="python -m emolib", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the book (notebooks 01-05) on a parameter file")
    r.add_argument("params")
    r.add_argument("--only", nargs="+", help="notebook numbers, e.g. 01 02")
    r.add_argument("--out", help="run folder (default outputs/<run_name>)")
    r.add_argument("--force", action="store_true", help="run into a folder whose params.yaml differs")
    c = sub.add_parser("compare", help="run notebook 06 over finished runs")
    c.add_argument("runs", nargs="+")
    c.add_argument("--out")
    rp = sub.add_parser("report", help="print a markdown summary of finished runs (or write it into a README)")
    rp.add_argument("runs", nargs="+")
    rp.add_argument("--readme", help="replace the results block of this file")
    ln = sub.add_parser("lint", help="check a run's executed notebooks for what a reader should not meet")
    ln.add_argument("runs", nargs="+", help="run folders, e.g. outputs/smollm2-135m")
    k = sub.add_parser("check", help="validate parameter files")
    k.add_argument("params", nargs="+")
    cl = sub.add_parser("classify", help="classify dialogues from a JSON-lines file")
    cl.add_argument("--params", required=True)
    cl.add_argument("--input", required=True)
    cl.add_argument("--output", required=True)
    cl.add_argument("--neurons")
    cl.add_argument("--ablate", help="an emotion, or all")
    cl.add_argument("--mode", default="zero", choices=("zero", "mean", "scale"))
    cl.add_argument("--scale", type=float, help="factor for --mode scale (required with it), 0 to 10")
    st = sub.add_parser("steer", help="sample replies with one emotion's neurons pushed up by alpha SDs, scored")
    st.add_argument("--params", required=True)
    st.add_argument("--neurons", required=True, help="a run's neurons.json (its activation_stats beside it)")
    st.add_argument("--emotion", required=True)
    st.add_argument("--alpha", type=float, required=True, help="SDs added to each neuron, 0 to 100")
    st.add_argument("--prompt", required=True, help="an opening, e.g. 'A: How was the trip?\\nB:' (\\n = newline)")
    st.add_argument("--set", default="paper", help="named set of neurons.json (default paper)")
    st.add_argument("--n", type=int, default=3, help="replies to sample, 1 to 64")
    st.add_argument("--max-new-tokens", type=int, help="tokens per reply (default: the params' steer_max_new_tokens)")
    ex = sub.add_parser("exercises", help="write the exercise copies of the stage notebooks (solutions stubbed)")
    ex.add_argument("--out", default="exercises", help="folder to write them into (default exercises)")
    ex.add_argument("--params", help="set this parameter file's values (and its run folder) in the copies")
    pl = sub.add_parser("plan", help="time this machine and propose stage 3-4's design for a budget (params lines)")
    pl.add_argument("params")
    pl.add_argument(
        "--budget-min",
        type=float,
        help="minutes of scoring for notebooks 03-04 (default: the params' effects_budget_min)",
    )
    si = sub.add_parser("site", help="build static HTML of the committed showcase runs (index, notebooks, figures)")
    si.add_argument("--out", default="site", help="folder to write (default site/; replaced on each build)")
    a = ap.parse_args(argv)
    from . import runner

    try:
        if a.cmd == "run":
            run_dir = runner.run(a.params, [o.zfill(2) for o in a.only] if a.only else None, a.out, a.force)
            print("\n".join(runner.closing_lines(run_dir)))
        elif a.cmd == "lint":
            from .report import lint

            problems = [x for r in a.runs for x in lint.lint_run(r)]
            print("\n".join(problems) if problems else f"lint: no problems in {', '.join(a.runs)}")
            return 1 if problems else 0
        elif a.cmd == "compare":
            runner.compare(a.runs, a.out)
        elif a.cmd == "report":
            from .report import summary as report

            if a.readme:
                report.update_readme(a.readme, a.runs)
                print(f"results block of {a.readme} updated from {', '.join(a.runs)}")
            else:
                print(report.markdown(a.runs))
        elif a.cmd == "check":
            for path in a.params:
                with warnings.catch_warnings(record=True) as caught:  # e.g. an eval file's repeated dialogues
                    warnings.simplefilter("always", UserWarning)
                    params_mod.load(path)
                for w in caught:
                    if issubclass(w.category, UserWarning):
                        print(f"{path}: warning: {w.message}")
                print(f"{path}: ok")
        elif a.cmd == "exercises":
            from . import exercises
            from .runner import check_out_dir

            check_out_dir(Path(a.out))  # one line before any work: the folder must be creatable and writable
            if a.params:
                params_mod.load(a.params)
            for path, names in exercises.write(a.out, params=a.params).items():
                print(f"{path}: " + (", ".join(names) if names else "no exercises"))
        elif a.cmd == "steer":
            cmd_steer(a)
        elif a.cmd == "plan":
            cmd_plan(a)
        elif a.cmd == "site":
            from .report import site

            site.build(a.out)
        else:
            cmd_classify(a)
    except (params_mod.ParamError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
