"""
Regenerate the measured tables of the README and REPRODUCTION.md by running the project's own commands and reading
their --json output: the README's quick start (its time, valid reconstructions and samples), Tab. 4 (absorbing
against autoregressive), Fig. 5 (reweighted ELBO against ELBO), Tab. 3 (sampling steps), Sec. 4.3 (temperature),
Tab. 5 (DiffAug and the clamp) and Fig. 4 (larger than training). Prints the tables in markdown.

    python reproduce.py                   # the page's settings: 3 seeds, 500 samples (about two hours, 2 CPU cores)
    python reproduce.py --claims tab3 sec4.3      # some of them
    python reproduce.py --claims quickstart       # the README's quick start into OUT, timed and judged
    python reproduce.py --quick           # tiny models and data, a few minutes: checks the pipeline only

Needs the quick-start tokenizer (python vqgan.py, OUT/vqgan.pt and OUT/codes.npy; the quickstart claim trains it
and the prior anew, first) and uses the quick-start prior (OUT/absorbing.pt, trained here if absent) for Tab. 3,
Sec. 4.3 and Fig. 4; --quick trains tiny ones of both.
The priors of Tab. 4 and Fig. 5 are unconditional (--class-dropout 1), as the paper's: OUT/absorbing_SEED,
OUT/autoregressive_SEED, OUT/elbo_SEED. Tab. 5's tokenizers go to OUT/tab5_NAME_SEED.
"""
import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import common as C

CLAIMS = ("quickstart", "tab4", "fig5", "tab3", "sec4.3", "tab5", "fig4", "mask_replace")
TAB5 = [("DiffAug, clamp (the paper's)", "aug_clamp", []),
        ("DiffAug, no clamp", "aug_noclamp", ["--lambda-max", "1e4"]),
        ("no DiffAug, clamp", "noaug_clamp", ["--diffaug", "off"]),
        ("neither", "noaug_noclamp", ["--diffaug", "off", "--lambda-max", "1e4"]),
        ("no GAN at all (reference)", "nogan", ["--disc-start", "100000"])]
OLD_SAMPLER = ["--sampler", "random", "--counts", "binomial"]  # the sampler the page's tables were measured with


def run(*argv):
    """Run one of the project's scripts; its --json output as a dict, or what it printed."""
    done = subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent)
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(map(str, argv))} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout) if "--json" in argv else done.stdout


def judged(ckpt, out, n, *flags, crop_stride=None, n_real=None):
    """Sample n images with sample.py, then judge and score them (or their crops) with evaluate.py against n (or
    n_real) shapes images; with what sample.py printed (its time per image and its share of revised codes)."""
    printed = run("sample.py", "--ckpt", ckpt, "--n-samples", n, "--batch-size", 250, "--images", out, "--out",
                  f"{out}.png", *flags)
    crops = ["--crop-stride", crop_stride] if crop_stride else []
    return dict(run("evaluate.py", "--real", "shapes", "--fake", out, "--features", "random", "--num", n_real or n,
                    *crops, "--json"), printed=printed)


def spread(values, fmt="{:.3f}"):
    """'mean +- sd (n)' of a list of numbers, or the one number."""
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} +- {fmt.format(statistics.stdev(values))} ({len(values)} seeds)"


def table(title, header, rows):
    print(f"\n{title}\n\n| {' | '.join(header)} |\n|{'---|' * len(header)}\n" + "\n".join(rows))


def sample_row(label, s):
    return f"| {label} | {s['shape_valid']:.1%} | {s['fid']:.2f} | {s['precision']:.2f} | {s['recall']:.2f} |"


def train_prior(out, codes, steps, seed, *flags):
    """An unconditional prior trained by absorbing.py in `out` (once: an existing checkpoint is reused)."""
    if not (out / "absorbing.pt").is_file():
        run("absorbing.py", "--codes", codes, "--out-dir", out, "--class-dropout", 1, "--seed", seed, *steps, *flags)
    return out / "absorbing.pt"


def cpu_description():
    """The CPU the numbers were measured on: its model, its widest vector instructions, and PyTorch's threads."""
    import torch
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    vector = "AVX512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    bf16 = ", bf16 instructions (bf16 autocast on by default)" if flags & {"avx512_bf16", "amx_bf16"} else ""
    return f"{model}, {vector}{bf16}, {torch.get_num_threads()} threads"


def quickstart(args, out, small):
    """The README's quick start into OUT with the defaults (as python vqgan.py && python absorbing.py && python
    sample.py writes out/), each stage timed (wall-clock, start-up included), then judged: the VQGAN's
    reconstructions of held-out images, and samples at S = T and S = T/4. Along the prior's training, a copy of its
    weights every --curve-every steps is judged on --curve-samples samples at S = T: time to quality."""
    run_dir = out
    tiny = ["--n-shapes", 64, "--max-steps", 3, "--batch-size", 8] if args.quick else []
    stages = {"VQGAN": ["vqgan.py", "--out-dir", run_dir, *tiny],
              "prior": ["absorbing.py", "--codes", run_dir / "codes.npy", "--out-dir", run_dir, *small,
                        "--keep-every", args.curve_every, *(["--max-steps", 3] if args.quick else [])],
              "64 samples": ["sample.py", "--ckpt", run_dir / "absorbing.pt", "--out", run_dir / "samples.png"]}
    seconds = {}
    for name, argv in stages.items():
        start = time.perf_counter()
        run(*argv)
        seconds[name] = time.perf_counter() - start
    T = int(np.prod(np.load(run_dir / "codes.npy", mmap_mode="r").shape[1:]))  # T = N = h w, the default
    found = {"reconstructions of held-out images": run("evaluate.py", "--vqgan", run_dir / "vqgan.pt", "--real",
                                                        "shapes", "--features", "random", "--num", args.n_samples,
                                                        "--json")}
    for S in (T, T // 4):
        found[f"samples, S = {S}"] = judged(run_dir / "absorbing.pt", run_dir / f"fake_{S}", args.n_samples,
                                           "--sample-steps", S)
    rows = [f"| {what} | {s['shape_valid']:.1%} | {' / '.join(map(str, s['shape_kinds'].values()))} | "
            f"{' / '.join(map(str, s['shape_invalid'].values()))} |" for what, s in found.items()]
    times = ", ".join(f"{name} {t:.0f} s" for name, t in seconds.items())
    rows.append(f"| the quick start's time | {sum(seconds.values()) / 60:.1f} minutes | {times} | |")
    some = found["reconstructions of held-out images"]
    cpu = cpu_description()
    table(f"Quick start ({args.n_samples} images a row; {cpu})", ["images", "valid", " / ".join(some["shape_kinds"])
          + " (valid ones)", "broken first: " + " / ".join(some["shape_invalid"])], rows)
    total = C.load_checkpoint(run_dir / "absorbing.pt", "absorbing")["step"]
    curve = []
    for snapshot in sorted(run_dir.glob("absorbing_[0-9]*.pt")):  # the prior's weights every --curve-every steps
        step = int(snapshot.stem.split("_")[1])
        valid = judged(snapshot, run_dir / f"curve_{step}", args.curve_samples, "--sample-steps", T)["shape_valid"]
        curve.append((step, (seconds["VQGAN"] + seconds["prior"] * step / total) / 60, valid))  # minutes so far
    reached = next((f"{minutes:.1f} minutes (step {step})" for step, minutes, valid in curve if valid >= 0.9),
                   "not reached")
    table(f"Time to quality: valid samples at S = {T} ({args.curve_samples} a row) along the prior's training, minutes "
          f"from the start of the quick start; 90% valid: {reached} ({cpu})", ["step", "minutes", "valid"],
          [f"| {step} | {minutes:.1f} | {valid:.1%} |" for step, minutes, valid in curve])


def tab4(args, out, codes, steps):
    rows = []
    for model in ("absorbing", "autoregressive"):
        found = {"bits": [], "valid": [], "fid": [], "precision": [], "recall": []}
        for seed in range(args.seeds):
            ckpt = train_prior(out / f"{model}_{seed}", codes, steps, seed, "--model", model)
            likelihood = run("evaluate.py", "--ckpt", ckpt, "--codes", codes, "--json")
            found["bits"].append(likelihood.get("nll_bits_per_token", likelihood.get("elbo_bits_per_token")))
            scores = judged(ckpt, ckpt.parent / "fake", args.n_samples, *(OLD_SAMPLER if model == "absorbing" else []))
            for key in ("fid", "precision", "recall"):
                found[key].append(scores[key])
            found["valid"].append(scores["shape_valid"])
        what = "exact NLL" if model == "autoregressive" else "ELBO (bound)"
        rows.append(f"| {model} | {what} {spread(found['bits'])} | {spread(found['valid'], '{:.1%}')} | "
                    f"{spread(found['fid'], '{:.2f}')} | {spread(found['precision'], '{:.2f}')} | "
                    f"{spread(found['recall'], '{:.2f}')} |")
    table("Tab. 4", ["prior", "bits per token", "valid", "FID", "precision", "recall"], rows)


def fig5(args, out, codes, steps):
    curves, valid = {}, {}
    for loss, name in (("reweighted_elbo", "absorbing"), ("elbo", "elbo")):
        for seed in range(args.seeds):
            ckpt = train_prior(out / f"{name}_{seed}", codes, steps, seed, "--loss", loss)
            log = [json.loads(line) for line in (ckpt.parent / "absorbing_log.jsonl").read_text().splitlines()]
            for entry in log:
                if "val_elbo" in entry:
                    curves.setdefault((loss, entry["step"]), []).append(entry["val_elbo"])
            scores = judged(ckpt, ckpt.parent / "fake", args.n_samples, *OLD_SAMPLER)
            valid.setdefault(loss, []).append(scores["shape_valid"])
    rows = [f"| {step} | {spread(curves[('reweighted_elbo', step)])} | {spread(curves[('elbo', step)])} |"
            for step in sorted({step for _, step in curves})]
    rows.append(f"| valid samples | {spread(valid['reweighted_elbo'], '{:.1%}')} | {spread(valid['elbo'], '{:.1%}')} |")
    table("Fig. 5", ["step", "validation ELBO, reweighted ELBO (Eq. 7)", "validation ELBO, ELBO (Eq. 6)"], rows)


def tab3(args, out, prior):
    rows = [sample_row(S, judged(prior, out / f"steps_{S}", args.n_samples, "--sample-steps", S, *OLD_SAMPLER))
            for S in args.steps]
    table("Tab. 3", ["S", "valid", "FID", "precision", "recall"], rows)


def sec43(args, out, prior):
    rows = [sample_row(tau, judged(prior, out / f"temperature_{tau}", args.n_samples, "--temperature", tau,
                                   *OLD_SAMPLER))
            for tau in args.temperatures]
    table("Sec. 4.3", ["temperature", "valid", "FID", "precision", "recall"], rows)


def tab5(args, out):
    rows = []
    tiny = ["--n-shapes", 64, "--max-steps", 3, "--batch-size", 8, "--disc-start", 1] if args.quick else []
    for name, folder, flags in TAB5:
        found = {"reconstruction_fid": [], "psnr": [], "shape_valid": []}
        for seed in range(args.vqgan_seeds):
            run_dir = out / f"tab5_{folder}_{seed}"
            if not (run_dir / "vqgan.pt").is_file():  # GroupNorm, as when the table was measured
                run("vqgan.py", "--out-dir", run_dir, "--seed", seed, "--norm", "group", *tiny, *flags)
            scores = run("evaluate.py", "--vqgan", run_dir / "vqgan.pt", "--real", "shapes", "--features", "random",
                         "--num", args.n_samples, "--json")
            for key in found:
                found[key].append(scores[key])
        rows.append(f"| {name} | {spread(found['reconstruction_fid'])} | {spread(found['psnr'], '{:.2f}')} | "
                    f"{spread(found['shape_valid'], '{:.1%}')} |")
    table("Tab. 5", ["VQGAN", "reconstruction FID", "PSNR (dB)", "valid reconstructions"], rows)


def fig4(args, out, prior):
    size = [16, 16] if not args.quick else [10, 10]
    rows = []
    for tau in (1.0, 0.7):
        flags = ["--latent-size", *size, "--temperature", tau, *OLD_SAMPLER]
        n = max(2, args.n_samples // 16)
        s = judged(prior, out / f"large_{tau}", n, *flags, crop_stride=4, n_real=args.n_samples)
        rows.append(f"| {tau} | {s['shape_judged']} crops of {n} samples | {s['shape_valid']:.1%} | "
                    f"{json.dumps(s['shape_invalid'])} |")
    table("Fig. 4", ["temperature", "windows judged", "valid windows", "why the others are not"], rows)


# The three kinds of prior on the same codes with the same Transformer and training budget (the defaults), seeds 0..:
# name, label, flags of absorbing.py
KINDS = [("abs", "absorbing", []), ("mr", "mask-and-replace, M = 0.9", ["--model", "mask-replace"]),
         ("mo", "mask only, M = 1 (t input, VQ-Diffusion's loss)", ["--model", "mask-replace", "--mask-share", 1])]


def sampled(scores):  # the numbers a results file keeps of one judged sample set
    printed = scores["printed"]
    per_image = [float(v) for v in re.findall(r"\(([\d.]+) s per image\)", printed)]
    revised = re.search(r"; ([\d.]+)% of the codes were changed", printed)
    return dict(valid=scores["shape_valid"], kinds=scores["shape_kinds"], fid=scores["fid"],
                seconds_per_image=statistics.mean(per_image), revised=float(revised.group(1)) / 100)


def mask_replace(args, out, codes, small):
    """VQ-Diffusion's claim (mask-and-replace beats mask only) and the paper's choice (absorbing): each kind trained
    with the defaults on OUT/codes.npy for --seeds seeds, its held-out bound, and --n-samples samples judged at S = T,
    T/4 and T/10 (and the official strided shortcut at T/4 and T/10 for mask-and-replace). Writes
    results/mask_replace.json."""
    runs = []
    for name, label, flags in KINDS:
        for seed in range(args.seeds):
            run_dir = out / f"{name}_s{seed}"
            argv = [*flags, "--seed", seed, "--sample-every", 0, *small, *(["--max-steps", 3] if args.quick else [])]
            if not (run_dir / "absorbing.pt").is_file():
                run("absorbing.py", "--codes", codes, "--out-dir", run_dir, *argv)
            ckpt = C.load_checkpoint(run_dir / "absorbing.pt", "absorbing")
            T = ckpt["diffusion_steps"]
            bound = run("evaluate.py", "--ckpt", run_dir / "absorbing.pt", "--codes", codes, "--json")
            samples = {}
            for S, posterior in [(T, "exact"), (T // 4, "exact"), (round(T / 10), "exact")] + \
                    ([(T // 4, "shortcut"), (round(T / 10), "shortcut")] if name == "mr" else []):
                extra = ["--posterior", posterior] if posterior != "exact" else []
                scores = judged(run_dir / "absorbing.pt", run_dir / f"fake_{S}_{posterior}", args.n_samples,
                                "--sample-steps", S, *extra)
                samples[f"{S} {posterior}"] = sampled(scores)
            bits = bound.get("vlb_bits_per_token", bound.get("elbo_bits_per_token"))
            runs.append(dict(name=name, label=label, seed=seed, flags=[str(v) for v in argv], settings=ckpt["args"],
                             T=T, bound=bits, samples=samples))
    write_results(out, "mask_replace", dict(command="python reproduce.py --claims mask_replace", cpu=cpu_description(),
                                            n_samples=args.n_samples, runs=runs), args.quick)

# -----------------------------------------------------------------------------
# Results files: each claim that keeps its numbers writes results/NAME.json (every run's full settings and what it
# measured); the tables in the documents are rendered from them, between markers, so that a number cannot be
# edited by hand or outlive the run that made it (tests/test_reproduce.py re-renders them).


def render_mask_replace(res):
    """The tables of results/mask_replace.json: each kind's mean +- sd over its seeds."""
    def cell(runs, value, fmt):
        values = [value(r) for r in runs]
        sd = f" +- {fmt.format(statistics.stdev(values))}" if len(values) > 1 else ""
        return fmt.format(statistics.mean(values)) + sd

    rows, jumps = [], []
    for name, label, _ in KINDS:
        runs = [r for r in res["runs"] if r["name"] == name]
        T = runs[0]["T"]
        S = (T, T // 4, round(T / 10))
        cells = [f"{T}; {', '.join(map(str, S))}", cell(runs, lambda r: r["bound"], "{:.3f}")]
        cells += [cell(runs, lambda r, s=s: r["samples"][f"{s} exact"]["valid"], "{:.1%}") for s in S]
        cells += [cell(runs, lambda r: r["samples"][f"{T} exact"]["revised"], "{:.1%}"),
                  cell(runs, lambda r: 1000 * r["samples"][f"{S[1]} exact"]["seconds_per_image"] / S[1], "{:.2f}")]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
        if name == "mr":
            head = f"| jump | valid at S = {S[1]} | S = {S[2]} |\n|---|---|---|\n"
            for jump in ("exact", "shortcut"):
                valid = [cell(runs, lambda r, s=s: r["samples"][f"{s} {jump}"]["valid"], "{:.1%}") for s in S[1:]]
                jumps.append(f"| {jump} | " + " | ".join(valid) + " |")
    seeds = ", ".join(str(seed) for seed in sorted({r["seed"] for r in res["runs"]}))
    return (f"{res['n_samples']} samples judged a cell, mean +- sd over seeds {seeds} ({res['cpu']}).\n\n"
            "| prior | T; S = T, T/4, T/10 | held-out bound, bits per token | valid at S = T | S = T/4 | S = T/10 | "
            "codes revised, S = T | ms per image and call, S = T/4 |\n|---|---|---|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n\nMask-and-replace with strided jumps: the exact D-step posterior against the "
            "official code's shortcut.\n\n" + head + "\n".join(jumps))


TABLES = {"mask_replace": ("REPRODUCTION.md", render_mask_replace)}  # results file -> (document, its renderer)
REPO = Path(__file__).resolve().parent


def block(name):
    """The marker lines between which a document holds the table of results/NAME.json."""
    return f"<!-- rendered by reproduce.py from results/{name}.json -->", f"<!-- end of results/{name}.json -->"


def render(name, res, repo=REPO):
    """Put the table of one results file into its document, in place of the one between its markers."""
    doc, renderer = TABLES[name]
    text = (repo / doc).read_text()
    start, end = block(name)
    if start not in text or end not in text.split(start, 1)[-1]:
        raise SystemExit(f"error: {doc} has no markers for results/{name}.json ({start} ... {end})")
    before, rest = text.split(start, 1)
    (repo / doc).write_text(f"{before}{start}\n{renderer(res)}\n{end}{rest.split(end, 1)[1]}")


def write_results(out, name, res, quick):
    """Write a claim's results file and render its table (a --quick run writes OUT/results/ and renders nothing)."""
    path = (out / "results" if quick else REPO / "results") / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1) + "\n")
    print(f"\n{name}\n\n{TABLES[name][1](res)}\n\nwrote {path}")
    if not quick:
        render(name, res)


def main(args):
    if args.render:
        for path in sorted((REPO / "results").glob("*.json")):
            render(path.stem, json.loads(path.read_text()))
            print(f"rendered results/{path.name} into {TABLES[path.stem][0]}")
        return
    out = Path(args.out_dir)
    codes = out / "codes.npy"
    small = ["--n-layer", "1", "--n-embd", "32", "--n-head", "2"] if args.quick else []
    if args.quick:  # a tiny tokenizer of its own
        run("vqgan.py", "--out-dir", out, "--n-shapes", 64, "--max-steps", 3, "--batch-size", 8)
    elif not codes.is_file() and set(args.claims) - {"quickstart"}:
        raise SystemExit(f"error: {codes} does not exist; run python vqgan.py first (the quick-start tokenizer)")
    if "quickstart" in args.claims:
        quickstart(args, out, small)
    # the priors of the tables as they were measured: 2000 AdamW steps from random position embeddings, the paper's
    # blocks, a peak rate of 1e-3; the current defaults (2500 Muon steps, --pos-init sincos, --conv 3, --lr 4e-3)
    # have not been run through them
    steps = ["--max-steps", 3 if args.quick else 2000, "--pos-init", "random", "--conv", 0, "--lr", 1e-3,
             "--optimizer", "adamw", "--sample-every", 0, *small]
    if "tab4" in args.claims:
        tab4(args, out, codes, steps)
    if "fig5" in args.claims:
        fig5(args, out, codes, steps)
    prior = out / "absorbing.pt"  # the quick-start prior (class-conditional), trained if absent
    if {"tab3", "sec4.3", "fig4"} & set(args.claims) and (args.quick or not prior.is_file()):
        run("absorbing.py", "--codes", codes, "--out-dir", out, *steps)
    if "tab3" in args.claims:
        tab3(args, out, prior)
    if "sec4.3" in args.claims:
        sec43(args, out, prior)
    if "fig4" in args.claims:
        fig4(args, out, prior)
    if "tab5" in args.claims:
        tab5(args, out)
    if "mask_replace" in args.claims:
        mask_replace(args, out, codes, small)


def get_args(argv=None):
    p = argparse.ArgumentParser(description="Regenerate REPRODUCTION.md's tables",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out-dir", default="out", help="where the tokenizer is and the runs go")
    p.add_argument("--quick", action="store_true", help="tiny settings (a pipeline check; the numbers mean nothing)")
    p.add_argument("--claims", nargs="+", choices=CLAIMS, default=list(CLAIMS), help="which sections to run")
    p.add_argument("--seeds", type=int, default=None, help="training seeds per prior (default 3; --quick 1)")
    p.add_argument("--vqgan-seeds", type=int, default=None, help="seeds per Tab. 5 VQGAN (default 2; --quick 1)")
    p.add_argument("--n-samples", type=int, default=None, help="samples per row (default 500; --quick 16)")
    p.add_argument("--steps", type=int, nargs="+", default=None, help="S of Tab. 3 (default 64 32 16 8; --quick 64 16)")
    p.add_argument("--curve-every", type=int, default=None,
                   help="quickstart: steps between the prior's judged copies (default 1000; --quick 1)")
    p.add_argument("--curve-samples", type=int, default=None,
                   help="quickstart: samples judged at each copy (default 200; --quick 8)")
    p.add_argument("--temperatures", type=float, nargs="+", default=None,
                   help="temperatures of Sec. 4.3 (default 1.0 0.9 0.8 0.7; --quick 1.0 0.7)")
    p.add_argument("--render", action="store_true",
                   help="run nothing: re-render the documents' tables from the results files in results/")
    args = p.parse_args(argv)
    quick = dict(seeds=1, vqgan_seeds=1, n_samples=16, steps=[64, 16], temperatures=[1.0, 0.7], curve_every=1,
                 curve_samples=8)
    full = dict(seeds=3, vqgan_seeds=2, n_samples=500, steps=[64, 32, 16, 8], temperatures=[1.0, 0.9, 0.8, 0.7],
                curve_every=1000, curve_samples=200)
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.seeds < 1 or args.vqgan_seeds < 1 or args.n_samples < 2 or args.curve_every < 1 or args.curve_samples < 2:
        p.error("--seeds, --vqgan-seeds and --curve-every must be >= 1, --n-samples and --curve-samples >= 2")
    return args


if __name__ == "__main__":
    main(get_args())
