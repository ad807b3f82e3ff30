"""
Stage 1: train a VQGAN image tokenizer, then encode the dataset to a grid of integer codes.

    python vqgan.py                              # built-in 'shapes' data, a few minutes on a laptop CPU
    python vqgan.py --data path/to/images        # any folder of images: the preset of their size (32px, 64px, 256px)
    python vqgan.py --data ffhq                  # the paper's FFHQ preset, images in data/ffhq
    torchrun --nproc_per_node 8 vqgan.py --data ffhq      # many GPUs, same flags
    python vqgan.py --resume                     # continue OUT/vqgan.pt exactly where it stopped

Writes OUT/vqgan.pt (checkpoint), OUT/recon_STEP.png (inputs above their reconstructions),
OUT/vqgan_log.jsonl (losses), and at the end OUT/codes.npy, an integer array (N, h, w), with
OUT/codes.json saying what absorbing.py needs to know (codebook size, where this checkpoint is, the class
names), and OUT/labels.npy when the images have classes (the shapes kinds, or a folder's subfolders).
"""
import argparse
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from common import (CHECKPOINT_VERSION, HelpFormatter, StepBatches, append_log, bf16_is_fast, catch_stop_signals,
                    learning_rate, load_checkpoint, mean_over_ranks, positive_float, positive_int, preset_values,
                    pretrained, print_settings, require_finite, restore, resumed_settings, rng_states, save_checkpoint,
                    save_grid, setup_distributed, start_log, stop_if_signalled)
from data import (STANDARD_SETS, code_redundancy, codebook_usage, load_data, median_side, to_float, to_uint8,
                  write_codes)

# -----------------------------------------------------------------------------
# Presets, named by the image size they are for. '28px', '32px' and '64px' train on a laptop CPU in minutes; '256px'
# holds the paper's hyperparameters (Appendix A and the official code): f=16, 16x16 codes. The dataset names are
# aliases: shapes and cifar10 are 32px, mnist and fashion-mnist 28px (at 7x7 codes Fashion-MNIST's textures are lost),
# ffhq, churches and bedrooms are 256px with the paper's number of steps for each.

PAPER = dict(img_size=256, nf=128, ch_mult=(1, 1, 2, 2, 4), res_blocks=2, attn_resolutions=(16,), emb_dim=256,
             codebook_size=1024, beta=0.25, local_encoder=False, restart_after=0, norm="group", ndf=64, disc_layers=3,
             disc_start=30001, lambda_max=1.0, perceptual_weight=1.0, lr=4.5e-6 * 4, lr_decay="constant",
             codebook_lr_mult=1.0, batch_size=4, max_steps=1_400_000)
SMALL = dict(img_size=32, nf=32, ch_mult=(1, 2, 2), res_blocks=1, attn_resolutions=(8,), emb_dim=32,
             codebook_size=128, beta=0.25, local_encoder=True, restart_after=50, norm="position", ndf=32, disc_layers=2,
             disc_start=1000, lambda_max=1.0, perceptual_weight=0.0, lr=1e-3, lr_decay="cosine",
             codebook_lr_mult=10.0, batch_size=32, max_steps=1200)
SMALL28 = dict(SMALL, img_size=28, ch_mult=(1, 2), attn_resolutions=(14,))  # f = 2: 14x14 codes, for the textures
PRESETS = {
    "28px": SMALL28,
    "32px": SMALL,  # f = 4: 8x8 codes
    "64px": dict(SMALL, img_size=64, nf=48, ch_mult=(1, 2, 2, 2), codebook_size=256, disc_layers=3,
                 max_steps=2000),  # f = 8: 8x8 codes
    "256px": PAPER,
    "shapes": SMALL,
    "mnist": SMALL28,
    "fashion-mnist": SMALL28,
    "cifar10": SMALL,
    "ffhq": PAPER,
    "churches": dict(PAPER, max_steps=2_200_000),
    "bedrooms": dict(PAPER, max_steps=2_200_000),
}

def preset_for_folder(folder, img_size=None):
    """(preset name, the image side to train at, why) for an image folder: the largest scale preset whose image size
    is at most the images' (their median shorter side, or --img-size), 28px at least, so that small images get a
    small model at their own size instead of being up-scaled to the paper's 256 px. Images smaller than the 28px
    preset keep their size when its down-sampling factor divides it (20 px: 10x10 codes), else are resized up."""
    side, why = (img_size, "--img-size") if img_size else median_side(folder)
    name = max((n for n in ("28px", "32px", "64px", "256px") if PRESETS[n]["img_size"] <= (side or 0)),
               key=lambda n: PRESETS[n]["img_size"], default="28px")
    preset, why = PRESETS[name], f"{side} px ({why})" if side else why
    f = 2 ** (len(preset["ch_mult"]) - 1)
    if side and side < preset["img_size"] and side % f == 0:
        return name, side, f"{why}, trained at their own size: {side // f}x{side // f} codes"
    if side and side < preset["img_size"]:
        return name, preset["img_size"], f"{why}, resized up to {preset['img_size']} px (not a multiple of {f})"
    return name, img_size or preset["img_size"], why


# -----------------------------------------------------------------------------
# The model: a convolutional encoder and decoder (residual blocks, self-attention at the lowest
# resolutions, as in taming-transformers) around a nearest-neighbour vector quantizer.


@dataclass
class VQGANConfig:
    img_size: int = 32
    nf: int = 32                      # channels at full resolution
    ch_mult: tuple = (1, 2, 2)        # channel multiplier per resolution; len - 1 halvings: f = 2**(len - 1)
    res_blocks: int = 1               # residual blocks per resolution
    attn_resolutions: tuple = (8,)    # feature-map sizes that get self-attention
    emb_dim: int = 32                 # D, the size of a code vector
    codebook_size: int = 128          # K, the number of codes
    beta: float = 0.25                # weight of the commitment term
    local_encoder: bool = False       # each code sees only its own patch (False: the paper's convolutional encoder)
    restart_after: int = 0            # move a code unused for this many steps onto an encoder output (0: never)
    norm: str = "group"               # the paper's GroupNorm, or "position": LayerNorm at each position (PositionNorm)

    @classmethod
    def from_dict(cls, d):  # a checkpoint's plain values back to a config
        return cls(**{**d, "ch_mult": tuple(d["ch_mult"]), "attn_resolutions": tuple(d["attn_resolutions"])})

    @property
    def downsample(self):  # f: an image side of S pixels gives S / f codes
        return 2 ** (len(self.ch_mult) - 1)


class PositionNorm(nn.LayerNorm):
    """LayerNorm over the channels of each position on its own. GroupNorm's statistics are those of the whole image,
    so what it makes of a background pixel depends on the shapes elsewhere in the image: the quick-start decoder
    painted faint marks in the corners of backgrounds next to large shapes. Here a pixel depends on its inputs only."""

    def forward(self, x):  # (B, C, H, W)
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def norm(ch, kind="group"):  # the paper's GroupNorm (32 groups), or PositionNorm
    if kind == "position":
        return PositionNorm(ch, eps=1e-6)
    return nn.GroupNorm(32 if ch % 32 == 0 else math.gcd(ch, 32), ch, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, kind="group"):
        super().__init__()
        self.norm1, self.conv1 = norm(cin, kind), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = norm(cout, kind), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity: a small model learns much faster
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x):  # (B, cin, H, W) -> (B, cout, H, W)
        h = self.conv1(F.silu(self.norm1(x)))
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class AttnBlock(nn.Module):
    """Single-head self-attention between all H*W positions of a feature map, with a residual."""

    def __init__(self, ch, kind="group"):
        super().__init__()
        self.norm, self.qkv, self.proj = norm(ch, kind), nn.Conv2d(ch, 3 * ch, 1), nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)  # starts as the identity, like ResBlock
        nn.init.zeros_(self.proj.bias)

    def forward(self, x):  # (B, C, H, W)
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, 1, C, H * W).transpose(-1, -2).unbind(1)  # (B, 1, HW, C)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, 1, HW, C)
        return x + self.proj(h.transpose(-1, -2).reshape(B, C, H, W))


class Downsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2)

    def forward(self, x):  # (B, C, H, W) -> (B, C, H/2, W/2)
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):  # (B, C, H, W) -> (B, C, 2H, 2W)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def middle(cfg, ch):
    """The blocks at the latent resolution between the encoder (or decoder) and the codes: residual, attention
    (when the latent size is in attn_resolutions, as in the paper's presets), residual."""
    attention = [AttnBlock(ch, cfg.norm)] if cfg.img_size // cfg.downsample in cfg.attn_resolutions else []
    return [ResBlock(ch, ch, cfg.norm), *attention, ResBlock(ch, ch, cfg.norm)]


def level(cfg, cin, cout, res):
    """One resolution's residual blocks, cin -> cout channels, each followed by attention at attn_resolutions."""
    layers = []
    for _ in range(cfg.res_blocks):
        layers.append(ResBlock(cin, cout, cfg.norm))
        cin = cout
        if res in cfg.attn_resolutions:
            layers.append(AttnBlock(cin, cfg.norm))
    return layers


def encoder(cfg):
    """(B, 3, H, W) images -> (B, D, H/f, W/f) continuous latents."""
    chans = [cfg.nf * m for m in cfg.ch_mult]
    layers, cin, res = [nn.Conv2d(3, chans[0], 3, padding=1)], chans[0], cfg.img_size
    for i, cout in enumerate(chans):
        layers += level(cfg, cin, cout, res)
        cin = cout
        if i < len(chans) - 1:
            layers.append(Downsample(cin))
            res //= 2
    layers += [*middle(cfg, cin), norm(cin, cfg.norm), nn.SiLU(), nn.Conv2d(cin, cfg.emb_dim, 3, padding=1)]
    return nn.Sequential(*layers)


class PatchMLP(nn.Module):
    """A residual two-layer MLP applied at each position on its own (1x1 convolutions, no normalisation across
    positions): nothing mixes neighbouring positions."""

    def __init__(self, ch):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(ch, 2 * ch, 1), nn.SiLU(), nn.Conv2d(2 * ch, ch, 1))

    def forward(self, x):  # (B, C, h, w)
        return x + self.net(x)


def local_encoder(cfg):
    """(B, 3, H, W) images -> (B, D, H/f, W/f) latents, each a function of its own f x f patch only: a convolution
    with kernel and stride f cuts the image into patches, then MLPs per patch. Equal patches get equal codes, so
    a code means its patch's pixels and nothing of the context (see code_redundancy)."""
    ch = cfg.nf * cfg.ch_mult[-1]
    f = cfg.downsample
    return nn.Sequential(nn.Conv2d(3, ch, f, stride=f), *[PatchMLP(ch) for _ in range(len(cfg.ch_mult) + 1)],
                         nn.SiLU(), nn.Conv2d(ch, cfg.emb_dim, 1))


def decoder(cfg):
    """(B, D, h, w) quantized latents -> (B, 3, h*f, w*f) images; its last layer is G_L of Eq. 9c."""
    chans = [cfg.nf * m for m in reversed(cfg.ch_mult)]
    cin, res = chans[0], cfg.img_size // cfg.downsample
    layers = [nn.Conv2d(cfg.emb_dim, cin, 3, padding=1), *middle(cfg, cin)]
    for i, cout in enumerate(chans):
        layers += level(cfg, cin, cout, res)
        cin = cout
        if i < len(chans) - 1:
            layers.append(Upsample(cin))
            res *= 2
    layers += [norm(cin, cfg.norm), nn.SiLU(), nn.Conv2d(cin, 3, 3, padding=1)]
    return nn.Sequential(*layers)


# Eq. 4: each latent vector goes to its nearest code, k = argmin_j ||z - e_j||^2 = ||z||^2 - 2 z.e_j + ||e_j||^2
def nearest_code(z, codebook):  # z (..., D), codebook (K, D) -> (...) integer codes
    d = z.pow(2).sum(-1, keepdim=True) - 2 * z @ codebook.t() + codebook.pow(2).sum(-1)  # (..., K)
    return d.argmin(-1)


# L_VQ (Eq. 5): ||sg[z] - z_q||^2 moves the codes towards the encoder, beta * ||z - sg[z_q]||^2 commits the
# encoder to its codes. (The official code swaps the weights, the "legacy" mistake taming later fixed.)
def vq_loss(z, z_q, beta):
    return F.mse_loss(z_q, z.detach()) + beta * F.mse_loss(z, z_q.detach())


class VQGAN(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.encoder, self.decoder = (local_encoder if cfg.local_encoder else encoder)(cfg), decoder(cfg)
        self.codebook = nn.Embedding(cfg.codebook_size, cfg.emb_dim)
        nn.init.uniform_(self.codebook.weight, -1 / cfg.codebook_size, 1 / cfg.codebook_size)
        if cfg.restart_after:  # training steps since each code was last chosen
            self.register_buffer("idle", torch.zeros(cfg.codebook_size, dtype=torch.long))

    @torch.no_grad()
    def restart_dead_codes(self, z, codes):
        """Codebook restarts: a code that no position chose in the last `restart_after` training steps is moved onto
        a random encoder output of the batch, where it will be chosen and trained. A code that starts or ends up far
        from every encoder output is otherwise never chosen again (codebook collapse)."""
        chosen = torch.bincount(codes.flatten(), minlength=self.cfg.codebook_size)
        if dist.is_initialized():
            dist.all_reduce(chosen)
        self.idle.copy_(torch.where(chosen > 0, 0, self.idle + 1))
        dead = (self.idle >= self.cfg.restart_after).nonzero().squeeze(1)
        if len(dead):
            z = z.reshape(-1, z.shape[-1])  # (B*h*w, D)
            self.codebook.weight[dead] = z[torch.randint(len(z), (len(dead),), device=z.device)]
            self.idle[dead] = 0
            if dist.is_initialized():  # every process keeps rank 0's choice
                dist.broadcast(self.codebook.weight, 0)

    def quantize(self, z):  # (B, D, h, w) -> z_q (B, D, h, w), L_VQ, codes (B, h, w)
        with torch.autocast(z.device.type, enabled=False):  # distances in float32: bf16 picks wrong codes
            z = z.float().permute(0, 2, 3, 1)  # (B, h, w, D)
            codes = nearest_code(z, self.codebook.weight)
            z_q = self.codebook(codes)  # (B, h, w, D)
            loss = vq_loss(z, z_q, self.cfg.beta)
            z_q = z + (z_q - z).detach()  # straight-through: the decoder's gradient flows to the encoder unchanged
            if self.training and self.cfg.restart_after and torch.is_grad_enabled():  # moves only unchosen codes
                self.restart_dead_codes(z.detach(), codes)
        return z_q.permute(0, 3, 1, 2), loss, codes

    def forward(self, x):  # (B, 3, H, W) -> x_hat (B, 3, H, W), L_VQ, codes (B, h, w)
        z_q, loss, codes = self.quantize(self.encoder(x))
        return self.decoder(z_q), loss, codes

    @torch.no_grad()
    def encode(self, x):  # (B, 3, H, W) in [-1, 1] -> (B, h, w) codes
        return self.quantize(self.encoder(x))[2]

    @torch.no_grad()
    def decode(self, codes):  # (B, h, w) codes -> (B, 3, h*f, w*f) images in [-1, 1]
        return self.decoder(self.codebook(codes).permute(0, 3, 1, 2))

# -----------------------------------------------------------------------------
# The adversarial part (Sec. 3.4): a PatchGAN discriminator on differentiably augmented images, its
# hinge loss, and the adaptive weight with its clamp (Eq. 9).


def patch_discriminator(ndf=64, n_layers=3):
    """(B, 3, H, W) -> (B, 1, h', w') real/fake logits, one per overlapping patch (taming's NLayerDiscriminator)."""
    layers, ch = [nn.Conv2d(3, ndf, 4, 2, 1), nn.LeakyReLU(0.2)], ndf
    for i in range(1, n_layers + 1):
        cout = ndf * min(2 ** i, 8)
        stride = 2 if i < n_layers else 1
        layers += [nn.Conv2d(ch, cout, 4, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]
        ch = cout
    layers.append(nn.Conv2d(ch, 1, 4, 1, 1))
    disc = nn.Sequential(*layers)
    for m in disc.modules():  # DCGAN initialisation, as taming does
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return disc


def diffaug(x, translation=0.125):
    """Differentiable augmentation (Zhao et al. 2020) of (B, 3, H, W) images in [-1, 1]: random brightness,
    saturation and contrast per image, then a random shift by up to `translation` of the size, zero-filled."""
    B, _, H, W = x.shape
    rand = lambda: torch.rand(B, 1, 1, 1, device=x.device, dtype=x.dtype)  # noqa: E731
    x = x + (rand() - 0.5)
    mean = x.mean(1, keepdim=True)
    x = (x - mean) * (2 * rand()) + mean
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * (rand() + 0.5) + mean
    sy, sx = int(H * translation + 0.5), int(W * translation + 0.5)
    dy = torch.randint(-sy, sy + 1, (B, 1, 1), device=x.device)
    dx = torch.randint(-sx, sx + 1, (B, 1, 1), device=x.device)
    # rows (B, H, 1) and columns (B, 1, W) to read in the zero-padded image; its rows/columns 0 and H+1 are zeros
    gy = (torch.arange(H, device=x.device).view(1, H, 1) + dy + 1).clamp(0, H + 1)
    gx = (torch.arange(W, device=x.device).view(1, 1, W) + dx + 1).clamp(0, W + 1)
    padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)  # (B, H+2, W+2, 3)
    return padded[torch.arange(B, device=x.device).view(B, 1, 1), gy, gx].permute(0, 3, 1, 2)


# the discriminator's hinge loss: E[relu(1 - D(x))] + E[relu(1 + D(x_hat))], halved as in taming
def hinge_d_loss(logits_real, logits_fake):
    return 0.5 * (F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean())


# Eq. 9c: lambda = clamp(||grad_{G_L} L_rec|| / (||grad_{G_L} L_GAN|| + delta), 0, lambda_max), gradients on the
# decoder's last layer G_L; the clamp at lambda_max is the paper's change (Sec. 3.4)
def adaptive_weight(rec_loss, gan_loss, last_layer, lambda_max, delta=1e-4):
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    return (g_rec.norm() / (g_gan.norm() + delta)).clamp(0, lambda_max).detach()


def load_lpips(device):
    """The LPIPS perceptual distance (VGG16), whose ImageNet weights torchvision downloads on first use."""
    import lpips
    from torchvision.models import VGG16_Weights
    net = pretrained(lambda: lpips.LPIPS(net="vgg", verbose=False), VGG16_Weights.IMAGENET1K_V1.url,
                     "the perceptual loss's (LPIPS) VGG16 weights", "pass --perceptual-weight 0 to train without it")
    return net.to(device).eval().requires_grad_(False)

# -----------------------------------------------------------------------------
# Training


def psnr(x, y):
    """Peak signal-to-noise ratio in dB of images in [-1, 1] (peak-to-peak 2)."""
    return (10 * torch.log10(4 / F.mse_loss(x.float(), y.float()))).item()


def train_step(model, disc, opt, d_opt, x, step, args, perceptual):
    """One optimisation step of the autoencoder (Eq. 5, 9) and, once it is switched on, the discriminator."""
    raw = model.module if hasattr(model, "module") else model
    raw_disc = disc.module if hasattr(disc, "module") else disc
    gan_on = step >= args.disc_start
    augment = diffaug if args.diffaug == "on" else (lambda x: x)  # what the discriminator sees, real and fake alike
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=args.bf16):
        x_hat, loss_vq, codes = model(x)
        l1 = (x - x_hat).abs().mean()
        rec = l1 + (args.perceptual_weight * perceptual(x, x_hat).mean() if perceptual else 0.0)
        gan = -raw_disc(augment(x_hat)).mean() if gan_on else torch.zeros((), device=x.device)
    lam = adaptive_weight(rec, gan, raw.decoder[-1].weight, args.lambda_max) if gan_on else torch.zeros_like(gan)
    loss = rec + lam * gan + loss_vq
    opt.zero_grad(set_to_none=True)
    loss.backward()
    require_finite(nn.utils.clip_grad_norm_(model.parameters(), float("inf")), step, Path(args.out_dir) / "vqgan.pt")
    opt.step()
    d_loss = torch.zeros((), device=x.device)
    if gan_on:  # real and fake through the discriminator in one call (one forward per backward under DDP)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=args.bf16):
            logits = disc(augment(torch.cat([x, x_hat.detach()])))
            d_loss = hinge_d_loss(*logits.chunk(2))
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        require_finite(nn.utils.clip_grad_norm_(disc.parameters(), float("inf")), step, Path(args.out_dir) / "vqgan.pt")
        d_opt.step()
    perplexity, used = codebook_usage(codes, raw.cfg.codebook_size)
    return dict(loss=loss.item(), l1=l1.item(), rec=rec.item(), vq=loss_vq.item(), gan=gan.item(),
                lam=lam.item(), d=d_loss.item(), perplexity=perplexity, used=used)


@torch.no_grad()
def encode_dataset(model, dataset, device, batch_size=64, num_workers=0, disable_bar=False):
    """Codes (N, h, w) of every image of `dataset`, in order."""
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    codes = [model.encode(to_float(x.to(device))).cpu() for x in tqdm(loader, desc="encode", disable=disable_bar)]
    return torch.cat(codes).numpy()


# One function from the setup to the last step, top to bottom as nanoGPT's train.py: each piece it calls is above.
def main(args):
    rank, world_size, device = setup_distributed(args.device)
    args.bf16 = bf16_is_fast(device) if args.bf16 == "auto" else args.bf16 == "on"
    out = Path(args.out_dir)
    ckpt_path = out / "vqgan.pt"
    is_main = rank == 0
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    ckpt = load_checkpoint(ckpt_path, "vqgan") if args.resume or args.encode_only else None
    if ckpt is not None:  # the run's own settings; --max-steps may grow the run
        resumed_settings(args, ckpt, keep=("resume", "encode_only", "device", "max_steps", "out_dir", "num_workers"))
    cfg = VQGANConfig.from_dict(ckpt["config"]) if ckpt else \
        VQGANConfig(**{k: getattr(args, k) for k in VQGANConfig.__dataclass_fields__})
    train_set, val_set, labels, classes, _ = load_data(args.data, args.data_dir, cfg.img_size, args.n_shapes)

    torch.manual_seed(args.seed + rank)
    # On a CPU, weights and batches in channels-last order (B, H, W, C in memory): oneDNN's convolutions, most of a
    # training step, run it without reordering: 200 steps took 72-77 s against 88-94 s on a 2-core AVX2 CPU
    layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    model = VQGAN(cfg).to(device, memory_format=layout)
    disc = patch_discriminator(args.ndf, args.disc_layers).to(device, memory_format=layout)
    # Adam moves a weight by about lr a step, so codes initialised near 0 need ~1/lr steps to reach the encoder's
    # outputs, and most are never picked meanwhile; a larger codebook lr lets a short run use its codebook
    others = [p for n, p in model.named_parameters() if not n.startswith("codebook.")]
    codebook = {"params": model.codebook.parameters(), "lr": args.lr * args.codebook_lr_mult}
    opt = torch.optim.Adam([{"params": others}, codebook], lr=args.lr, betas=(0.5, 0.9))
    d_opt = torch.optim.Adam(disc.parameters(), lr=args.lr, betas=(0.5, 0.9))
    base_lrs = [args.lr, args.lr * args.codebook_lr_mult]  # of the two groups of opt
    parts = dict(model=model, disc=disc, opt=opt, d_opt=d_opt)  # what a checkpoint holds, besides settings
    step = restore(ckpt, parts, rank, world_size) if ckpt else 0
    if is_main:
        start_log(out / "vqgan_log.jsonl", step)
        print_settings(args, out / "vqgan_log.jsonl", step)
        n_params = sum(p.numel() for p in model.parameters())
        h = cfg.img_size // cfg.downsample
        print(f"VQGAN {n_params / 1e6:.2f}M parameters, {cfg.img_size}px images -> {h}x{h} codes from "
              f"{cfg.codebook_size}; {len(train_set)} training / {len(val_set)} validation images; device {device}, "
              f"world size {world_size}")
    if args.encode_only:
        return finish(model, train_set, labels, classes, ckpt_path, args, device, is_main)

    perceptual = load_lpips(device) if args.perceptual_weight > 0 else None
    raw = model
    if world_size > 1:
        model = nn.parallel.DistributedDataParallel(model)
        disc = nn.parallel.DistributedDataParallel(disc)
    loader = iter(torch.utils.data.DataLoader(
        train_set, batch_sampler=StepBatches(len(train_set), step, args.batch_size, args.seed, rank, world_size),
        num_workers=args.num_workers, persistent_workers=args.num_workers > 0,
        generator=torch.Generator()))  # its own generator: making the loader must not draw from the global RNG
    # PSNR and code redundancy on 256 validation images, the grid shows 8
    val_x = to_float(torch.stack([val_set[i] for i in range(min(256, len(val_set)))])).to(device)

    def checkpoint():
        state = dict(kind="vqgan", version=CHECKPOINT_VERSION, config=asdict(cfg), args=vars(args), step=step,
                     rng=rng_states(), **{k: v.state_dict() for k, v in parts.items()})
        if is_main:
            save_checkpoint(state, ckpt_path)

    caught = catch_stop_signals()
    with tqdm(total=args.max_steps, initial=step, disable=not is_main, desc="vqgan") as bar:
        while step < args.max_steps:
            model.train()
            disc.train()
            x = to_float(next(loader).to(device))
            if args.hflip:
                x = torch.where(torch.rand(len(x), 1, 1, 1, device=device) < 0.5, x.flip(3), x)
            x = x.contiguous(memory_format=layout)
            for group, base in zip([*opt.param_groups, *d_opt.param_groups], [*base_lrs, args.lr]):
                group["lr"] = learning_rate(step, base, 0, args.max_steps, args.lr_decay)
            metrics = train_step(model, disc, opt, d_opt, x, step, args, perceptual)
            step += 1
            bar.update(1)
            if step % args.log_every == 0 or step == args.max_steps:
                metrics = mean_over_ranks(metrics)
                bar.set_postfix({k: f"{metrics[k]:.4g}" for k in ("l1", "vq", "lam", "d", "perplexity", "used")})
                if is_main:
                    append_log(out / "vqgan_log.jsonl", dict(step=step, **metrics))
            if is_main and (step % args.sample_every == 0 or step == args.max_steps):
                raw.eval()
                with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                    val_hat, val_codes = (torch.cat(a) for a in zip(*[raw(v)[::2] for v in val_x.split(32)]))
                grid = torch.cat([to_uint8(val_x[:8]), to_uint8(val_hat[:8])])
                save_grid(grid, out / f"recon_{step:06d}.png", nrow=len(grid) // 2)
                bits, agreement, _ = code_redundancy(to_uint8(val_x).numpy(), val_codes.cpu().numpy())
                append_log(out / "vqgan_log.jsonl", dict(step=step, val_psnr=psnr(val_x, val_hat), val_code_bits=bits,
                                                         val_code_agreement=agreement))
            if step % args.ckpt_every == 0 or step == args.max_steps:
                checkpoint()
            stop_if_signalled(caught, device, checkpoint, step, ckpt_path)
    finish(raw, train_set, labels, classes, ckpt_path, args, device, is_main)


def finish(model, train_set, labels, classes, ckpt_path, args, device, is_main):
    """Encode the training images to OUT/codes.npy (rank 0 only), then leave the process group."""
    if is_main:
        codes = encode_dataset(model, train_set, device, num_workers=args.num_workers)
        images = np.stack([np.asarray(train_set[i]) for i in range(min(len(train_set), 2000))])  # for redundancy
        summary = write_codes(codes, images, args.out_dir, ckpt_path, model.cfg.codebook_size, labels, classes)
        print(f"wrote {Path(args.out_dir) / 'codes.npy'} {codes.shape}: {summary}")
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


# Every flag with its help, then the preset that fills in what was not given: long, and flat on purpose.
def get_args(argv=None):
    p = argparse.ArgumentParser(description="Stage 1: train a VQGAN and encode the images to codes.npy",
                                formatter_class=HelpFormatter)

    def preset_flag(name, help, **kw):  # a setting that the preset fills in unless given
        key = name[2:].replace("-", "_")
        p.add_argument(name, default=None, help=f"{help} (default: {preset_values(PRESETS, key)})", **kw)

    p.add_argument("--data", default="shapes",
                   help="'shapes' (built in); an image folder; mnist, fashion-mnist or cifar10 (torchvision downloads "
                        "them on first use); or ffhq, churches, bedrooms (folders: never downloaded)")
    p.add_argument("--data-dir", default=None,
                   help="where a preset's images are, or a local copy of a standard set's files (default: data/NAME)")
    p.add_argument("--preset", choices=list(PRESETS), default=None,
                   help="hyperparameters (default: the --data name's; for a folder, the scale of its images)")
    p.add_argument("--out-dir", default="out", help="where the checkpoint, images and codes go")
    p.add_argument("--n-shapes", type=positive_int, default=10000, help="training images of the shapes data")
    preset_flag("--img-size", "image side in pixels", type=positive_int)
    preset_flag("--nf", "encoder/decoder channels at full resolution", type=positive_int)
    preset_flag("--ch-mult", "channel multiplier per resolution", type=positive_int, nargs="+")
    preset_flag("--res-blocks", "residual blocks per resolution", type=positive_int)
    preset_flag("--attn-resolutions", "feature-map sizes with self-attention", type=positive_int, nargs="*")
    preset_flag("--emb-dim", "dimension D of a code vector", type=positive_int)
    preset_flag("--codebook-size", "number K of codes", type=positive_int)
    preset_flag("--local-encoder", "on: each code is computed from its own f x f patch only; off: the paper's "
                "encoder", choices=["on", "off"])
    preset_flag("--norm", "normalisation in the encoder and decoder: the paper's GroupNorm (statistics of the whole "
                "image) or PositionNorm (a LayerNorm at each position)", choices=["group", "position"])
    preset_flag("--restart-after", "move a code no position chose for this many steps onto an encoder output "
                "(0: never)", type=int)
    preset_flag("--beta", "weight of the commitment loss", type=float)
    preset_flag("--ndf", "discriminator channels", type=positive_int)
    preset_flag("--disc-layers", "discriminator stride-2 layers", type=positive_int)
    preset_flag("--disc-start", "step at which the GAN loss switches on", type=int)
    preset_flag("--lambda-max", "clamp on the adaptive GAN weight (Eq. 9c)", type=float)
    p.add_argument("--diffaug", choices=["on", "off"], default="on", help="DiffAug before the discriminator (Tab. 5)")
    preset_flag("--perceptual-weight", "weight of LPIPS (needs VGG16 weights)", type=float)
    preset_flag("--lr", "Adam learning rate", type=positive_float)
    preset_flag("--lr-decay", "learning rate after the start: constant (the paper's) or a cosine down to 0 at "
                "--max-steps", choices=["constant", "cosine"])
    preset_flag("--codebook-lr-mult", "the codebook's learning rate over --lr", type=float)
    preset_flag("--batch-size", "global batch (split over torchrun ranks)", type=positive_int)
    preset_flag("--max-steps", "training steps; with --resume, the run's own unless given", type=positive_int)
    p.add_argument("--hflip", action="store_true", help="random horizontal flips")
    p.add_argument("--seed", type=int, default=0, help="random seed of the run")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--bf16", default="auto", choices=["auto", "on", "off"],
                   help="bfloat16 autocast (auto: on for CUDA and for CPUs with bf16 instructions)")
    p.add_argument("--num-workers", type=int, default=None,
                   help="data loaders (default: 0 for shapes and the standard sets, held in memory, else 4, or the CPU "
                        "count if lower)")
    p.add_argument("--log-every", type=positive_int, default=20, help="steps between log lines")
    p.add_argument("--sample-every", type=positive_int, default=200, help="steps between reconstruction grids")
    p.add_argument("--ckpt-every", type=positive_int, default=200, help="steps between checkpoints")
    p.add_argument("--resume", action="store_true",
                   help="continue OUT/vqgan.pt with its own settings (--max-steps may grow, stretching a cosine "
                        "--lr-decay)")
    p.add_argument("--encode-only", action="store_true", help="load OUT/vqgan.pt and only write codes.npy")
    args = p.parse_args(argv)
    if args.num_workers is None:
        args.num_workers = 0 if args.data in ("shapes", *STANDARD_SETS) else min(4, os.cpu_count() or 1)
    if args.resume or args.encode_only:  # every setting but the run's length comes from the checkpoint (main)
        return args
    if args.preset is None and args.data in PRESETS:
        args.preset = args.data
    elif args.preset is None and Path(args.data).is_dir():
        args.preset, side, why = preset_for_folder(args.data, args.img_size)
        print(f"{args.data}: images of {why} -> preset {args.preset} (pass --preset to choose another; any setting "
              f"can be overridden by its flag)")
        if args.img_size is None and side < PRESETS[args.preset]["img_size"]:  # own size: attention at its latent size
            f = 2 ** (len(PRESETS[args.preset]["ch_mult"]) - 1)
            args.img_size, args.attn_resolutions = side, args.attn_resolutions or (side // f,)
    for k, v in PRESETS[args.preset or "32px"].items():  # a missing folder is reported by load_data
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.ch_mult, args.attn_resolutions = tuple(args.ch_mult), tuple(args.attn_resolutions)
    args.local_encoder = args.local_encoder in ("on", True)
    if args.restart_after < 0:
        p.error(f"--restart-after must be >= 0 (0: never restart), got {args.restart_after}")
    f = 2 ** (len(args.ch_mult) - 1)
    if args.img_size % f:
        p.error(f"--img-size {args.img_size} is not divisible by the down-sampling factor {f} of --ch-mult")
    if args.batch_size % int(os.environ.get("WORLD_SIZE", 1)):
        p.error(f"--batch-size {args.batch_size} is not divisible by the {os.environ['WORLD_SIZE']} processes")
    return args

if __name__ == "__main__":
    main(get_args())
