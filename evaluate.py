"""
Stage 4: measure a model. Sample quality (FID; Precision, Recall, Density, Coverage), likelihood (ELBO),
reconstruction quality of the VQGAN, and sampling and training speed. Each mode prints a table, or one JSON
object with --json.

    python sample.py --n-samples 2000 --images out/fake                         # first, images to judge
    python evaluate.py --real shapes --fake out/fake --features random          # FID and PRDC, offline
    python evaluate.py --real data/ffhq --fake out/fake                         # Inception features (weights needed)
    python evaluate.py --real-features r.npy --fake-features f.npy              # precomputed (N, D) features
    python evaluate.py --ckpt out/absorbing.pt --codes out/codes.npy            # ELBO of the held-out codes
    python evaluate.py --vqgan out/vqgan.pt --real shapes --features random     # reconstruction quality
    python evaluate.py --real fashion-mnist --fake out/fake --features classifier   # a labelled set's own classifier
    python evaluate.py --speed --ckpt out/absorbing.pt                          # sampling and training speed

Features come from the standard FID Inception network (pytorch-fid's weights, pool3, 2048-d) or, with
--features random, from a seeded random-weight CNN (Naeem et al. 2020, Sec. 5, find random embeddings usable
to compare models); numbers from the latter are labelled so and are not comparable with published FIDs. For a
labelled set (--real: mnist, fashion-mnist, cifar10, shapes, or a folder of class subfolders), --features classifier
trains a small CNN on the set's own training images (classifier.py, once) and gives the class accuracy of guided
samples (a --fake folder with one subfolder per class, as `sample.py --class NAME --images out/fake/NAME` writes)
and the Frechet distance in its features, each beside its floor: the same numbers for real images.
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import scipy.linalg
import scipy.ndimage
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

import classifier
from absorbing import PRIOR_PRESETS, Absorbing, load_vqgan, prior_from_checkpoint
from common import HelpFormatter, bf16_is_fast, load_checkpoint, positive_int, pretrained
from data import (STANDARD_SETS, ImageFolder, code_redundancy, codebook_usage, load_codes, load_data, load_labels,
                  median_side, scan_folder, split_codes, to_float, to_rgb, to_uint8)
from shapes import judge_shapes, make_shapes
from transformer import PriorConfig
from vqgan import PRESETS as VQGAN_PRESETS, load_lpips, psnr

# -----------------------------------------------------------------------------
# Images and their features


def image_side(args):
    """The side images are compared at unless --img-size says: the one the VQGAN was trained at (--vqgan), else the
    samples' (a --fake folder, scored whole), else the --real images' (a folder's median shorter side, a named set's
    preset size: 28 for MNIST and Fashion-MNIST, 32 for shapes and CIFAR-10)."""
    if args.vqgan:
        return load_checkpoint(args.vqgan, "vqgan")["config"]["img_size"]
    for source in ([] if args.crop_stride else [args.fake]) + [args.real]:
        side = median_side(source)[0] if source and Path(source).is_dir() else None
        if side:
            return side
    return VQGAN_PRESETS.get(args.real, {}).get("img_size", 32)


def load_images(source, n, img_size, seed=0, data_dir=None):
    """A dataset of uint8 (S, S, 3) images: the built-in 'shapes' (seed 0: the training images; --fake shapes
    uses seed 1, images never trained on), a standard set's test images (mnist, fashion-mnist, cifar10; from
    data_dir, as vqgan.py's --data-dir) or a folder's images, resized and centre-cropped; at most n of them, a
    seeded random choice (the first n in file order could all come from one subfolder)."""
    if source == "shapes":
        return torch.from_numpy(make_shapes(n, img_size, seed=seed)[0])
    if source in STANDARD_SETS:
        _, test, _, _, labels = load_data(source, data_dir, img_size)
        return some(test, labels, n, seed)[0]
    if not Path(source).is_dir():
        raise SystemExit(f"error: image folder {source} does not exist" if not Path(source).exists() else
                         f"error: {source} is a file; --real and --fake take folders of images (or 'shapes')")
    paths = scan_folder(source, img_size // 2, img_size)  # as vqgan.py reads a folder
    if len(paths) > n:
        paths = [paths[i] for i in sorted(np.random.default_rng(seed).choice(len(paths), n, replace=False))]
    return ImageFolder(paths, img_size)


def crops(source, n, size, stride, seed=1):
    """Every size x size window, corners on a grid of `stride` pixels, of up to n images of a folder, all of one
    size (larger-than-training samples, Fig. 4): (M * rows * cols, size, size, 3) uint8, each window then judged
    and scored like an image of the training size."""
    images = []
    for path in load_images(source, n, size, seed).paths:
        with Image.open(path) as img:
            images.append(np.asarray(to_rgb(img)))
    if len({img.shape for img in images}) > 1:
        raise SystemExit(f"error: --crop-stride needs images of one size; {source} has images of "
                         f"{len({img.shape for img in images})} sizes")
    images = torch.from_numpy(np.stack(images))  # (M, H, W, 3)
    windows = images.unfold(1, size, stride).unfold(2, size, stride)  # (M, rows, cols, 3, size, size)
    return windows.permute(0, 1, 2, 4, 5, 3).reshape(-1, size, size, 3)


def inception_network():
    """pytorch-fid's InceptionV3 (pool3, 2048-d), whose weights it downloads on first use."""
    from pytorch_fid.inception import FID_WEIGHTS_URL, InceptionV3
    net = pretrained(lambda: InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]), FID_WEIGHTS_URL,
                     "FID's Inception weights", "pass --features random")  # resizes to 299, rescales [0, 1] inputs
    return lambda x: net((x + 1) / 2)[0].flatten(1), net


def random_network(seed=0):
    """A randomly initialised CNN with a fixed seed: images resized to 64x64 -> 512-d after average pooling. He
    initialisation keeps the features' scale near 1 through the layers (PyTorch's default init shrinks it), and
    the last layer has no ReLU, so that no feature is constant (a singular covariance)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1), nn.ReLU(), nn.Conv2d(64, 128, 4, 2, 1), nn.ReLU(),
                            nn.Conv2d(128, 256, 4, 2, 1), nn.ReLU(), nn.Conv2d(256, 512, 4, 2, 1),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        for conv in net[::2][:4]:
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
    return lambda x: net(F.interpolate(x, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)), net


FEATURE_LABELS = {"inception": "Inception-v3 pool3 (FID's standard network)",
                  "random": "seeded random-weight CNN: NOT comparable with published (Inception) numbers",
                  "classifier": "a small CNN trained on the real set's own training images: NOT FID; compare "
                                "only with the floor beside it"}


@torch.no_grad()
def features_of(embed, images, device, batch_size=100, desc="features"):
    """(N, D) float64 features of a dataset of uint8 images (tqdm over batches)."""
    loader = torch.utils.data.DataLoader(images, batch_size=batch_size)
    return torch.cat([embed(to_float(x.to(device))).double().cpu() for x in tqdm(loader, desc=desc)]).numpy()


def load_features(path):
    try:
        feats = np.load(path, allow_pickle=False)
    except Exception as e:
        raise SystemExit(f"error: cannot read features {path} ({type(e).__name__}: {str(e).splitlines()[0][:150]})")
    if feats.ndim != 2:
        raise SystemExit(f"error: features {path} have shape {feats.shape}; they must be (N, D)")
    return feats.astype(np.float64)

# -----------------------------------------------------------------------------
# FID (Heusel et al. 2017): the Frechet distance between Gaussians fitted to the two sets of features


def statistics(features):  # (N, D) -> mean (D,), covariance (D, D) (unbiased, as pytorch-fid)
    return features.mean(0), np.cov(features, rowvar=False)


# FID = ||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^{1/2})
def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():  # a singular product (fewer samples than dimensions): nudge the diagonals
        offset = np.eye(len(sigma1)) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean) and not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):  # as pytorch-fid
        raise SystemExit(f"error: the FID's matrix square root has an imaginary part of up to "
                         f"{np.abs(np.diagonal(covmean).imag).max():.3g}: the covariances are too ill-conditioned "
                         f"(more images, or --features random's fewer dimensions)")
    covmean = covmean.real  # numerical error can leave a tiny imaginary part
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))

# -----------------------------------------------------------------------------
# Precision, Recall (Kynkaanniemi et al. 2019), Density, Coverage (Naeem et al. 2020). Each set's manifold is
# the union of balls around its points, of radius the distance to the point's k-th nearest neighbour.


def pairwise_distances(a, b):  # (N, D), (M, D) -> (N, M) Euclidean distances, float64
    return torch.cdist(torch.from_numpy(a), torch.from_numpy(b)).numpy()


def kth_neighbour_radii(x, k):  # (N, D) -> (N,): distance to the k-th nearest other point
    return np.partition(pairwise_distances(x, x), k, axis=1)[:, k]  # the 0th nearest is the point itself


def prdc(real, fake, k=5):
    """precision: the fraction of fakes inside some real ball; recall: of reals inside some fake ball;
    density: the mean number of real balls around a fake, over k; coverage: the fraction of real balls that hold
    at least one fake."""
    for name, x in (("real", real), ("fake", fake)):
        if len(x) < k + 1:
            raise SystemExit(f"error: {len(x)} {name} samples are too few for --nearest-k {k}; need at least {k + 1}")
    real_radii, fake_radii = kth_neighbour_radii(real, k), kth_neighbour_radii(fake, k)
    d = pairwise_distances(real, fake)  # (N_real, N_fake)
    inside_real = d < real_radii[:, None]  # fake j inside the ball of real i
    return dict(precision=float(inside_real.any(0).mean()),
                recall=float((d < fake_radii[None, :]).any(1).mean()),
                density=float(inside_real.sum(0).mean() / k),
                coverage=float((d.min(1) < real_radii).mean()))


def quality(real_feats, fake_feats, k):
    if real_feats.shape[1] != fake_feats.shape[1]:
        raise SystemExit(f"error: real features are {real_feats.shape[1]}-d but fake ones {fake_feats.shape[1]}-d; "
                         f"both must come from the same network")
    fid = frechet_distance(*statistics(real_feats), *statistics(fake_feats))
    return dict(fid=fid, **prdc(real_feats, fake_feats, k), n_real=len(real_feats), n_fake=len(fake_feats), nearest_k=k)


def some(dataset, labels, n, seed):
    """At most n images of a dataset and their labels, a seeded random choice."""
    keep = np.sort(np.random.default_rng(seed).choice(len(dataset), min(n, len(dataset)), replace=False))
    return torch.utils.data.Subset(dataset, keep.tolist()), labels[keep]


def requested_classes(images, root, classes):
    """The class each image of a --fake folder was sampled for, from the subfolder it is in, named by the class or
    by its index (Fashion-MNIST's 'T-shirt/top' is no folder name); None unless every image is in such a folder."""
    index = {**{name: k for k, name in enumerate(classes)}, **{str(k): k for k in range(len(classes))}}
    tops = [p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else None for p in images.paths]
    return np.array([index[t] for t in tops]) if tops and set(tops) <= set(index) else None


def classifier_quality(args, device):
    """--features classifier: the Frechet distance and PRDC of the fake images to real held-out images in the
    features of the real set's classifier, and the class accuracy of guided fakes; the floor of each beside it:
    as many real training images against the same held-out ones, and the classifier's held-out accuracy."""
    if not (args.real and (args.fake or args.vqgan)):
        raise SystemExit("error: --features classifier needs --real, a labelled set, and --fake, a folder, or --vqgan")
    train, val, labels, classes, val_labels = load_data(args.real, args.data_dir, args.img_size)
    if not classes:
        raise SystemExit(f"error: {args.real} has no classes, so no classifier to train; --features classifier "
                         f"needs a labelled set (mnist, fashion-mnist, cifar10, shapes, or a folder of class folders)")
    path = args.classifier or Path("out") / f"classifier_{Path(str(args.real)).name}_{args.img_size}px.pt"
    net = classifier.cached(path, args.real, train, labels, classes, args.img_size, args.classifier_steps, device)
    held, held_labels = some(val, val_labels, args.num, seed=1)
    real_train, train_labels = some(train, labels, args.num, seed=2)
    # --vqgan: the floor's own training images, reconstructed, so that the two rows differ by the tokenizer only
    fake = reconstructed(args.vqgan, real_train, device) if args.vqgan else \
        load_images(args.fake, args.num, args.img_size, seed=1)
    embed = net[0]
    held_feats = features_of(embed, held, device, desc="held-out features")
    results = dict(features=f"{FEATURE_LABELS['classifier']} ({path})", **quality(
        held_feats, features_of(embed, fake, device, desc="fake features"), args.nearest_k))
    floor = quality(held_feats, features_of(embed, real_train, device, desc="real features"), args.nearest_k)
    results.update({f"floor_{k}": v for k, v in floor.items() if k in ("fid", "precision", "recall")})
    results["floor_accuracy"], results["floor_accuracy_err"] = classifier.accuracy(
        classifier.predict(net, held, device), held_labels)
    wanted = train_labels if args.vqgan else requested_classes(fake, Path(args.fake), classes)
    if wanted is not None:
        results["class_accuracy"], results["class_accuracy_err"] = classifier.accuracy(
            classifier.predict(net, fake, device), wanted)
    return results

# -----------------------------------------------------------------------------
# Likelihood: the ELBO of held-out codes, an upper bound on their negative log-likelihood (Tab. 4)


def likelihood(ckpt_path, codes_path, draws, device, seed=0, bf16=False):
    """The prior's likelihood of the held-out codes in bits per token, as its kind gives it (the absorbing prior's
    ELBO, an upper bound, with its Monte-Carlo standard error from the spread of the draws of t and masks; the
    autoregressive one's exact NLL), bits per image dimension, and the per-image values. The network runs under
    bf16 autocast if asked; the cross-entropies are summed in float32 either way."""
    ckpt = load_checkpoint(ckpt_path, "absorbing")
    model, kind = prior_from_checkpoint(ckpt)
    model = model.to(device)
    codes, K, vqgan_path = load_codes(codes_path, ckpt["config"]["codebook_size"])
    if tuple(codes.shape[1:]) != (model.cfg.latent_h, model.cfg.latent_w):
        raise SystemExit(f"error: {codes_path} holds {tuple(codes.shape[1:])} grids, the prior models "
                         f"{model.cfg.latent_h}x{model.cfg.latent_w}")
    labels = load_labels(codes_path, len(codes))[0]  # the prior's split: no class's only grid is held out
    held_out = split_codes(codes.flatten(1), labels)[1]
    N = held_out.shape[1]
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
        bits = kind.likelihood(model, held_out, n_draws=draws, seed=seed)  # (n, draws); one column if exact
    per_image, draws = bits.mean(1), bits.shape[1]
    mc_error = math.sqrt((bits.var(1) / draws).mean().item() / len(bits)) if draws > 1 else float("nan")
    out = {f"{kind.bound}_bits_per_token": per_image.mean().item(), "likelihood": kind.bound_name,
           "n_images": len(bits), "draws": draws, "uniform_bits_per_token": math.log2(K)}
    if draws > 1:
        out[f"{kind.bound}_mc_error"] = mc_error
    if labels is not None and model.cfg.n_classes:  # -log p(x) <= -log p(y) - log p(x | y), y drawn from p(y)
        labels = split_codes(labels, labels)[1]
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            cond = kind.likelihood(model, held_out, n_draws=draws, seed=seed, labels=labels)
        class_bits = -torch.log2(ckpt["class_counts"].double() / ckpt["class_counts"].sum())[labels]  # (n,)
        out[f"{kind.bound}_with_class_bits_per_token"] = (cond.mean(1) + class_bits / N).mean().item()
    vqgan_ckpt = Path(ckpt_path).parent / ckpt["vqgan"] if ckpt["vqgan"] else None
    if vqgan_ckpt and vqgan_ckpt.is_file():
        # the codes' bits spread over the image's 3 * size * size values: NOT a bound on the image's likelihood, whose
        # bits per dim (the paper's) add the decoder's -log p(x | z); a VQGAN decoder (L1, LPIPS, GAN) defines none
        size = load_checkpoint(vqgan_ckpt, "vqgan")["config"]["img_size"]
        out["code_bits_per_dim"] = out[f"{kind.bound}_bits_per_token"] * N / (3 * size * size)
    return out, per_image.numpy()

# -----------------------------------------------------------------------------
# Reconstruction quality of the VQGAN (Tab. 5)


def vqgan_for(vqgan_path, images, device):
    """The VQGAN of a checkpoint that reconstructs these images: a one-line error if there is none, or if it was
    trained at another image size than the images are loaded at (--img-size)."""
    vq = load_vqgan(vqgan_path, device)
    if vq is None:
        raise SystemExit(f"error: VQGAN checkpoint {vqgan_path} does not exist")
    if len(images) and images[0].shape[0] != vq.cfg.img_size:
        raise SystemExit(f"error: {vqgan_path} was trained on {vq.cfg.img_size}px images, these are loaded at "
                         f"{images[0].shape[0]}px: pass --img-size {vq.cfg.img_size}")
    return vq


@torch.no_grad()
def reconstructed(vqgan_path, images, device, batch_size=64):
    """The VQGAN's reconstructions of a dataset of uint8 images: uint8 (N, S, S, 3)."""
    vq = vqgan_for(vqgan_path, images, device)
    return torch.cat([to_uint8(vq(to_float(batch.to(device)))[0])
                      for batch in torch.utils.data.DataLoader(images, batch_size=batch_size)])


@torch.no_grad()
def reconstruction(vqgan_path, images, embed, device, judge=False, batch_size=64):
    """PSNR, LPIPS, reconstruction FID, the codebook's usage and redundancy, and (judge) the shapes rule's verdict
    on the reconstructions of a dataset of uint8 images."""
    vq = vqgan_for(vqgan_path, images, device)
    try:
        lpips = load_lpips(device)
    except SystemExit as e:
        print(f"note: LPIPS skipped ({e})", file=sys.stderr)
        lpips = None
    real, fake, psnrs, dists, codes, pixels, rebuilt = [], [], [], [], [], [], []
    for batch in tqdm(torch.utils.data.DataLoader(images, batch_size=batch_size), desc="reconstruct"):
        x = to_float(batch.to(device))
        x_hat, _, c = vq(x)
        x_hat = x_hat.clamp(-1, 1)
        psnrs += [psnr(a[None], b[None]) for a, b in zip(x, x_hat)]
        if lpips is not None:
            dists.append(lpips(x, x_hat).flatten().cpu())
        codes.append(c.cpu())
        pixels.append(batch.numpy())
        rebuilt.append(to_uint8(x_hat).numpy())
        real.append(embed(x).double().cpu())
        fake.append(embed(x_hat).double().cpu())
    codes = torch.cat(codes)
    perplexity, used = codebook_usage(codes, vq.cfg.codebook_size)
    bits, agreement, repeated = code_redundancy(np.concatenate(pixels), codes.numpy())
    out = dict(psnr=float(np.mean(psnrs)), lpips=torch.cat(dists).mean().item() if dists else None,
               codebook_perplexity=perplexity, codebook_used=used, code_bits=bits, code_agreement=agreement,
               repeated_patches=repeated)
    real, fake = torch.cat(real).numpy(), torch.cat(fake).numpy()
    out["reconstruction_fid"] = frechet_distance(*statistics(real), *statistics(fake))
    return dict(out, **judge_shapes(np.concatenate(rebuilt))) if judge else out

# -----------------------------------------------------------------------------
# Speed: sampling and training throughput, against the machine's measured matmul peak


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device, dtype, n=4096, repeat=20):
    """FLOP/s of a large square matmul on this machine, the ceiling the model's matmuls are compared with."""
    n = n if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeat):
        a @ b
    sync(device)
    return 2 * n ** 3 * repeat / (time.perf_counter() - start)


def forward_flops(cfg, rows, positions):
    """Matmul FLOPs of one forward pass on `rows` grids of N codes, with the last layer at `positions` of them:
    per block 24 N C^2 (qkv, projection, MLP) + 4 N^2 C (attention) + 2 k^2 (C + 4C) N (its depthwise k x k
    convolutions, when cfg.conv = k), then 2 C K per output position."""
    N, C, k = cfg.latent_h * cfg.latent_w, cfg.n_embd, cfg.conv
    block = 24 * N * C * C + 4 * N * N * C + 2 * k * k * 5 * C * N
    return rows * cfg.n_layer * block + positions * 2 * C * cfg.codebook_size


class Counted:
    """The prior, counting its calls and the FLOPs they did."""

    def __init__(self, model, cfg):
        self.model, self.cfg, self.calls, self.flops = model, cfg, 0, 0

    def __call__(self, x, positions=None):
        self.calls += 1
        self.flops += forward_flops(self.cfg, len(x), x.numel() if positions is None else len(positions))
        return self.model(x, positions)


def speed(model, kind, batch_sizes, steps_list, device, bf16, compile_model, train_steps=10):
    """Rows of measurements: sampling at each (batch size, steps) after one warm-up run, then training."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    peak = matmul_peak(device, dtype)
    cfg, K = model.cfg, model.cfg.codebook_size
    N = cfg.latent_h * cfg.latent_w
    net = torch.compile(model, dynamic=True) if compile_model else model
    rows = []
    for B in batch_sizes:
        for S in steps_list:
            counted = Counted(net, cfg)
            x = torch.full((B, N), K, device=device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                kind.sample(counted, x, steps=S, seed=0, sampler="random")  # warm-up (and compilation)
                counted.calls = counted.flops = 0
                sync(device)
                start = time.perf_counter()
                kind.sample(counted, x, steps=S, seed=1, sampler="random")
                sync(device)
            t = time.perf_counter() - start
            rows.append(dict(mode="sample", batch=B, steps=S, images_per_s=B / t, ms_per_call=1000 * t / counted.calls,
                             calls=counted.calls, flops_per_image=counted.flops / B, tflops=counted.flops / t / 1e12,
                             peak_fraction=counted.flops / t / peak))
    B = batch_sizes[-1]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x_0 = torch.randint(0, K, (B, N), device=device)
    model.train()
    for i in range(train_steps + 2):
        if i == 2:
            sync(device)
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = kind.losses(net, x_0)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    t = (time.perf_counter() - start) / train_steps
    flops = 3 * forward_flops(cfg, B, B * N)  # forward + backward (twice the forward); the head on all positions
    rows.append(dict(mode="train", batch=B, tokens_per_s=B * N / t, ms_per_step=1000 * t, tflops=flops / t / 1e12,
                     mfu=flops / t / peak))
    model.eval()
    return rows, peak

# -----------------------------------------------------------------------------


def print_table(results):
    width = max(map(len, results))
    for key, value in results.items():
        if key == "speed":
            for row in value:
                print("  " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        else:
            print(f"{key:>{width}}  {value:.4f}" if isinstance(value, float) else f"{key:>{width}}  {value}")


def main(args):
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    bf16 = bf16_is_fast(device) if args.bf16 == "auto" else args.bf16 == "on"
    args.img_size = args.img_size or image_side(args)
    results = {}
    embed = None
    if args.features == "classifier":
        results.update(classifier_quality(args, device))
    elif args.real or args.fake or args.vqgan:
        embed, net = inception_network() if args.features == "inception" else random_network(args.seed)
        net.to(device).eval()
        results["features"] = FEATURE_LABELS[args.features]
    if args.features != "classifier" and (args.real_features or args.real and args.fake):
        real = load_features(args.real_features) if args.real_features else \
            features_of(embed, load_images(args.real, args.num, args.img_size, data_dir=args.data_dir), device,
                        desc="real features")
        fake_images = None
        if args.crop_stride:  # each training-size window of the fake images is scored as an image
            fake_images = crops(args.fake, args.num, args.img_size, args.crop_stride)
            results["crops"] = f"every {args.img_size}px window at a stride of {args.crop_stride}px: {len(fake_images)}"
        elif args.fake:
            fake_images = load_images(args.fake, args.num, args.img_size, seed=1)
        fake = load_features(args.fake_features) if args.fake_features else \
            features_of(embed, fake_images, device, desc="fake features")
        if args.real_features:
            results["features"] = f"precomputed ({args.real_features}, {args.fake_features})"
        results.update(quality(real, fake, args.nearest_k))
        if args.real == "shapes":  # images that should follow the rule of the built-in data: judge each
            results.update(judge_shapes(fake_images))
    if args.codes:
        stats, per_image = likelihood(args.ckpt, args.codes, args.draws, device, args.seed, bf16)
        results.update(stats, dtype="bfloat16" if bf16 else "float32")
        if args.per_image:
            np.save(args.per_image, per_image)
    if args.vqgan and args.features != "classifier":
        images = load_images(args.real, args.num, args.img_size, seed=1, data_dir=args.data_dir)  # held-out for shapes
        results.update(reconstruction(args.vqgan, images, embed, device, judge=args.real == "shapes"))
    if args.speed:
        if args.ckpt:
            model, kind = prior_from_checkpoint(load_checkpoint(args.ckpt, "absorbing"))
            if kind.name != "absorbing":
                raise SystemExit("error: --speed times the absorbing sampler; sample.py prints the time of an "
                                 "autoregressive prior's samples")
            results["model"] = f"{args.ckpt} (EMA weights)"
        else:  # the time a forward pass takes does not depend on the weights
            size = PRIOR_PRESETS[args.preset]
            cfg = PriorConfig(codebook_size=args.codebook_size, latent_h=args.latent, latent_w=args.latent, **size)
            kind = Absorbing(cfg, cfg.latent_h * cfg.latent_w)
            model = kind.network().eval()
            results["model"] = f"random weights, preset {args.preset}, {args.latent}x{args.latent} codes from " \
                               f"{args.codebook_size}"
        rows, peak = speed(model.to(device), kind, args.batch_sizes, args.steps, device, bf16, args.compile)
        name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
        results.update(device=name, dtype="bfloat16" if bf16 else "float32", matmul_peak_tflops=peak / 1e12,
                       parameters=sum(p.numel() for p in model.parameters()), speed=rows)
    if not results:
        raise SystemExit("error: nothing to measure; give --real and --fake, --real-features and --fake-features, "
                         "--ckpt with --codes, --vqgan with --real, or --speed")
    if args.json:
        print(json.dumps(results))
    else:
        print_table(results)


def get_args(argv=None):
    p = argparse.ArgumentParser(description="Stage 4: FID, PRDC, likelihood, reconstruction and speed",
                                formatter_class=HelpFormatter)
    p.add_argument("--real", default=None, help="real images: a folder, 'shapes' (the built-in training images), or "
                   "mnist, fashion-mnist, cifar10 (their test images)")
    p.add_argument("--fake", default=None, help="generated images: a folder, or 'shapes' (held-out shapes images)")
    p.add_argument("--real-features", default=None, help="precomputed real features, .npy (N, D)")
    p.add_argument("--fake-features", default=None, help="precomputed fake features, .npy (N, D)")
    p.add_argument("--features", choices=["inception", "random", "classifier"], default="inception",
                   help="feature network: FID's Inception, a seeded random CNN, or the labelled --real set's own "
                        "classifier (trained once, classifier.py)")
    p.add_argument("--data-dir", default=None, help="a local copy of --real's standard set (as vqgan.py's)")
    p.add_argument("--classifier", default=None,
                   help="where --features classifier keeps its network (default out/classifier_SET_SIZEpx.pt)")
    p.add_argument("--classifier-steps", type=positive_int, default=2000,
                   help="training steps of a new classifier (batches of 128)")
    p.add_argument("--num", type=positive_int, default=10000, help="images of each set at most")
    p.add_argument("--img-size", type=positive_int, default=None,
                   help="side images are loaded at (default: --vqgan's training side; else the --fake folder's median "
                        "side, unless --crop-stride; else --real's: a folder's median side, a named set's preset size)")
    p.add_argument("--crop-stride", type=positive_int, default=None,
                   help="score every --img-size window of the --fake images, corners this many pixels apart, instead "
                        "of the images (samples larger than the training images; with a --real folder, pass "
                        "--img-size, the VQGAN's training side)")
    p.add_argument("--nearest-k", type=positive_int, default=5, help="k of PRDC's k-nearest-neighbour balls")
    p.add_argument("--ckpt", default=None, help="the prior's checkpoint (likelihood with --codes; --speed)")
    p.add_argument("--codes", default=None, help="codes.npy whose held-out part (absorbing.py's validation grids) is "
                   "scored")
    p.add_argument("--draws", type=positive_int, default=8, help="(t, mask) draws per image for the ELBO")
    p.add_argument("--per-image", default=None, help="write the per-image ELBO (bits per token) to this .npy")
    p.add_argument("--vqgan", default=None, help="VQGAN checkpoint whose reconstructions of --real are scored "
                   "(--features classifier: of the training images of its floor)")
    p.add_argument("--speed", action="store_true", help="time sampling and training")
    p.add_argument("--preset", choices=sorted(PRIOR_PRESETS), default="paper", help="model size (--speed, no --ckpt)")
    p.add_argument("--latent", type=positive_int, default=16, help="code grid side for --speed without --ckpt")
    p.add_argument("--codebook-size", type=positive_int, default=1024, help="K for --speed without --ckpt")
    p.add_argument("--batch-sizes", type=positive_int, nargs="+", default=[1, 16, 64], help="--speed batch sizes")
    p.add_argument("--steps", type=positive_int, nargs="+", default=[256, 100, 50], help="--speed sampling steps")
    p.add_argument("--compile", action="store_true", help="torch.compile the prior for --speed")
    p.add_argument("--bf16", default="auto", choices=["auto", "on", "off"],
                   help="bfloat16 autocast (likelihood, --speed)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random features and of the ELBO's draws")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = p.parse_args(argv)
    if bool(args.real_features) != bool(args.fake_features):
        p.error("--real-features and --fake-features go together")
    if args.real_features and (args.real or args.fake):
        p.error("give images (--real, --fake) or features (--real-features, --fake-features), not both")
    if bool(args.fake) and not args.real:
        p.error("--fake needs --real to compare with")
    if args.codes and not args.ckpt:
        p.error("--codes needs --ckpt, the prior whose likelihood is measured")
    if args.vqgan and not args.real:
        p.error("--vqgan needs --real, the images to reconstruct")
    if args.crop_stride and (not args.fake or args.fake == "shapes"):
        p.error("--crop-stride cuts the images of a --fake folder (samples from sample.py --latent-size)")
    if args.features == "classifier" and (args.vqgan and args.fake or args.crop_stride or args.real_features):
        p.error("--features classifier scores a --fake folder or --vqgan's reconstructions (one of them) against "
                "--real's held-out images; --crop-stride and precomputed features take --features inception or random")
    return args


if __name__ == "__main__":
    main(get_args())
