"""
Regenerate the measured tables of REPRODUCTION.md: Tab. 4 (absorbing against autoregressive, several seeds),
Tab. 3 (sampling steps) and Sec. 4.3 (temperature), by running the project's own commands and reading their
--json output. Prints the tables in markdown.

    python reproduce.py                   # the page's settings: 3 seeds, 500 samples (about an hour, 2 CPU cores)
    python reproduce.py --quick           # tiny models and data, a few minutes: checks the pipeline only

Needs the quick-start tokenizer (python vqgan.py, OUT/vqgan.pt and OUT/codes.npy) and uses the quick-start prior
(OUT/absorbing.pt, trained here if absent) for Tab. 3 and Sec. 4.3; --quick trains tiny ones of both. Tab. 4's
priors are unconditional (--class-dropout 1), as the paper's, in OUT/absorbing_SEED and OUT/autoregressive_SEED.
"""
import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path


def run(*argv):
    """Run one of the project's scripts; its --json output as a dict (or None for scripts that print none)."""
    done = subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent)
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(map(str, argv))} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout) if "--json" in argv else None


def judged(ckpt, out, n, *flags):
    """Sample n images with sample.py, then judge and score them with evaluate.py against the shapes data."""
    run("sample.py", "--ckpt", ckpt, "--n-samples", n, "--batch-size", 250, "--images", out, "--out", f"{out}.png",
        *flags)
    return run("evaluate.py", "--real", "shapes", "--fake", out, "--features", "random", "--num", n, "--json")


def spread(values, fmt="{:.3f}"):
    """'mean +- sd (n)' of a list of numbers, or the one number."""
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} +- {fmt.format(statistics.stdev(values))} ({len(values)} seeds)"


def main(args):
    out = Path(args.out_dir)
    codes = out / "codes.npy"
    small = ["--n-layer", "1", "--n-embd", "32", "--n-head", "2"] if args.quick else []
    if args.quick:  # a tiny tokenizer of its own
        run("vqgan.py", "--out-dir", out, "--n-shapes", 64, "--max-steps", 3, "--batch-size", 8)
    elif not codes.is_file():
        raise SystemExit(f"error: {codes} does not exist; run python vqgan.py first (the quick-start tokenizer)")
    steps = ["--max-steps", 3 if args.quick else 2000, "--sample-every", 0, *small]

    rows = []  # Tab. 4
    for model in ("absorbing", "autoregressive"):
        found = {"bits": [], "valid": [], "fid": [], "precision": [], "recall": []}
        for seed in range(args.seeds):
            run_dir = out / f"{model}_{seed}"
            run("absorbing.py", "--codes", codes, "--out-dir", run_dir, "--model", model, "--class-dropout", 1,
                "--seed", seed, *steps)
            likelihood = run("evaluate.py", "--ckpt", run_dir / "absorbing.pt", "--codes", codes, "--json")
            found["bits"].append(likelihood.get("nll_bits_per_token", likelihood.get("elbo_bits_per_token")))
            scores = judged(run_dir / "absorbing.pt", run_dir / "fake", args.n_samples)
            for key in ("fid", "precision", "recall"):
                found[key].append(scores[key])
            found["valid"].append(scores["shape_valid"])
        what = "exact NLL" if model == "autoregressive" else "ELBO (bound)"
        rows.append(f"| {model} | {what} {spread(found['bits'])} | {spread(found['valid'], '{:.1%}')} | "
                    f"{spread(found['fid'], '{:.2f}')} | {spread(found['precision'], '{:.2f}')} | "
                    f"{spread(found['recall'], '{:.2f}')} |")
    print("Tab. 4\n\n| prior | bits per token | valid | FID | precision | recall |\n|---|---|---|---|---|---|")
    print("\n".join(rows))

    prior = out / "absorbing.pt"  # Tab. 3 and Sec. 4.3: the quick-start prior (class-conditional), trained if absent
    if args.quick or not prior.is_file():
        run("absorbing.py", "--codes", codes, "--out-dir", out, *steps)
    print("\nTab. 3\n\n| S | valid | FID | precision | recall |\n|---|---|---|---|---|")
    for S in args.steps:
        s = judged(prior, out / f"steps_{S}", args.n_samples, "--sample-steps", S)
        print(f"| {S} | {s['shape_valid']:.1%} | {s['fid']:.2f} | {s['precision']:.2f} | {s['recall']:.2f} |")
    print("\nSec. 4.3\n\n| temperature | valid | FID | precision | recall |\n|---|---|---|---|---|")
    for tau in args.temperatures:
        s = judged(prior, out / f"temperature_{tau}", args.n_samples, "--temperature", tau)
        print(f"| {tau} | {s['shape_valid']:.1%} | {s['fid']:.2f} | {s['precision']:.2f} | {s['recall']:.2f} |")


def get_args(argv=None):
    p = argparse.ArgumentParser(description="Regenerate REPRODUCTION.md's tables",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out-dir", default="out", help="where the tokenizer is and the runs go")
    p.add_argument("--quick", action="store_true", help="tiny settings (a pipeline check; the numbers mean nothing)")
    p.add_argument("--seeds", type=int, default=None, help="training seeds per prior (default 3; --quick 2)")
    p.add_argument("--n-samples", type=int, default=None, help="samples per row (default 500; --quick 16)")
    p.add_argument("--steps", type=int, nargs="+", default=None, help="S of Tab. 3 (default 64 32 16 8; --quick 64 16)")
    p.add_argument("--temperatures", type=float, nargs="+", default=None,
                   help="temperatures of Sec. 4.3 (default 1.0 0.9 0.8 0.7; --quick 1.0 0.7)")
    args = p.parse_args(argv)
    quick = dict(seeds=2, n_samples=16, steps=[64, 16], temperatures=[1.0, 0.7])
    full = dict(seeds=3, n_samples=500, steps=[64, 32, 16, 8], temperatures=[1.0, 0.9, 0.8, 0.7])
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.seeds < 1 or args.n_samples < 2:
        p.error("--seeds must be >= 1 and --n-samples >= 2")
    return args


if __name__ == "__main__":
    main(get_args())
