"""
Stage 2: train the absorbing-diffusion prior, a bidirectional Transformer that un-masks VQ codes.

    python absorbing.py --codes out/codes.npy                 # small model, minutes on a laptop CPU
    python absorbing.py --codes out/codes.npy --loss elbo     # train on the plain ELBO (Eq. 6) instead
    python absorbing.py --codes data/ffhq_codes.npy --preset paper      # 24 layers, width 512 (~77M)
    torchrun --nproc_per_node 8 absorbing.py --codes ...      # many GPUs, same flags
    python absorbing.py --codes out/codes.npy --resume        # continue OUT/absorbing.pt exactly
    python absorbing.py --codes out/codes.npy --model autoregressive --out-dir out/ar   # Tab. 4's baseline

The forward process masks each code independently with probability t/T; the network sees only the
masked grid x_t (no t) and predicts every masked code; the reverse process starts from all masks and
reveals codes a few at a time. Writes OUT/absorbing.pt, OUT/absorbing_log.jsonl (training loss, ELBO
in bits per token, validation ELBO) and OUT/samples_STEP.png previews decoded with the stage-1 VQGAN.
"""
import argparse
import json
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

from common import (CHECKPOINT_VERSION, append_log, batch_indices, bf16_is_fast, catch_stop_signals,
                    learning_rate, load_checkpoint, mean_over_ranks, positive_float, positive_int, require_finite,
                    restore, rng_states, save_checkpoint, save_grid, setup_distributed, start_log, stop_if_signalled,
                    to_device)
from vqgan import VQGAN, VQGANConfig, to_uint8

# -----------------------------------------------------------------------------
# Data: the integer codes written by vqgan.py, checked, with a fixed validation part.


def load_codes(path, codebook_size=None):
    """Codes (N, h, w) int64 and the codebook size K, from OUT/codes.npy and the codes.json beside it.
    A wrong file, shape or range is a one-line error: training on bad codes would fail much later."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"error: codes file {path} does not exist; run vqgan.py first (it writes OUT/codes.npy)")
    try:
        codes = np.load(path, allow_pickle=False)
    except Exception as e:
        why = str(e).splitlines()[0][:150]
        raise SystemExit(f"error: cannot read {path} as a .npy array ({type(e).__name__}: {why})")
    if not np.issubdtype(codes.dtype, np.integer):
        raise SystemExit(f"error: {path} holds {codes.dtype} values; codes must be integers")
    if codes.ndim != 3 or 0 in codes.shape:
        raise SystemExit(f"error: {path} has shape {codes.shape}; codes must be (N, h, w) with N, h, w > 0")
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    K = codebook_size or meta.get("codebook_size")
    if K is None:
        raise SystemExit(f"error: {meta_path} (written by vqgan.py) is missing, so the codebook size is unknown; "
                         f"pass --codebook-size")
    if meta.get("codebook_size") not in (None, K):
        raise SystemExit(f"error: --codebook-size {K} disagrees with the VQGAN's {meta['codebook_size']} "
                         f"in {meta_path}")
    if codes.min() < 0 or codes.max() >= K:
        raise SystemExit(f"error: {path} has codes in [{codes.min()}, {codes.max()}], outside [0, {K}) "
                         f"for a codebook of {K}")
    vqgan_path = (path.parent / meta["vqgan"]).resolve() if "vqgan" in meta else None
    return torch.from_numpy(codes.astype(np.int64)), K, vqgan_path


def load_labels(codes_path, n):
    """(labels (n,) int64, class names) from the labels.npy and codes.json that vqgan.py writes beside the codes when
    the images have classes (the shapes kinds, or an image folder's subfolders); (None, []) when they have none."""
    path = Path(codes_path).with_name("labels.npy")
    meta_path = Path(codes_path).with_suffix(".json")
    if not path.is_file():
        return None, []
    classes = json.loads(meta_path.read_text()).get("classes") if meta_path.is_file() else None
    labels = np.load(path, allow_pickle=False)
    if not classes:
        raise SystemExit(f"error: {meta_path} names no classes for the labels in {path}; rerun vqgan.py or remove "
                         f"{path}")
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 \
            or labels.max() >= len(classes):
        raise SystemExit(f"error: {path} must hold {n} integer labels in [0, {len(classes)}) (one per code grid), "
                         f"got shape {labels.shape} of {labels.dtype}")
    return torch.from_numpy(labels.astype(np.int64)), list(classes)


def split_codes(codes, val_every=20):
    """Every `val_every`-th code grid (0, 20, 40, ...) is held out for validation: fixed, whatever the seed."""
    held_out = torch.arange(len(codes)) % val_every == 0
    if len(codes) < 2:
        raise SystemExit(f"error: {len(codes)} code grid(s) is too few to hold out a validation part")
    return codes[~held_out], codes[held_out]

# -----------------------------------------------------------------------------
# The network: a Transformer encoder over the h*w codes. Pre-LayerNorm blocks, learned position
# embeddings, no causal mask and no time input (the paper's architecture). Input ids 0..K-1 are codes
# and K is the mask; the output is a distribution over the K codes only, so it never predicts a mask.
# The learned position embeddings start as 2D sines and cosines (MAE's fixed embedding, here only the start):
# random ones give attention no notion of "nearby", and the prior first sat for hundreds of steps at the
# ELBO of predicting every code from the code frequencies alone.


@dataclass
class PriorConfig:
    codebook_size: int = 128      # K; the mask token is id K
    latent_h: int = 8             # h, w: the grid of codes (N = h * w positions)
    latent_w: int = 8
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    n_classes: int = 0            # > 0: class-conditional; class id n_classes is "no class" (classifier-free guidance)
    model: str = "absorbing"      # or "autoregressive": the same blocks with a causal mask, codes in raster order
    pos_init: str = "sincos"      # or "random": how the learned position embeddings start
    conv: int = 0                 # > 0: depthwise convolutions of this kernel in each block (0: the paper's blocks)


MAX_STEPS = 5000  # the default run length: the quick start inside 15 minutes on a 2-core CPU (README)

PRIOR_PRESETS = {
    "small": dict(n_layer=4, n_head=4, n_embd=128, conv=3, lr=2e-3),
    "paper": dict(n_layer=24, n_head=8, n_embd=512, conv=0, lr=2e-4),  # Appendix A: 24 layers, 8 heads of 64 dims
}


def preset_for_codes(path):
    """The prior preset that fits the codes: the paper's for grids of 16x16 codes or more (its 256 px images),
    the small one for fewer. A missing or unreadable file gets 'small' here and its error from load_codes."""
    try:
        shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
    except Exception:
        return "small", "codes not readable yet"
    if len(shape) != 3:
        return "small", "codes not (N, h, w)"
    return ("paper" if shape[1] * shape[2] >= 256 else "small"), f"{shape[1]}x{shape[2]} codes"


# Position (r, c) of an h x w grid gets, for frequencies w_i = (2s)^(-i/q), i = 0..q-1, q = C/4, s = max(h, w):
# [sin(r w_i), cos(r w_i), sin(c w_i), cos(c w_i)], so that <e(r, c), e(r', c')> = sum_i cos((r - r') w_i) +
# cos((c - c') w_i) depends only on the offset. Amplitude 0.1 (the other embeddings start at std 0.02; on shapes,
# amplitudes 0.028, 0.1, 0.3 and 1 gave validation ELBOs of 0.87, 0.83, 0.88 and 1.04 bits after 2000 steps of an
# unconditional prior, seed 0).
def sincos_2d(h, w, C):  # -> (h * w, C); columns past 4q (when 4 does not divide C) are zero
    q = C // 4
    freq = (2 * max(h, w)) ** (-torch.arange(q) / q)  # (q,)
    r, c = torch.arange(h).repeat_interleave(w), torch.arange(w).repeat(h)  # (h * w,) each, row-major
    ar, ac = r[:, None] * freq, c[:, None] * freq  # (h * w, q)
    e = torch.cat([ar.sin(), ar.cos(), ac.sin(), ac.cos(), torch.zeros(h * w, C - 4 * q)], 1)
    return 0.1 * e


def depthwise(channels, k):
    """A depthwise k x k convolution that starts at zero: as a residual branch it starts as nothing at all."""
    conv = nn.Conv2d(channels, channels, k, padding=k // 2, groups=channels)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class Block(nn.Module):
    """A pre-LayerNorm Transformer block. With cfg.conv = k > 0 it also looks at its neighbours on the h x w grid:
    a depthwise k x k convolution of the (normalised) codes before the attention, and one of the MLP's 4C hidden
    units between its two layers (CvT's and PVTv2's convolutions), both residuals that start at zero, so that the
    block starts as the paper's. For the autoregressive model their kernels are causal in raster order, like its
    attention (PixelCNN's masked convolution)."""

    def __init__(self, cfg):
        super().__init__()
        self.n_head, self.dropout, self.causal = cfg.n_head, cfg.dropout, cfg.model == "autoregressive"
        self.ln1, self.ln2 = nn.LayerNorm(cfg.n_embd), nn.LayerNorm(cfg.n_embd)
        self.qkv, self.proj = nn.Linear(cfg.n_embd, 3 * cfg.n_embd), nn.Linear(cfg.n_embd, cfg.n_embd)
        C = cfg.n_embd
        self.mlp = nn.Sequential(nn.Linear(C, 4 * C), nn.GELU(), nn.Linear(4 * C, C))
        self.drop = nn.Dropout(cfg.dropout)
        self.grid, k = (cfg.latent_h, cfg.latent_w), cfg.conv
        self.conv = None
        if k:
            self.ln0, self.conv_in, self.conv = nn.LayerNorm(C), depthwise(C, k), depthwise(4 * C, k)
            r, c = torch.meshgrid(torch.arange(k) - k // 2, torch.arange(k) - k // 2, indexing="ij")
            self.register_buffer("kernel_mask", ((r < 0) | ((r == 0) & (c <= 0)) | (not self.causal)).float(),
                                 persistent=False)  # (k, k): 1 where a tap may look (causal: rows above, left)

    def neighbours(self, conv, u):  # (B, N, H) -> (B, N, H): conv of u over the h x w grid of row-major positions
        B, N, H = u.shape
        grid = u.transpose(1, 2).reshape(B, H, *self.grid)
        out = F.conv2d(grid, conv.weight * self.kernel_mask, conv.bias, padding=conv.padding, groups=H)
        return out.flatten(2).transpose(1, 2)

    def forward(self, x):  # (B, N, C)
        B, N, C = x.shape
        if self.conv is not None:
            x = x + self.neighbours(self.conv_in, self.ln0(x))
        qkv = self.qkv(self.ln1(x)).view(B, N, 3, self.n_head, C // self.n_head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, n_head, N, head size)
        # absorbing: no mask, every code attends to every code; autoregressive: each only to itself and earlier ones
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=self.causal)
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(B, N, C)))
        u = self.mlp[0](self.ln2(x))  # (B, N, 4C)
        if self.conv is not None:
            u = u + self.neighbours(self.conv, u)
        return x + self.drop(self.mlp[2](self.mlp[1](u)))


class Transformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        N = cfg.latent_h * cfg.latent_w
        self.tok_emb = nn.Embedding(cfg.codebook_size + 1, cfg.n_embd)  # + 1: the mask token
        self.pos_emb = nn.Parameter(torch.zeros(1, N, cfg.n_embd))
        self.cls_emb = nn.Embedding(cfg.n_classes + 1, cfg.n_embd) if cfg.n_classes else None  # + 1: no class
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.Sequential(*[Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.codebook_size)  # K outputs: the mask is never predicted
        self.apply(self._init)
        with torch.no_grad():
            if cfg.pos_init == "sincos":
                self.pos_emb.copy_(sincos_2d(cfg.latent_h, cfg.latent_w, cfg.n_embd)[None])
            else:
                nn.init.normal_(self.pos_emb, std=0.02)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, x_t, positions=None, y=None):
        """x_t (B, N) ids in 0..K -> logits over the K codes: (B, N, K), or (M, K) at `positions`, flat indices
        into the B*N grid, when only those are needed (the final layer then runs on M rows, not B*N). y (B,): the
        class of each row of a class-conditional model, n_classes (or None) for none; its embedding joins every
        code's."""
        B, N = x_t.shape
        if self.cfg.model == "autoregressive":  # input i is code i - 1 (the mask id K first): output i, p(x_i | x_<i)
            x_t = torch.cat([torch.full_like(x_t[:, :1], self.cfg.codebook_size), x_t[:, :-1]], 1)
        h = self.tok_emb(x_t) + self.pos_emb[:, :N]  # (B, N, C)
        if self.cls_emb is not None:
            y = torch.full((B,), self.cfg.n_classes, device=x_t.device) if y is None else y
            h = h + self.cls_emb(y)[:, None]
        h = self.blocks(self.drop(h))  # (B, N, C)
        if positions is not None:
            h = h.reshape(B * N, -1)[positions]  # (M, C)
        return self.head(self.ln_f(h))

# -----------------------------------------------------------------------------
# The method. T is the number of diffusion steps (T = N by default, as in the paper).


# q(x_t | x_0) (Sec. 3.2): each code independently becomes the mask with probability t/T. Drawn at each t
# independently of the others, the masks of a chain x_1..x_T are nested in distribution, and x_T is all masks.
def q_sample(x_0, t, T, mask_id, generator=None):  # x_0 (B, N), t (B,) in 1..T -> x_t (B, N), mask (B, N)
    mask = torch.rand(x_0.shape, generator=generator, device=x_0.device) < (t.float() / T).unsqueeze(1)
    return x_0.masked_fill(mask, mask_id), mask


def loss_weight(t, T, loss):
    """The weight on CE_t (the summed cross-entropy of the masked codes of x_t) of one training example whose
    t was drawn uniformly from 1..T; every loss is then divided by N ln 2 (bits per token) or, for mlm, by the
    number of masked codes times ln 2."""
    if loss == "elbo":
        # Eq. 6: -log p(x_0) <= sum_{t=1}^T E_q[CE_t / t]; one t ~ U{1..T} estimates the sum by T * CE_t / t
        return T / t
    if loss == "reweighted_elbo":
        # Eq. 7 as Appendix B derives it: the 1/t of each step becomes (T - t + 1) / T, which weighs late, heavily
        # masked steps less. (The official code uses 1 - t/T, which gives t = T no weight; the all-masked input,
        # where sampling starts, is then trained only through t = T - 1, which masks every code with probability
        # ((T - 1)/T)^N.) The one-draw estimate T * (T - t + 1)/T * CE_t is divided by T, a constant that changes
        # no minimiser and keeps the loss on the ELBO's scale.
        return (T - t + 1) / T
    raise ValueError(f"unknown loss {loss}")


def training_losses(model, x_0, T, mask_id, loss_type, generator=None, rank=0, world_size=1, y=None):
    """(loss, elbo): the training loss (a scalar) and the ELBO estimate of each example in bits per token (B,).
    Only masked positions are scored: the network's output elsewhere does not enter either number. Under torchrun
    every rank draws t and the masks of the whole global batch x_0 with the same generator and scores its share of
    the rows, so that the run's random draws do not depend on the number of processes."""
    t = torch.randint(1, T + 1, (len(x_0),), generator=generator, device=x_0.device)
    x_t, mask = q_sample(x_0, t, T, mask_id, generator)
    rows = slice(rank * len(x_0) // world_size, (rank + 1) * len(x_0) // world_size)
    x_0, t, x_t, mask = x_0[rows], t[rows], x_t[rows], mask[rows]
    B, N = x_0.shape
    positions = mask.flatten().nonzero().squeeze(1)  # (M,) flat indices of the masked codes
    logits = model(x_t, positions) if y is None else model(x_t, positions, y=y[rows])  # (M, K)
    ce = F.cross_entropy(logits.float(), x_0.flatten()[positions], reduction="none")  # (M,) nats
    ce_t = torch.zeros(B, device=x_0.device).index_add_(0, positions // N, ce)  # CE_t of each example (B,)
    elbo = loss_weight(t, T, "elbo") * ce_t / (N * math.log(2))  # (B,) bits per token
    if loss_type == "mlm":  # the BERT-style baseline: mean cross-entropy of the masked codes, no weight per t
        loss = ce.sum() / (max(len(ce), 1) * math.log(2))
    else:
        loss = (loss_weight(t, T, loss_type) * ce_t).mean() / (N * math.log(2))
    return loss, elbo


@torch.no_grad()
def elbo_bits(model, codes, T, mask_id, n_draws=1, seed=0, batch_size=256, labels=None):
    """Per-image ELBO in bits per token, (len(codes), n_draws): each draw is one t ~ U{1..T} and one mask, the
    same for the same seed, so that numbers are comparable across runs. Its mean is an upper bound on -log2 p(x)/N
    (on -log2 p(x | y)/N given the class `labels` (len(codes),) of a class-conditional prior)."""
    device = next(model.parameters()).device
    g = torch.Generator(device).manual_seed(seed)
    out = torch.zeros(len(codes), n_draws)
    for d in range(n_draws):
        for i in range(0, len(codes), batch_size):
            x_0 = codes[i:i + batch_size].flatten(1).to(device)
            y = None if labels is None else labels[i:i + batch_size].to(device)
            out[i:i + batch_size, d] = training_losses(model, x_0, T, mask_id, "elbo", g, y=y)[1].cpu()
    return out


# The autoregressive baseline of Tab. 4: the same Transformer with a causal mask, codes in raster order. Its
# likelihood is exact, by the chain rule: -log p(x) = -sum_i log p(x_i | x_<i).
def autoregressive_losses(model, x_0, rank=0, world_size=1, y=None):
    """(loss, nll): the training loss (a scalar) and each example's exact negative log-likelihood in bits per token
    (B,), from one forward pass (output i sees codes 0..i-1 only). Under torchrun each rank scores its rows."""
    rows = slice(rank * len(x_0) // world_size, (rank + 1) * len(x_0) // world_size)
    x_0 = x_0[rows]
    logits = model(x_0) if y is None else model(x_0, y=y[rows])  # (B, N, K)
    nll = F.cross_entropy(logits.float().transpose(1, 2), x_0, reduction="none").sum(1)  # (B,) nats
    nll = nll / (x_0.shape[1] * math.log(2))  # bits per token
    return nll.mean(), nll


@torch.no_grad()
def nll_bits(model, codes, batch_size=256):
    """Each image's exact negative log-likelihood under an autoregressive prior, in bits per token (len(codes),)."""
    device = next(model.parameters()).device
    return torch.cat([autoregressive_losses(model, codes[i:i + batch_size].flatten(1).to(device))[1].cpu()
                      for i in range(0, len(codes), batch_size)])


@torch.no_grad()
def sample_autoregressive(model, x, temperature=1.0, seed=0, on_step=None):
    """Codes one at a time in raster order, each drawn from p(x_i | x_<i) with logits divided by `temperature`:
    N network calls for N codes. x (B, N): its values are overwritten (only their shape and device are used)."""
    B, N = x.shape
    x = x.clone()
    g = torch.Generator(x.device).manual_seed(seed)
    for i in range(N):
        at = torch.arange(B, device=x.device) * N + i  # (B,) flat index of code i of each row
        x[:, i] = draw((model(x, at).float() / temperature).softmax(-1), g)
        if on_step is not None:
            on_step(x)
    return x


# The share of the masked codes that each sampling step reveals, from the first step (k = S) to the last (k = 1).
# 'uniform': 1/S each, the paper's reverse process (each masked code revealed at time t with probability 1/t) and,
# with S < T, its "evenly skipping", every step equal in expectation as in the official sampler. 'cosine': after j
# of S steps a fraction cos(pi/2 * j/S) is still masked (MaskGIT's and MD4's grid): few codes first, many at the end.
def step_shares(steps, grid="uniform"):  # -> (S,)
    if grid == "uniform":
        return torch.full((steps,), 1 / steps, dtype=torch.float64)
    still = torch.cos(math.pi / 2 * torch.arange(steps + 1, dtype=torch.float64) / steps)
    return still[:-1] - still[1:]


# How many codes are revealed by the end of each of S steps, from m unknown ones: round(m * the grid's cumulative
# share), kept to at least one code a step while codes remain and never more than leaves one for each later step.
def step_counts(m, steps, grid="uniform"):  # m (B,) -> (B, S), non-decreasing, ending at m
    j = torch.arange(1, steps + 1)
    done = (step_shares(steps, grid).cumsum(0) * m[:, None]).round().long()  # (B, S)
    room = m[:, None] - steps + j  # the most that can be done by step j while leaving a code for each later step
    return done.clamp(torch.minimum(j, room.clamp(min=0)), torch.maximum(room, torch.minimum(j, m[:, None])))


def reveal_schedule(known, steps, grid="uniform", generator=None, counts="exact"):
    """The sampling step (S, ..., 1) at which each unknown code is revealed, (B, ...) long, 0 where known. The reverse
    process reveals each still-masked code at time t with probability 1/t; so a code masked at t_start is revealed at
    time s with probability prod_{r>s}(1 - 1/r) * 1/s = 1/t_start: a uniform time, drawn up front.
    counts 'binomial': each code's step is drawn from step_shares(S, grid) on its own, the paper's process as written
    (at S = t_start, each masked code revealed with probability 1/t). Some steps then reveal several codes, each drawn
    from p(x_0 | x_t) without seeing the others, and some reveal none.
    counts 'exact': each row's unknown codes are revealed in a uniformly random order, step j of S revealing exactly
    its share (step_counts): at S = t_start one code a step. That is the paper's process in the limit of many steps
    (T -> infinity, where no two codes are revealed at once), and each code's step is still uniform."""
    if counts == "binomial":
        first = torch.multinomial(step_shares(steps, grid), known.numel(), replacement=True, generator=generator)
        return torch.where(known, 0, steps - first.view(known.shape))  # first = 0 is step S
    flat = known.reshape(len(known), -1)  # (B, N)
    rank = torch.rand(flat.shape, generator=generator).masked_fill(flat, 2.0).argsort(1).argsort(1)  # 0 goes first
    first = torch.searchsorted(step_counts((~flat).sum(1), steps, grid), rank, right=True)  # steps done before it
    return torch.where(flat, 0, steps - first).view(known.shape)


def denoise(model, x, reveal, temperature=1.0):
    """p(x_0 | x_t) with logits divided by `temperature`, at the positions to reveal: (M, K), in row-major order.
    The network runs only on the rows of x that reveal something, and its last layer only at those positions."""
    B = x.shape[0]
    x, reveal = x.view(B, -1), reveal.view(B, -1)
    rows = reveal.any(1).nonzero().squeeze(1)  # on the CPU, as `reveal` is: no GPU sync
    sub = reveal[rows].flatten().nonzero().squeeze(1)  # positions within the rows that run
    return (model(x[to_device(rows, x.device)], to_device(sub, x.device)).float() / temperature).softmax(-1)


# one draw from each row's categorical distribution: argmax_i p_i / E_i with E_i ~ Exp(1) is i with probability
# p_i / sum_j p_j (the smallest of exponential times with rates p_i); unlike torch.multinomial, no GPU sync. In
# float64: float32 draws on CUDA never go below 2^-24, so codes with p_i under about 6e-8 of the largest would be
# drawn too rarely (Zheng et al. 2024), which lowers the effective temperature.
def draw(probs, generator=None):  # (M, K) -> (M,)
    probs = probs.double()
    return (probs / torch.empty_like(probs).exponential_(generator=generator)).argmax(-1)


@torch.no_grad()
def sample(model, x, mask_id, t_start=None, steps=None, temperature=1.0, seed=0, predict=denoise, on_step=None,
           progress=False, grid="uniform", counts="exact"):
    """The reverse process from x (B, ...): codes where known, mask_id (K) elsewhere; all masks for a new sample.
    Returns x_0. Each step reveals the codes its schedule gives it (reveal_schedule: grid and counts), drawn from
    predict(model, x_t, reveal, temperature); a step that reveals nothing costs nothing (its x_t is the next step's).
    on_step(x) sees each new x_t."""
    device = x.device
    known = (x != mask_id).cpu()
    t_start = t_start or int((~known).flatten(1).sum(1).max())  # the paper's t for inpainting: the masked count
    steps = min(steps or t_start, t_start)
    when = reveal_schedule(known, steps, grid, torch.Generator().manual_seed(seed), counts)  # on the CPU: no GPU syncs
    g = torch.Generator(device).manual_seed(seed + 1)
    x = x.clone()
    for k in tqdm(range(steps, 0, -1), desc="sample", disable=not progress, leave=False):
        reveal = when == k  # (B, ...)
        if not reveal.any():
            continue
        probs = predict(model, x, reveal, temperature)  # (M, K)
        x.view(-1)[to_device(reveal.flatten().nonzero().squeeze(1), device)] = draw(probs, g)
        if on_step is not None:
            on_step(x)
    return x

# -----------------------------------------------------------------------------
# Training


def load_vqgan(path, device):
    """The stage-1 VQGAN (eval mode) from its checkpoint, or None with a note if it is not there."""
    if path is None or not Path(path).is_file():
        print(f"note: no VQGAN checkpoint at {path}: sample previews are off")
        return None
    ckpt = load_checkpoint(path, "vqgan")
    vq = VQGAN(VQGANConfig.from_dict(ckpt["config"]))
    vq.load_state_dict(ckpt["model"])
    return vq.to(device).eval()


def prior_from_checkpoint(ckpt, ema=True):
    """The Transformer of an absorbing checkpoint, with its EMA weights by default (those are sampled from)."""
    model = Transformer(PriorConfig(**ckpt["config"]))
    model.load_state_dict(ckpt["ema" if ema else "model"])
    return model.eval()


def main(args):
    rank, world_size, device = setup_distributed(args.device)
    args.bf16 = bf16_is_fast(device) if args.bf16 == "auto" else args.bf16 == "on"
    is_main = rank == 0
    out = Path(args.out_dir)
    ckpt_path = out / "absorbing.pt"
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    ckpt = load_checkpoint(ckpt_path, "absorbing") if args.resume else None
    if ckpt is not None:  # the run's settings come from the checkpoint; --max-steps may grow
        max_steps = args.max_steps or ckpt["args"]["max_steps"]  # not the current default: the run's own length
        keep = ("resume", "device", "max_steps", "out_dir")
        vars(args).update({k: v for k, v in ckpt["args"].items() if k not in keep})
        args.max_steps = max(max_steps, ckpt["step"])
        args.lr_decay = ckpt["args"].get("lr_decay", "constant")  # checkpoints from before --lr-decay: constant
    args.max_steps = args.max_steps or MAX_STEPS
    codes, K, vqgan_path = load_codes(args.codes, args.codebook_size)
    train_codes, val_codes = split_codes(codes.flatten(1))
    labels, classes = load_labels(args.codes, len(codes))
    if args.class_dropout is None:  # conditional when the images have classes, 10% of examples without (CFG)
        args.class_dropout = 0.1 if labels is not None else 1.0
    if labels is None and args.class_dropout < 1:
        raise SystemExit(f"error: --class-dropout {args.class_dropout} trains on classes, but {args.codes} has no "
                         f"labels.npy beside it (vqgan.py writes one for shapes and for a folder of subfolders)")
    conditional = args.class_dropout < 1
    train_labels = split_codes(labels)[0] if conditional else None
    h, w = codes.shape[1:]
    cfg = PriorConfig(**ckpt["config"]) if ckpt else PriorConfig(
        codebook_size=K, latent_h=h, latent_w=w, n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
        dropout=args.dropout, n_classes=len(classes) if conditional else 0, model=args.model, pos_init=args.pos_init,
        conv=args.conv)
    if (cfg.codebook_size, cfg.latent_h, cfg.latent_w) != (K, h, w):
        raise SystemExit(f"error: {args.codes} has {h}x{w} codes from {K}, but the checkpoint's model was trained "
                         f"on {cfg.latent_h}x{cfg.latent_w} codes from {cfg.codebook_size}")
    T = args.diffusion_steps = args.diffusion_steps or h * w

    torch.manual_seed(args.seed + rank)
    model = Transformer(cfg).to(device)
    ema = Transformer(cfg).to(device).eval().requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    decay, no_decay = [p for p in model.parameters() if p.dim() >= 2], [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95))
    parts = dict(model=model, ema=ema, opt=opt)  # what a checkpoint holds, besides settings
    step = restore(ckpt, parts, rank, world_size) if ckpt else 0
    if is_main:
        start_log(out / "absorbing_log.jsonl", step)
    if is_main:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"prior ({cfg.model}) {n_params / 1e6:.2f}M parameters, {h}x{w} codes from {K}, "
              + ("exact likelihood, " if cfg.model == "autoregressive" else f"T = {T}, loss {args.loss}, ")
              + (f"{len(classes)} classes ({args.class_dropout:.0%} of examples without); " if conditional else
                 "unconditional; ") +
              f"{len(train_codes)} training / {len(val_codes)} validation grids; uniform baseline {math.log2(K):.2f} "
              f"bits per token; device {device}, world size {world_size}")
    vqgan = load_vqgan(vqgan_path, device) if is_main and args.sample_every else None
    raw = model
    if world_size > 1:
        model = nn.parallel.DistributedDataParallel(model)
    train_model = torch.compile(model) if args.compile else model

    def checkpoint():  # the VQGAN's path is kept relative to OUT, so that OUT can move
        state = dict(kind="absorbing", version=CHECKPOINT_VERSION, config=asdict(cfg), args=vars(args), step=step,
                     classes=classes if conditional else [],
                     class_counts=torch.bincount(train_labels, minlength=len(classes)) if conditional else None,
                     rng=rng_states(), diffusion_steps=T, vqgan=vqgan_path and os.path.relpath(vqgan_path, out),
                     **{k: v.state_dict() for k, v in parts.items()})
        if is_main:
            save_checkpoint(state, ckpt_path)

    autoregressive = cfg.model == "autoregressive"
    bound = "nll" if autoregressive else "elbo"  # the exact NLL, or the ELBO's bound on it

    def validate():
        val = nll_bits(ema, val_codes)[:, None] if autoregressive else elbo_bits(ema, val_codes, T, K,
                                                                                 n_draws=args.val_draws, seed=1234)
        return val.mean().item(), (val.mean(1).std() / math.sqrt(len(val))).item()

    caught = catch_stop_signals()
    with tqdm(total=args.max_steps, initial=step, disable=not is_main, desc="absorbing") as bar:
        while step < args.max_steps:
            model.train()
            batch = batch_indices(step, len(train_codes), args.batch_size, args.seed)  # the global batch, on every rank
            x_0 = train_codes[batch].to(device)
            g = torch.Generator(device).manual_seed(args.seed * 1_000_003 + step)  # this step's draws of t and masks
            y = None
            if conditional:  # classifier-free guidance: a random class_dropout of the examples see "no class"
                y = train_labels[batch].to(device)
                y = y.masked_fill(torch.rand(len(y), generator=g, device=device) < args.class_dropout, cfg.n_classes)
            for group in opt.param_groups:
                group["lr"] = learning_rate(step, args.lr, args.warmup_steps, args.max_steps, args.lr_decay)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                if autoregressive:
                    loss, elbo = autoregressive_losses(train_model, x_0, rank, world_size, y)
                else:
                    loss, elbo = training_losses(train_model, x_0, T, K, args.loss, g, rank, world_size, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            require_finite(grad_norm, step, ckpt_path)
            opt.step()
            with torch.no_grad():  # EMA of the weights: ema <- decay * ema + (1 - decay) * weights
                for pe, p in zip(ema.parameters(), raw.parameters()):
                    pe.lerp_(p, 1 - args.ema_decay)
            step += 1
            bar.update(1)
            if step % args.log_every == 0 or step == args.max_steps:
                metrics = mean_over_ranks({"loss": loss.item(), bound: elbo.mean().item(),
                                           "grad_norm": grad_norm.item()})
                bar.set_postfix(loss=f"{metrics['loss']:.3f}", **{bound: f"{metrics[bound]:.3f}"})
                if is_main:
                    append_log(out / "absorbing_log.jsonl", dict(step=step, lr=opt.param_groups[0]["lr"], **metrics))
            if is_main and (step % args.eval_every == 0 or step == args.max_steps):
                val, err = validate()
                tqdm.write(f"step {step}: validation {'exact NLL' if autoregressive else 'ELBO'} {val:.4f} +- "
                           f"{err:.4f} bits per token (EMA weights)")
                append_log(out / "absorbing_log.jsonl", {"step": step, f"val_{bound}": val, f"val_{bound}_err": err})
            if vqgan is not None and (step % args.sample_every == 0 or step == args.max_steps):
                x = torch.full((16, h * w), K, device=device)
                x = sample_autoregressive(ema, x, seed=step) if autoregressive else sample(
                    ema, x, K, steps=args.sample_steps, seed=step)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                    save_grid(to_uint8(vqgan.decode(x.view(-1, h, w))), out / f"samples_{step:06d}.png", nrow=8)
            if step % args.ckpt_every == 0 or step == args.max_steps:
                checkpoint()
            stop_if_signalled(caught, device, checkpoint, step, ckpt_path)
    if dist.is_initialized():  # the last step's checkpoint is written before any rank leaves
        dist.barrier()
        dist.destroy_process_group()


def get_args(argv=None):
    p = argparse.ArgumentParser(description="Stage 2: train the absorbing-diffusion Transformer prior on VQ codes",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--codes", default="out/codes.npy", help="codes.npy from vqgan.py (codes.json beside it)")
    p.add_argument("--codebook-size", type=positive_int, default=None, help="K, if codes.json is absent")
    p.add_argument("--out-dir", default="out", help="where the checkpoint, log and previews go")
    p.add_argument("--preset", choices=sorted(PRIOR_PRESETS), default=None,
                   help="model size (default: paper for grids of 16x16 codes or more, else small)")
    p.add_argument("--n-layer", type=positive_int, default=None, help="Transformer blocks (default: the preset's)")
    p.add_argument("--n-head", type=positive_int, default=None, help="attention heads (default: the preset's)")
    p.add_argument("--n-embd", type=positive_int, default=None, help="width (default: the preset's)")
    p.add_argument("--conv", type=int, default=None,
                   help="kernel of the depthwise convolutions in each block (before the attention and in the MLP), 0 "
                        "for none: the paper's Transformer (default: the preset's, 3 for small, 0 for paper)")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout rate")
    p.add_argument("--pos-init", choices=["sincos", "random"], default="sincos",
                   help="how the learned position embeddings start: 2D sines and cosines, or random (std 0.02)")
    p.add_argument("--model", choices=["absorbing", "autoregressive"], default="absorbing",
                   help="absorbing diffusion, or Tab. 4's baseline: the same Transformer, causal, in raster order "
                        "(trained on its exact likelihood; --loss and --diffusion-steps do not apply)")
    p.add_argument("--loss", choices=["reweighted_elbo", "elbo", "mlm"], default="reweighted_elbo",
                   help="training loss: Eq. 7, Eq. 6, or masked-LM cross-entropy")
    p.add_argument("--class-dropout", type=float, default=None,
                   help="fraction of examples trained without their class, for guidance (default 0.1 when the codes "
                        "have labels.npy beside them; 1 trains an unconditional model)")
    p.add_argument("--diffusion-steps", type=positive_int, default=None, help="T (default N = h*w, as the paper)")
    p.add_argument("--max-steps", type=positive_int, default=None,
                   help=f"training steps (default {MAX_STEPS}; with --resume, the checkpoint's run length)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="global batch size (split over torchrun ranks)")
    p.add_argument("--lr", type=positive_float, default=None,
                   help="peak learning rate (default: the preset's, 2e-3 for small, the paper's 2e-4 for paper; the "
                        "paper used 1e-4 on FFHQ)")
    p.add_argument("--warmup-steps", type=positive_int, default=100, help="linear warm-up (the paper: 10000-30000)")
    p.add_argument("--lr-decay", choices=["constant", "cosine"], default="cosine",
                   help="after the warm-up: constant (the paper, for long runs) or a cosine down to 0 at --max-steps")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay of the matrices")
    p.add_argument("--grad-clip", type=float, default=1.0, help="clip the gradient norm at this")
    p.add_argument("--ema-decay", type=float, default=0.995, help="EMA decay of the weights per step")
    p.add_argument("--seed", type=int, default=0, help="random seed of the run")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--bf16", default="auto", choices=["auto", "on", "off"],
                   help="bfloat16 autocast (auto: on for CUDA and for CPUs with bf16 instructions)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model for training")
    p.add_argument("--log-every", type=positive_int, default=20, help="steps between log lines")
    p.add_argument("--eval-every", type=positive_int, default=500, help="steps between validation ELBOs")
    p.add_argument("--val-draws", type=positive_int, default=4, help="(t, mask) draws per validation grid")
    p.add_argument("--sample-every", type=int, default=1000, help="steps between sample previews (0: none)")
    p.add_argument("--sample-steps", type=positive_int, default=None, help="sampling steps of the previews (default N)")
    p.add_argument("--ckpt-every", type=positive_int, default=500, help="steps between checkpoints")
    p.add_argument("--resume", action="store_true",
                   help="continue OUT/absorbing.pt (--max-steps may grow, which stretches a cosine --lr-decay)")
    args = p.parse_args(argv)
    if args.preset is None and not args.resume:
        args.preset, why = preset_for_codes(args.codes)
        print(f"{args.codes}: {why} -> prior preset {args.preset} (pass --preset or --n-layer/--n-head/--n-embd to "
              f"choose another)")
    for k, v in PRIOR_PRESETS[args.preset or "small"].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.class_dropout is not None and not 0 <= args.class_dropout <= 1:
        p.error(f"--class-dropout must be in [0, 1], got {args.class_dropout}")
    if args.conv < 0 or args.conv % 2 == 0 and args.conv:
        p.error(f"--conv must be 0 or an odd kernel size, got {args.conv}")
    if args.n_embd % args.n_head:
        p.error(f"--n-embd {args.n_embd} is not divisible by --n-head {args.n_head}")
    if args.batch_size % int(os.environ.get("WORLD_SIZE", 1)):
        p.error(f"--batch-size {args.batch_size} is not divisible by the {os.environ['WORLD_SIZE']} processes")
    return args


if __name__ == "__main__":
    main(get_args())
