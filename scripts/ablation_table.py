#!/usr/bin/env python3
"""The ablation table of README from runs over seeds (scripts/mini_reproduction.sh).

    scripts/ablation_table.py OUT BASE NAME...

OUT/BASE is a `shear run --compare --seeds N` directory; each OUT/NAME is a `shear run --seeds N`
directory of one ablation's dynamic arm over the same seeds. Every row is compared with BASE's
static arm seed by seed, under the criterion that `shear run` states in its report. Standard
library only.
"""
import json
import sys
from pathlib import Path


def load(d):
    return json.loads((Path(d) / "run.json").read_text())


def spread(v):
    return f"{sum(v) / len(v):.4f} [{min(v):.4f}, {max(v):.4f}]"


def gap_spread(v):
    return f"{sum(v) / len(v):+.4f} [{min(v):+.4f}, {max(v):+.4f}]"


def main():
    out, base_name, names = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    base = load(out / base_name)
    kinds = [r["kind"] for r in base["references"]]
    arms = {a["arm"]: a for a in base["arms"]}
    static = arms["static"]
    n = len(base["runs"])

    def settings(run):
        r = run["runs"][0]["summary"]["recipe"]
        ref = r["dynamic"]["reference"]
        ref = ref if isinstance(ref, str) else next(iter(ref))
        return (f"{ref}, {r['dynamic']['update_rule']}, every {r['prune']['update_every']}/"
                f"{r['train']['update_every']}, train from {r['train']['proportions']}")

    print(f"| run | settings (reference, rule, update every prune/train steps, train start) | "
          f"mean loss | largest gap ({kinds[0]}) | largest gap (source) | "
          f"seeds with a smaller gap ({kinds[0]}) than static | (b) holds |")
    print("|---|---|---|---|---|---|---|")
    rows = [(base_name, base)] + [(m, load(out / m)) for m in names]
    for name, run in rows:
        dyn = next(a for a in run["arms"] if a["arm"] == "dynamic")
        # The gaps are re-read against the base's references (an ablation of the reference
        # itself lists only the source's).
        finals = [
            [d["loss"] for d in (r["summary"]["metrics"].get("final") or r["summary"]["metrics"]["pruned"])["domains"]]
            for r in run["runs"]
        ]
        gaps = [[max(l - x for l, x in zip(f, ref["losses"])) for ref in base["references"]]
                for f in finals]
        means = [sum(f) / len(f) for f in finals]
        wins = sum(gaps[k][0] < static["seed_largest_gap"][k][0] for k in range(n))
        worse = sum(means) / n - static["mean_loss"]["mean"]
        seed_spread = max(max(means) - min(means), static["mean_loss"]["max"] - static["mean_loss"]["min"])
        holds = wins >= n // 2 + 1 and worse <= seed_spread
        print(f"| {name} | {settings(run)} | {spread(means)} | {gap_spread([g[0] for g in gaps])} | "
              f"{gap_spread([g[-1] for g in gaps])} | {wins} of {n} | {'yes' if holds else 'no'} |")
    for arm in ("static", "scratch"):
        a = arms[arm]
        print(f"| {arm} | (the base's) | {spread(a['seed_mean_loss'])} | "
              f"{gap_spread([g[0] for g in a['seed_largest_gap']])} | "
              f"{gap_spread([g[-1] for g in a['seed_largest_gap']])} | | |")


if __name__ == "__main__":
    main()
