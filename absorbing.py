"""
Stage 2: train the absorbing-diffusion prior, a bidirectional Transformer that un-masks VQ codes.

    python absorbing.py --codes out/codes.npy                 # small model, minutes on a laptop CPU
    python absorbing.py --codes out/codes.npy --loss elbo     # train on the plain ELBO (Eq. 6) instead
    python absorbing.py --codes data/ffhq_codes.npy --preset paper      # 24 layers, width 512 (~77M)
    torchrun --nproc_per_node 8 absorbing.py --codes ...      # many GPUs, same flags
    python absorbing.py --codes out/codes.npy --resume        # continue OUT/absorbing.pt exactly

The forward process masks each code independently with probability t/T; the network (transformer.py) sees only the
masked grid x_t (no t) and predicts every masked code; the reverse process starts from all masks and reveals codes a
few at a time. Writes OUT/absorbing.pt, OUT/absorbing_log.jsonl (the run's settings, training loss, ELBO in bits per
token, validation ELBO) and OUT/samples_STEP.png previews decoded with the stage-1 VQGAN.

The training loop at the end is shared by every kind of prior (KINDS): `--model autoregressive` trains Tab. 4's
baseline (autoregressive.py) and `--model mask-replace` VQ-Diffusion's prior (mask_replace.py) on the same codes
with the same Transformer.
"""
import argparse
import math
import os
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from autoregressive import Autoregressive
from common import (CHECKPOINT_VERSION, HelpFormatter, Muon, append_log, batch_indices, bf16_is_fast,
                    catch_stop_signals, learning_rate, load_checkpoint, mean_over_ranks, positive_float, positive_int,
                    preset_values, print_settings, require_finite, restore, resumed_settings, rng_states,
                    save_checkpoint, save_grid, setup_distributed, start_log, stop_if_signalled, to_device)
from data import load_codes, load_labels, split_codes, to_uint8
from mask_replace import MaskReplace
from transformer import PriorConfig, Transformer, draw
from vqgan import VQGAN, VQGANConfig

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
    n_masked = max(int(mask.sum()), 1)  # masked codes of the whole global batch (nonzero below syncs anyway)
    rows = slice(rank * len(x_0) // world_size, (rank + 1) * len(x_0) // world_size)
    x_0, t, x_t, mask = x_0[rows], t[rows], x_t[rows], mask[rows]
    B, N = x_0.shape
    positions = mask.flatten().nonzero().squeeze(1)  # (M,) flat indices of the masked codes
    logits = model(x_t, positions) if y is None else model(x_t, positions, y=y[rows])  # (M, K)
    ce = F.cross_entropy(logits.float(), x_0.flatten()[positions], reduction="none")  # (M,) nats
    ce_t = torch.zeros(B, device=x_0.device).index_add_(0, positions // N, ce)  # CE_t of each example (B,)
    elbo = loss_weight(t, T, "elbo") * ce_t / (N * math.log(2))  # (B,) bits per token
    if loss_type == "mlm":  # the BERT-style baseline: mean cross-entropy of the masked codes, no weight per t,
        loss = ce.sum() * world_size / (n_masked * math.log(2))  # over the global batch once DDP averages the ranks
    else:
        loss = (loss_weight(t, T, loss_type) * ce_t).mean() / (N * math.log(2))
    return loss, elbo


@torch.no_grad()
def elbo_bits(model, codes, T, mask_id, n_draws=1, seed=0, batch_size=256, labels=None):
    """Per-image ELBO in bits per token, (len(codes), n_draws): each draw is one t ~ U{1..T} and one mask, the
    same for the same seed, batch size and device, so that numbers are comparable across runs. Its mean is an upper
    bound on -log2 p(x)/N (on -log2 p(x | y)/N given the class `labels` (len(codes),) of a class-conditional
    prior)."""
    device = next(model.parameters()).device
    g = torch.Generator(device).manual_seed(seed)
    out = torch.zeros(len(codes), n_draws)
    for d in range(n_draws):
        for i in range(0, len(codes), batch_size):
            x_0 = codes[i:i + batch_size].flatten(1).to(device)
            y = None if labels is None else labels[i:i + batch_size].to(device)
            out[i:i + batch_size, d] = training_losses(model, x_0, T, mask_id, "elbo", g, y=y)[1].cpu()
    return out

# -----------------------------------------------------------------------------
# Sampling: the reverse process from all masks (or from the known codes of an inpainting), a few codes a step.


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
# Samplers besides the reverse process: MaskGIT's confidence order, and ReMDM's corrector steps after it. Each takes
# at most `steps` network calls.


@torch.no_grad()
def confidence_sample(model, x, mask_id, steps, temperature=1.0, seed=0, predict=denoise, noise=4.5, on_step=None):
    """MaskGIT's sampler (Chang et al. 2022). Step j of S predicts every masked code, draws a candidate for each
    from p(x_0 | x_t) and keeps the most confident candidates, ranked by log p(candidate) + noise * (1 - j/S) *
    Gumbel, as many as leave cos(pi/2 * j/S) of the codes masked; the other candidates are dropped. Exact for
    nothing: the reverse process reveals codes in random order, this one the likely codes first, which makes
    samples cleaner and less diverse. Its steps cannot revise a revealed code."""
    device, shape = x.device, x.shape
    x = x.clone().view(len(x), -1)  # (B, N)
    start = (x == mask_id).sum(1).cpu()  # (B,) masked codes at the start
    g = torch.Generator(device).manual_seed(seed)
    for j in range(1, steps + 1):
        masked = (x == mask_id).cpu()  # (B, N)
        if not masked.any():
            break
        left = (start * math.cos(math.pi / 2 * j / steps)).floor().long()  # (B,) still masked after step j (0 at S)
        left = torch.minimum(left, masked.sum(1) - 1).clamp(min=0)  # at least one code a step, as MaskGIT's
        probs = predict(model, x.view(shape), masked.view(shape), temperature)  # (M, K)
        at = to_device(masked.flatten().nonzero().squeeze(1), device)  # (M,)
        candidate = draw(probs, g)  # (M,)
        confidence = probs.double().gather(1, candidate[:, None]).squeeze(1).log()  # (M,)
        gumbel = -torch.empty_like(confidence).exponential_(generator=g).log()
        score = torch.full(x.shape, -math.inf, dtype=torch.float64, device=device)  # (B, N): known codes never rank
        score.view(-1)[at] = confidence + noise * (1 - j / steps) * gumbel
        rank = score.argsort(1, descending=True).argsort(1)  # (B, N): 0 for the most confident
        reveal = rank < to_device(masked.sum(1) - left, device)[:, None]  # (B, N)
        proposal = x.clone()
        proposal.view(-1)[at] = candidate
        x = torch.where(reveal, proposal, x)
        if on_step is not None:
            on_step(x.view(shape))
    return x.view(shape)


@torch.no_grad()
def remask(model, x, free, steps, fraction, mask_id, temperature=1.0, seed=0, predict=denoise, on_step=None):
    """ReMDM-style corrector steps (Wang et al. 2025) after sampling: each step masks a random `fraction` of the
    `free` codes (B, ...) bool again (at least one per image) and redraws them from p(x_0 | x_t), so that later
    calls can revise earlier mistakes. With one code a step, and conditionals that are those of one joint
    distribution, this is a Gibbs sampler of it: exact in that it leaves that distribution unchanged."""
    device, shape = x.device, x.shape
    free = free.cpu().view(len(x), -1)  # (B, N)
    n = max(1, round(fraction * int(free.sum(1).min())))
    g_where = torch.Generator().manual_seed(seed)
    g = torch.Generator(device).manual_seed(seed + 1)
    for _ in range(steps):
        noise = torch.rand(free.shape, generator=g_where).masked_fill(~free, 2.0)  # (B, N): fixed codes last
        picked = torch.zeros_like(free).scatter_(1, noise.argsort(1)[:, :n], True) & free  # (B, N) n of each row
        x = x.masked_fill(to_device(picked.view(shape), device), mask_id)
        probs = predict(model, x, picked.view(shape), temperature)  # (M, K)
        x.view(-1)[to_device(picked.flatten().nonzero().squeeze(1), device)] = draw(probs, g)
        if on_step is not None:
            on_step(x)
    return x

# -----------------------------------------------------------------------------
# Kinds of prior. Each says, in one class, how it is trained, how its likelihood is bounded or computed, and how it
# samples, on the Transformer of transformer.py and the training loop below:
#   kind = KINDS[name](cfg, T, settings)   the run's PriorConfig, its T and its flags (a dict; each kind reads its own)
#   kind.network()                         the nn.Module it trains
#   kind.losses(model, x_0, generator, rank, world_size, y) -> (training loss, bits per token of each example (B,))
#   kind.likelihood(model, codes, n_draws, seed, labels) -> bits per token (n, n_draws): `bound` names what it is
#   kind.sample(model, x, steps, temperature, seed, on_step, **options) -> x_0 from x (codes where known, K elsewhere)


class Absorbing:
    """The paper's prior: absorbing diffusion, trained on the (reweighted) ELBO, sampled by the reverse process."""
    name, bound, bound_name, default_sampler = "absorbing", "elbo", "ELBO (an upper bound on the NLL)", "cosine"
    diffusion_steps = None  # T when --diffusion-steps is not given: N, the paper's

    def __init__(self, cfg, T, settings=None):
        self.cfg, self.T, self.loss = cfg, T, (settings or {}).get("loss", "reweighted_elbo")

    def network(self):
        return Transformer(self.cfg)

    def losses(self, model, x_0, generator=None, rank=0, world_size=1, y=None):
        return training_losses(model, x_0, self.T, self.cfg.codebook_size, self.loss, generator, rank, world_size, y)

    def likelihood(self, model, codes, n_draws=1, seed=0, labels=None):
        return elbo_bits(model, codes, self.T, self.cfg.codebook_size, n_draws, seed, labels=labels)

    @torch.no_grad()
    def sample(self, model, x, steps=None, temperature=1.0, seed=0, on_step=None, predict=denoise, sampler=None,
               counts="exact", remask_steps=None, remask_fraction=0.1, progress=False):
        """`sampler` (default cosine): random or cosine, the reverse process on a uniform or a cosine grid of steps;
        confidence, MaskGIT's; remask, the reverse process and then ReMDM's corrector steps (remask_steps of the
        `steps` calls, half by default). `predict` gives p(x_0 | x_t) (sample.py's mixture of windows for a grid
        larger than training)."""
        K, sampler = self.cfg.codebook_size, sampler or self.default_sampler
        masked = int((x == K).flatten(1).sum(1).max())
        steps = min(steps or masked, masked)
        if sampler == "confidence":
            return confidence_sample(model, x, K, steps, temperature, seed, predict, on_step=on_step)
        if sampler == "remask":
            fix = min(remask_steps if remask_steps is not None else steps // 2, steps - 1)
            x_0 = sample(model, x, K, steps=max(steps - fix, 1), temperature=temperature, seed=seed, predict=predict,
                         on_step=on_step, progress=progress, counts=counts)
            # its own random streams (seed + 2, seed + 3): with the reverse process's it would pick the codes one
            # step revealed, and redraw them with the noise that drew them
            return remask(model, x_0, x == K, fix, remask_fraction, K, temperature, seed + 2, predict, on_step)
        return sample(model, x, K, steps=steps, temperature=temperature, seed=seed, predict=predict, on_step=on_step,
                      progress=progress, grid="cosine" if sampler == "cosine" else "uniform", counts=counts)


KINDS = {"absorbing": Absorbing, "autoregressive": Autoregressive, "mask-replace": MaskReplace}


def prior_from_checkpoint(ckpt, ema=True):
    """(the network of a prior's checkpoint, with its EMA weights by default (those are sampled from), its kind)."""
    cfg = PriorConfig(**ckpt["config"])
    kind = KINDS[cfg.model](cfg, ckpt["diffusion_steps"], ckpt["args"])
    model = kind.network()
    model.load_state_dict(ckpt["ema" if ema else "model"])
    return model.eval(), kind

# -----------------------------------------------------------------------------
# Training, the same loop for every kind


def optimizers(model, name, lr, weight_decay, bf16=False):
    """The run's optimizers, by the names its checkpoint keeps them under. 'adamw' (the paper's): AdamW for every
    parameter, weight decay on the matrices only. 'muon': Muon (common.py) for the weight matrices inside the blocks,
    orthogonalising in bfloat16 where that is fast (`bf16`), else in float32; AdamW for the rest (the embeddings, the
    output layer, norms, biases and convolutions), which Muon is not made for."""
    hidden = {n for n, p in model.named_parameters() if name == "muon" and p.dim() == 2 and n.startswith("blocks.")}
    rest = [p for n, p in model.named_parameters() if n not in hidden]
    groups = [{"params": [p for p in rest if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0}]
    opts = {"opt": torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))}
    if hidden:
        opts["muon"] = Muon([p for n, p in model.named_parameters() if n in hidden], lr, weight_decay,
                            dtype=torch.bfloat16 if bf16 else torch.float32)
    return opts


PRIOR_PRESETS = {  # max_steps: the length of a new run (--resume keeps the run's own)
    "small": dict(n_layer=4, n_head=4, n_embd=128, conv=3, lr=4e-3, optimizer="muon", max_steps=2500),
    # Appendix A: 24 layers, 8 heads of 64 dims, AdamW; Sec. 4: 2M steps on LSUN (FFHQ's stopped on the validation ELBO)
    "paper": dict(n_layer=24, n_head=8, n_embd=512, conv=0, lr=2e-4, optimizer="adamw", max_steps=2_000_000),
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


def load_vqgan(path, device):
    """The stage-1 VQGAN (eval mode) from its checkpoint, or None with a note if it is not there."""
    if path is None or not Path(path).is_file():
        print(f"note: no VQGAN checkpoint at {path}: sample previews are off")
        return None
    ckpt = load_checkpoint(path, "vqgan")
    vq = VQGAN(VQGANConfig.from_dict(ckpt["config"]))
    vq.load_state_dict(ckpt["model"])
    return vq.to(device).eval()


def training_data(args, ckpt):
    """(the PriorConfig, training and validation codes (n, N), the training labels (or None), the class names, the
    VQGAN's path) of a run: a new run's config from the flags, a resumed run's from its checkpoint."""
    codes, K, vqgan_path = load_codes(args.codes, args.codebook_size)
    labels, classes = load_labels(args.codes, len(codes))
    train_codes, val_codes = split_codes(codes.flatten(1), labels)
    if len(val_codes) == len(codes):
        print(f"warning: {args.codes} has no code grid to hold out (one grid, or one a class): validation falls back "
              f"to the training grids", file=sys.stderr)
    if args.class_dropout is None:  # conditional when the images have classes, 10% of examples without (CFG)
        args.class_dropout = 0.1 if labels is not None else 1.0
    if labels is None and args.class_dropout < 1:
        raise SystemExit(f"error: --class-dropout {args.class_dropout} trains on classes, but {args.codes} has no "
                         f"labels.npy beside it (vqgan.py writes one for shapes and for a folder of subfolders)")
    conditional = args.class_dropout < 1
    h, w = codes.shape[1:]
    cfg = PriorConfig(**ckpt["config"]) if ckpt else PriorConfig(
        codebook_size=K, latent_h=h, latent_w=w, n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
        dropout=args.dropout, n_classes=len(classes) if conditional else 0, model=args.model, pos_init=args.pos_init,
        conv=args.conv)
    if (cfg.codebook_size, cfg.latent_h, cfg.latent_w) != (K, h, w):
        raise SystemExit(f"error: {args.codes} has {h}x{w} codes from {K}, but the checkpoint's model was trained "
                         f"on {cfg.latent_h}x{cfg.latent_w} codes from {cfg.codebook_size}")
    train_labels = split_codes(labels, labels)[0] if conditional else None
    return cfg, train_codes, val_codes, train_labels, classes if conditional else [], vqgan_path


# One function from the setup to the last step, top to bottom as nanoGPT's train.py: each piece it calls is above.
def main(args):
    rank, world_size, device = setup_distributed(args.device)
    args.bf16 = bf16_is_fast(device) if args.bf16 == "auto" else args.bf16 == "on"
    is_main = rank == 0
    out = Path(args.out_dir)
    ckpt_path = out / "absorbing.pt"
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    ckpt = load_checkpoint(ckpt_path, "absorbing") if args.resume else None
    if ckpt is not None:  # the run's own settings; --max-steps may grow the run, --codes may name the codes' new place
        codes = args.codes
        resumed_settings(args, ckpt, keep=("resume", "device", "max_steps", "out_dir"))
        args.codes = codes or args.codes
    cfg, train_codes, val_codes, train_labels, classes, vqgan_path = training_data(args, ckpt)
    h, w, K = cfg.latent_h, cfg.latent_w, cfg.codebook_size
    T = args.diffusion_steps = args.diffusion_steps or KINDS[cfg.model].diffusion_steps or h * w
    kind = KINDS[cfg.model](cfg, T, vars(args))

    torch.manual_seed(args.seed + rank)
    model = kind.network().to(device)
    ema = kind.network().to(device).eval().requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    opts = optimizers(model, args.optimizer, args.lr, args.weight_decay, args.bf16)
    parts = dict(model=model, ema=ema, **opts)  # what a checkpoint holds, besides settings
    step = restore(ckpt, parts, rank, world_size) if ckpt else 0
    if is_main:
        start_log(out / "absorbing_log.jsonl", step)
        print_settings(args, out / "absorbing_log.jsonl", step)
        print(f"prior ({kind.name}) {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {h}x{w} codes "
              f"from {K}, T = {T}, likelihood: {kind.bound_name}; "
              + (f"{len(classes)} classes ({args.class_dropout:.0%} of examples without); " if classes else
                 "unconditional; ") +
              f"{len(train_codes)} training / {len(val_codes)} validation grids; uniform baseline {math.log2(K):.2f} "
              f"bits per token; device {device}, world size {world_size}")
    if is_main and step >= args.max_steps:
        print(f"{ckpt_path} has finished its {step} steps; nothing to train (--resume --max-steps N trains on to N)")
    vqgan = load_vqgan(vqgan_path, device) if is_main and args.sample_every else None
    raw = model
    if world_size > 1:
        model = nn.parallel.DistributedDataParallel(model)
    train_model = torch.compile(model) if args.compile else model

    def checkpoint(path=ckpt_path):  # the VQGAN's path is kept relative to OUT, so that OUT can move
        state = dict(kind="absorbing", version=CHECKPOINT_VERSION, config=asdict(cfg), args=vars(args), step=step,
                     classes=classes, rng=rng_states(), diffusion_steps=T,
                     class_counts=torch.bincount(train_labels, minlength=len(classes)) if classes else None,
                     vqgan=vqgan_path and os.path.relpath(vqgan_path, out),
                     **{k: v.state_dict() for k, v in parts.items()})
        if is_main:
            save_checkpoint(state, path)

    def validate():  # the bound (or exact NLL) of the validation codes with the EMA weights, and its standard error
        val = kind.likelihood(ema, val_codes, n_draws=args.val_draws, seed=1234)  # (n, draws)
        spread = val.mean(1) if len(val) > 1 else val[0]  # over the grids; of one grid, over its draws
        return val.mean().item(), (spread.std() / math.sqrt(len(spread))).item()

    caught = catch_stop_signals()
    with tqdm(total=args.max_steps, initial=step, disable=not is_main, desc=kind.name) as bar:
        while step < args.max_steps:
            model.train()
            batch = batch_indices(step, len(train_codes), args.batch_size, args.seed)  # the global batch, on every rank
            x_0 = train_codes[batch].to(device)
            g = torch.Generator(device).manual_seed(args.seed * 1_000_003 + step)  # this step's draws of t and masks
            y = None
            if classes:  # classifier-free guidance: a random class_dropout of the examples see "no class"
                y = train_labels[batch].to(device)
                y = y.masked_fill(torch.rand(len(y), generator=g, device=device) < args.class_dropout, cfg.n_classes)
            for group in (group for opt in opts.values() for group in opt.param_groups):
                group["lr"] = learning_rate(step, args.lr, args.warmup_steps, args.max_steps, args.lr_decay)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                loss, bits = kind.losses(train_model, x_0, g, rank, world_size, y)
            for opt in opts.values():
                opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            require_finite(grad_norm, step, ckpt_path)
            for opt in opts.values():
                opt.step()
            with torch.no_grad():  # EMA of the weights: ema <- decay * ema + (1 - decay) * weights
                for pe, p in zip(ema.parameters(), raw.parameters()):
                    pe.lerp_(p, 1 - args.ema_decay)
            step += 1
            bar.update(1)
            if step % args.log_every == 0 or step == args.max_steps:
                metrics = mean_over_ranks({"loss": loss.item(), kind.bound: bits.mean().item(),
                                           "grad_norm": grad_norm.item()})
                bar.set_postfix(loss=f"{metrics['loss']:.3f}", **{kind.bound: f"{metrics[kind.bound]:.3f}"})
                if is_main:
                    lr = opts["opt"].param_groups[0]["lr"]
                    append_log(out / "absorbing_log.jsonl", dict(step=step, lr=lr, **metrics))
            if is_main and (step % args.eval_every == 0 or step == args.max_steps):
                val, err = validate()
                tqdm.write(f"step {step}: validation {kind.bound_name} {val:.4f} +- {err:.4f} bits per token (EMA "
                           f"weights)")
                append_log(out / "absorbing_log.jsonl", {"step": step, f"val_{kind.bound}": val,
                                                         f"val_{kind.bound}_err": err})
            if vqgan is not None and (step % args.sample_every == 0 or step == args.max_steps):
                x = kind.sample(ema, torch.full((16, h * w), K, device=device), steps=args.sample_steps, seed=step)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                    save_grid(to_uint8(vqgan.decode(x.view(-1, h, w))), out / f"samples_{step:06d}.png", nrow=8)
            if step % args.ckpt_every == 0 or step == args.max_steps:
                checkpoint()
            if args.keep_every and step % args.keep_every == 0:  # a copy of this step's weights, to sample later
                checkpoint(out / f"absorbing_{step:06d}.pt")
            stop_if_signalled(caught, device, checkpoint, step, ckpt_path)
    if dist.is_initialized():  # the last step's checkpoint is written before any rank leaves
        dist.barrier()
        dist.destroy_process_group()


# Every flag with its help, then the preset that fills in what was not given: long, and flat on purpose.
def get_args(argv=None):
    p = argparse.ArgumentParser(description="Stage 2: train the absorbing-diffusion Transformer prior on VQ codes",
                                formatter_class=HelpFormatter)
    p.add_argument("--codes", default=None,
                   help="codes.npy from vqgan.py, codes.json beside it (default: out/codes.npy; with --resume, the "
                        "run's own)")
    p.add_argument("--codebook-size", type=positive_int, default=None,
                   help="K, if codes.json is absent (default: the one codes.json names)")
    p.add_argument("--out-dir", default="out", help="where the checkpoint, log and previews go")
    p.add_argument("--preset", choices=sorted(PRIOR_PRESETS), default=None,
                   help="model size (default: paper for grids of 16x16 codes or more, else small)")
    p.add_argument("--n-layer", type=positive_int, default=None,
                   help=f"Transformer blocks (default: {preset_values(PRIOR_PRESETS, 'n_layer')})")
    p.add_argument("--n-head", type=positive_int, default=None,
                   help=f"attention heads (default: {preset_values(PRIOR_PRESETS, 'n_head')})")
    p.add_argument("--n-embd", type=positive_int, default=None,
                   help=f"width (default: {preset_values(PRIOR_PRESETS, 'n_embd')})")
    p.add_argument("--conv", type=int, default=None,
                   help="kernel of the depthwise convolutions in each block (before the attention and in the MLP), 0 "
                        f"for none, the paper's Transformer (default: {preset_values(PRIOR_PRESETS, 'conv')})")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout rate")
    p.add_argument("--pos-init", choices=["sincos", "random"], default="sincos",
                   help="how the learned position embeddings start: 2D sines and cosines, or random (std 0.02)")
    p.add_argument("--model", choices=sorted(KINDS), default="absorbing",
                   help="the kind of prior: absorbing diffusion; Tab. 4's baseline, the same Transformer made "
                        "causal in raster order (trained on its exact likelihood; --loss and --diffusion-steps do "
                        "not apply); or VQ-Diffusion's mask-and-replace diffusion (mask_replace.py; T = 100 unless "
                        "--diffusion-steps, trained on its bound; --loss does not apply)")
    p.add_argument("--mask-share", type=float, default=0.9,
                   help="mask-replace: the share M of the corrupted codes that are masked rather than replaced "
                        "(VQ-Diffusion's 0.9; 1: mask only)")
    p.add_argument("--aux-weight", type=float, default=5e-4,
                   help="mask-replace: lambda of the auxiliary loss lambda (2 - t/T) CE of the x_0 prediction")
    p.add_argument("--loss", choices=["reweighted_elbo", "elbo", "mlm"], default="reweighted_elbo",
                   help="training loss: Eq. 7, Eq. 6, or masked-LM cross-entropy")
    p.add_argument("--class-dropout", type=float, default=None,
                   help="fraction of examples trained without their class, for guidance (default 0.1 when the codes "
                        "have labels.npy beside them, else 1: an unconditional model)")
    p.add_argument("--diffusion-steps", type=positive_int, default=None, help="T (default N = h*w, as the paper)")
    p.add_argument("--max-steps", type=positive_int, default=None,
                   help=f"training steps (default: {preset_values(PRIOR_PRESETS, 'max_steps')}; with --resume, the "
                        "run's own)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="global batch size (split over torchrun ranks)")
    p.add_argument("--lr", type=positive_float, default=None,
                   help=f"peak learning rate (default: {preset_values(PRIOR_PRESETS, 'lr')}; the paper used 1e-4 on "
                        f"FFHQ)")
    p.add_argument("--optimizer", choices=["adamw", "muon"], default=None,
                   help="AdamW for every parameter (the paper's), or Muon for the blocks' weight matrices and AdamW "
                        f"for the rest (default: {preset_values(PRIOR_PRESETS, 'optimizer')})")
    p.add_argument("--warmup-steps", type=positive_int, default=100, help="linear warm-up (the paper: 10000-30000)")
    p.add_argument("--lr-decay", choices=["constant", "cosine"], default="cosine",
                   help="after the warm-up: constant (the paper, for long runs) or a cosine down to 0 at --max-steps")
    p.add_argument("--weight-decay", type=float, default=0.01, help="weight decay of the matrices")
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
    p.add_argument("--sample-steps", type=positive_int, default=None,
                   help="network calls of each preview (default N, one per code)")
    p.add_argument("--ckpt-every", type=positive_int, default=500, help="steps between checkpoints")
    p.add_argument("--keep-every", type=int, default=0,
                   help="also keep a copy of the checkpoint every this many steps, OUT/absorbing_STEP.pt (0: none; "
                        "reproduce.py's time-to-quality curve samples from them)")
    p.add_argument("--resume", action="store_true",
                   help="continue OUT/absorbing.pt with its own settings (--max-steps may grow, which stretches a "
                        "cosine --lr-decay)")
    args = p.parse_args(argv)
    if not args.resume:  # a resumed run takes every setting from its checkpoint instead (main)
        args.codes = args.codes or "out/codes.npy"
        if args.preset is None:
            args.preset, why = preset_for_codes(args.codes)
            print(f"{args.codes}: {why} -> prior preset {args.preset} (pass --preset or --n-layer/--n-head/--n-embd to "
                  f"choose another)")
        for k, v in PRIOR_PRESETS[args.preset].items():
            if getattr(args, k) is None:
                setattr(args, k, v)
        if args.conv < 0 or args.conv % 2 == 0 and args.conv:
            p.error(f"--conv must be 0 or an odd kernel size, got {args.conv}")
        if args.n_embd % args.n_head:
            p.error(f"--n-embd {args.n_embd} is not divisible by --n-head {args.n_head}")
    if not 0 <= args.mask_share <= 1:
        p.error(f"--mask-share must be in [0, 1] (1: mask only), got {args.mask_share}")
    if args.aux_weight < 0:
        p.error(f"--aux-weight must be >= 0, got {args.aux_weight}")
    if args.keep_every < 0:
        p.error(f"--keep-every must be >= 0 (0: keep no copies), got {args.keep_every}")
    if args.class_dropout is not None and not 0 <= args.class_dropout <= 1:
        p.error(f"--class-dropout must be in [0, 1], got {args.class_dropout}")
    if args.batch_size % int(os.environ.get("WORLD_SIZE", 1)):
        p.error(f"--batch-size {args.batch_size} is not divisible by the {os.environ['WORLD_SIZE']} processes")
    return args


if __name__ == "__main__":
    main(get_args())
