"""
The figures of tutorial/README.md from the quick start's checkpoints and the runs of REPRODUCTION.md that the
tutorial compares it with, all in one --out-dir as reproduce.py names them (RUNS); about two minutes on a laptop
CPU once they exist:

    python reproduce.py --claims quickstart --seeds 2 --out-dir out/r       # the quick start, timed, judged (31 min, AVX2)
    python reproduce.py --claims fig5 departures tab5 --out-dir out/r       # the runs it is compared with
    python absorbing.py --codes out/r/codes.npy --model mask-replace --out-dir out/r/mr_s0
    python tutorial/figures.py --out-dir out/r                              # every figure, into tutorial/
    python tutorial/figures.py --out-dir out/r --only steps masking         # some of them
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project's files, one folder up
import absorbing  # noqa: E402
import data  # noqa: E402
import vqgan  # noqa: E402
from common import bf16_is_fast, load_checkpoint  # noqa: E402
import evaluate  # noqa: E402
import shapes  # noqa: E402
from sample import decode  # noqa: E402

FONT = ImageFont.load_default(size=12)
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
# The runs besides the quick start's that some figures compare it with, in --out-dir by reproduce.py's names for them
PAPER_ENCODER = "python vqgan.py --local-encoder off --out-dir OUT/tab5_paper_encoder_s0"
GROUP_NORM = "python vqgan.py --norm group --out-dir OUT/tab5_groupnorm_s0"
UNCOND = "python absorbing.py --codes OUT/codes.npy --class-dropout 1 --max-steps 1000"
MASK_REPLACE = "python absorbing.py --codes OUT/codes.npy --model mask-replace --out-dir OUT/mr_s0"
FIGURES = ["recon", "codes", "redundancy", "norm", "masking", "pos_init", "elbo_per_t", "val_elbo", "trajectory",
           "steps", "mosaic", "copies", "revisions"]

# -----------------------------------------------------------------------------
# Drawing with Pillow: image grids with captions, and small line charts


def picture(images, scale=3, nrow=None):
    """uint8 (B, H, W, 3) images -> one PIL image, `nrow` a row, 1-pixel white gaps, upscaled `scale` times."""
    grid = make_grid(images.permute(0, 3, 1, 2), nrow=nrow or len(images), padding=1, pad_value=255)
    return Image.fromarray(grid.permute(1, 2, 0).numpy()).resize((grid.shape[2] * scale, grid.shape[1] * scale),
                                                                 Image.NEAREST)


def join(pictures, captions=None, gap=6):
    """Pictures side by side, each with its caption above it; without captions, one above the other."""
    top, (wide, high) = (18, (sum, max)) if captions else (0, (max, sum))  # caption height, how sizes add up
    out = Image.new("RGB", (wide(q.width + gap for q in pictures), high(q.height + gap for q in pictures) + top),
                    "white")
    at = 0
    for i, p in enumerate(pictures):
        out.paste(p, (at, top) if captions else (0, at))
        if captions:
            ImageDraw.Draw(out).text((at + p.width // 2, 2), captions[i], fill="black", font=FONT, anchor="mt")
        at += (p.width if captions else p.height) + gap
    return out


def ticks(lo, hi):
    """About five round numbers between lo and hi."""
    step = 10 ** math.floor(math.log10((hi - lo) / 4))
    step *= next(m for m in (1, 2, 5, 10) if (hi - lo) / (step * m) <= 5)
    return np.arange(math.ceil(lo / step), math.floor(hi / step) + 1) * step


def chart(curves, title, xlabel, ylabel, w=420, h=280):
    """A line chart: curves is a list of (label, xs, ys[, colour]); a curve of few points gets a dot at each."""
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    left, top, right, bottom = 50, 22, w - 10, h - 36
    xs, ys = np.concatenate([c[1] for c in curves]), np.concatenate([c[2] for c in curves])
    x0, x1, pad = xs.min(), xs.max() + 0.02 * (xs.max() - xs.min()), 0.06 * (ys.max() - ys.min())
    y0, y1 = ys.min() - pad, ys.max() + pad
    px = lambda x: left + (x - x0) / (x1 - x0) * (right - left)  # noqa: E731
    py = lambda y: bottom - (y - y0) / (y1 - y0) * (bottom - top)  # noqa: E731
    d.rectangle([left, top, right, bottom], outline="black")
    for v in ticks(x0, x1):
        d.text((px(v), bottom + 3), f"{v:g}", fill="black", font=FONT, anchor="mt")
    for v in ticks(y0, y1):
        d.text((left - 3, py(v)), f"{v:.3g}", fill="black", font=FONT, anchor="rm")
        d.line([left, py(v), left + 4, py(v)], fill="black")
    d.text(((left + right) / 2, 3), title, fill="black", font=FONT, anchor="mt")
    d.text(((left + right) / 2, h - 3), xlabel, fill="black", font=FONT, anchor="mb")
    d.text((3, top - 18), ylabel, fill="black", font=FONT)
    labels = 0  # a curve with an empty label shares the label of the one before
    for i, (label, cx, cy, *colour) in enumerate(curves):
        colour = colour[0] if colour else COLOURS[i]
        points = [(px(a), py(b)) for a, b in zip(cx, cy)]
        d.line(points, fill=colour, width=2 if len(points) > 9 else 1)
        for a, b in points if len(points) <= 9 else []:
            d.ellipse([a - 3, b - 3, a + 3, b + 3], fill=colour)
        if label:
            d.text((right - 6, top + 6 + 14 * labels), label, fill=colour, font=FONT, anchor="ra")
            labels += 1
    return img


def save(img, path):
    img.quantize(256).save(path, optimize=True)  # a 256-colour palette: the PNGs stay small
    print(f"wrote {path} ({path.stat().st_size / 1000:.0f} kB)")

# -----------------------------------------------------------------------------
# The figures, one function each, in the tutorial's order


def needs(args, path, command):
    """A checkpoint or log that a figure compares with; if it is missing, the command that makes it."""
    if not path.is_file():
        raise SystemExit(f"error: the figure needs {path}: run {command.replace('OUT', str(args.out_dir))}")
    return path


def decode_masked(vq, codes, mask_id):
    """Codes (B, h, w) with masks -> uint8 images with every masked f x f patch grey."""
    masked = codes == mask_id
    img = vq.decode(codes.masked_fill(masked, 0))
    grey = F.interpolate(masked[:, None].float(), scale_factor=vq.cfg.downsample).bool()
    return data.to_uint8(torch.where(grey, 0.0, img))


def fig_recon(m, args):
    x = data.to_float(torch.from_numpy(shapes.make_shapes(8, seed=1)[0]))  # seed 1: the held-out images
    x_hat = m["vq"](x)[0]
    save(picture(torch.cat([data.to_uint8(x), data.to_uint8(x_hat)]), nrow=8), args.fig_dir / "recon.png")
    print(f"PSNR of these 8 reconstructions: {vqgan.psnr(x, x_hat.clamp(-1, 1)):.1f} dB")
    ppl, used = vqgan.codebook_usage(m["codes"], m["K"])
    print(f"codes.npy ({len(m['codes'])} images): perplexity {ppl:.1f}, {100 * used:.0f}% of {m['K']} codes used")


def fig_codes(m, args):
    x = data.to_float(torch.from_numpy(shapes.make_shapes(1, seed=1)[0]))
    codes = m["vq"].encode(x)[0]  # (h, w)
    h, w, cell = *codes.shape, 32
    palette = np.random.default_rng(0).integers(90, 256, (m["K"], 3))  # a light colour per code
    grid = Image.new("RGB", (w * cell, h * cell), "white")
    d = ImageDraw.Draw(grid)
    for (i, j), k in np.ndenumerate(codes.numpy()):
        d.rectangle([j * cell, i * cell, (j + 1) * cell - 1, (i + 1) * cell - 1], fill=tuple(palette[k]))
        d.text((j * cell + cell // 2, i * cell + cell // 2), str(k), fill="black", font=FONT, anchor="mm")
    scale = grid.width // x.shape[-1]
    pictures = [picture(data.to_uint8(x), scale), grid, picture(data.to_uint8(m["vq"].decode(codes[None])), scale)]
    save(join(pictures, ["image", f"its {h}x{w} codes", "decoded codes"]), args.fig_dir / "codes.png")
    print(f"codes of the image, row by row: {codes.tolist()}")


def code_map(codes, K, cell=4):
    """Codes (B, h, w) -> uint8 images (B, h*cell, w*cell, 3), each code a colour of its own (the same colour,
    the same code)."""
    palette = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (K, 3), dtype=np.uint8))
    return palette[codes].repeat_interleave(cell, 1).repeat_interleave(cell, 2)


def fig_redundancy(m, args):
    """Codes of held-out images from the paper's encoder (trained by PAPER_ENCODER) and from the local one: each
    code a colour."""
    before = absorbing.load_vqgan(needs(args, args.out_dir / "tab5_paper_encoder_s0" / "vqgan.pt", PAPER_ENCODER),
                                  "cpu")
    images = shapes.make_shapes(500, seed=1)[0]
    x = data.to_float(torch.from_numpy(images))
    rows = [torch.from_numpy(images[:8])]
    for name, vq in (("paper's encoder", before), ("local encoder", m["vq"])):
        codes = vq.encode(x)
        bits, agreement, _ = data.code_redundancy(images, codes.numpy())
        print(f"{name}: {bits:.2f} bits of code given the patch, {100 * agreement:.0f}% of equal patches get their "
              f"most common code (500 held-out images)")
        rows.append(code_map(codes[:8], vq.cfg.codebook_size, vq.cfg.downsample))
    save(picture(torch.cat(rows), nrow=8), args.fig_dir / "redundancy.png")


def fig_masking(m, args):
    T, K = m["T"], m["K"]
    x_0 = m["vq"].encode(data.to_float(torch.from_numpy(shapes.make_shapes(1, seed=1)[0]))).flatten(1)
    pictures, captions = [], []
    for t in (0, T // 8, T // 4, T // 2, 3 * T // 4, T):  # the same seed for every t, so the masks are nested
        x_t, mask = absorbing.q_sample(x_0, torch.tensor([t]), T, K, torch.Generator().manual_seed(args.seed))
        pictures.append(picture(decode_masked(m["vq"], x_t.view(1, *m["hw"]), K), 4))
        captions.append(f"t={t}: {int(mask.sum())} masked")
    save(join(pictures, captions), args.fig_dir / "masking.png")
    print("; ".join(captions))


def fig_elbo_per_t(m, args):
    """E[CE_t] of the held-out codes at each t = 1..T, one mask per grid, and what each loss makes of it."""
    T, K, N = m["T"], m["K"], m["hw"][0] * m["hw"][1]
    x_0 = data.split_codes(m["codes"].flatten(1))[1][:args.n_grids]
    g = torch.Generator().manual_seed(args.seed)
    ce, n_masked = torch.zeros(T), torch.zeros(T)
    for t in range(1, T + 1):
        x_t, mask = absorbing.q_sample(x_0, torch.full((len(x_0),), t), T, K, g)
        at = mask.flatten().nonzero().squeeze(1)
        ce[t - 1] = F.cross_entropy(m["prior"](x_t, at), x_0.flatten()[at], reduction="sum") / len(x_0)
        n_masked[t - 1] = mask.sum() / len(x_0)
    t = torch.arange(1, T + 1)
    per_code = ce / n_masked / math.log(2)  # bits per masked code: how hard step t is
    term = absorbing.loss_weight(t, T, "elbo") * ce / (T * N * math.log(2))  # sums to the ELBO in bits per token
    shares = [("elbo (Eq. 6)", absorbing.loss_weight(t, T, "elbo") * ce),
              ("reweighted_elbo (Eq. 7)", absorbing.loss_weight(t, T, "reweighted_elbo") * ce),
              ("mlm", ce)]  # mlm: every masked code weighs the same, so step t's share follows CE_t itself
    left = chart([("bits per masked code", t, per_code), ("(T/t) CE_t / (N ln 2)", t, T * term)],
                 "held-out codes, trained prior", "t", "bits")
    right = chart([(name, t, 100 * s / s.sum()) for name, s in shares], "share of the loss per t", "t", "%")
    save(join([left, right]), args.fig_dir / "elbo_per_t.png")
    print(f"{len(x_0)} held-out grids: ELBO = sum of the terms = {term.sum():.3f} bits per token; bits per masked "
          f"code at t=1: {per_code[0]:.2f}, t=T/2: {per_code[T // 2 - 1]:.2f}, t=T: {per_code[-1]:.2f}")
    for name, s in shares:  # the first quarter of the steps, the middle half, the last quarter
        parts = [100 * part.sum() / s.sum() for part in (s[:T // 4], s[T // 4:-T // 4], s[-T // 4:])]
        print(f"{name}: {parts[0]:.0f}% of the loss from t <= T/4, {parts[1]:.0f}% from the middle, {parts[2]:.0f}% "
              f"from t > 3T/4")


def training_log(path, window):
    """(records, steps, ELBO) of an absorbing.py log: every record, and the training ELBO averaged over `window`
    log lines, with the step of the last line of each window."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    steps, elbo = np.array([(r["step"], r["elbo"]) for r in records if "elbo" in r]).T
    return records, steps[window - 1:], np.convolve(elbo, np.ones(window) / window, mode="valid")


def fig_pos_init(m, args):
    """Training ELBO of the unconditional priors whose position embeddings start random or as 2D sines and cosines
    (the departures of REPRODUCTION.md), every seed found."""
    curves = []
    for init, run, colour in (("random", "posrandom", COLOURS[1]), ("sincos", "absorbing", COLOURS[0])):
        flag = " --pos-init random" * (init == "random")
        runs = sorted(args.out_dir.glob(f"uncond_{run}_s*/absorbing_log.jsonl")) or [
            needs(args, args.out_dir / f"uncond_{run}_s0" / "absorbing_log.jsonl",
                  f"{UNCOND}{flag} --out-dir OUT/uncond_{run}_s0")]
        for path in runs:
            records, steps, smooth = training_log(path, 5)  # 5 log lines: 100 steps
            curves.append((f"--pos-init {init}, {len(runs)} seeds" if path == runs[0] else "", steps, smooth, colour))
            print(f"{path.parent.name}: validation ELBO " + ", ".join(
                f"step {r['step']}: {r['val_elbo']:.3f}" for r in records if "val_elbo" in r))
    save(chart(curves, "training ELBO, mean of 100 steps", "training step", "bits per token", w=520, h=320),
         args.fig_dir / "pos_init.png")


def fig_val_elbo(m, args):
    curves, val = [], []
    runs = [("reweighted_elbo", "uncond_absorbing_s0", "", COLOURS[1]), ("elbo", "uncond_elbo_s0", " --loss elbo",
                                                                         COLOURS[0])]
    for name, run, flag, colour in runs:
        path = needs(args, args.out_dir / run / "absorbing_log.jsonl", f"{UNCOND}{flag} --out-dir OUT/{run}")
        records, steps, smooth = training_log(path, 10)  # 10 log lines: 200 steps
        curves.append((f"{name}: training batches, mean of 200 steps", steps, smooth, colour))
        records = [r for r in records if "val_elbo" in r]
        val.append((f"{name}: validation (EMA weights), dots", [r["step"] for r in records],
                    [r["val_elbo"] for r in records], colour))
        print(f"{name}: validation ELBO " + ", ".join(
            f"step {r['step']}: {r['val_elbo']:.3f} +- {r['val_elbo_err']:.3f}" for r in records))
    save(chart(curves + val, "ELBO during training (the paper's Fig. 5)", "training step", "bits per token",
               w=520, h=320), args.fig_dir / "val_elbo.png")
    runs = [evaluate.likelihood(args.out_dir / run / "absorbing.pt", args.out_dir / "codes.npy", 8, torch.device("cpu"))
            for _, run, _, _ in runs]  # the same draws for both
    diff = torch.from_numpy(runs[1][1] - runs[0][1])  # per held-out image: elbo run minus reweighted run
    print(f"final EMA weights, held-out ELBO (8 draws): reweighted_elbo {runs[0][0]['elbo_bits_per_token']:.3f}, "
          f"elbo {runs[1][0]['elbo_bits_per_token']:.3f}; paired difference {diff.mean():.3f} +- "
          f"{diff.std() / math.sqrt(len(diff)):.3f} bits per token")


def fig_trajectory(m, args):
    K, N = m["K"], m["hw"][0] * m["hw"][1]
    targets = [N - N * i // 8 for i in range(9)]  # show the grid when 0, 8, 16, ... codes are revealed
    rows = []
    for seed in range(3):  # one row each
        frames = [torch.full((1, *m["hw"]), K)]
        absorbing.sample(m["prior"], frames[0], K, seed=args.seed + seed, on_step=lambda x: frames.append(x.clone()))
        left = [int((f == K).sum()) for f in frames]
        shown = [frames[next(i for i, n in enumerate(left) if n <= target)] for target in targets]
        rows.append(join([picture(decode_masked(m["vq"], f, K), 3) for f in shown],
                         [f"{int((f == K).sum())} masked" for f in shown]))
    save(join(rows), args.fig_dir / "trajectory.png")


def fig_steps(m, args):
    K, T, bf16 = m["K"], m["T"], bf16_is_fast(torch.device("cpu"))
    x = torch.full((args.n_samples, *m["hw"]), K)
    pictures, captions = [], []
    for S in (T, T, T // 4, T // 16):  # the first run warms up (allocations, kernels) and is not shown
        counted = evaluate.Counted(m["prior"], m["prior"].cfg)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # as sample.py does
            codes = absorbing.sample(counted, x, K, steps=S, seed=args.seed, grid="cosine")  # sample.py's default
            images = data.to_uint8(decode(m["vq"], codes, bf16))
        seconds = time.perf_counter() - start
        pictures.append(picture(images, 2, nrow=int(math.sqrt(len(images)))))
        captions.append(f"S={S}: {seconds:.2f} s, {counted.calls} calls")
        print(f"{len(images)} samples at S = {S}: {seconds:.3f} s ({seconds / len(images) * 1000:.1f} ms per image), "
              f"{counted.calls} network calls, bf16 {bf16}, {torch.get_num_threads()} threads")
    save(join(pictures[1:], captions[1:], gap=12), args.fig_dir / "steps.png")


def fig_revisions(m, args):
    """One mask-and-replace sample (MASK_REPLACE's prior) every tenth of its T steps: the decoded grid (masks grey),
    and under it where a code became another code since the frame before (red) or stayed (black; white: mask)."""
    path = needs(args, args.out_dir / "mr_s0" / "absorbing.pt", MASK_REPLACE)
    prior, kind = absorbing.prior_from_checkpoint(load_checkpoint(path, "absorbing"))
    K, f = m["K"], m["vq"].cfg.downsample
    rows = []
    for seed in range(3):
        frames = []
        kind.sample(prior, torch.full((1, *m["hw"]), K), seed=args.seed + seed,
                    on_step=lambda x: frames.append(x.clone()))
        shown = frames[kind.T // 10 - 1::kind.T // 10]  # after 10%, 20%, ... of the steps
        top = [picture(decode_masked(m["vq"], x, K), 3) for x in shown]
        marks = []
        for before, x in zip([shown[0]] + shown[:-1], shown):
            colour = torch.zeros(*x.shape, 3, dtype=torch.uint8)
            colour[x == K] = 255
            colour[(before != K) & (x != K) & (before != x)] = torch.tensor([214, 39, 40], dtype=torch.uint8)
            marks.append(picture(colour.repeat_interleave(f, 1).repeat_interleave(f, 2), 3))
        captions = [f"t={kind.T - kind.T // 10 * (i + 1)}" for i in range(len(shown))]
        rows += [join(top, captions), join(marks, [""] * len(marks))]
    save(join(rows), args.fig_dir / "revisions.png")


def fig_mosaic(m, args):
    """Four real code grids with black backgrounds, decoded alone, then as one 2x2 mosaic: at once, and in windows."""
    alone = decode(m["vq"], m["codes"][:64], False)
    tiles = m["codes"][:64][alone.flatten(1).median(1).values < -0.5][:4]  # (4, h, w): black backgrounds
    grid = torch.cat([torch.cat([tiles[0], tiles[1]], 1), torch.cat([tiles[2], tiles[3]], 1)])[None]  # (1, 2h, 2w)
    whole, windows = (data.to_uint8(decode(m["vq"], grid, False, whole=w)) for w in (True, False))
    parts = data.to_uint8(decode(m["vq"], tiles, False))
    parts = torch.cat([torch.cat([parts[0], parts[1]], 1), torch.cat([parts[2], parts[3]], 1)])[None]
    save(join([picture(p) for p in (parts, whole, windows)], ["each grid alone", "the mosaic at once", "in windows"]),
         args.fig_dir / "mosaic.png")
    for name, img in (("alone", parts), ("at once", whole), ("in windows", windows)):
        print(f"median pixel value, decoded {name}: {img.flatten().median().item()}")


def fig_norm(m, args):
    """Held-out images whose reconstruction by a VQGAN with the paper's GroupNorm (trained by GROUP_NORM) breaks the
    data's rule (top), that reconstruction (middle), and the default VQGAN's, with PositionNorm (bottom)."""
    before = absorbing.load_vqgan(needs(args, args.out_dir / "tab5_groupnorm_s0" / "vqgan.pt", GROUP_NORM), "cpu")
    images = torch.from_numpy(shapes.make_shapes(500, seed=1)[0])  # vqgan.py's held-out images
    rows, broken = [], None
    for name, vq in (("GroupNorm", before), ("PositionNorm", m["vq"])):
        recon = data.to_uint8(vq(data.to_float(images))[0])
        judged = shapes.judge_shapes(recon.numpy())
        print(f"{name}: {judged['shape_valid']:.1%} of 500 held-out reconstructions valid; broken first: "
              f"{judged['shape_invalid']}")
        if broken is None:  # the first eight that GroupNorm breaks
            broken = [i for i, img in enumerate(recon) if shapes.judge_shape_image(img.numpy())[0]][:8]
        rows.append(recon[broken])
    save(picture(torch.cat([images[broken], *rows]), nrow=8), args.fig_dir / "norm.png")


def fig_copies(m, args):
    """sample.py's figures (see the project README for their commands), enlarged."""
    for name, scale in (("large.png", 2), ("inpaint.png", 4)):
        with Image.open(args.assets / name) as img:
            save(img.convert("RGB").resize((img.width * scale, img.height * scale), Image.NEAREST), args.fig_dir / name)


def main(args):
    torch.manual_seed(args.seed)
    torch.set_grad_enabled(False)  # no figure trains anything
    args.fig_dir.mkdir(parents=True, exist_ok=True)
    ckpt = load_checkpoint(args.out_dir / "absorbing.pt", "absorbing")
    vq = absorbing.load_vqgan(args.out_dir / ckpt["vqgan"], "cpu")
    if vq is None:
        raise SystemExit(f"error: the figures decode codes to images, so they need {args.out_dir / ckpt['vqgan']}")
    codes, K, _ = data.load_codes(args.out_dir / "codes.npy")
    prior = absorbing.prior_from_checkpoint(ckpt)[0]
    m = dict(vq=vq, prior=prior, codes=codes, K=K, T=ckpt["diffusion_steps"], hw=codes.shape[1:])
    for name in args.only or FIGURES:
        start = time.perf_counter()
        globals()[f"fig_{name}"](m, args)
        print(f"[{name}: {time.perf_counter() - start:.1f} s]")


def get_args(argv=None):
    p = argparse.ArgumentParser(description="Make the tutorial's figures from the checkpoints in out/",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out-dir", type=Path, default=Path("out"), help="where vqgan.py and absorbing.py wrote")
    p.add_argument("--fig-dir", type=Path, default=Path("tutorial"), help="where the PNGs go")
    p.add_argument("--assets", type=Path, default=Path("assets"), help="where sample.py's large and inpaint PNGs are")
    p.add_argument("--only", nargs="+", choices=FIGURES, default=None, help="make only these figures")
    p.add_argument("--n-grids", type=int, default=500, help="held-out code grids for the per-t ELBO")
    p.add_argument("--n-samples", type=int, default=16, help="samples at each number of steps (the timing figure)")
    p.add_argument("--seed", type=int, default=0, help="random seed of masks and samples")
    return p.parse_args(argv)


if __name__ == "__main__":
    main(get_args())
