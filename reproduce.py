"""
Regenerate the measured tables of README.md and REPRODUCTION.md with today's defaults, by running the project's own
commands and reading their --json output. Each claim writes results/NAME.json (every run's flags, full settings and
measurements) and renders its table into its document between markers; `--render` re-renders them all.

    python reproduce.py --claims quickstart --seeds 2 --out-dir out/r   # the README's quick start, timed, judged
    python reproduce.py --out-dir out/r                  # then every REPRODUCTION.md section (3-4 hours)
    python reproduce.py --out-dir out/r --claims tab3    # one of them
    python reproduce.py --quick --claims quickstart tab4 --out-dir /tmp/q   # tiny models: checks the pipeline only
    python reproduce.py --render                         # the tables again from results/, running nothing

The claims: quickstart (README: time, valid reconstructions and samples, time to quality), tab4 (absorbing against
autoregressive), fig5 (reweighted ELBO against ELBO), departures (the small prior's departures from the paper),
tab3 (sampling steps and samplers), sec4.3 (temperature), guidance (classes), fig4 (larger than training), tab5
(DiffAug, the clamp and the tokenizer's departures), mask_replace (VQ-Diffusion's prior), real_set (README: a
real labelled set, Fashion-MNIST by default, measured by its own classifier) and icons (a plain folder of real
images, --icons). All but quickstart, real_set and icons use the quick-start tokenizer in --out-dir
(OUT/codes.npy) and tab3, sec4.3, guidance and fig4 its prior (OUT/absorbing.pt); the priors of tab4, fig5 and
departures are unconditional (--class-dropout 1, as the paper's) and train --prior-steps steps, in
OUT/uncond_NAME_sSEED. A run whose checkpoint exists is reused.
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
import torch
from PIL import Image
from torchvision.utils import make_grid

import common as C
from data import IMAGE_EXTENSIONS
from sample import TEMPERATURE
from shapes import SHAPE_KINDS
from tables import (DEPARTURES, FIG5, KINDS, PRIORS, REPO, SAMPLERS, TAB4, TAB5, TABLES, render,
                    write_results)

CLAIMS = ("quickstart", "tab4", "fig5", "departures", "tab3", "sec4.3", "guidance", "fig4", "tab5", "mask_replace",
          "real_set", "icons")
TIMED_CLAIMS = ("quickstart", "real_set", "icons")  # timed from nothing, so run only when asked
N_SAMPLES = 500  # samples judged a row, by default


def run(*argv):
    """Run one of the project's scripts; its --json output as a dict, or what it printed."""
    done = subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent)
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(map(str, argv))} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout) if "--json" in argv else done.stdout


def trained(script, run_dir, flags, codes=None, **about):
    """Train with `script` into run_dir (once: an existing checkpoint is reused). The run as a results file keeps it:
    `about` (name, label, seed), its flags and the full settings its checkpoint recorded."""
    kind = "vqgan" if script == "vqgan.py" else "absorbing"
    path = run_dir / f"{kind}.pt"
    if not path.is_file():
        run(script, *(["--codes", codes] if codes else []), "--out-dir", run_dir, *flags)
    settings = C.load_checkpoint(path, kind)["args"]
    return path, dict(about, script=script, flags=[str(f) for f in flags], settings=settings)


def judged(ckpt, out, n, *flags, crop_stride=None, n_real=None):
    """Sample n images with sample.py, then judge and score them (or their crops) with evaluate.py against n (or
    n_real) shapes images: what a results file keeps of them, with the sampler's time per image and its share of
    codes that a later step changed. At temperature 1, the model's own distribution, unless the flags name one: the
    comparisons compare models and samplers, not sample.py's default sharpening."""
    at = [] if "--temperature" in flags else ["--temperature", 1.0]
    printed = run("sample.py", "--ckpt", ckpt, "--n-samples", n, "--batch-size", 250, "--images", out, "--out",
                  f"{out}.png", *at, *flags)
    crops = ["--crop-stride", crop_stride] if crop_stride else []
    s = run("evaluate.py", "--real", "shapes", "--fake", out, "--features", "random", "--num", n_real or n, *crops,
            "--json")
    per_image = [float(v) for v in re.findall(r"\(([\d.]+) s per image\)", printed)]
    return dict(flags=[str(f) for f in flags], valid=s["shape_valid"], kinds=s["shape_kinds"],
                invalid=s["shape_invalid"], judged=s["shape_judged"], fid=s["fid"], precision=s["precision"],
                recall=s["recall"], seconds_per_image=statistics.mean(per_image), revised=revised_share(printed))


def revised_share(printed):
    """The share of codes a later step changed, as sample.py prints it (0 for a sampler that never revises)."""
    revised = re.search(r"; ([\d.]+)% of the codes were changed", printed)
    return float(revised.group(1)) / 100 if revised else 0.0


def cpu_description():
    """The CPU the numbers were measured on: its model, its widest vector instructions, and PyTorch's threads."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    vector = "AVX512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    bf16 = ", bf16 instructions (bf16 autocast on by default)" if flags & {"avx512_bf16", "amx_bf16"} else ""
    return f"{model}, {vector}{bf16}, {torch.get_num_threads()} threads"


def results(args, command, runs, **measured):
    """The body of a results file: the command that remakes it, where it ran, and its runs."""
    command += f" --n-samples {args.n_samples}" * (args.n_samples != N_SAMPLES and not args.quick)
    return dict(command=command, cpu=cpu_description(), n_samples=args.n_samples, **measured, runs=runs)

# -----------------------------------------------------------------------------
# The claims: each trains what it needs (or reuses it), measures, and writes results/NAME.json.


def quickstart(args, out, small):
    """The README's quick start into OUT with the defaults (as python vqgan.py && python absorbing.py && python
    sample.py writes out/), each stage timed (wall-clock, start-up included), then judged: the VQGAN's
    reconstructions of held-out images, and samples at S = T and S = T/4 of the prior and of --seeds - 1 more priors
    trained with other seeds (untimed). Along the prior's training, a copy of its weights every --curve-every steps
    is judged on --curve-samples samples at S = T: time to quality."""
    if (out / "vqgan.pt").is_file():
        raise SystemExit(f"error: {out} already holds a VQGAN; the quick start is timed from nothing: a new --out-dir")
    tiny = ["--n-shapes", 64, "--max-steps", 3, "--batch-size", 8] if args.quick else []
    short = ["--max-steps", 3] if args.quick else []
    seconds, start = {}, time.perf_counter()
    vqgan, vq = trained("vqgan.py", out, tiny, name="vqgan", label="the VQGAN", seed=0)
    seconds["VQGAN"], start = time.perf_counter() - start, time.perf_counter()
    prior, first = trained("absorbing.py", out, [*small, *short, "--keep-every", args.curve_every], out / "codes.npy",
                           name="prior", label="the prior", seed=0)
    seconds["prior"], start = time.perf_counter() - start, time.perf_counter()
    run("sample.py", "--ckpt", prior, "--out", out / "samples.png")
    seconds["64 samples"] = time.perf_counter() - start
    s = run("evaluate.py", "--vqgan", vqgan, "--real", "shapes", "--features", "random", "--num", args.n_samples,
            "--json")
    vq.update(reconstructions=dict(valid=s["shape_valid"], kinds=s["shape_kinds"], invalid=s["shape_invalid"],
                                   psnr=s["psnr"]))
    priors = [(prior, first)] + [trained("absorbing.py", out / f"prior_seed{seed}", [*small, *short, "--seed", seed],
                                         out / "codes.npy", name="prior", label="the prior", seed=seed)
                                 for seed in range(1, args.seeds)]
    T = int(np.prod(np.load(out / "codes.npy", mmap_mode="r").shape[1:]))  # T = N = h w, the default
    default = ["--temperature", TEMPERATURE]  # what python sample.py does; and a row at 1, the model's own
    for path, r in priors:
        r["samples"] = {str(S): judged(path, path.parent / f"fake_{S}", args.n_samples, "--sample-steps", S, *default)
                        for S in (T, T // 4)}
        r["samples"][f"{T}, temperature 1"] = judged(path, path.parent / f"fake_{T}_t1", args.n_samples,
                                                     "--sample-steps", T, "--temperature", 1.0)
    total = first["settings"]["max_steps"]
    first["curve"] = [dict(step=int(snapshot.stem.split("_")[1]),
                           valid=judged(snapshot, out / f"curve_{snapshot.stem}", args.curve_samples,
                                        "--sample-steps", T, *default)["valid"])
                      for snapshot in sorted(out.glob("absorbing_[0-9]*.pt"))]  # the weights every --curve-every
    kept = REPO / "results" / "quickstart.json"
    elsewhere = times_elsewhere(json.loads(kept.read_text()), [vq, first]) if kept.is_file() and not args.quick else []
    write_results(out, "quickstart", results(args, f"python reproduce.py --claims quickstart --seeds {args.seeds}",
                                             [vq] + [r for _, r in priors], T=T, seconds=seconds, total_steps=total,
                                             curve_samples=args.curve_samples, timed_elsewhere=elsewhere), args.quick)


def times_elsewhere(previous, runs):
    """The stage times of a previous quick-start results file, and those it kept, on CPUs other than this one, when
    its VQGAN and prior had the settings of these runs but for where they wrote and bf16, which the defaults turn on
    where the CPU has bf16 instructions (the CPU's description says): the same recipe timed elsewhere."""
    def recipe(r):  # as the results file holds it (JSON: a tuple is a list)
        return json.dumps({k: v for k, v in r["settings"].items() if k not in ("out_dir", "codes", "bf16")},
                          sort_keys=True)
    if [recipe(r) for r in previous["runs"][:2]] != [recipe(r) for r in runs]:
        return []
    timed = [dict(cpu=previous["cpu"], seconds=previous["seconds"]), *previous["timed_elsewhere"]]
    return [t for t in timed if t["cpu"] != cpu_description()]


def unconditional(args, out, codes, name, done):
    """One PRIORS entry for each of --seeds seeds, trained once a session (`done` keeps them) and measured: its
    held-out bound (or exact NLL), its validation ELBO along training, and samples at S = T (and S = T/4 for the
    departures' table)."""
    if name not in done:
        label, flags = PRIORS[name]
        done[name] = []
        for seed in range(args.seeds):
            argv = ["--class-dropout", 1, "--max-steps", args.prior_steps, "--sample-every", 0, *flags, "--seed", seed,
                    *args.small]
            path, r = trained("absorbing.py", out / f"uncond_{name}_s{seed}", argv, codes, name=name, label=label,
                              seed=seed)
            bits = run("evaluate.py", "--ckpt", path, "--codes", codes, "--json")
            r["bits"] = bits.get("nll_bits_per_token", bits.get("elbo_bits_per_token"))
            log = [json.loads(line) for line in (path.parent / "absorbing_log.jsonl").read_text().splitlines()]
            r["val_elbo"] = {str(e["step"]): e["val_elbo"] for e in log if "val_elbo" in e}
            T = C.load_checkpoint(path, "absorbing")["diffusion_steps"]
            steps = (T, T // 4) if name in DEPARTURES else (T,)  # (autoregressive: one code a call, it cannot skip)
            r["samples"] = {str(S): judged(path, path.parent / f"fake_{S}", args.n_samples, "--sample-steps", S)
                            for S in steps}
            r["T"] = T
            done[name].append(r)
    return done[name]


def prior_claim(args, out, codes, claim, names, done):
    runs = [r for name in names for r in unconditional(args, out, codes, name, done)]
    write_results(out, claim, results(args, f"python reproduce.py --claims {claim} --prior-steps {args.prior_steps}",
                                      runs, prior_steps=args.prior_steps), args.quick)


def sampling_claim(args, out, prior, claim, rows):
    """Samples of the quick-start prior (OUT/absorbing.pt) under each row's sample.py flags: (key, flags, crops, n):
    n samples judged whole, or by their windows every `crops` pixels, against --n-samples real images."""
    about = C.load_checkpoint(prior, "absorbing")
    r = dict(name="prior", label="the quick-start prior", seed=about["args"]["seed"], script="absorbing.py",
             flags=[], settings=about["args"], T=about["diffusion_steps"], samples={})
    for key, flags, crops, n in rows:
        r["samples"][key] = judged(prior, out / f"{claim}_{key}", n, *flags, crop_stride=crops, n_real=args.n_samples)
    write_results(out, claim, results(args, f"python reproduce.py --claims {claim}", [r]), args.quick)


def tab5(args, out):
    runs = []
    tiny = ["--n-shapes", 64, "--max-steps", 3, "--batch-size", 8, "--disc-start", 1] if args.quick else []
    for name, label, flags in TAB5:
        for seed in range(args.vqgan_seeds):
            path, r = trained("vqgan.py", out / f"tab5_{name}_s{seed}", [*flags, "--seed", seed, *tiny], name=name,
                              label=label, seed=seed)
            s = run("evaluate.py", "--vqgan", path, "--real", "shapes", "--features", "random", "--num",
                    args.n_samples, "--json")
            r.update({key: s[key] for key in ("reconstruction_fid", "psnr", "codebook_perplexity", "code_bits",
                                                   "code_agreement")},
                     valid=s["shape_valid"], invalid=s["shape_invalid"])
            runs.append(r)
    seeds = f" --vqgan-seeds {args.vqgan_seeds}" * (args.vqgan_seeds > 1)
    write_results(out, "tab5", results(args, f"python reproduce.py --claims tab5{seeds}", runs), args.quick)


def mask_replace(args, out, codes):
    """VQ-Diffusion's claim (mask-and-replace beats mask only) and the paper's choice (absorbing): each kind trained
    with the defaults on OUT/codes.npy for --seeds seeds, its held-out bound, and --n-samples samples judged at S = T,
    T/4 and T/10 (and the official strided shortcut at T/4 and T/10 for mask-and-replace)."""
    runs = []
    for name, label, flags in KINDS:
        for seed in range(args.seeds):
            argv = [*flags, "--seed", seed, "--sample-every", 0, *args.small, *(["--max-steps", 3] * args.quick)]
            path, r = trained("absorbing.py", out / f"{name}_s{seed}", argv, codes, name=name, label=label, seed=seed)
            T = C.load_checkpoint(path, "absorbing")["diffusion_steps"]
            bound = run("evaluate.py", "--ckpt", path, "--codes", codes, "--json")
            samples = {}
            for S, posterior in [(T, "exact"), (T // 4, "exact"), (round(T / 10), "exact")] + \
                    ([(T // 4, "shortcut"), (round(T / 10), "shortcut")] if name == "mr" else []):
                extra = ["--posterior", posterior] if posterior != "exact" else []
                samples[f"{S} {posterior}"] = judged(path, path.parent / f"fake_{S}_{posterior}", args.n_samples,
                                                     "--sample-steps", S, *extra)
            r.update(T=T, bound=bound.get("vlb_bits_per_token", bound.get("elbo_bits_per_token")), samples=samples)
            runs.append(r)
    write_results(out, "mask_replace", results(args, "python reproduce.py --claims mask_replace", runs), args.quick)


def real_set(args, out):
    """The README's run on a real labelled set (--real-set, fetched or --data-dir): the quick start's commands with
    --data SET into OUT/real_set, each stage timed, then --per-class guided samples of every class at W = 1 and 2,
    scored by the set's own classifier (class accuracy, distance in its features, PRDC) beside the floor of real
    images, and by random features; twelve a class at W = 2 drawn as a grid, one row per class."""
    run_dir, get = out / "real_set", ["--data-dir", args.data_dir] if args.data_dir else []
    if (run_dir / "vqgan.pt").is_file():
        raise SystemExit(f"error: {run_dir} already holds a VQGAN; the run is timed from nothing: a new --out-dir")
    short = ["--max-steps", 3] if args.quick else []
    seconds, start = {}, time.perf_counter()
    vq_path, vq = trained("vqgan.py", run_dir, ["--data", args.real_set, *get, *short,
                                                *(["--batch-size", 8] * args.quick)], name="vqgan", label="the VQGAN",
                          seed=0)
    seconds["VQGAN"], start = time.perf_counter() - start, time.perf_counter()
    prior, r = trained("absorbing.py", run_dir, [*args.small, *short], run_dir / "codes.npy", name="prior",
                       label="the prior", seed=0)
    seconds["prior"] = time.perf_counter() - start
    classes = json.loads((run_dir / "codes.json").read_text())["classes"]
    n, size = args.per_class * len(classes), vq["settings"]["img_size"]
    real = ["--real", args.real_set, *get, "--img-size", size, "--num", n, "--json"]
    by_classifier = [*real, "--features", "classifier", "--classifier",
                     out / f"classifier_{Path(args.real_set).name}.pt", *(["--classifier-steps", 3] * args.quick)]
    vq["reconstructions"] = run("evaluate.py", *by_classifier, "--vqgan", vq_path)
    r["samples"] = {}
    for w in (1, 2):
        fake = run_dir / f"fake_w{w}"
        for k in range(len(classes)):  # subfolders named by class index: what evaluate.py reads as the class asked
            run("sample.py", "--ckpt", prior, "--class", k, "--guidance", w, "--temperature", 1.0,
                "--n-samples", args.per_class, "--batch-size", 250, "--images", fake / str(k),
                "--out", f"{fake}_{k}.png")
        s = run("evaluate.py", *by_classifier, "--fake", fake)
        s["random_fid"] = run("evaluate.py", *real, "--fake", fake, "--features", "random")["fid"]
        r["samples"][str(w)] = s
    images = [torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1)
              for k in range(len(classes)) for p in sorted((run_dir / "fake_w2" / str(k)).glob("*.png"))[:12]]
    grid = (out if args.quick else REPO / "assets") / f"{Path(args.real_set).name.replace('-', '_')}_classes.png"
    picture = make_grid(torch.stack(images), nrow=min(12, args.per_class), padding=1)  # (3, H, W) uint8
    Image.fromarray(picture.permute(1, 2, 0).numpy()).save(grid, optimize=True)
    write_results(out, "real_set", results(args, f"python reproduce.py --claims real_set --real-set {args.real_set}",
                                           [vq, r], seconds=seconds, classes=classes, grid=grid.name,
                                           per_class=args.per_class), args.quick)


def icons(args, out):
    """REPRODUCTION.md's plain folder (--icons DIR: DIR/train and DIR/heldout of class folders): the quick start's
    commands on DIR/train into OUT/icons, each stage timed, an absorbing and a mask-and-replace prior (KINDS) on its
    codes; each prior's held-out bound, and as many samples at temperature 1 as there are held-out icons, scored by
    random features against them beside the floor, as many training icons; the absorbing prior's samples drawn."""
    run_dir, folder = out / "icons", Path(args.icons)
    if (run_dir / "vqgan.pt").is_file():
        raise SystemExit(f"error: {run_dir} already holds a VQGAN; the run is timed from nothing: a new --out-dir")
    if not (folder / "train").is_dir() or not (folder / "heldout").is_dir():
        raise SystemExit(f"error: --icons {folder} needs train/ and heldout/ folders (REPRODUCTION.md makes them)")
    short = ["--max-steps", 3] if args.quick else []
    n = sum(1 for p in (folder / "heldout").rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    real = ["--real", folder / "heldout", "--features", "random", "--num", n, "--json"]
    seconds, start = {}, time.perf_counter()
    vq_path, vq = trained("vqgan.py", run_dir, ["--data", folder / "train", *short], name="vqgan", label="the VQGAN",
                          seed=0)
    seconds["VQGAN"] = time.perf_counter() - start
    vq["reconstructions"] = run("evaluate.py", *real, "--vqgan", vq_path)
    runs = [vq]
    for name, label, flags in KINDS[:2]:
        start = time.perf_counter()
        path, r = trained("absorbing.py", run_dir / name, [*flags, *args.small, *short], run_dir / "codes.npy",
                          name=name, label=label, seed=0)
        seconds[label] = time.perf_counter() - start
        bound = run("evaluate.py", "--ckpt", path, "--codes", run_dir / "codes.npy", "--json")
        kind = "vlb" if "vlb_bits_per_token" in bound else "elbo"
        printed = run("sample.py", "--ckpt", path, "--temperature", 1.0, "--n-samples", n, "--batch-size", 250,
                      "--images", path.parent / "samples", "--out", path.parent / "samples.png")
        r.update(bound=bound[f"{kind}_bits_per_token"], bound_err=bound[f"{kind}_mc_error"], bound_name=kind.upper(),
                 samples=run("evaluate.py", *real, "--fake", path.parent / "samples"), revised=revised_share(printed))
        runs.append(r)
    floor = run("evaluate.py", *real, "--fake", folder / "train")
    grid = (out if args.quick else REPO / "assets") / "icons_samples.png"
    picture = Image.open(run_dir / "abs" / "samples.png")  # 12 a row, 1-pixel gaps: the first four rows, 48 icons
    picture.crop((0, 0, picture.width, min(picture.height, 4 * 33 + 1))).save(grid, optimize=True)
    write_results(out, "icons", results(args, f"python reproduce.py --claims icons --icons {folder}", runs,
                                        seconds=seconds, n_heldout=n, floor=floor, grid=grid.name), args.quick)


def main(args):
    if args.render:
        for path in sorted((REPO / "results").glob("*.json")):
            render(path.stem, json.loads(path.read_text()))
            print(f"rendered results/{path.name} into {TABLES[path.stem][0]}")
        return
    out = Path(args.out_dir)
    codes = out / "codes.npy"
    args.small = ["--n-layer", "1", "--n-embd", "32", "--n-head", "2"] if args.quick else []
    if "quickstart" in args.claims:
        quickstart(args, out, args.small)
    if "real_set" in args.claims:
        real_set(args, out)
    if "icons" in args.claims:
        icons(args, out)
    if not set(args.claims) - set(TIMED_CLAIMS):
        return
    if args.quick and not codes.is_file():  # a tiny tokenizer of its own
        run("vqgan.py", "--out-dir", out, "--n-shapes", 64, "--max-steps", 3, "--batch-size", 8)
    if not codes.is_file():
        raise SystemExit(f"error: {codes} does not exist; run python vqgan.py first (the quick-start tokenizer)")
    done = {}
    for claim, names in (("tab4", TAB4), ("fig5", FIG5), ("departures", DEPARTURES)):
        if claim in args.claims:
            prior_claim(args, out, codes, claim, names, done)
    prior = out / "absorbing.pt"  # the quick-start prior (class-conditional), trained if absent
    if {"tab3", "sec4.3", "guidance", "fig4"} & set(args.claims) and not prior.is_file():
        run("absorbing.py", "--codes", codes, "--out-dir", out, *args.small, *(["--max-steps", 3] * args.quick))
    n = args.n_samples
    if "tab3" in args.claims:
        sampling_claim(args, out, prior, "tab3", [(f"{S} {name}", ["--sample-steps", S, *flags], None, n)
                                                  for S in args.steps for name, flags in SAMPLERS])
    if "sec4.3" in args.claims:
        sampling_claim(args, out, prior, "sec4.3", [(str(tau), ["--temperature", tau], None, n)
                                                    for tau in args.temperatures])
    if "guidance" in args.claims:  # a fifth of --n-samples for each class and weight (6 at least, for PRDC)
        sampling_claim(args, out, prior, "guidance", [(f"{w} {kind}", ["--class", kind, "--guidance", w], None,
                                                       max(6, n // 5)) for w in (1, 2, 4) for kind in SHAPE_KINDS])
    if "fig4" in args.claims:  # a larger sample holds many windows
        size = [16, 16] if not args.quick else [10, 10]
        sampling_claim(args, out, prior, "fig4", [(f"{tau} {decode}", ["--latent-size", *size, "--temperature", tau,
                                                                        "--decode", decode], 4, max(2, n // 16))
                                                  for tau in (1.0, 0.7) for decode in ("windows", "whole")])
    if "tab5" in args.claims:
        tab5(args, out)
    if "mask_replace" in args.claims:
        mask_replace(args, out, codes)


def get_args(argv=None):
    p = argparse.ArgumentParser(description="Regenerate the measured tables of README.md and REPRODUCTION.md",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out-dir", default="out", help="where the tokenizer is and the runs go")
    p.add_argument("--quick", action="store_true", help="tiny settings (a pipeline check; the numbers mean nothing)")
    p.add_argument("--claims", nargs="+", choices=CLAIMS, default=[c for c in CLAIMS if c not in TIMED_CLAIMS],
                   help="which sections to run (default: REPRODUCTION.md's on shapes; quickstart, real_set and icons "
                        "are timed, each from nothing in a new --out-dir)")
    p.add_argument("--seeds", type=int, default=None, help="training seeds per prior (default 2; --quick 1)")
    p.add_argument("--prior-steps", type=int, default=None,
                   help="training steps of the priors of tab4, fig5 and departures (default 1000; --quick 3)")
    p.add_argument("--vqgan-seeds", type=int, default=None, help="seeds per Tab. 5 VQGAN (default 1)")
    p.add_argument("--n-samples", type=int, default=None, help="samples per row (default 500; --quick 16)")
    p.add_argument("--steps", type=int, nargs="+", default=None, help="S of Tab. 3 (default 64 32 16 8; --quick 64 16)")
    p.add_argument("--curve-every", type=int, default=None,
                   help="quickstart: steps between the prior's judged copies (default 500; --quick 1)")
    p.add_argument("--curve-samples", type=int, default=None,
                   help="quickstart: samples judged at each copy (default 200; --quick 8)")
    p.add_argument("--temperatures", type=float, nargs="+", default=None,
                   help="temperatures of Sec. 4.3 (default 1.0 0.9 0.8 0.7; --quick 1.0 0.7)")
    p.add_argument("--real-set", default="fashion-mnist",
                   help="real_set: a labelled set by name (mnist, fashion-mnist, cifar10) or a folder of class folders")
    p.add_argument("--data-dir", default=None, help="real_set: a local copy of the named set (as vqgan.py's)")
    p.add_argument("--icons", default="/tmp/oxygen",
                   help="icons: the icon folder, split into train/ and heldout/ as REPRODUCTION.md does")
    p.add_argument("--per-class", type=int, default=None,
                   help="real_set: samples of each class (default 200; --quick 2)")
    p.add_argument("--render", action="store_true",
                   help="run nothing: re-render the documents' tables from the results files in results/")
    args = p.parse_args(argv)
    quick = dict(seeds=1, prior_steps=3, vqgan_seeds=1, n_samples=16, steps=[64, 16], temperatures=[1.0, 0.7],
                 curve_every=1, curve_samples=8, per_class=2)
    full = dict(seeds=2, prior_steps=1000, vqgan_seeds=1, n_samples=N_SAMPLES, steps=[64, 32, 16, 8],
                temperatures=[1.0, 0.9, 0.8, 0.7], curve_every=500, curve_samples=200, per_class=200)
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if min(args.seeds, args.vqgan_seeds, args.curve_every, args.prior_steps) < 1 or min(
            args.n_samples, args.curve_samples, args.per_class) < 2:
        p.error("--seeds, --vqgan-seeds, --prior-steps and --curve-every must be >= 1, --n-samples, --curve-samples "
                "and --per-class >= 2")
    return args


if __name__ == "__main__":
    main(get_args())
