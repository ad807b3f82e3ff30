"""
VQ-Diffusion's mask-and-replace prior (Gu et al. 2022; Tang et al. 2022), the sibling of absorbing diffusion: on
the way to noise a code may also be replaced by a random code, so the network must find and fix wrong codes, and
its sampler can revise codes it has already drawn. Same codes, same Transformer (which here also sees t).

    python absorbing.py --codes out/codes.npy --model mask-replace --out-dir out/mr          # the paper's M = 0.9
    python absorbing.py --codes out/codes.npy --model mask-replace --mask-share 1 --out-dir out/mo   # mask only
    python sample.py --ckpt out/mr/absorbing.pt --sample-steps 25 --truncation 0.86
    python evaluate.py --ckpt out/mr/absorbing.pt --codes out/codes.npy                       # its bound (VLB)

This file is the kind's maths, reached through the interface absorbing.py describes (KINDS): the training loop,
sample.py and evaluate.py are shared with the other priors. Codes are 0..K-1 and the mask is K; times run 0..T.
"""
import math
from dataclasses import replace

import torch
import torch.nn.functional as F

from transformer import Transformer, draw

# -----------------------------------------------------------------------------
# The forward process. One step t-1 -> t: a code stays with alpha_t + beta_t, becomes each other code with beta_t
# and the mask with gamma_t (alpha_t + K beta_t + gamma_t = 1); the mask stays the mask.


# The schedule (Sec. 4.1 of VQ-Diffusion): abar_t, the chance that a code is still itself (not replaced, not masked)
# after t steps, falls linearly from 0.99999 at t = 1 to 0.000009 at t = T; of the rest, a share M (mask_share) is
# masked and 1 - M replaced by a uniformly drawn code: gbar_t = M (1 - abar_t), K bbar_t = (1 - M)(1 - abar_t). The
# paper's process is M = 0.9 (gbar_T = 0.9, K bbar_T = 0.1); M = 1 is mask only. (The official code's released
# configs end at K bbar_T = 1e-6: almost mask only.)
def schedule(T, mask_share=0.9, abar_1=0.99999, abar_T=0.000009):  # -> abar, gbar: (T + 1,) each, t = 0..T
    if not 0 <= mask_share <= 1:
        raise ValueError(f"the mask share must be in [0, 1], got {mask_share}")
    t = torch.arange(1, T + 1, dtype=torch.float64)
    abar = abar_1 + (t - 1) / max(T - 1, 1) * (abar_T - abar_1)
    one = torch.ones(1, dtype=torch.float64)
    abar, gbar = torch.cat([one, abar]), torch.cat([0 * one, mask_share * (1 - abar)])
    a, _, c = transition((abar, gbar), torch.arange(T), torch.arange(1, T + 1))
    if (1 - a - c < -1e-12).any():
        raise ValueError("this schedule's betas go negative: abar must fall and gbar rise with t")
    return abar, gbar


# q(x_t | x_s) for s < t (Eq. 2-4 of VQ-Diffusion, from s rather than from t-1): the product of steps s+1..t has the
# same form, a code stays with a + b, becomes each other code with b and the mask with c, where
#     a = abar_t / abar_s,   1 - c = (1 - gbar_t) / (1 - gbar_s),   K b = 1 - a - c.
# s = t - 1 is one step (alpha_t, beta_t, gamma_t), s = 0 the cumulative q(x_t | x_0) (abar_t, bbar_t, gbar_t), any
# other s the D-step transition of a strided sampler, D = t - s.
def transition(sched, s, t):  # s, t: ints or (B,) long tensors -> a, K b, c: each like t, float64
    abar, gbar = sched
    s, t = torch.as_tensor(s), torch.as_tensor(t)
    a = abar[t.cpu()] / abar[s.cpu()]
    c = 1 - (1 - gbar[t.cpu()]) / (1 - gbar[s.cpu()])
    return tuple(v.to(t.device) for v in (a, 1 - a - c, c))


def likelihood_of(x_t, a, kb, c, K):  # x_t (B, N) ids 0..K, a, kb, c (B,) -> (B, N, K + 1)
    """q(x_t | x_s = k) for every k = 0..K, as a function of x_s: for x_t a code j, a [k = j] + b for a code k and 0
    for the mask; for x_t the mask, c for a code and 1 for the mask."""
    a, kb, c = (v.view(-1, 1, 1) for v in (a, kb, c))
    B, N = x_t.shape
    code = torch.cat([a * F.one_hot(x_t.clamp(max=K - 1), K) + kb / K, torch.zeros_like(a).expand(B, N, 1)], -1)
    mask = torch.cat([c.expand(B, N, K), torch.ones_like(c).expand(B, N, 1)], -1)
    return torch.where((x_t == K)[..., None], mask, code)


# x_t ~ q(x_t | x_0) = abar_t onehot(x_0) + bbar_t (on each of the K codes) + gbar_t onehot(mask): one uniform number
# per code, below gbar_t the mask, then (K bbar_t more) a uniformly drawn code, else x_0 itself.
def q_sample(x_0, t, sched, K, generator=None):  # x_0 (B, N), t (B,) in 1..T -> x_t (B, N)
    _, kb, c = (v[:, None] for v in transition(sched, torch.zeros_like(t), t))
    u = torch.rand(x_0.shape, generator=generator, device=x_0.device, dtype=torch.float64)
    noise = torch.randint(0, K, x_0.shape, generator=generator, device=x_0.device)
    return torch.where(u < c, K, torch.where(u < c + kb, noise, x_0))


# The reverse step from a prediction of x_0 (Eq. 11 of VQ-Diffusion, for any s < t):
#     p(x_s | x_t) = sum_{x_0} q(x_s | x_t, x_0) p(x_0 | x_t),
#     q(x_s | x_t, x_0) = q(x_t | x_s) q(x_s | x_0) / q(x_t | x_0),
# computed as q(x_t | x_s) sum_{x_0} q(x_s | x_0) [p(x_0 | x_t) / q(x_t | x_0)]: O(K) a code, since every q is "stay,
# or a uniform code, or the mask". With p(x_0 | x_t) = onehot(x_0) it is the true posterior q(x_s | x_t, x_0).
def posterior(p_0, x_t, sched, s, t):  # p_0 (B, N, K), x_t (B, N), s < t (B,) -> (B, N, K + 1), float64
    K = p_0.shape[-1]
    a_s, kb_s, c_s = (v.view(-1, 1, 1) for v in transition(sched, torch.zeros_like(s), s))
    # p / q(x_t | x_0); where q(x_t | x_0) = 0 (a code x_t that x_0 cannot become), q(x_t | x_s) is 0 for the x_s
    # that term feeds, so the clamp only keeps 0 * inf out
    v = p_0.double() / likelihood_of(x_t, *transition(sched, torch.zeros_like(t), t), K)[..., :K].clamp(min=1e-300)
    total = v.sum(-1, keepdim=True)  # (B, N, 1)
    u = torch.cat([a_s * v + kb_s / K * total, c_s * total], -1)  # sum_x0 q(x_s | x_0) v(x_0), (B, N, K + 1)
    post = likelihood_of(x_t, *transition(sched, s, t), K) * u
    norm = post.sum(-1, keepdim=True)
    # 0 only where M = 1 and p(x_0 = x_t) = 0 (truncated, or underflowed): a code is then never replaced, so x_s = x_t
    return torch.where(norm > 0, post / norm, F.one_hot(x_t, K + 1).double())


# p(x_T): each code the mask with probability gbar_T, else uniform over the K codes (q(x_T | x_0) without abar_T)
def prior_sample(shape, sched, K, generator=None, device="cpu"):  # -> (shape) ids 0..K
    gbar_T = sched[1][-1].item()
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
    return torch.where(u < gbar_T, K, torch.randint(0, K, shape, generator=generator, device=device))


# The prior term of the bound, KL(q(x_T | x_0) || p(x_T)) per code, in nats: the same for every x_0 (by symmetry)
def prior_kl(sched, K):
    a, kb, c = (v.item() for v in transition(sched, 0, len(sched[0]) - 1))
    q = torch.tensor([a + kb / K] + [kb / K] * (K - 1) + [c], dtype=torch.float64)
    p = torch.tensor([(1 - c) / K] * K + [c], dtype=torch.float64)
    return torch.xlogy(q, q / p).sum().item()

# -----------------------------------------------------------------------------
# The bound and the training loss


# The variational bound (Eq. 5 of VQ-Diffusion, as D3PM's):
#     -log p(x_0) <= KL(q(x_T | x_0) || p(x_T)) + sum_{t=2}^T E_q KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))
#                    - E_q log p(x_0 | x_1),
# summed over the N codes. The t = 1 term is the same KL: q(x_0 | x_1, x_0) is onehot(x_0) and p(x_0 | x_1) is the
# network's prediction, so KL = -log p(x_0 | x_1). Returns each example's term L_t and the cross-entropy of the
# network's x_0 prediction at every position (the auxiliary loss), in nats.
def vlb_terms(model, x_0, x_t, t, sched, K, y=None):  # x_0, x_t (B, N), t (B,) -> L_t (B,), CE (B,)
    logits = model(x_t, t=t) if y is None else model(x_t, y=y, t=t)  # (B, N, K)
    log_p0 = F.log_softmax(logits.float(), -1)
    ce = -log_p0.gather(-1, x_0[..., None]).squeeze(-1).sum(1)  # (B,)
    true = posterior(F.one_hot(x_0, K), x_t, sched, t - 1, t)  # (B, N, K + 1)
    model_post = posterior(log_p0.double().exp(), x_t, sched, t - 1, t)
    kl = (torch.xlogy(true, true) - true * model_post.clamp(min=1e-300).log()).sum(-1).sum(1)  # (B,)
    return kl, ce

# -----------------------------------------------------------------------------
# Sampling: the reverse process from x_T ~ p(x_T), every code redrawn at every step


def truncate(p, r):  # p (M, K) -> (M, K): the smallest set of codes holding r of p, renormalised
    """VQ-Diffusion's truncation: keep the most likely codes while the mass before them is under r (so the most
    likely code is always kept), zero the rest."""
    ranked, order = p.sort(-1, descending=True)
    keep = torch.zeros_like(p, dtype=torch.bool).scatter_(-1, order, ranked.cumsum(-1) - ranked < r)
    p = p * keep
    return p / p.sum(-1, keepdim=True)


@torch.no_grad()
def reverse_sample(model, x, sched, K, steps, temperature=1.0, truncation=1.0, seed=0, shortcut=False, on_step=None):
    """x_0 from x = x_T (B, N) in `steps` network calls, each a jump of D = T / steps: x_{t-D} ~ sum_{x_0}
    q(x_{t-D} | x_t, x_0) p(x_0 | x_t), p from the logits divided by `temperature` and truncated to `truncation`.
    shortcut: the official fast sampler's jump instead, the one-step posterior of time t - D + 1 applied to x_t as
    if it were x_{t-D+1}; the same at D = 1, not the D-step posterior otherwise."""
    (B, N), T = x.shape, len(sched[0]) - 1
    D = T // steps
    g = torch.Generator(x.device).manual_seed(seed)
    for t in range(T, 0, -D):
        to, frm = torch.full((B,), t - D, device=x.device), torch.full((B,), t, device=x.device)
        p_0 = (model(x, t=frm).float() / temperature).softmax(-1).double()  # (B, N, K)
        if truncation < 1:
            p_0 = truncate(p_0, truncation)
        probs = posterior(p_0, x, sched, to, to + 1 if shortcut else frm)  # (B, N, K + 1)
        x = draw(probs.view(B * N, K + 1), g).view(B, N)
        if on_step is not None:
            on_step(x)
    return x

# -----------------------------------------------------------------------------
# The kind of prior (absorbing.KINDS describes the interface)


class MaskReplace:
    """VQ-Diffusion's prior: mask-and-replace diffusion over T = 100 steps, the network told t, trained on the
    variational bound plus the auxiliary loss, sampled by the reverse process from x_T ~ p(x_T)."""
    name, bound, bound_name, default_sampler = "mask-replace", "vlb", "VLB (an upper bound on the NLL)", "reverse"
    diffusion_steps = 100  # T when --diffusion-steps is not given (VQ-Diffusion's)

    def __init__(self, cfg, T, settings=None):
        settings = settings or {}
        self.cfg, self.T = cfg, T
        self.aux_weight = settings.get("aux_weight", 5e-4)
        self.sched = schedule(T, settings.get("mask_share", 0.9))
        self.prior_kl = prior_kl(self.sched, cfg.codebook_size)

    def network(self):
        return Transformer(replace(self.cfg, time_steps=self.T))

    def losses(self, model, x_0, generator=None, rank=0, world_size=1, y=None):
        """(loss, vlb): the bound's one-draw estimate T L_t + prior term plus the auxiliary loss lambda (2 - t/T) T CE
        (as the official code, which divides both by the draw's probability 1/T), and each example's bound in bits
        per token (B,). Every rank draws t and x_t for the whole batch (as absorbing.training_losses)."""
        t = torch.randint(1, self.T + 1, (len(x_0),), generator=generator, device=x_0.device)
        x_t = q_sample(x_0, t, self.sched, self.cfg.codebook_size, generator)
        rows = slice(rank * len(x_0) // world_size, (rank + 1) * len(x_0) // world_size)
        x_0, t, x_t = x_0[rows], t[rows], x_t[rows]
        kl, ce = vlb_terms(model, x_0, x_t, t, self.sched, self.cfg.codebook_size, None if y is None else y[rows])
        N = x_0.shape[1]
        vlb = (self.T * kl + N * self.prior_kl) / (N * math.log(2))  # (B,) bits per token
        aux = self.aux_weight * (2 - t / self.T) * self.T * ce / (N * math.log(2))
        return (vlb + aux).mean(), vlb.detach()

    @torch.no_grad()
    def likelihood(self, model, codes, n_draws=1, seed=0, labels=None, batch_size=256):
        """Each grid's bound in bits per token, (len(codes), n_draws), one (t, x_t) a draw, the same for the same
        seed."""
        device = next(model.parameters()).device
        g = torch.Generator(device).manual_seed(seed)
        out = torch.zeros(len(codes), n_draws)
        for d in range(n_draws):
            for i in range(0, len(codes), batch_size):
                y = None if labels is None else labels[i:i + batch_size].to(device)
                out[i:i + batch_size, d] = self.losses(model, codes[i:i + batch_size].flatten(1).to(device), g,
                                                       y=y)[1].cpu()
        return out

    @torch.no_grad()
    def sample(self, model, x, steps=None, temperature=1.0, seed=0, on_step=None, predict=None, sampler=None,
               truncation=1.0, shortcut=False, **options):
        """New grids x (B, h, w) or (B, N), all masks, of the training size: x_T ~ p(x_T), then `steps` (default T,
        a divisor of T) jumps of the reverse process. The absorbing prior's other options do not apply."""
        N, K = self.cfg.latent_h * self.cfg.latent_w, self.cfg.codebook_size
        steps = steps or self.T
        if predict is not None or sampler is not None or x[0].numel() != N or (x != K).any():
            raise SystemExit("error: the mask-replace prior samples new images of its training size with its reverse "
                             "process: drop --inpaint, --latent-size and --sampler")
        if self.T % steps:
            raise SystemExit(f"error: --sample-steps {steps} does not divide the prior's T = {self.T}: its jumps "
                             f"are T / steps steps each")
        g = torch.Generator(x.device).manual_seed(seed)
        x_T = prior_sample((len(x), N), self.sched, K, g, x.device)
        shown = None if on_step is None else (lambda x_t: on_step(x_t.view(x.shape)))
        return reverse_sample(model, x_T, self.sched, K, steps, temperature, truncation, seed + 1, shortcut,
                              shown).view(x.shape)
