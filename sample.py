"""
Stage 3: sample images from a trained prior: parallel un-masking, step skipping, temperature, images larger
than the training ones (Eq. 8), inpainting (Sec. 4.5), and an animation of the un-masking.

    python sample.py --ckpt out/absorbing.pt                           # a grid of 64 samples, out/samples.png
    python sample.py --ckpt out/absorbing.pt --sample-steps 16         # 16 network calls instead of N
    python sample.py --ckpt out/absorbing.pt --latent-size 16 24       # larger than training, mixture of windows
    python sample.py --ckpt out/absorbing.pt --inpaint img.png --mask mask.png    # white in the mask = redo
    python sample.py --ckpt out/absorbing.pt --n-samples 8 --gif out/unmask.gif

The prior's EMA weights are used, with the VQGAN checkpoint the prior's checkpoint names (or --vqgan).
"""
import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from absorbing import denoise, load_vqgan, prior_from_checkpoint, sample
from common import bf16_is_fast, load_checkpoint, load_image, positive_int, save_grid, to_device
from vqgan import to_float, to_uint8

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
        raise SystemExit(f"error: the mask {mask_path} has no white pixel, so there is nothing to inpaint")
    codes = vqgan.encode(image)
    codes[:, masked.to(device)] = mask_id
    return codes, image, masked

# -----------------------------------------------------------------------------


def decode(vqgan, codes, bf16):
    with torch.autocast(codes.device.type, dtype=torch.bfloat16, enabled=bf16):
        return vqgan.decode(codes).float().clamp(-1, 1)


def main(args):
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    bf16 = bf16_is_fast(device) if args.bf16 == "auto" else args.bf16 == "on"
    ckpt = load_checkpoint(args.ckpt, "absorbing")
    model = prior_from_checkpoint(ckpt).to(device)
    net = torch.compile(model, dynamic=True) if args.compile else model  # shapes change with each step's reveals
    K, h, w = model.cfg.codebook_size, model.cfg.latent_h, model.cfg.latent_w
    vqgan_path = args.vqgan or (Path(args.ckpt).parent / ckpt["vqgan"] if ckpt["vqgan"] else None)
    vqgan = load_vqgan(vqgan_path, device)
    if vqgan is None:
        raise SystemExit("error: sampling writes images, so it needs the VQGAN checkpoint; pass --vqgan PATH")
    if vqgan.cfg.codebook_size != K:
        raise SystemExit(f"error: the VQGAN {vqgan_path} has {vqgan.cfg.codebook_size} codes, the prior {K}")
    H, W = args.latent_size or (h, w)
    if H < h or W < w:
        raise SystemExit(f"error: --latent-size {H} {W} is smaller than the prior's {h}x{w} window")
    predict = mixture_denoiser(h, w, args.window_stride) if (H, W) != (h, w) else denoise
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def run(x, seed, on_step=None):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return sample(net, x, K, steps=args.sample_steps, temperature=args.temperature, seed=seed,
                          predict=predict, on_step=on_step, progress=True)

    if args.inpaint:
        codes, image, masked = inpaint_inputs(vqgan, args.inpaint, args.mask, K, device)
        x = run(codes.expand(args.n_samples, -1, -1), args.seed)
        patches = F.interpolate(masked[None, None].float(), size=image.shape[-2:]).bool().to(device)  # (1, 1, S, S)
        completions = torch.where(patches, decode(vqgan, x, bf16), image)  # outside the masked patches: the image
        shown = torch.cat([image, torch.where(patches, 0.0, image), completions])
        save_grid(to_uint8(shown), out, nrow=len(shown))
        print(f"wrote {out}: the image, the masked view ({int(masked.sum())} of {h * w} codes masked), "
              f"{args.n_samples} completions")
        return

    frames, images = [], []
    for i in range(0, args.n_samples, args.batch_size):
        n = min(args.batch_size, args.n_samples - i)
        on_step = (lambda x: frames.append(x.clone())) if args.gif and i == 0 else None
        start = time.time()
        x = run(torch.full((n, H, W), K, device=device), args.seed + i, on_step)
        images.append(to_uint8(decode(vqgan, x, bf16)))
        print(f"batch of {n}: {time.time() - start:.2f} s to sample {H}x{W} codes in "
              f"{min(args.sample_steps or H * W, H * W)} steps ({(time.time() - start) / n:.3f} s per image)")
    images = torch.cat(images)
    save_grid(images, out, nrow=int(np.ceil(np.sqrt(len(images)))))
    print(f"wrote {out}")
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
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", default="out/absorbing.pt", help="the prior's checkpoint (absorbing.py)")
    p.add_argument("--vqgan", default=None, help="the VQGAN checkpoint (default: the one the prior names)")
    p.add_argument("--n-samples", type=positive_int, default=64, help="number of images")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images sampled at once")
    p.add_argument("--sample-steps", type=positive_int, default=None,
                   help="network calls at most (default: one per masked code, N for a new sample)")
    p.add_argument("--temperature", type=float, default=1.0, help="divides the logits; < 1 is more conservative")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--out", default="out/samples.png", help="PNG grid to write")
    p.add_argument("--images", default=None, help="also write each image to this folder")
    p.add_argument("--latent-size", type=positive_int, nargs=2, metavar=("H", "W"), default=None,
                   help="code grid larger than the training one (Eq. 8 mixture of windows)")
    p.add_argument("--window-stride", type=positive_int, default=1, help="codes between windows of the mixture")
    p.add_argument("--inpaint", default=None, metavar="IMAGE", help="image to edit (needs --mask)")
    p.add_argument("--mask", default=None, help="mask image, same size as IMAGE: white = regenerate")
    p.add_argument("--gif", default=None, help="write an animation of the un-masking of the first batch here")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--compile", action="store_true", help="torch.compile the prior (compiles once, then runs faster)")
    p.add_argument("--bf16", default="auto", choices=["auto", "on", "off"], help="bfloat16 autocast")
    args = p.parse_args(argv)
    if args.temperature <= 0:
        p.error(f"--temperature must be > 0, got {args.temperature}")
    if bool(args.inpaint) != bool(args.mask):
        p.error("--inpaint IMAGE and --mask MASK go together")
    if args.inpaint and args.latent_size:
        p.error("--inpaint works at the training size; drop --latent-size")
    return args


if __name__ == "__main__":
    main(get_args())
