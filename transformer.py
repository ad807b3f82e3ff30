"""
The network every kind of prior shares: a Transformer over the h*w codes of a VQ grid, and the draw from its output.

The absorbing prior (absorbing.py) uses it as it is: bidirectional, no time input, the paper's architecture. The
autoregressive baseline (autoregressive.py) makes the same blocks causal; the mask-and-replace prior
(mask_replace.py) adds an embedding of the time t, as the class enters. Input ids 0..K-1 are codes and K is the
mask; the output is a distribution over the K codes only, so the network never predicts a mask.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


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
    model: str = "absorbing"      # the kind of prior (absorbing.KINDS) this network belongs to
    pos_init: str = "sincos"      # or "random": how the learned position embeddings start
    conv: int = 0                 # > 0: depthwise convolutions of this kernel in each block (0: the paper's blocks)
    time_steps: int = 0           # T > 0: the network also sees the time t in 1..T (mask_replace.py; absorbing: 0)


# The learned position embeddings start as 2D sines and cosines (MAE's fixed embedding, here only the start): random
# ones give attention no notion of "nearby", and the prior first sat for hundreds of steps at the ELBO of predicting
# every code from the code frequencies alone.
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


# softmax(q k^T / sqrt(d)) v, by PyTorch's fused kernel. On a CPU it runs in float32 even under bf16 autocast: there
# the kernel's bf16 backward is several times slower than its float32 one (12 ms against 2.6 for 32 grids of 64
# codes, 4 heads of 32: a third of the small prior's training step).
def attention(q, k, v, dropout_p, is_causal):  # each (B, n_head, N, head size) -> (B, n_head, N, head size)
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=is_causal)
    with torch.autocast("cpu", enabled=False):
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), dropout_p=dropout_p,
                                              is_causal=is_causal)


class Block(nn.Module):
    """A pre-LayerNorm Transformer block. With cfg.conv = k > 0 it also looks at its neighbours on the h x w grid:
    a depthwise k x k convolution of the (normalised) codes before the attention, and one of the MLP's 4C hidden
    units between its two layers (CvT's and PVTv2's convolutions), both residuals that start at zero, so that the
    block starts as the paper's. `causal` and `kernel_mask` stay off here; autoregressive.py sets them."""

    def __init__(self, cfg):
        super().__init__()
        self.n_head, self.dropout, self.causal = cfg.n_head, cfg.dropout, False
        self.ln1, self.ln2 = nn.LayerNorm(cfg.n_embd), nn.LayerNorm(cfg.n_embd)
        self.qkv, self.proj = nn.Linear(cfg.n_embd, 3 * cfg.n_embd), nn.Linear(cfg.n_embd, cfg.n_embd)
        C = cfg.n_embd
        self.mlp = nn.Sequential(nn.Linear(C, 4 * C), nn.GELU(), nn.Linear(4 * C, C))
        self.drop = nn.Dropout(cfg.dropout)
        self.grid, self.conv = (cfg.latent_h, cfg.latent_w), None
        self.register_buffer("kernel_mask", None, persistent=False)  # (k, k) taps a convolution may use; None: all
        if cfg.conv:
            self.ln0, self.conv_in, self.conv = nn.LayerNorm(C), depthwise(C, cfg.conv), depthwise(4 * C, cfg.conv)

    def neighbours(self, conv, u):  # (B, N, H) -> (B, N, H): conv of u over the h x w grid of row-major positions
        B, N, H = u.shape
        grid = u.transpose(1, 2).reshape(B, H, *self.grid)
        weight = conv.weight if self.kernel_mask is None else conv.weight * self.kernel_mask
        out = F.conv2d(grid, weight, conv.bias, padding=conv.padding, groups=H)
        return out.flatten(2).transpose(1, 2)

    def forward(self, x):  # (B, N, C)
        B, N, C = x.shape
        if self.conv is not None:
            x = x + self.neighbours(self.conv_in, self.ln0(x))
        qkv = self.qkv(self.ln1(x)).view(B, N, 3, self.n_head, C // self.n_head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, n_head, N, head size)
        # no attention mask: every code attends to every code (a causal block: each only to itself and earlier ones)
        y = attention(q, k, v, self.dropout if self.training else 0.0, self.causal)
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(B, N, C)))
        u = self.mlp[0](self.ln2(x))  # (B, N, 4C)
        if self.conv is not None:
            u = u + self.neighbours(self.conv, u)
        return x + self.drop(self.mlp[2](self.mlp[1](u)))


class Transformer(nn.Module):
    """Pre-LayerNorm blocks over the h*w codes, learned position embeddings, an optional class embedding."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        N = cfg.latent_h * cfg.latent_w
        self.tok_emb = nn.Embedding(cfg.codebook_size + 1, cfg.n_embd)  # + 1: the mask token
        self.pos_emb = nn.Parameter(torch.zeros(1, N, cfg.n_embd))
        self.cls_emb = nn.Embedding(cfg.n_classes + 1, cfg.n_embd) if cfg.n_classes else None  # + 1: no class
        self.time_emb = nn.Embedding(cfg.time_steps + 1, cfg.n_embd) if cfg.time_steps else None
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

    def forward(self, x_t, positions=None, y=None, t=None):
        """x_t (B, N) ids in 0..K -> logits over the K codes: (B, N, K), or (M, K) at `positions`, flat indices
        into the B*N grid, when only those are needed (the final layer then runs on M rows, not B*N). y (B,): the
        class of each row of a class-conditional model, n_classes (or None) for none; its embedding joins every
        code's, and so does that of t (B,), the time of each row, in a network with cfg.time_steps."""
        B, N = x_t.shape
        h = self.tok_emb(x_t) + self.pos_emb[:, :N]  # (B, N, C)
        if self.cls_emb is not None:
            y = torch.full((B,), self.cfg.n_classes, device=x_t.device) if y is None else y
            h = h + self.cls_emb(y)[:, None]
        if self.time_emb is not None:
            h = h + self.time_emb(t)[:, None]
        h = self.blocks(self.drop(h))  # (B, N, C)
        if positions is not None:
            h = h.reshape(B * N, -1)[positions]  # (M, C)
        return self.head(self.ln_f(h))


# One draw from each row's categorical distribution: argmax_i p_i / E_i with E_i ~ Exp(1) is i with probability
# p_i / sum_j p_j (the smallest of exponential times with rates p_i); unlike torch.multinomial, no GPU sync. In
# float64: float32 draws on CUDA never go below 2^-24, so codes with p_i under about 6e-8 of the largest would be
# drawn too rarely (Zheng et al. 2024), which lowers the effective temperature.
def draw(probs, generator=None):  # (M, K) -> (M,)
    probs = probs.double()
    race = probs / torch.empty_like(probs).exponential_(generator=generator)
    return torch.where(probs > 0, race, -1.0).argmax(-1)  # never a code of p = 0, even if its E_i is 0 (0 / 0)
