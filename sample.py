"""
Stage 3: sample images from a trained prior: parallel un-masking, step skipping, temperature, images larger
than the training ones (Eq. 8), inpainting (Sec. 4.5), and an animation of the un-masking.

    python sample.py --ckpt out/absorbing.pt                           # a grid of 64 samples, out/samples.png
    python sample.py --ckpt out/absorbing.pt --sample-steps 16         # 16 network calls instead of N
    python sample.py --ckpt out/absorbing.pt --latent-size 16 24       # larger than training, mixture of windows
    python sample.py --ckpt out/absorbing.pt --inpaint img.png --mask mask.png    # white in the mask = redo
    python sample.py --ckpt out/absorbing.pt --n-samples 8 --gif out/unmask.gif
    python sample.py --ckpt out/absorbing.pt --sampler confidence --sample-steps 16    # MaskGIT's order
    python sample.py --ckpt out/absorbing.pt --class square --guidance 2                # classifier-free guidance
    python sample.py --ckpt out/mr/absorbing.pt --sample-steps 25 --truncation 0.86     # a mask-replace prior

The prior's EMA weights are used, with the VQGAN checkpoint the prior's checkpoint names (or --vqgan).
"""
import argparse
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from absorbing import denoise, load_vqgan, prior_from_checkpoint
from common import HelpFormatter, bf16_is_fast, load_checkpoint, positive_int, save_grid, to_device
from data import load_image, to_float, to_uint8

# Samples are drawn at temperature 0.9 by default, below the reverse process's 1 (the model's own distribution), as
# the paper samples for its FIDs: on the quick-start priors it turns about one invalid sample in three into a valid
# one at S = T, and more at S = T/4, with FID unchanged (README, quick start; REPRODUCTION.md, Sec. 4.3). The
# measured comparisons of REPRODUCTION.md sample at 1, to compare the models themselves.
TEMPERATURE = 0.9

# -----------------------------------------------------------------------------
# Larger than training (Sec. 3.3): the network only knows h x w grids, so a larger grid's prediction at
# each position is the mixture of the predictions of the training-size windows that contain it.


def window_starts(size, window, stride):
    """Offsets of the windows of length `window` along `size`, every `stride` (at most `window`: a longer stride
    would leave gaps), plus one flush with the end, so that every position is in some window."""
    starts = list(range(0, size - window + 1, min(stride, window)))
    return starts if starts[-1] == size - window else starts + [size - window]


def mixture_denoiser(h, w, stride):
    """A `predict` for absorbing.sample on (B, H, W) grids. Eq. 8: p(x_0[i] | x_t) = (1/|W_i|) sum over the
    windows w in W_i that contain i of p(x_0[i] | x_t[w]), windows every `stride` codes; temperature divides
    each window's logits."""
    def predict(model, x, reveal, temperature):
        B, H, W = x.shape
        windows = [(r, c) for r in window_starts(H, h, stride) for c in window_starts(W, w, stride)]
        crops = torch.stack([x[:, r:r + h, c:c + w] for r, c in windows], 1)  # (B, nw, h, w)
        crop_reveal = torch.stack([reveal[:, r:r + h, c:c + w] for r, c in windows], 1)  # (B, nw, h, w), CPU
        flat = torch.arange(B * H * W).view(B, H, W)  # each position's index in the big grid
        where = torch.stack([flat[:, r:r + h, c:c + w] for r, c in windows], 1)  # (B, nw, h, w)
        probs = denoise(model, crops.reshape(-1, h * w), crop_reveal.reshape(-1, h * w), temperature)  # (M', K)
        big = to_device(where.flatten()[crop_reveal.flatten()], x.device)  # (M',) big-grid index of each prediction
        total = torch.zeros(B * H * W, probs.shape[1], device=x.device).index_add_(0, big, probs)
        count = torch.zeros(B * H * W, device=x.device).index_add_(0, big, torch.ones_like(big, dtype=torch.float))
        at = to_device(reveal.flatten().nonzero().squeeze(1), x.device)
        return total[at] / count[at, None]  # (M, K): the average over the windows that contain each position
    return predict


# -----------------------------------------------------------------------------
# Classifier-free guidance


def guided(model, label, weight):
    """The network as a callable (x_t, positions) -> logits, guided towards class `label` (classifier-free
    guidance, Ho & Salimans 2022): logits = uncond + weight * (cond - uncond), both from one batched call.
    weight 0 is the unconditional model, 1 the plain conditional one, > 1 pushes further towards the class."""
    def net(x_t, positions=None, **inputs):  # inputs: the time t (B,) of a prior that sees it
        if weight in (0, 1):  # one of the two terms alone: a single call of B rows
            y = torch.full((len(x_t),), label if weight else model.cfg.n_classes, device=x_t.device)
            return model(x_t, positions, y=y, **inputs)
        y = torch.tensor([label, model.cfg.n_classes], device=x_t.device).repeat_interleave(len(x_t))  # (2B,)
        both_positions = None if positions is None else torch.cat([positions, positions + x_t.numel()])
        both = model(torch.cat([x_t, x_t]), both_positions, y=y, **{k: torch.cat([v, v]) for k, v in inputs.items()})
        cond, uncond = both.float().chunk(2)
        return uncond + weight * (cond - uncond)
    return net


# -----------------------------------------------------------------------------
# Inpainting (Sec. 4.5): encode the image, mask the codes whose patches touch the region, and run the reverse
# process from t = the number of masked codes with the other codes fixed.


def inpaint_inputs(vqgan, image_path, mask_path, mask_id, device):
    """(codes with the region masked (1, h, w), the image (1, 3, S, S) in [-1, 1], the masked codes (h, w) bool)."""
    size = vqgan.cfg.img_size
    with Image.open(image_path) as img, Image.open(mask_path) as mask:
        if img.size != mask.size:
            raise SystemExit(f"error: the mask {mask_path} is {mask.size[0]}x{mask.size[1]} but the image {image_path} "
                             f"is {img.size[0]}x{img.size[1]}; they must be the same size")
        region = np.asarray(ImageOps.fit(mask.convert("L"), (size, size), Image.NEAREST)) > 127  # white: regenerate
    image = to_float(torch.from_numpy(load_image(image_path, size).copy())[None]).to(device)
    # (h, w): a code is masked if any pixel of its f x f patch is in the region
    masked = F.max_pool2d(torch.from_numpy(region).float()[None, None], vqgan.cfg.downsample)[0, 0].bool()
    if not masked.any():
        raise SystemExit(f"error: the mask {mask_path} has no white pixel in the centre square the image is read at "
                         f"({size}x{size} after resizing), so there is nothing to inpaint")
    codes = vqgan.encode(image)
    codes[:, masked.to(device)] = mask_id
    return codes, image, masked

# -----------------------------------------------------------------------------


def class_index(ckpt, name_or_index):
    """The class id of --class, given as a name or an index; a one-line error for a prior without classes or a
    class it does not know."""
    classes = ckpt.get("classes") or []
    if not classes:
        raise SystemExit("error: --class needs a class-conditional prior; this one was trained without labels "
                         "(vqgan.py writes labels.npy for shapes and for a folder of subfolders)")
    if name_or_index in classes:
        return classes.index(name_or_index)
    if name_or_index.isdigit() and int(name_or_index) < len(classes):
        return int(name_or_index)
    raise SystemExit(f"error: the prior knows no class {name_or_index!r}; its classes are "
                     f"{', '.join(f'{i} {c}' for i, c in enumerate(classes))}")


def image_classes(ckpt, label, n, seed):
    """The class of each of n new images: `label` for all (--class); for a class-conditional prior without --class,
    drawn from the training images' class frequencies, which samples p(x) = sum_y p(y) p(x | y) with the
    conditional model (trained on 1 - class_dropout of the data) instead of its no-class one; None for an
    unconditional prior."""
    if label is not None:
        return torch.full((n,), label)
    if not ckpt.get("classes"):
        return None
    return torch.multinomial(ckpt["class_counts"].double(), n, replacement=True,
                             generator=torch.Generator().manual_seed(seed))


def decode(vqgan, codes, bf16, whole=False):
    """Images (B, 3, H*f, W*f) in [-1, 1] of codes (B, H, W). A grid larger than the VQGAN's training grid (h, w)
    is decoded window by window unless `whole`: windows of h x w codes every h/2, w/2 codes, and each code's f x f
    pixels from the window whose centre is nearest (the first one on a tie). The decoder's GroupNorm statistics
    and zero padding are those of an h x w grid, so a small decoder can paint a larger grid in other colours."""
    h = w = vqgan.cfg.img_size // vqgan.cfg.downsample
    B, H, W = codes.shape
    if whole or (H, W) == (h, w):
        with torch.autocast(codes.device.type, dtype=torch.bfloat16, enabled=bf16):
            return vqgan.decode(codes).float().clamp(-1, 1)
    f = vqgan.cfg.downsample
    out = torch.zeros(B, 3, H * f, W * f, device=codes.device)
    ys, xs = torch.arange(h)[:, None] - (h - 1) / 2, torch.arange(w)[None] - (w - 1) / 2
    distance = torch.maximum(ys.abs(), xs.abs())  # (h, w) Chebyshev distance of each code to its window's centre
    nearest = torch.full((H, W), math.inf)  # each code's distance to the centre of the window it was decoded in
    for r in window_starts(H, h, max(h // 2, 1)):
        for c in window_starts(W, w, max(w // 2, 1)):
            take = distance < nearest[r:r + h, c:c + w]
            nearest[r:r + h, c:c + w][take] = distance[take]
            pixels = take.repeat_interleave(f, 0).repeat_interleave(f, 1).to(codes.device)  # (h*f, w*f)
            region = out[:, :, r * f:(r + h) * f, c * f:(c + w) * f]
            region.copy_(torch.where(pixels, decode(vqgan, codes[:, r:r + h, c:c + w], bf16), region))
    return out


# From the checkpoint to the written images, top to bottom; the pieces it calls are above.
def main(args):
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    bf16 = bf16_is_fast(device) if args.bf16 == "auto" else args.bf16 == "on"
    ckpt = load_checkpoint(args.ckpt, "absorbing")
    model, kind = prior_from_checkpoint(ckpt)
    model = model.to(device)
    net = torch.compile(model, dynamic=True) if args.compile else model  # shapes change with each step's reveals
    label = class_index(ckpt, args.class_) if args.class_ is not None else None
    if args.guidance != 1 and not ckpt.get("classes"):
        raise SystemExit(f"error: --guidance {args.guidance} needs a class-conditional prior; this one was trained "
                         f"without labels")
    calls = [0]
    K, h, w = model.cfg.codebook_size, model.cfg.latent_h, model.cfg.latent_w
    vqgan_path = args.vqgan or (Path(args.ckpt).parent / ckpt["vqgan"] if ckpt["vqgan"] else None)
    vqgan = load_vqgan(vqgan_path, device)
    if vqgan is None:
        raise SystemExit("error: sampling writes images, so it needs the VQGAN checkpoint; pass --vqgan PATH")
    side = vqgan.cfg.img_size // vqgan.cfg.downsample
    if (vqgan.cfg.codebook_size, side, side) != (K, h, w):
        raise SystemExit(f"error: the VQGAN {vqgan_path} makes {side}x{side} grids of {vqgan.cfg.codebook_size} codes, "
                         f"the prior models {h}x{w} grids of {K}; pass the --vqgan the prior's codes came from")
    H, W = args.latent_size or (h, w)
    if H < h or W < w:
        raise SystemExit(f"error: --latent-size {H} {W} is smaller than the prior's {h}x{w} window")
    options = dict(sampler=args.sampler, counts=args.counts, remask_steps=args.remask_steps,
                   remask_fraction=args.remask_fraction)  # the absorbing prior's; other kinds refuse what they lack
    if kind.name == "mask-replace":
        options.update(truncation=args.truncation, shortcut=args.posterior == "shortcut")
    elif args.truncation != 1 or args.posterior != "exact":
        raise SystemExit(f"error: --truncation and --posterior are the mask-replace prior's; this one is {kind.name}")
    if (H, W) != (h, w):
        options["predict"] = mixture_denoiser(h, w, args.window_stride)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def run(x, seed, on_step=None, label=None):  # the prior's sampler, at most --sample-steps network calls
        calls[0] = 0
        cls_net = net if label is None else guided(net, label, args.guidance)

        def counted(*a, **k):
            calls[0] += 1
            return cls_net(*a, **k)

        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return kind.sample(counted, x, steps=args.sample_steps, temperature=args.temperature, seed=seed,
                               on_step=on_step, progress=True, **options)

    if args.inpaint:
        codes, image, masked = inpaint_inputs(vqgan, args.inpaint, args.mask, K, device)
        x = run(codes.expand(args.n_samples, -1, -1), args.seed, label=label)
        patches = F.interpolate(masked[None, None].float(), size=image.shape[-2:]).bool().to(device)  # (1, 1, S, S)
        completions = torch.where(patches, decode(vqgan, x, bf16), image)  # outside the masked patches: the image
        shown = torch.cat([image, torch.where(patches, 0.0, image), completions])
        save_grid(to_uint8(shown), out, nrow=len(shown))
        print(f"wrote {out}: the image, the masked view ({int(masked.sum())} of {h * w} codes masked), "
              f"{args.n_samples} completions")
        return

    labels = image_classes(ckpt, label, args.n_samples, args.seed)  # (n,) or None
    groups = [torch.arange(args.n_samples)] if labels is None else [(labels == c).nonzero()[:, 0]
                                                                    for c in labels.unique()]
    batches = [idx[i:i + args.batch_size] for idx in groups for i in range(0, len(idx), args.batch_size)]  # one class
    f = vqgan.cfg.downsample
    frames, images = [], torch.zeros(args.n_samples, H * f, W * f, 3, dtype=torch.uint8)
    revised = [0, 0]  # codes that a later step changed to another code, codes sampled
    for b, idx in enumerate(batches):
        last, changed = [None], torch.zeros(len(idx), H, W, dtype=torch.bool, device=device)

        def on_step(x, gif=args.gif and b == 0):  # after each step: the animation's frames, and revised codes
            if gif:
                frames.append(x.clone())
            if last[0] is not None:
                changed.logical_or_((last[0] != K) & (x != K) & (x != last[0]))
            last[0] = x.clone()

        c = None if labels is None else int(labels[idx[0]])
        start = time.time()
        x = run(torch.full((len(idx), H, W), K, device=device), args.seed + b, on_step, label=c)
        revised = [revised[0] + int(changed.sum()), revised[1] + changed.numel()]
        images[idx] = to_uint8(decode(vqgan, x, bf16, whole=args.decode == "whole"))
        of_class = "" if c is None else f" of class {ckpt['classes'][c]}"
        took = time.time() - start
        print(f"batch of {len(idx)}{of_class}: {took:.2f} s to sample {H}x{W} codes with the {kind.name} prior's "
              f"{args.sampler or kind.default_sampler} sampler in {calls[0]} network calls ({took / len(idx):.3f} s "
              f"per image)")
    save_grid(images, out, nrow=int(np.ceil(np.sqrt(len(images)))))
    print(f"wrote {out}; {revised[0] / revised[1]:.1%} of the codes were changed to another code by a later step "
          f"than the one that drew them")
    if args.images:
        os.makedirs(args.images, exist_ok=True)
        for j, img in enumerate(images):
            Image.fromarray(img.numpy()).save(Path(args.images) / f"{j:05d}.png")
    if args.gif:
        write_gif(vqgan, frames, K, bf16, args.gif)


def write_gif(vqgan, frames, mask_id, bf16, path):
    """The un-masking as an animation: each frame decodes x_t with the still-masked patches shown grey."""
    pictures = []
    for x in frames:
        masked = x == mask_id  # (B, H, W)
        img = decode(vqgan, x.masked_fill(masked, 0), bf16)
        grey = F.interpolate(masked[:, None].float(), scale_factor=vqgan.cfg.downsample).bool()
        grid = to_uint8(torch.where(grey, 0.0, img))
        pictures.append(Image.fromarray(np.concatenate(list(grid.numpy()), axis=1)))
    pictures[0].save(path, save_all=True, append_images=pictures[1:] + [pictures[-1]] * 10, duration=80, loop=0)
    print(f"wrote {path} ({len(pictures)} frames)")


def get_args(argv=None):
    p = argparse.ArgumentParser(description="Stage 3: sample images from the absorbing-diffusion prior",
                                formatter_class=HelpFormatter)
    p.add_argument("--ckpt", default="out/absorbing.pt", help="the prior's checkpoint (absorbing.py)")
    p.add_argument("--vqgan", default=None, help="the VQGAN checkpoint (default: the one the prior names)")
    p.add_argument("--n-samples", type=positive_int, default=64, help="number of images")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images sampled at once")
    p.add_argument("--sample-steps", type=positive_int, default=None,
                   help="network calls at most (default: one per masked code, N for a new sample)")
    p.add_argument("--sampler", choices=["random", "confidence", "cosine", "remask"], default=None,
                   help="cosine (the default): the paper's reverse process on MD4's cosine grid of steps, few codes "
                        "first; random: the same on a uniform grid (at S = N both reveal one code a step); "
                        "confidence: MaskGIT's, most confident codes first; remask: random, then ReMDM's correctors")
    p.add_argument("--counts", choices=["exact", "binomial"], default="exact",
                   help="random, cosine, remask: each step reveals exactly its share of the codes, in a random order "
                        "(one a step at S = N), or each code's step is drawn on its own (binomial: the paper's process "
                        "as written, which can reveal several codes in one step without letting them see each other)")
    p.add_argument("--remask-steps", type=int, default=None,
                   help="remask: how many of the --sample-steps calls are corrector steps (default half)")
    p.add_argument("--remask-fraction", type=float, default=0.1, help="remask: share of the codes redrawn per step")
    p.add_argument("--class", dest="class_", default=None, metavar="NAME_OR_INDEX",
                   help="sample this class (a class-conditional prior: codes with labels.npy)")
    p.add_argument("--guidance", type=float, default=1.0,
                   help="classifier-free guidance weight W: uncond + W (cond - uncond); 0 unconditional, 1 conditional")
    p.add_argument("--temperature", type=float, default=TEMPERATURE,
                   help="divides the logits; < 1 is more conservative, 1 the model's own distribution")
    p.add_argument("--truncation", type=float, default=1.0,
                   help="mask-replace: keep the most likely codes of each x_0 prediction up to this share of its "
                        "probability (VQ-Diffusion's r, 0.86 in its paper; 1: none)")
    p.add_argument("--posterior", choices=["exact", "shortcut"], default="exact",
                   help="mask-replace with --sample-steps < T: each jump of D steps draws from the exact D-step "
                        "posterior, or the official code's shortcut (the one-step posterior at a shifted time)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--out", default="out/samples.png", help="PNG grid to write")
    p.add_argument("--images", default=None, help="also write each image to this folder")
    p.add_argument("--latent-size", type=positive_int, nargs=2, metavar=("H", "W"), default=None,
                   help="code grid larger than the training one (Eq. 8 mixture of windows)")
    p.add_argument("--window-stride", type=positive_int, default=1, help="codes between windows of the mixture")
    p.add_argument("--decode", choices=["windows", "whole"], default="windows",
                   help="a --latent-size grid: decoded in training-size windows, or whole at once (the paper's way)")
    p.add_argument("--inpaint", default=None, metavar="IMAGE", help="image to edit (needs --mask)")
    p.add_argument("--mask", default=None, help="mask image, same size as IMAGE: white = regenerate")
    p.add_argument("--gif", default=None, help="write an animation of the un-masking of the first batch here")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--compile", action="store_true", help="torch.compile the prior (compiles once, then runs faster)")
    p.add_argument("--bf16", default="auto", choices=["auto", "on", "off"], help="bfloat16 autocast")
    args = p.parse_args(argv)
    if args.temperature <= 0:
        p.error(f"--temperature must be > 0, got {args.temperature}")
    if not 0 < args.truncation <= 1:
        p.error(f"--truncation must be in (0, 1], got {args.truncation}")
    if not 0 < args.remask_fraction <= 1:
        p.error(f"--remask-fraction must be in (0, 1], got {args.remask_fraction}")
    if args.remask_steps is not None and (args.sampler != "remask" or args.remask_steps < 0):
        p.error("--remask-steps is a count >= 0 for --sampler remask")
    if bool(args.inpaint) != bool(args.mask):
        p.error("--inpaint IMAGE and --mask MASK go together")
    if args.inpaint and args.latent_size:
        p.error("--inpaint works at the training size; drop --latent-size")
    return args


if __name__ == "__main__":
    main(get_args())
