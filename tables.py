"""
The measured comparisons of README.md and REPRODUCTION.md and their tables: which runs each compares (reproduce.py
runs them) and how its results file, results/NAME.json, is rendered into its document between markers, so that a
number cannot be edited by hand or outlive the run that made it (tests/test_reproduce.py re-renders them all).
"""
import json
import statistics
from pathlib import Path

PAPER_SAMPLER = ["--sampler", "random", "--counts", "binomial"]  # the paper's reverse process, reveal steps drawn
SAMPLERS = [("default", []), ("paper", PAPER_SAMPLER), ("confidence", ["--sampler", "confidence"])]  # Tab. 3's

# The unconditional priors (--class-dropout 1, as the paper's) of Tab. 4, Fig. 5 and the departures, each trained for
# --prior-steps steps with the defaults and these flags: name -> (label, flags of absorbing.py)
PRIORS = {"absorbing": ("absorbing (the defaults)", []),
          "autoregressive": ("autoregressive", ["--model", "autoregressive"]),
          "elbo": ("absorbing, trained on the ELBO (Eq. 6)", ["--loss", "elbo"]),
          "adamw": ("AdamW, the paper's optimizer (same rate and schedule)", ["--optimizer", "adamw"]),
          "adamw_paper": ("AdamW at the paper's rate, constant", ["--optimizer", "adamw", "--lr", "2e-4",
                                                                    "--lr-decay", "constant"]),
          "conv0": ("the paper's blocks, no depthwise convolutions", ["--conv", 0]),
          "posrandom": ("random position embeddings at the start", ["--pos-init", "random"])}
TAB4, FIG5 = ("absorbing", "autoregressive"), ("absorbing", "elbo")
DEPARTURES = ("absorbing", "adamw", "adamw_paper", "conv0", "posrandom")
# The VQGANs of Tab. 5 and of the tokenizer's departures, each the quick start's with these flags: name, label, flags
TAB5 = [("aug_clamp", "DiffAug, clamp (the paper's; the defaults)", []),
        ("aug_noclamp", "DiffAug, no clamp", ["--lambda-max", "1e4"]),
        ("noaug_clamp", "no DiffAug, clamp", ["--diffaug", "off"]),
        ("nogan", "no GAN at all (reference)", ["--disc-start", "100000"]),
        ("groupnorm", "GroupNorm, the paper's normalisation", ["--norm", "group"]),
        ("paper_encoder", "the paper's encoder (not local)", ["--local-encoder", "off"])]
# The three kinds of prior on the same codes with the same Transformer and training budget (the defaults), seeds 0..:
# name, label, flags of absorbing.py
KINDS = [("abs", "absorbing", []), ("mr", "mask-and-replace, M = 0.9", ["--model", "mask-replace"]),
         ("mo", "mask only, M = 1 (t input, VQ-Diffusion's loss)", ["--model", "mask-replace", "--mask-share", 1])]


def cell(values, fmt="{:.3f}"):
    """'mean +- sd' of a list of numbers over seeds, or the one number."""
    sd = f" +- {fmt.format(statistics.stdev(values))}" if len(values) > 1 else ""
    return fmt.format(statistics.mean(values)) + sd


def seeds_of(runs):
    return ", ".join(str(seed) for seed in sorted({r["seed"] for r in runs}))


def pct(share):
    return f"{share:.1%}"


def render_quickstart(res):
    """The README's quick-start bullets and tables: time, valid reconstructions and samples, and time to quality."""
    vq, priors, T, sec = res["runs"][0], res["runs"][1:], res["T"], res["seconds"]
    rec = vq["reconstructions"]
    per_seed = {S: " / ".join(pct(r["samples"][S]["valid"]) for r in priors) for S in (str(T), str(T // 4))}
    which = f" (prior seeds {' / '.join(str(r['seed']) for r in priors)})" if len(priors) > 1 else ""
    text = (f"- **Takes** {sum(sec.values()) / 60:.1f} minutes on {res['cpu']}: VQGAN {sec['VQGAN'] / 60:.1f}, prior "
            f"{sec['prior'] / 60:.1f}, 64 samples {sec['64 samples']:.0f} s"
            + "".join(f"; {sum(t['seconds'].values()) / 60:.1f} minutes on {t['cpu']}: VQGAN "
                      f"{t['seconds']['VQGAN'] / 60:.1f}, prior {t['seconds']['prior'] / 60:.1f}"
                      for t in res["timed_elsewhere"]) + ".\n"
            f"- **Expect** {per_seed[str(T)]}{which} of the samples to be valid with one network call per code "
            f"(`--sample-steps` S = T = {T}, the diffusion steps, one per code of a grid), {per_seed[str(T // 4)]} "
            f"with S = T/4 = {T // 4} calls, and {pct(rec['valid'])} of the "
            "VQGAN's reconstructions of held-out images.")
    own, tau = f"{T}, temperature 1", priors[0]["samples"][str(T)]["flags"][-1]  # sample.py's default temperature
    text += (f" That is at `sample.py`'s temperature {tau}; at 1, the model's own distribution, "
             f"{' / '.join(pct(r['samples'][own]['valid']) for r in priors)} at S = T.\n\n")
    kinds, broken = " / ".join(rec["kinds"]), " / ".join(rec["invalid"])
    rows = [f"| reconstructions of held-out images | {pct(rec['valid'])} | | "
            f"{' / '.join(map(str, rec['kinds'].values()))} | {' / '.join(map(str, rec['invalid'].values()))} |"]
    for S in priors[0]["samples"]:  # each prior's share valid and FID; the counts summed over the priors
        runs = [r["samples"][S] for r in priors]
        fids = " / ".join(f"{s['fid']:.2f}" for s in runs)
        rows.append(f"| samples, S = {S} | {' / '.join(pct(s['valid']) for s in runs)} | {fids} | "
                    + " / ".join(str(sum(s["kinds"][k] for s in runs)) for k in rec["kinds"]) + " | "
                    + " / ".join(str(sum(s["invalid"][k] for s in runs)) for k in rec["invalid"]) + " |")
    text += (f"| images ({res['n_samples']} judged each{', a prior seed each' * (len(priors) > 1)}) | valid | "
             f"FID, random features | {kinds} (valid ones, all seeds) | broken first, all seeds: {broken} |\n"
             "|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n")
    curve = priors[0]["curve"]
    minutes = [(sec["VQGAN"] + sec["prior"] * c["step"] / res["total_steps"]) / 60 for c in curve]
    text += (f"| prior step ({res['curve_samples']} samples at S = {T} from a copy) | "
             + " | ".join(str(c["step"]) for c in curve) + " |\n|---|" + "---|" * len(curve) + "\n"
             "| minutes from the start | " + " | ".join(f"{m:.1f}" for m in minutes) + " |\n"
             "| valid samples | " + " | ".join(pct(c["valid"]) for c in curve) + " |")
    return text


def by_name(res, names):
    return [(name, [r for r in res["runs"] if r["name"] == name]) for name in names]


def render_tab4(res):
    rows = []
    for name, runs in by_name(res, TAB4):
        T = runs[0]["T"]
        what = "NLL (exact)" if name == "autoregressive" else "ELBO (a bound)"
        s = [r["samples"][str(T)] for r in runs]
        rows.append(f"| {runs[0]['label']} | {what} {cell([r['bits'] for r in runs])} | "
                    f"{cell([x['valid'] for x in s], '{:.1%}')} | {cell([x['fid'] for x in s], '{:.2f}')} | "
                    f"{cell([x['precision'] for x in s], '{:.2f}')} / {cell([x['recall'] for x in s], '{:.2f}')} | "
                    f"{T} |")
    return (f"{res['prior_steps']} training steps each, seeds {seeds_of(res['runs'])}, {res['n_samples']} samples at "
            f"S = T; mean +- sd over the seeds ({res['cpu']}).\n\n"
            "| prior | held-out bits per token | valid samples | FID | precision / recall | network calls |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(rows))


def render_fig5(res):
    (_, ours), (_, elbo) = by_name(res, FIG5)
    steps = sorted({int(k) for r in ours for k in r["val_elbo"]})
    rows = [f"| {step} | {cell([r['val_elbo'][str(step)] for r in ours])} | "
            f"{cell([r['val_elbo'][str(step)] for r in elbo])} |" for step in steps]
    T = ours[0]["T"]
    rows.append(f"| valid samples, S = T | {cell([r['samples'][str(T)]['valid'] for r in ours], '{:.1%}')} | "
                f"{cell([r['samples'][str(T)]['valid'] for r in elbo], '{:.1%}')} |")
    return (f"{res['prior_steps']} training steps each, seeds {seeds_of(res['runs'])}; the validation ELBO of the EMA "
            f"weights (bits per token) and {res['n_samples']} samples; mean +- sd over the seeds ({res['cpu']}).\n\n"
            "| step | trained on the reweighted ELBO (Eq. 7, the default) | trained on the ELBO (Eq. 6) |\n"
            "|---|---|---|\n" + "\n".join(rows))


def render_departures(res):
    rows = []
    for name, runs in by_name(res, DEPARTURES):
        T = runs[0]["T"]
        flags = " ".join(map(str, PRIORS[name][1])) or "(none)"
        rows.append(f"| {runs[0]['label']} | `{flags}` | {cell([r['bits'] for r in runs])} | "
                    f"{cell([r['samples'][str(T)]['valid'] for r in runs], '{:.1%}')} | "
                    f"{cell([r['samples'][str(T // 4)]['valid'] for r in runs], '{:.1%}')} |")
    return (f"{res['prior_steps']} training steps each, unconditional, seeds {seeds_of(res['runs'])}, "
            f"{res['n_samples']} samples a cell; mean +- sd over the seeds ({res['cpu']}).\n\n"
            "| prior | flags | held-out ELBO, bits per token | valid at S = T | valid at S = T/4 |\n"
            "|---|---|---|---|---|\n" + "\n".join(rows))


def sample_cells(s):
    return f"{pct(s['valid'])} | {s['fid']:.2f} | {s['precision']:.2f} | {s['recall']:.2f}"


def render_tab3(res):
    r = res["runs"][0]
    names = {"default": "default (exact counts, cosine grid)", "paper": "the paper's (`" + " ".join(PAPER_SAMPLER)
             + "`)", "confidence": "MaskGIT's (`--sampler confidence`)"}
    rows = [f"| {key.split()[0]} | {names[key.split()[1]]} | {sample_cells(s)} | {s['invalid']['count']} |"
            for key, s in r["samples"].items()]
    return (f"The quick-start prior (seed {r['seed']}), {res['n_samples']} samples a row ({res['cpu']}).\n\n"
            "| S | sampler | valid | FID | precision | recall | not 1-3 shapes |\n"
            "|---|---|---|---|---|---|---|\n" + "\n".join(rows))


def render_guidance(res):
    r = res["runs"][0]
    rows = []
    for w in sorted({key.split()[0] for key in r["samples"]}, key=float):
        sets = {key.split()[1]: s for key, s in r["samples"].items() if key.split()[0] == w}
        n = sum(s["judged"] for s in sets.values())
        valid = sum(sum(s["kinds"].values()) for s in sets.values())
        asked = sum(s["kinds"][kind] for kind, s in sets.items())
        rows.append(f"| {w} | {pct(valid / n)} | {pct(asked / max(valid, 1))} | "
                    + " | ".join(pct(s["valid"]) for s in sets.values()) + " |")
    kinds = " | ".join(f"valid, `--class {kind}`" for kind in sets)
    return (f"The quick-start prior (seed {r['seed']}), S = T, {next(iter(sets.values()))['judged']} samples of each "
            f"class at each weight ({res['cpu']}).\n\n"
            f"| guidance W | valid | of the valid, the asked kind | {kinds} |\n|---|---|---|" + "---|" * len(sets)
            + "\n" + "\n".join(rows))


def render_sec43(res):
    r = res["runs"][0]
    rows = [f"| {tau} | {sample_cells(s)} | {' / '.join(map(str, s['kinds'].values()))} | {s['invalid']['count']} |"
            for tau, s in r["samples"].items()]
    kinds = " / ".join(next(iter(r["samples"].values()))["kinds"])
    return (f"The quick-start prior (seed {r['seed']}), S = T, {res['n_samples']} samples a row ({res['cpu']}).\n\n"
            f"| temperature | valid | FID | precision | recall | {kinds} (valid) | not 1-3 shapes |\n"
            "|---|---|---|---|---|---|---|\n" + "\n".join(rows))


def render_fig4(res):
    r = res["runs"][0]
    rows = []
    for key, s in r["samples"].items():
        tau, decoding = key.split()
        how = "in training-size windows (default)" if decoding == "windows" else "whole (`--decode whole`)"
        rows.append(f"| {tau} | {how} | {pct(s['valid'])} of {s['judged']} | {s['fid']:.2f} | {s['precision']:.2f} / "
                    f"{s['recall']:.2f} | {' / '.join(map(str, s['invalid'].values()))} |")
    reasons = " / ".join(next(iter(r["samples"].values()))["invalid"])
    return (f"The quick-start prior (seed {r['seed']}), 16x16 codes from its 8x8 windows; every 32x32-pixel window on "
            f"the 4-pixel code grid judged, and scored against {res['n_samples']} real images ({res['cpu']}).\n\n"
            f"| temperature | decoding | valid windows | FID | precision / recall | why the others are not ({reasons})"
            " |\n|---|---|---|---|---|---|\n" + "\n".join(rows))


def render_tab5(res):
    rows = []
    for name, label, flags in TAB5:
        runs = [r for r in res["runs"] if r["name"] == name]
        broken = " / ".join(str(sum(r["invalid"][k] for r in runs)) for k in runs[0]["invalid"])
        rows.append(f"| {label} | `{' '.join(flags) or '(none)'}` | {cell([r['reconstruction_fid'] for r in runs])} | "
                    f"{cell([r['psnr'] for r in runs], '{:.2f}')} | {cell([r['valid'] for r in runs], '{:.1%}')} | "
                    f"{cell([r['codebook_perplexity'] for r in runs], '{:.1f}')} | "
                    f"{cell([r['code_bits'] for r in runs], '{:.2f}')} | {broken} |")
    reasons = " / ".join(res["runs"][0]["invalid"])
    return (f"Seeds {seeds_of(res['runs'])}, {res['n_samples']} held-out images reconstructed; mean +- sd over the "
            f"seeds ({res['cpu']}).\n\n| VQGAN | flags | reconstruction FID | PSNR, dB | valid reconstructions | "
            f"codebook perplexity | bits of code given the patch | broken first, all seeds ({reasons}) |\n"
            "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows))


def render_mask_replace(res):
    """The tables of results/mask_replace.json: each kind's mean +- sd over its seeds."""
    def over(runs, value, fmt):
        return cell([value(r) for r in runs], fmt)

    rows, jumps = [], []
    for name, label, _ in KINDS:
        runs = [r for r in res["runs"] if r["name"] == name]
        T = runs[0]["T"]
        S = (T, T // 4, round(T / 10))
        cells = [f"{T}; {', '.join(map(str, S))}", over(runs, lambda r: r["bound"], "{:.3f}")]
        cells += [over(runs, lambda r, s=s: r["samples"][f"{s} exact"]["valid"], "{:.1%}") for s in S]
        cells += [over(runs, lambda r: r["samples"][f"{T} exact"]["revised"], "{:.1%}"),
                  over(runs, lambda r: 1000 * r["samples"][f"{S[1]} exact"]["seconds_per_image"] / S[1], "{:.2f}")]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
        if name == "mr":
            head = f"| jump | valid at S = {S[1]} | S = {S[2]} |\n|---|---|---|\n"
            for jump in ("exact", "shortcut"):
                valid = [over(runs, lambda r, s=s: r["samples"][f"{s} {jump}"]["valid"], "{:.1%}") for s in S[1:]]
                jumps.append(f"| {jump} | " + " | ".join(valid) + " |")
    seeds = ", ".join(str(seed) for seed in sorted({r["seed"] for r in res["runs"]}))
    return (f"{res['n_samples']} samples judged a cell, mean +- sd over seeds {seeds} ({res['cpu']}).\n\n"
            "| prior | T; S = T, T/4, T/10 | held-out bound, bits per token | valid at S = T | S = T/4 | S = T/10 | "
            "codes revised, S = T | ms per image and call, S = T/4 |\n|---|---|---|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n\nMask-and-replace with strided jumps: the exact D-step posterior against the "
            "official code's shortcut.\n\n" + head + "\n".join(jumps))


def render_real_set(res):
    """The README's run on a real set: its time, and its samples by the set's classifier beside real images."""
    sec, r, n = res["seconds"], res["runs"][1], res["per_class"] * len(res["classes"])
    rows = [f"| samples, `--guidance {w}` | {100 * s['class_accuracy']:.1f} +- {100 * s['class_accuracy_err']:.1f}% | "
            f"{s['fid']:.2f} | {s['precision']:.2f} | {s['recall']:.2f} | {s['random_fid']:.2f} |"
            for w, s in sorted(r["samples"].items(), reverse=True)]
    q = res["runs"][0]["reconstructions"]
    rows.append(f"| the VQGAN's reconstructions of the floor's images | {100 * q['class_accuracy']:.1f} +- "
                f"{100 * q['class_accuracy_err']:.1f}% | {q['fid']:.2f} | {q['precision']:.2f} | {q['recall']:.2f} | |")
    s = r["samples"]["2"]
    rows.append(f"| the floor: real images | {100 * s['floor_accuracy']:.1f} +- {100 * s['floor_accuracy_err']:.1f}% "
                f"(held-out) | {s['floor_fid']:.2f} (training images) | {s['floor_precision']:.2f} | "
                f"{s['floor_recall']:.2f} | |")
    return (f"VQGAN {sec['VQGAN'] / 60:.1f} minutes, prior {sec['prior'] / 60:.1f} ({res['cpu']}); "
            f"{res['per_class']} samples of each class against {n} real held-out images.\n\n"
            f"| {n} images | class accuracy | distance, classifier features | precision | recall | "
            "FID, random features |\n|---|---|---|---|---|---|\n" + "\n".join(rows))


def render_icons(res):
    """REPRODUCTION.md's icon folder: the two priors' bounds and samples beside the floor, and the reconstructions."""
    vq, priors, sec, n, f = res["runs"][0], res["runs"][1:], res["seconds"], res["n_heldout"], res["floor"]
    q, K = vq["reconstructions"], vq["settings"]["codebook_size"]
    rows = [f"| {r['label']} | {r['bound_name']} {r['bound']:.2f} +- {r['bound_err']:.2f} | "
            f"{r['samples']['fid']:.2f} | {r['samples']['precision']:.2f} | {r['samples']['recall']:.2f} | "
            f"{r['revised']:.1%} |" for r in priors]
    rows.append(f"| the floor: {n} training icons as samples | | {f['fid']:.2f} | {f['precision']:.2f} | "
                f"{f['recall']:.2f} | |")
    times = ", ".join(f"{label.split(',')[0]} prior {s / 60:.1f}" for label, s in list(sec.items())[1:])
    return (f"VQGAN {sec['VQGAN'] / 60:.1f} minutes, {times} ({res['cpu']}). {n} samples of each prior at "
            f"temperature 1 against the {n} held-out icons, random features (not comparable with published FIDs); "
            "+- is the bound's Monte-Carlo error.\n\n"
            "| prior | held-out bound, bits per token | FID | precision | recall | codes revised |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(rows) +
            f"\n\nThe VQGAN's reconstructions of the held-out icons: PSNR {q['psnr']:.1f} dB, reconstruction FID "
            f"{q['reconstruction_fid']:.2f}, codebook perplexity {q['codebook_perplexity']:.0f} of {K} codes, "
            f"{q['codebook_used']:.0%} used.")

TABLES = {"quickstart": ("README.md", render_quickstart), "tab4": ("REPRODUCTION.md", render_tab4),
          "fig5": ("REPRODUCTION.md", render_fig5), "departures": ("REPRODUCTION.md", render_departures),
          "tab3": ("REPRODUCTION.md", render_tab3), "sec4.3": ("REPRODUCTION.md", render_sec43),
          "guidance": ("REPRODUCTION.md", render_guidance),
          "fig4": ("REPRODUCTION.md", render_fig4), "tab5": ("REPRODUCTION.md", render_tab5),
          "mask_replace": ("REPRODUCTION.md", render_mask_replace),
          "real_set": ("README.md", render_real_set),
          "icons": ("REPRODUCTION.md", render_icons)}  # results file -> (document, its renderer)
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
