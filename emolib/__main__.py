"""Command line: python -m emolib run | compare | classify | report | check."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import params as params_mod
from .emotions import normalize


def read_jsonl(path: str) -> list[dict]:
    """Read a JSON-lines file of dialogues (field dialogue or text; label optional), checking every line."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"--input: file not found: {path}")
    rows = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"--input: line {n} of {path} is not JSON ({e.msg})") from None
        text = r.get("dialogue", r.get("text")) if isinstance(r, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"--input: line {n} of {path} needs a non-empty 'dialogue' or 'text' string field")
        if r.get("label") is not None:
            r["label"] = normalize(r["label"], f"--input line {n} label")
        rows.append(r)
    if not rows:
        raise ValueError(f"--input: {path} has no dialogues")
    return rows


def cmd_classify(a: argparse.Namespace) -> None:
    """Classify a JSON-lines file, optionally with emotion neurons ablated."""
    from . import ablate, evaluate, metrics, neurons
    from .classify import predict
    p = params_mod.load(a.params)
    rows = read_jsonl(a.input)
    unknown = [r["label"] for r in rows if r.get("label") and r["label"] not in p["emotions"]]
    if unknown:
        raise ValueError(f"--input: label {unknown[0]!r} is not among the run's emotions ({', '.join(p['emotions'])})")
    mask: dict[int, list[int]] = {}
    means = None
    if a.ablate:
        if not a.neurons:
            raise ValueError("--ablate needs --neurons PATH (a neurons.json written by stage 2)")
        ns = neurons.load(a.neurons)
        target = a.ablate if a.ablate == "all" else normalize(a.ablate, "--ablate")
        if target != "all" and target not in ns.emotions:
            raise ValueError(f"--ablate: {target!r} is not in {a.neurons} (has {', '.join(ns.emotions)}, or all)")
        mask = ns.union() if target == "all" else ns.by_layer(target)
        if a.mode == "mean":
            means = evaluate.means_from_counts(Path(a.neurons).parent)
            if means is None:
                raise ValueError("--mode mean needs the run's cache/counts.pt next to neurons.json")
    p["run_dir"] = str(Path(a.output).parent)
    _, _, clf = evaluate.load_classifier(p)
    p["ablation_scale"] = a.scale
    dialogues = [r.get("dialogue", r.get("text")) for r in rows]
    with ablate.ablate(clf.model, mask, a.mode, means, a.scale):
        preds, scores = predict(clf, dialogues, p["protocol"], p["max_new_tokens"], progress="classifying")
    with open(a.output, "w") as f:
        for i, (r, pr) in enumerate(zip(rows, preds)):
            out = {**r, "prediction": pr}
            if scores is not None:
                out["scores"] = {e: round(float(s), 4) for e, s in zip(clf.labels, scores[i])}
            f.write(json.dumps(out) + "\n")
    labelled = [(r["label"], pr) for r, pr in zip(rows, preds) if r.get("label")]
    print(f"wrote {len(rows)} predictions to {a.output}")
    if labelled:
        acc = metrics.per_emotion_accuracy([t for t, _ in labelled], [pr for _, pr in labelled], p["emotions"])
        for e, v in acc.items():
            n = sum(1 for t, _ in labelled if t == e) if e != "overall" else len(labelled)
            if n:
                print(f"  {e:<10} accuracy {v:6.1%}  (n={n})")


def main(argv: list[str] | None = None) -> int:
    """Entry point; bad input exits 2 with one line naming what is wrong."""
    ap = argparse.ArgumentParser(prog="python -m emolib", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the book (notebooks 01-04) on a parameter file")
    r.add_argument("params")
    r.add_argument("--only", nargs="+", help="notebook numbers, e.g. 01 02")
    r.add_argument("--out", help="run folder (default outputs/<run_name>)")
    c = sub.add_parser("compare", help="run notebook 05 over finished runs")
    c.add_argument("runs", nargs="+")
    c.add_argument("--out")
    rp = sub.add_parser("report", help="print a markdown summary of finished runs (or write it into a README)")
    rp.add_argument("runs", nargs="+")
    rp.add_argument("--readme", help="replace the results block of this file")
    k = sub.add_parser("check", help="validate parameter files")
    k.add_argument("params", nargs="+")
    cl = sub.add_parser("classify", help="classify dialogues from a JSON-lines file")
    cl.add_argument("--params", required=True)
    cl.add_argument("--input", required=True)
    cl.add_argument("--output", required=True)
    cl.add_argument("--neurons")
    cl.add_argument("--ablate", help="an emotion, or all")
    cl.add_argument("--mode", default="zero", choices=("zero", "mean", "scale"))
    cl.add_argument("--scale", type=float, default=0.5)
    a = ap.parse_args(argv)
    from . import runner
    try:
        if a.cmd == "run":
            runner.run(a.params, [o.zfill(2) for o in a.only] if a.only else None, a.out)
        elif a.cmd == "compare":
            runner.compare(a.runs, a.out)
        elif a.cmd == "report":
            from . import report
            if a.readme:
                report.update_readme(a.readme, a.runs)
                print(f"results block of {a.readme} updated from {', '.join(a.runs)}")
            else:
                print(report.markdown(a.runs))
        elif a.cmd == "check":
            for path in a.params:
                params_mod.load(path)
                print(f"{path}: ok")
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
