"""
The autoregressive baseline of Tab. 4: the same Transformer made causal, codes in raster order. Its likelihood is
exact, by the chain rule, where the absorbing prior's is a bound; it samples one code per network call.

    python absorbing.py --codes out/codes.npy --model autoregressive --out-dir out/ar    # trained like the others
    python evaluate.py --ckpt out/ar/absorbing.pt --codes out/codes.npy                  # its exact NLL

This file is the kind's maths, reached through the interface absorbing.py describes (KINDS); the training loop,
sample.py and evaluate.py are shared with the absorbing prior.
"""
import math

import torch
import torch.nn.functional as F

from transformer import Transformer, draw


def causal_kernel(k):  # (k, k): 1 where a tap of a k x k convolution may look in raster order (rows above, left)
    r, c = torch.meshgrid(torch.arange(k) - k // 2, torch.arange(k) - k // 2, indexing="ij")
    return ((r < 0) | ((r == 0) & (c <= 0))).float()


class CausalTransformer(Transformer):
    """The prior's Transformer with causal attention and causal convolution kernels (PixelCNN's masked convolution):
    output i sees inputs 0..i. The input is shifted by one (the mask id K first), so output i sees codes 0..i-1 and
    predicts p(x_i | x_<i)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        for block in self.blocks:
            block.causal = True
            if block.conv is not None:
                block.kernel_mask = causal_kernel(cfg.conv)

    def forward(self, x, positions=None, y=None):  # x (B, N) codes -> logits of p(x_i | x_<i), as Transformer
        shifted = torch.cat([torch.full_like(x[:, :1], self.cfg.codebook_size), x[:, :-1]], 1)
        return super().forward(shifted, positions, y)


# -log p(x) = -sum_i log p(x_i | x_<i), every term from one forward pass of the causal network
def chain_rule_nll(model, x_0, y=None):  # x_0 (B, N) -> (B,) bits per token
    logits = model(x_0) if y is None else model(x_0, y=y)  # (B, N, K)
    nll = F.cross_entropy(logits.float().transpose(1, 2), x_0, reduction="none").sum(1)  # (B,) nats
    return nll / (x_0.shape[1] * math.log(2))


class Autoregressive:
    """Tab. 4's baseline as a kind of prior (absorbing.KINDS describes the interface). T and the loss do not apply:
    it is trained on its exact likelihood."""
    name, bound, bound_name, default_sampler = "autoregressive", "nll", "exact NLL (chain rule)", "raster"
    diffusion_steps = None  # no diffusion: T is recorded, and unused

    def __init__(self, cfg, T=None, settings=None):
        self.cfg = cfg

    def network(self):
        return CausalTransformer(self.cfg)

    def losses(self, model, x_0, generator=None, rank=0, world_size=1, y=None):
        """(loss, nll): the mean and each example's exact NLL in bits per token (B,) of this rank's rows."""
        rows = slice(rank * len(x_0) // world_size, (rank + 1) * len(x_0) // world_size)
        nll = chain_rule_nll(model, x_0[rows], None if y is None else y[rows])
        return nll.mean(), nll

    @torch.no_grad()
    def likelihood(self, model, codes, n_draws=1, seed=0, labels=None, batch_size=256):
        """Each grid's exact NLL in bits per token, (len(codes), 1): nothing is drawn, so one column."""
        device = next(model.parameters()).device
        return torch.cat([chain_rule_nll(model, codes[i:i + batch_size].flatten(1).to(device),
                                         None if labels is None else labels[i:i + batch_size].to(device)).cpu()
                          for i in range(0, len(codes), batch_size)])[:, None]

    @torch.no_grad()
    def sample(self, model, x, steps=None, temperature=1.0, seed=0, on_step=None, predict=None, sampler=None,
               **options):
        """New grids x (B, h, w) or (B, N), all masks, one code per network call in raster order; the other
        kinds' options (counts, progress, ...) do not apply."""
        N, K = self.cfg.latent_h * self.cfg.latent_w, self.cfg.codebook_size
        if predict is not None or sampler is not None or steps not in (None, N) or x[0].numel() != N \
                or (x != K).any():
            raise SystemExit("error: an autoregressive prior samples new images of its training size in raster "
                             "order, one code per network call: drop --inpaint, --latent-size, --sampler and "
                             "--sample-steps")
        shown = None if on_step is None else (lambda x_t: on_step(x_t.view(x.shape)))
        return sample_raster(model, x.reshape(len(x), -1), temperature, seed, shown).view(x.shape)


# x_i ~ p(x_i | x_<i) for i = 0..N-1: one network call per code, logits divided by `temperature`
def sample_raster(model, x, temperature=1.0, seed=0, on_step=None):  # x (B, N) -> (B, N)
    B, N = x.shape
    x = x.clone()
    g = torch.Generator(x.device).manual_seed(seed)
    for i in range(N):
        at = torch.arange(B, device=x.device) * N + i  # (B,) flat index of code i of each row
        x[:, i] = draw((model(x, at).float() / temperature).softmax(-1), g)
        if on_step is not None:
            on_step(x)
    return x
