"""Quality per token of `shear run --seeds N` arms (README, "Distillation and importance pruning").

For each arm (a run directory with seed-0 .. seed-K, or one run), the mean eval loss over the domains of the
model being trained at each of continued training's evaluations (the dynamic loader's: before
step 0, which is the pruned model, then every `update_every` steps), against the tokens seen so
far: the pruning stage's (its steps, or the importance calibration) plus the training steps'.
Writes a markdown table (mean [min, max] over the seeds at fixed fractions of the budget and at
the end) to stdout and, when matplotlib is importable, a chart to --chart.

    python3 scripts/quality_per_token.py --chart OUT.png NAME=DIR [NAME=DIR ...]

Standard library only, except the optional chart.
"""
import argparse
import json
import pathlib


def read_jsonl(path):
    if not path.is_file():
        return []
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def seed_curve(seed_dir):
    """[(tokens seen, mean eval loss)] of one seed's continued training."""
    prune = read_jsonl(seed_dir / "prune" / "prune_log.jsonl")
    prune_tokens = sum(l["tokens"] for l in prune)
    imp = seed_dir / "prune" / "importance.json"
    if imp.is_file():
        prune_tokens += json.loads(imp.read_text())["tokens"]
    points, seen = [], prune_tokens
    for l in read_jsonl(seed_dir / "train" / "train_log.jsonl"):
        first = l.get("eval_first_update")
        if first:
            points.append((seen, sum(first["losses"]) / len(first["losses"])))
        seen += l["tokens"]
        up = l.get("domain_update")
        if up:
            points.append((seen, sum(up["losses"]) / len(up["losses"])))
    return points


def final_mean(seed_dir):
    run = json.loads((seed_dir / "run.json").read_text())
    final = run["metrics"]["final"] or run["metrics"]["pruned"]
    losses = [d["loss"] for d in final["domains"]]
    return sum(losses) / len(losses)


def at(curve, tokens):
    """The loss of the last evaluation at or before `tokens` (None before the first)."""
    best = None
    for t, v in curve:
        if t <= tokens:
            best = v
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chart")
    ap.add_argument("arms", nargs="+")
    args = ap.parse_args()
    arms = []
    for spec in args.arms:
        name, path = spec.split("=", 1)
        # A run of `--seeds N` (seed-0 .. seed-K), or one run directory.
        seeds = sorted(pathlib.Path(path).glob("seed-*")) or [pathlib.Path(path)]
        arms.append((name, [seed_curve(s) for s in seeds], [final_mean(s) for s in seeds]))
    total = max(c[-1][0] for _, curves, _ in arms for c in curves)
    fractions = [0.25, 0.5, 0.75]
    fmt = lambda vs: f"{sum(vs) / len(vs):.4f} [{min(vs):.4f}, {max(vs):.4f}]"
    head = [f"{int(f * 100)} % ({f * total / 1e6:.2f} M tokens)" for f in fractions]
    print("| arm | " + " | ".join(head) + " | final eval |")
    print("|---" * (len(head) + 2) + "|")
    for name, curves, finals in arms:
        cells = []
        for f in fractions:
            vs = [v for v in (at(c, f * total) for c in curves) if v is not None]
            cells.append(fmt(vs) if vs else "(pruning)")
        print(f"| {name} | " + " | ".join(cells) + f" | {fmt(finals)} |")
    if args.chart:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("(no matplotlib: no chart)")
            return
        fig, ax = plt.subplots(figsize=(8, 5))
        for name, curves, _ in arms:
            n = min(len(c) for c in curves)
            xs = [sum(c[i][0] for c in curves) / len(curves) / 1e6 for i in range(n)]
            ys = [sum(c[i][1] for c in curves) / len(curves) for i in range(n)]
            lo = [min(c[i][1] for c in curves) for i in range(n)]
            hi = [max(c[i][1] for c in curves) for i in range(n)]
            (line,) = ax.plot(xs, ys, label=name)
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15)
        ax.set_xlabel("tokens seen, pruning + training (millions)")
        ax.set_ylabel("mean eval loss over the domains")
        ax.set_title("quality per token: continued training, mean and range over seeds")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.chart, dpi=110)


if __name__ == "__main__":
    main()
