"""Stage 2: the forward process, the losses and the reverse process, checked by exact enumeration on a
tiny problem (N = 3 codes, K = 3 values), and short real training runs."""
import itertools
import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

import absorbing as A
import autoregressive as AR
import common as C
import data as D
import transformer as TF

N, K = 3, 3
MASK = K
STATES = list(itertools.product(range(K + 1), repeat=N))  # every x_t: each code a value or the mask (id K)
DATA = list(itertools.product(range(K), repeat=N))        # every x_0


def random_joint(seed=0, alpha=0.5):
    return torch.from_numpy(np.random.default_rng(seed).dirichlet(np.full(K ** N, alpha))).view((K,) * N)


def state_id(x):  # (B, N) ids in 0..K -> (B,) index into STATES
    return (x * (K + 1) ** torch.arange(N - 1, -1, -1)).sum(1)


class TableDenoiser:
    """A denoiser given as a table: log p(x_0[i] = v | x_t) for every state x_t, position i and value v.
    Called like the Transformer: (x_t, positions=None) -> logits (B, N, K) or (M, K)."""

    def __init__(self, table):
        self.table = table  # (len(STATES), N, K) log-probabilities

    def __call__(self, x_t, positions=None):
        logits = self.table[state_id(x_t)]
        return logits if positions is None else logits.reshape(-1, K)[positions]


def oracle(joint):
    """The exact conditionals of `joint`: p(x_0[i] | the unmasked codes of x_t)."""
    table = torch.zeros(len(STATES), N, K, dtype=torch.float64)
    for s, state in enumerate(STATES):
        consistent = torch.zeros((K,) * N, dtype=torch.float64)
        for x in DATA:
            if all(c == MASK or c == v for c, v in zip(state, x)):
                consistent[x] = joint[x]
        for i in range(N):
            table[s, i] = consistent.sum(dim=tuple(j for j in range(N) if j != i)).log() - consistent.sum().log()
    return TableDenoiser(table)


def random_denoiser(seed=1):
    g = torch.Generator().manual_seed(seed)
    return TableDenoiser(torch.randn(len(STATES), N, K, generator=g, dtype=torch.float64).log_softmax(-1))


def masked_states(x, T):
    """Every (t, q(x_t | x_0), x_t) with non-zero probability: each code masked independently with probability t/T."""
    for t in range(1, T + 1):
        for m in itertools.product([0, 1], repeat=N):
            prob = math.prod(t / T if mi else 1 - t / T for mi in m)
            if prob > 0:
                yield t, prob, tuple(MASK if mi else v for mi, v in zip(m, x))


def exact_elbo(model, x, T):
    """Eq. 6 by enumeration: sum_t (1/t) E_{mask ~ q(x_t|x_0)} [sum over masked i of -log2 p(x_0[i] | x_t)]."""
    total = 0.0
    for t, prob, x_t in masked_states(x, T):
        logp = model(torch.tensor([x_t]))[0]
        total += prob / t * sum(-logp[i, x[i]].item() for i in range(N) if x_t[i] == MASK) / math.log(2)
    return total


def variational_bound(model, x, T):
    """The same bound from its definition, by brute force over whole states: E_q[-log p(x_0 | x_1)] +
    sum_{t=2}^T E_q[KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))], where q reveals each masked code of x_t
    with probability 1/t and p reveals it as v with probability p(v | x_t) / t. Bits."""
    def step_distribution(x_t, t, value_probs):  # {x_{t-1}: probability}, revealing codes with probability 1/t
        options = [[(c, 1.0)] if c != MASK else [(MASK, 1 - 1 / t)] + [(v, p / t) for v, p in enumerate(value_probs[i])]
                   for i, c in enumerate(x_t)]
        dist = {}
        for combo in itertools.product(*options):
            s = tuple(c for c, _ in combo)
            dist[s] = dist.get(s, 0.0) + math.prod(p for _, p in combo)
        return dist

    total = 0.0
    for t, prob, x_t in masked_states(x, T):
        p_x0 = model(torch.tensor([x_t]))[0].exp().tolist()
        one_hot = [[1.0 if v == x[i] else 0.0 for v in range(K)] for i in range(N)]
        q, p = step_distribution(x_t, t, one_hot), step_distribution(x_t, t, p_x0)
        total += prob * sum(qs * math.log2(qs / p[s]) for s, qs in q.items() if qs > 0)
    return total


def process_distribution(model, reveal_probs):
    """The exact distribution of samples of the reverse process, by dynamic programming over all states:
    from all masks, step j reveals each masked code with probability reveal_probs[j], as v with p(v | x_t)."""
    dist = {tuple([MASK] * N): 1.0}
    for r in reveal_probs:
        new = {}
        for s, ps in dist.items():
            p_x0 = model(torch.tensor([s]))[0].exp().tolist()
            options = [[(c, 1.0)] if c != MASK else [(MASK, 1 - r)] + [(v, r * p_x0[i][v]) for v in range(K)]
                       for i, c in enumerate(s)]
            for combo in itertools.product(*options):
                key = tuple(c for c, _ in combo)
                new[key] = new.get(key, 0.0) + ps * math.prod(p for _, p in combo)
        dist = {s: p for s, p in new.items() if p > 0}
    assert math.isclose(sum(dist.values()), 1.0) and all(MASK not in s for s in dist)
    return dist


def exact_count_distribution(model, counts):
    """The exact distribution of samples when step j reveals exactly counts[j] of the masked codes, a subset of that
    size chosen uniformly at random, each code drawn as v with p(v | x_t): by enumeration of every subset and value."""
    dist = {tuple([MASK] * N): 1.0}
    for n in counts:
        new = {}
        for s, ps in dist.items():
            p_x0 = model(torch.tensor([s]))[0].exp().tolist()
            subsets = list(itertools.combinations([i for i, c in enumerate(s) if c == MASK], n))
            for subset in subsets:
                for values in itertools.product(range(K), repeat=n):
                    key = list(s)
                    for i, v in zip(subset, values):
                        key[i] = v
                    p = ps / len(subsets) * math.prod(p_x0[i][v] for i, v in zip(subset, values))
                    new[tuple(key)] = new.get(tuple(key), 0.0) + p
        dist = new
    assert math.isclose(sum(dist.values()), 1.0) and all(MASK not in s for s in dist)
    return dist


def skip_probs(steps, grid="uniform"):
    """The reveal probability of each sampling step (S, ..., 1) for a code still masked before it, by hand: 1/k for the
    uniform grid (the reverse process with T = S); for the cosine grid, the drop in the masked fraction cos(pi/2 j/S)
    over what is left."""
    if grid == "uniform":
        return [1 / k for k in range(steps, 0, -1)]
    left = [math.cos(math.pi / 2 * j / steps) for j in range(steps)] + [0.0]
    return [(left[j] - left[j + 1]) / left[j] for j in range(steps)]

# ----------------------------------------------------------------------------- the ELBO, exactly


@pytest.mark.parametrize("model", [oracle(random_joint()), random_denoiser()], ids=["oracle", "random"])
def test_one_over_t_weights_equal_the_variational_bound(model):
    # this test and the next two check the tests' own reference, exact_elbo (cheap: under a second together), on which
    # the estimator tests below rely
    for x in DATA[::4]:
        assert math.isclose(exact_elbo(model, x, T=3), variational_bound(model, x, T=3), rel_tol=1e-9)


@pytest.mark.parametrize("model", [oracle(random_joint()), random_denoiser()], ids=["oracle", "random"])
def test_elbo_bounds_the_models_own_nll(model):
    p_model = process_distribution(model, [1 / t for t in range(N, 0, -1)])
    for x in DATA:
        assert exact_elbo(model, x, T=N) >= -math.log2(p_model[x]) - 1e-9


def test_oracle_elbo_is_exact_for_independent_codes_and_in_the_limit_of_many_steps():
    joint = random_joint(seed=3)
    p = oracle(joint)
    # parallel reveals of correlated codes cost bits at T = N: the bound is above the entropy on average ...
    assert sum(joint[x].item() * exact_elbo(p, x, N) for x in DATA) > -(joint * joint.log2()).sum().item() + 0.01
    # ... and the gap closes as T grows (each step reveals at most one code)
    for x in DATA[::5]:  # within 0.4% at T = 300
        assert math.isclose(exact_elbo(p, x, T=300), -math.log2(joint[x].item()), rel_tol=1e-2)
    # independent codes: nothing is lost by revealing them together, ELBO = -log2 p(x) for every T
    marginals = [torch.tensor(m, dtype=torch.float64) for m in ([0.2, 0.5, 0.3], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8])]
    product = torch.einsum("a,b,c->abc", *marginals)
    for x in DATA:
        assert math.isclose(exact_elbo(oracle(product), x, T=N), -math.log2(product[x].item()), rel_tol=1e-9)


@pytest.mark.parametrize("model", [oracle(random_joint()), random_denoiser()], ids=["oracle", "random"])
def test_training_estimator_is_unbiased(model):
    g = torch.Generator().manual_seed(0)
    for x in DATA[::6]:
        draws = A.training_losses(model, torch.tensor([x] * 40000), N, MASK, "elbo", g)[1] * N  # bits per image
        mean, err = draws.mean().item(), draws.std().item() / math.sqrt(len(draws))
        assert abs(mean - exact_elbo(model, x, N)) < 4 * err

# ----------------------------------------------------------------------------- forward process and losses


def test_mask_rate_is_t_over_T():
    x_0 = torch.zeros(4000, 64, dtype=torch.long)
    T = 64
    for t in (1, 16, 32, 63, 64):
        _, mask = A.q_sample(x_0, torch.full((4000,), t), T, MASK, torch.Generator().manual_seed(t))
        rate, sd = mask.float().mean().item(), math.sqrt(t / T * (1 - t / T) / mask.numel())
        assert abs(rate - t / T) <= 4 * sd + 1e-12
    x_t, mask = A.q_sample(torch.full((5, 10), 2), torch.full((5,), 3), 6, MASK)
    assert ((x_t == MASK) == mask).all() and (x_t[~mask] == 2).all()


def test_only_masked_positions_are_scored():
    model = random_denoiser()

    def scrambled(x_t, positions=None):  # garbage wherever the code is visible
        logits = model(x_t).clone()
        logits[x_t != MASK] = torch.randn(int((x_t != MASK).sum()), K, dtype=logits.dtype)
        return logits.reshape(-1, K)[positions]

    x_0 = torch.tensor(DATA * 20)
    for loss in ("elbo", "reweighted_elbo", "mlm"):
        a = A.training_losses(model, x_0, N, MASK, loss, torch.Generator().manual_seed(5))
        b = A.training_losses(scrambled, x_0, N, MASK, loss, torch.Generator().manual_seed(5))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("loss", ["elbo", "reweighted_elbo", "mlm"])
def test_each_loss_split_over_ranks_averages_to_the_one_process_loss(loss):
    # DDP averages the ranks' gradients: their losses must average to the loss of one process on the global batch
    model, x_0 = random_denoiser(), torch.tensor(DATA[:24])
    one = A.training_losses(model, x_0, N, MASK, loss, torch.Generator().manual_seed(0))[0]
    ranks = [A.training_losses(model, x_0, N, MASK, loss, torch.Generator().manual_seed(0), rank, 2)[0]
             for rank in (0, 1)]
    assert torch.allclose((ranks[0] + ranks[1]) / 2, one, rtol=1e-6) and ranks[0] != ranks[1]


def test_each_loss_weighs_t_as_its_formula():
    T = 10
    t = torch.arange(1, T + 1)
    assert torch.allclose(A.loss_weight(t, T, "elbo"), T / t)  # Eq. 6
    assert torch.allclose(A.loss_weight(t, T, "reweighted_elbo"), (T - t + 1) / T)  # Eq. 7, Appendix B
    # through training_losses: a uniform denoiser makes CE_t = (masked codes) * ln K, so the loss is known by hand
    uniform = lambda x_t, positions=None: torch.zeros(len(positions), K)  # noqa: E731
    x_0 = torch.zeros(64, 12, dtype=torch.long)
    for loss in ("elbo", "reweighted_elbo", "mlm"):
        got, elbo = A.training_losses(uniform, x_0, T, MASK, loss, torch.Generator().manual_seed(9))
        g = torch.Generator().manual_seed(9)  # replay the draws of t and of the masks
        tt = torch.randint(1, T + 1, (64,), generator=g)
        masked = (torch.rand(64, 12, generator=g) < tt.unsqueeze(1) / T).sum(1).float()
        ce_bits = masked * math.log2(K)
        expected = {"elbo": (T / tt * ce_bits).mean() / 12, "reweighted_elbo": ((T - tt + 1) / T * ce_bits).mean() / 12,
                    "mlm": ce_bits.sum() / masked.sum()}[loss]
        assert math.isclose(got.item(), expected.item(), rel_tol=1e-5)
        assert torch.allclose(elbo, T / tt * ce_bits / 12, rtol=1e-5)

# ----------------------------------------------------------------------------- reverse process


@pytest.mark.parametrize("steps,grid", [(3, "uniform"), (2, "uniform"), (3, "cosine"), (2, "cosine")])
def test_sampler_matches_the_exact_process_distribution(steps, grid):
    model = oracle(random_joint(seed=4))
    x = A.sample(model, torch.full((60000, N), MASK), MASK, t_start=N, steps=steps, seed=11, grid=grid,
                 counts="binomial")
    counts = np.array([(state_id(x) == state_id(torch.tensor([s]))).sum().item() for s in DATA])
    expected = process_distribution(model, skip_probs(steps, grid))
    probs = np.array([expected[s] for s in DATA])
    assert chisquare(counts, probs * counts.sum()).pvalue > 1e-3
    if steps == 3 and grid == "uniform":  # power: the one-step process (every code at once, independently) is rejected
        one_step = process_distribution(model, [1.0])
        assert chisquare(counts, np.array([one_step[s] for s in DATA]) * counts.sum()).pvalue < 1e-6


@pytest.mark.parametrize("steps", [256, 200, 50, 16, 5, 1])
def test_reveal_schedule_reveals_every_unknown_code_once_equally_per_step(steps):
    known = torch.rand(400, 256, generator=torch.Generator().manual_seed(0)) < 0.3
    for grid in ("uniform", "cosine"):
        when = A.reveal_schedule(known, steps, grid, torch.Generator().manual_seed(1), counts="binomial")
        assert (when[known] == 0).all() and (when[~known] >= 1).all() and (when <= steps).all()
        per_step = torch.stack([(when == k).sum() for k in range(steps, 0, -1)]).double()  # from the first step
        assert per_step.sum() == (~known).sum()  # every unknown code, once
        share = torch.tensor(skip_probs(steps, grid), dtype=torch.float64)  # the share of each step, by hand
        share = share * torch.cat([torch.ones(1), (1 - share).cumprod(0)[:-1]])
        expected = (~known).sum() * share
        if steps > 1:  # uniform: every step equal in expectation
            assert chisquare(per_step.numpy(), expected.numpy()).pvalue > 1e-3


@pytest.mark.parametrize("steps,grid", [(3, "uniform"), (2, "uniform"), (2, "cosine")])
def test_exact_counts_sample_their_process_and_one_code_a_step_samples_the_data(steps, grid):
    joint = random_joint(seed=4)
    model = oracle(joint)
    x = A.sample(model, torch.full((60000, N), MASK), MASK, t_start=N, steps=steps, seed=11, grid=grid)
    counts = np.array([(state_id(x) == state_id(torch.tensor([s]))).sum().item() for s in DATA])
    per_step = torch.diff(A.step_counts(torch.tensor([N]), steps, grid)[0], prepend=torch.zeros(1, dtype=torch.long))
    assert per_step.tolist() == {3: [1, 1, 1], 2: [2, 1] if grid == "uniform" else [1, 2]}[steps]
    expected = exact_count_distribution(model, per_step.tolist())
    assert chisquare(counts, np.array([expected[s] for s in DATA]) * counts.sum()).pvalue > 1e-3
    if steps == N:  # one code a step with the true conditionals is the chain rule in a random order: the data itself
        assert all(math.isclose(expected[s], joint[s].item(), rel_tol=1e-9) for s in DATA)
        paper = process_distribution(model, skip_probs(N))  # the binomial process at S = T = N is not (TV 0.13)
        assert chisquare(counts, np.array([paper[s] for s in DATA]) * counts.sum()).pvalue < 1e-6


@pytest.mark.parametrize("steps", [256, 200, 50, 16, 5, 1])
def test_exact_counts_follow_the_grid_with_at_least_one_code_a_step(steps):
    known = torch.rand(400, 256, generator=torch.Generator().manual_seed(0)) < 0.3
    m = (~known).sum(1)  # (B,) 163 to 200 unknown codes
    j = torch.arange(1, steps + 1, dtype=torch.float64)
    for grid, done_share in (("uniform", j / steps), ("cosine", 1 - torch.cos(math.pi / 2 * j / steps))):
        when = A.reveal_schedule(known, steps, grid, torch.Generator().manual_seed(1))
        assert (when[known] == 0).all() and (when[~known] >= 1).all() and (when <= steps).all()
        per_step = torch.stack([(when == k).sum(1) for k in range(steps, 0, -1)], 1)  # (B, S), from the first step
        assert (per_step.sum(1) == m).all()  # every unknown code, once
        if steps <= 163:  # each step reveals its share of the codes, rounded, and at least one
            assert (per_step >= 1).all()
            wanted = torch.maximum(j, m[:, None] * done_share)  # (B, S) codes revealed by the end of each step
            assert ((per_step.cumsum(1) - wanted).abs() <= 0.5 + 1e-9).all()
    # fewer unknown codes than steps (rows of one batch can differ): at most one a step, all of them revealed
    few = torch.arange(8)[None] >= 3  # 3 unknown of 8
    when = A.reveal_schedule(~few, 5, "cosine", torch.Generator().manual_seed(2))
    assert sorted(when[few].tolist()) == sorted(set(when[few].tolist())) and (when[few] >= 1).all()


class Spy:
    """Wraps a denoiser and counts its calls and the rows it ran on."""

    def __init__(self, model):
        self.model, self.calls, self.rows = model, 0, 0

    def __call__(self, x_t, positions=None):
        self.calls += 1
        self.rows += len(x_t)
        return self.model(x_t, positions)


def naive_sample(model, x, t_start, steps, temperature, seed, counts):
    """The reverse process written without shortcuts: the network runs on the whole batch at every step."""
    when = A.reveal_schedule(x != MASK, steps, generator=torch.Generator().manual_seed(seed), counts=counts)
    g = torch.Generator().manual_seed(seed + 1)
    x = x.clone()
    calls = 0
    for k in range(steps, 0, -1):
        logits = model(x).float() / temperature  # (B, N, K)
        calls += 1
        reveal = when == k
        if reveal.any():
            x[reveal] = TF.draw(logits[reveal].softmax(-1), g)
    return x, calls


@pytest.mark.parametrize("batch", [1, 3])
def test_skipping_silent_steps_changes_nothing_but_saves_calls(batch):
    torch.manual_seed(0)
    model = TF.Transformer(TF.PriorConfig(codebook_size=K, latent_h=4, latent_w=4, n_layer=1, n_head=2,
                                          n_embd=16)).eval()
    x_T = torch.full((batch, 16), MASK)
    x_T[:, :5] = 1  # some known codes, as in inpainting
    spy = Spy(model)
    fast = A.sample(spy, x_T, MASK, t_start=11, steps=11, temperature=0.7, seed=3, counts="binomial")
    slow, calls = naive_sample(model, x_T, 11, 11, 0.7, 3, "binomial")
    assert torch.equal(fast, slow)
    assert (fast[:, :5] == 1).all() and (fast < K).all()  # known codes kept; the mask is never drawn
    exact = A.sample(model, x_T, MASK, t_start=11, steps=11, temperature=0.7, seed=3)  # exact counts: no silent step
    assert torch.equal(exact, naive_sample(model, x_T, 11, 11, 0.7, 3, "exact")[0])
    when = A.reveal_schedule(x_T != MASK, 11, generator=torch.Generator().manual_seed(3), counts="binomial")
    assert calls == 11 and spy.calls == len(when.unique()) - 1  # one call per step that reveals something
    assert spy.rows == sum(len((when == k).any(1).nonzero()) for k in range(1, 12)) < calls * batch


def test_draw_never_picks_a_code_of_probability_zero_even_at_a_zero_exponential_time(monkeypatch):
    monkeypatch.setattr(torch.Tensor, "exponential_", lambda self, generator=None: self.zero_())  # 0 / 0 and 1 / 0
    assert TF.draw(torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])).tolist() == [1, 2]


def test_sampling_draw_follows_the_categorical_distribution():
    p = torch.tensor([0.5, 0.25, 0.15, 0.1, 0.0])
    draws = TF.draw(p.expand(20000, -1), torch.Generator().manual_seed(0))
    counts = torch.bincount(draws, minlength=5).numpy()
    assert counts[4] == 0
    assert chisquare(counts[:4], 20000 * p[:4].numpy()).pvalue > 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the float32 floor of exponential draws is CUDA's")
def test_draw_reaches_categories_below_the_float32_floor():
    # a code 2^-26 as likely as the other is drawn about 2^30 * 2^-26 = 16 times in 2^30 draws; float32 exponential
    # draws on CUDA never go below 2^-24, which would draw it (almost) never
    g = torch.Generator("cuda").manual_seed(0)
    p = torch.tensor([1.0, 2.0 ** -26], device="cuda")
    hits = sum(TF.draw(p.expand(2 ** 26, -1), g).sum().item() for _ in range(16))
    assert 4 <= hits <= 40


def test_revealed_codes_never_change():
    torch.manual_seed(0)
    model = TF.Transformer(TF.PriorConfig(codebook_size=K, latent_h=4, latent_w=4, n_layer=1, n_head=2,
                                          n_embd=16)).eval()
    seen = []
    A.sample(lambda x, p: (seen.append(x.clone()), model(x, p))[1], torch.full((1, 16), MASK), MASK, steps=6, seed=1)
    for before, after in zip(seen, seen[1:]):
        assert ((before == after) | (before == MASK)).all()
    assert len(seen) <= 6

# ----------------------------------------------------------------------------- the autoregressive baseline


def tiny_autoregressive(seed=0, h=1, w=N, conv=0):
    torch.manual_seed(seed)
    model = AR.CausalTransformer(TF.PriorConfig(codebook_size=K, latent_h=h, latent_w=w, n_layer=2, n_head=2,
                                                n_embd=16, model="autoregressive", conv=conv)).eval()
    for p in model.parameters():  # weights large enough that the conditionals differ from uniform
        torch.nn.init.normal_(p, std=0.5)
    return model


def ar_kind(model):
    return AR.Autoregressive(model.cfg)


@pytest.mark.parametrize("h,w,conv", [(1, N, 0), (3, 3, 3), (3, 4, 3)])
def test_autoregressive_mask_is_causal(h, w, conv):
    model = tiny_autoregressive(0, h, w, conv)  # conv: the blocks' convolutions with their causal kernels too
    x = torch.arange(h * w)[None] % K
    with torch.no_grad():
        base = model(x)
        for j in range(h * w):
            changed = x.clone()
            changed[0, j] = (changed[0, j] + 1) % K
            out = model(changed)
            assert torch.equal(out[0, :j + 1], base[0, :j + 1])  # output i sees codes < i only
            if j + 1 < h * w:
                assert not torch.allclose(out[0, j + 1], base[0, j + 1])  # ... and does see code j


def test_exact_nll_is_the_chain_rule_and_normalised():
    model = tiny_autoregressive(1)
    xs = torch.tensor(DATA)  # every sequence
    nll = ar_kind(model).likelihood(model, xs)[:, 0]  # (27,) bits per token
    p = 2.0 ** (-N * nll.double())
    assert math.isclose(p.sum().item(), 1.0, rel_tol=1e-5)  # a distribution over all K^N sequences
    g = torch.Generator().manual_seed(0)
    for x, bits in zip(xs, nll):  # one call per code, later codes replaced by noise: p(x) = prod_i p(x_i | x_<i)
        logp = 0.0
        with torch.no_grad():
            for i in range(N):
                junk = torch.cat([x[:i], torch.randint(0, K + 1, (N - i,), generator=g)])
                logp += model(junk[None])[0, i].log_softmax(-1)[x[i]].item()
        assert math.isclose(bits.item(), -logp / (N * math.log(2)), rel_tol=1e-5)


def test_autoregressive_sampler_draws_the_models_distribution():
    model = tiny_autoregressive(2)
    p = 2.0 ** (-N * ar_kind(model).likelihood(model, torch.tensor(DATA))[:, 0].double())
    spy = Spy(model)
    x = ar_kind(model).sample(spy, torch.full((40000, N), MASK), seed=3)
    counts = np.array([(state_id(x) == state_id(torch.tensor([s]))).sum().item() for s in DATA])
    assert spy.calls == N and chisquare(counts, (p / p.sum()).numpy() * counts.sum()).pvalue > 1e-3


# ----------------------------------------------------------------------------- the network


def test_transformer_is_bidirectional_and_predicts_codes_only():
    torch.manual_seed(0)
    cfg = TF.PriorConfig(codebook_size=7, latent_h=2, latent_w=3, n_layer=2, n_head=2, n_embd=16)
    model = TF.Transformer(cfg).eval()
    x = torch.randint(0, 8, (4, 6))
    full = model(x)
    assert full.shape == (4, 6, 7)  # K outputs, no mask logit
    pos = torch.tensor([0, 5, 7, 23])
    assert torch.allclose(model(x, pos), full.reshape(-1, 7)[pos], atol=1e-6)
    y = x.clone()
    y[:, -1] = (y[:, -1] + 1) % 8  # change the last code: the first position's prediction changes (no causal mask)
    assert not torch.allclose(model(y)[:, 0], full[:, 0])


@pytest.mark.parametrize("causal", [False, True])
def test_attention_is_the_softmax_formula_in_float32_on_a_cpu_under_bf16_autocast(causal):
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 4, 6, 8, dtype=torch.float64).unbind(0)  # each (B, n_head, N, head size)
    scores = q @ k.transpose(-1, -2) / math.sqrt(8)  # (B, n_head, N, N)
    if causal:
        scores = scores.masked_fill(torch.ones(6, 6, dtype=torch.bool).triu(1), float("-inf"))
    want = scores.softmax(-1) @ v
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = TF.attention(q.float(), k.float(), v.float(), 0.0, causal)
    assert got.dtype == torch.float32  # bf16 would round to about 3 digits
    assert torch.allclose(got.double(), want, atol=1e-5)


def test_block_convolutions_start_at_zero_and_see_the_neighbours_only():
    torch.manual_seed(0)
    cfg = dict(codebook_size=7, latent_h=5, latent_w=6, n_layer=1, n_head=2, n_embd=16)
    plain, conv = TF.Transformer(TF.PriorConfig(**cfg)).eval(), TF.Transformer(TF.PriorConfig(**cfg, conv=3)).eval()
    conv.load_state_dict(plain.state_dict(), strict=False)  # the same weights, and the convolutions as they start
    x = torch.randint(0, 8, (4, 30))
    assert torch.equal(conv(x), plain(x))  # a block with its convolutions at zero is the paper's block
    with torch.no_grad():
        for p in conv.parameters():
            torch.nn.init.normal_(p, std=0.3)
        conv.blocks[0].proj.weight.zero_()  # no attention: what remains is the two 3x3 convolutions of the block
        conv.blocks[0].proj.bias.zero_()
        base = conv(x)
        y = x.clone()
        y[:, 2 * 6 + 3] = (y[:, 2 * 6 + 3] + 1) % 8  # the code at row 2, column 3
        moved = (conv(y) - base).abs().amax((0, 2)).view(5, 6) > 0
    r, c = torch.meshgrid(torch.arange(5), torch.arange(6), indexing="ij")
    assert torch.equal(moved, torch.maximum((r - 2).abs(), (c - 3).abs()) <= 2)  # two 3x3 kernels: 2 codes away


@pytest.mark.parametrize("h, w, C", [(8, 8, 128), (2, 5, 18)])
def test_position_embeddings_start_as_2d_sines_and_cosines(h, w, C):
    e = TF.sincos_2d(h, w, C)  # (h * w, C)
    q, s = C // 4, max(h, w)
    for r, c, i in itertools.product(range(h), range(w), range(q)):  # the formula, one number at a time
        f = (2 * s) ** (-i / q)
        want = [math.sin(r * f), math.cos(r * f), math.sin(c * f), math.cos(c * f)]
        assert torch.allclose(e[r * w + c, [i, q + i, 2 * q + i, 3 * q + i]], 0.1 * torch.tensor(want))
    assert (e[:, 4 * q:] == 0).all()
    gram = (e @ e.T).view(h, w, h, w)
    assert torch.allclose(gram[1:, :, 1:, :], gram[:-1, :, :-1, :], atol=1e-7)  # depends on the offset only
    assert torch.allclose(gram[:, 1:, :, 1:], gram[:, :-1, :, :-1], atol=1e-7)
    near, far = gram[0, 0, 0, 1], gram[0, 0, h - 1, w - 1]
    assert near > far  # a neighbour is more alike than the far corner
    model = TF.Transformer(TF.PriorConfig(codebook_size=7, latent_h=h, latent_w=w, n_layer=1, n_head=2, n_embd=C))
    assert torch.equal(model.pos_emb[0].detach(), e)
    torch.manual_seed(0)
    rand = TF.Transformer(TF.PriorConfig(codebook_size=7, latent_h=h, latent_w=w, n_layer=1, n_head=2, n_embd=C,
                                       pos_init="random"))
    assert not torch.allclose(rand.pos_emb[0], e) and rand.pos_emb.std().item() == pytest.approx(0.02, rel=0.3)


def test_each_preset_has_its_learning_rate_optimizer_and_length():
    small, paper = A.get_args([]), A.get_args(["--preset", "paper"])
    assert (small.lr, small.optimizer, small.max_steps) == (4e-3, "muon", 2500)  # small: short CPU runs (README)
    assert (paper.lr, paper.optimizer, paper.max_steps) == (2e-4, "adamw", 2_000_000)  # Appendix A, Sec. 4
    assert A.get_args(["--preset", "paper", "--lr", "1e-4"]).lr == 1e-4  # FFHQ's, by hand


def test_muon_takes_the_blocks_weight_matrices_and_adamw_every_other_parameter():
    model = TF.Transformer(TF.PriorConfig(codebook_size=7, latent_h=3, latent_w=3, n_layer=2, n_head=2, n_embd=8,
                                          n_classes=2, conv=3))
    names = {p: n for n, p in model.named_parameters()}
    opts = A.optimizers(model, "muon", 1e-3, 0.01)
    muon = {names[p] for g in opts["muon"].param_groups for p in g["params"]}
    decayed, plain = ({names[p] for p in g["params"]} for g in opts["opt"].param_groups)
    assert muon == {f"blocks.{i}.{m}.weight" for i in range(2) for m in ("qkv", "proj", "mlp.0", "mlp.2")}
    assert {"tok_emb.weight", "cls_emb.weight", "head.weight", "pos_emb", "blocks.0.conv.weight"} <= decayed
    assert {"head.bias", "ln_f.weight", "blocks.1.qkv.bias"} <= plain and not any(".weight" in n and "ln" not in n
                                                                                  for n in plain)
    assert len(muon) + len(decayed) + len(plain) == len(names) == len(muon | decayed | plain)  # each exactly once
    only = A.optimizers(model, "adamw", 1e-3, 0.01)
    assert set(only) == {"opt"} and sum(len(g["params"]) for g in only["opt"].param_groups) == len(names)


def test_paper_preset_size():
    args = A.get_args(["--preset", "paper"])
    cfg = TF.PriorConfig(codebook_size=1024, latent_h=16, latent_w=16, n_layer=args.n_layer, n_head=args.n_head,
                        n_embd=args.n_embd)
    with torch.device("meta"):  # shapes only: nothing allocated, nothing initialised
        n = sum(p.numel() for p in TF.Transformer(cfg).parameters())
    assert 75e6 < n < 80e6  # the paper's "about 77M" (Appendix A says 80M)

# ----------------------------------------------------------------------------- data and runs


def write_codes(folder, n=400, K=16, seed=0):
    """Codes with structure: each grid is a shifted ramp of one of 4 offsets plus a little noise."""
    rng = np.random.default_rng(seed)
    ramp = (np.arange(4)[:, None] + np.arange(4)[None, :])
    codes = (ramp[None] + rng.integers(0, 4, (n, 1, 1)) * 3) % K
    noise = rng.random(codes.shape) < 0.05
    codes = np.where(noise, rng.integers(0, K, codes.shape), codes).astype(np.int16)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "codes.npy", codes)
    (folder / "codes.json").write_text(json.dumps({"codebook_size": K, "vqgan": "vqgan.pt"}))
    return folder / "codes.npy"


@pytest.mark.parametrize("content,message", [
    (np.zeros((4, 2, 2), np.float32), "must be integers"),
    (np.zeros((4, 4), np.int64), "must be \\(N, h, w\\)"),
    (np.full((4, 2, 2), 16), "outside \\[0, 16\\)"),
    (np.full((4, 2, 2), -1), "outside"),
])
def test_bad_codes_are_one_line_errors(tmp_path, content, message):
    path = write_codes(tmp_path)
    np.save(path, content)
    with pytest.raises(SystemExit, match=message):
        D.load_codes(path)


def test_codes_files_missing_truncated_or_disagreeing(tmp_path):
    path = write_codes(tmp_path)
    with pytest.raises(SystemExit, match="disagrees with the VQGAN's 16"):
        D.load_codes(path, codebook_size=32)
    (tmp_path / "codes.json").unlink()
    with pytest.raises(SystemExit, match="codebook size is unknown; pass --codebook-size"):
        D.load_codes(path)
    assert D.load_codes(path, codebook_size=16)[1] == 16
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(SystemExit, match="cannot read"):
        D.load_codes(path)
    with pytest.raises(SystemExit, match="does not exist; run vqgan.py"):
        D.load_codes(tmp_path / "nope.npy")


def test_labels_beside_the_codes_are_checked(tmp_path):
    path = write_codes(tmp_path, n=40)
    assert D.load_labels(path, 40) == (None, [])
    np.save(tmp_path / "labels.npy", np.arange(40) % 3)
    with pytest.raises(SystemExit, match="names no classes"):
        D.load_labels(path, 40)
    (tmp_path / "codes.json").write_text(json.dumps({"codebook_size": 16, "classes": ["a", "b", "c"]}))
    labels, classes = D.load_labels(path, 40)
    assert classes == ["a", "b", "c"] and labels.tolist() == (np.arange(40) % 3).tolist()
    for bad in (np.arange(39) % 3, np.arange(40) % 4, np.zeros(40) + 0.5):
        np.save(tmp_path / "labels.npy", bad)
        with pytest.raises(SystemExit, match="must hold 40 integer labels in \\[0, 3\\)"):
            D.load_labels(path, 40)


def test_the_prior_preset_follows_the_codes(tmp_path, capsys):
    np.save(tmp_path / "small.npy", np.zeros((4, 8, 8), np.int16))
    np.save(tmp_path / "big.npy", np.zeros((4, 16, 16), np.int16))
    assert A.get_args(["--codes", str(tmp_path / "small.npy")]).n_layer == 4
    assert "8x8 codes -> prior preset small" in capsys.readouterr().out
    assert A.get_args(["--codes", str(tmp_path / "big.npy")]).n_layer == 24
    assert "16x16 codes -> prior preset paper" in capsys.readouterr().out
    assert A.get_args(["--codes", str(tmp_path / "big.npy"), "--preset", "small", "--n-layer", "2"]).n_layer == 2
    assert A.get_args(["--codes", str(tmp_path / "none.npy")]).preset == "small"  # load_codes reports it later


def test_bad_flags_are_rejected(capsys):
    with pytest.raises(SystemExit):
        A.get_args(["--n-embd", "100", "--n-head", "3"])
    assert "not divisible by --n-head 3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        A.get_args(["--pos-init", "zeros"])
    assert "invalid choice: 'zeros'" in capsys.readouterr().err
    for kernel in ("2", "-1"):  # a depthwise kernel has a centre: odd, or 0 for none
        with pytest.raises(SystemExit):
            A.get_args(["--conv", kernel])
        assert f"--conv must be 0 or an odd kernel size, got {kernel}" in capsys.readouterr().err
    assert A.get_args(["--conv", "0"]).conv == 0 and A.get_args([]).conv == 3  # the small preset's


def run(folder, *flags):
    args = A.get_args(["--codes", str(folder / "codes.npy"), "--out-dir", str(folder), "--n-layer", "2",
                       "--n-embd", "32", "--n-head", "2", "--batch-size", "16", "--log-every", "5",
                       "--sample-every", "0", "--bf16", "off", "--warmup-steps", "10", *flags])
    A.main(args)


def test_short_run_lowers_the_validation_elbo(tmp_path):
    write_codes(tmp_path)
    run(tmp_path, "--max-steps", "150", "--eval-every", "10", "--ema-decay", "0.9")
    log = [json.loads(line) for line in open(tmp_path / "absorbing_log.jsonl")]
    val = [r["val_elbo"] for r in log if "val_elbo" in r]
    assert val[-1] < val[0] - 1.0 and val[-1] < math.log2(16) - 1.0
    ckpt = C.load_checkpoint(tmp_path / "absorbing.pt", "absorbing")
    assert ckpt["diffusion_steps"] == 16 and ckpt["vqgan"] == "vqgan.pt" and ckpt["config"]["pos_init"] == "sincos"


def test_labels_train_a_class_conditional_prior_and_none_an_unconditional_one(tmp_path):
    path = write_codes(tmp_path, n=200)
    with pytest.raises(SystemExit, match="--class-dropout 0.1 trains on classes, but .* has no labels.npy"):
        run(tmp_path, "--max-steps", "2", "--class-dropout", "0.1")
    run(tmp_path, "--max-steps", "2")
    assert C.load_checkpoint(tmp_path / "absorbing.pt", "absorbing")["config"]["n_classes"] == 0
    # the label is the ramp's offset: a class that decides most of the grid
    offsets = np.load(path)[:, 0, 0] % 16 // 3
    np.save(tmp_path / "labels.npy", offsets)
    meta = json.loads((tmp_path / "codes.json").read_text())
    (tmp_path / "codes.json").write_text(json.dumps(dict(meta, classes=["0", "1", "2", "3", "4", "5"])))
    run(tmp_path, "--max-steps", "150", "--eval-every", "150", "--ema-decay", "0.9")
    ckpt = C.load_checkpoint(tmp_path / "absorbing.pt", "absorbing")
    assert ckpt["config"]["n_classes"] == 6 and ckpt["args"]["class_dropout"] == 0.1
    train_offsets = D.split_codes(torch.from_numpy(offsets), torch.from_numpy(offsets))[0]
    assert ckpt["class_counts"].tolist() == np.bincount(train_offsets, minlength=6).tolist()
    model = A.prior_from_checkpoint(ckpt)[0]
    x_0 = torch.from_numpy(np.load(path).astype(np.int64)).flatten(1)[:100]
    y = torch.from_numpy(offsets[:100].astype(np.int64))
    with torch.no_grad():  # knowing the class, the codes cost fewer bits than without it
        cond = A.training_losses(model, x_0, 16, 16, "elbo", torch.Generator().manual_seed(0), y=y)[1].mean()
        uncond = A.training_losses(model, x_0, 16, 16, "elbo", torch.Generator().manual_seed(0))[1].mean()
    assert cond < uncond - 0.1


def test_every_20th_grid_is_held_out_but_never_the_only_grid_of_its_class(tmp_path, capsys):
    import evaluate
    codes = torch.arange(41)[:, None].repeat(1, 4)  # (41, 4): grid i is all i
    assert D.split_codes(codes)[1][:, 0].tolist() == [0, 20, 40]
    labels = torch.tensor([0] + [1] * 40)  # class 0's one grid is grid 0, the first one held out
    train, val = D.split_codes(codes, labels)
    assert val[:, 0].tolist() == [20, 40] and train[:, 0].tolist() == [i for i in range(41) if i not in (20, 40)]
    assert D.split_codes(labels, labels)[0].tolist() == [0] + [1] * 38
    for x, y in ((codes[:1], None), (codes[:3], torch.arange(3))):  # nothing to hold out: both parts are all of x
        assert all(torch.equal(part, x) for part in D.split_codes(x, y))
    path = write_codes(tmp_path, n=41)  # the same through the prior's training and evaluate.py
    np.save(tmp_path / "labels.npy", labels.numpy())
    (tmp_path / "codes.json").write_text(json.dumps({"codebook_size": 16, "vqgan": "vqgan.pt", "classes": ["a", "b"]}))
    run(tmp_path, "--max-steps", "2")
    assert C.load_checkpoint(tmp_path / "absorbing.pt", "absorbing")["class_counts"].tolist() == [1, 38]
    scored = evaluate.likelihood(tmp_path / "absorbing.pt", path, 2, "cpu")[0]
    assert scored["n_images"] == 2 and math.isfinite(scored["elbo_with_class_bits_per_token"])
    np.save(tmp_path / "labels.npy", np.arange(41))  # one grid a class
    (tmp_path / "codes.json").write_text(json.dumps({"codebook_size": 16, "vqgan": "vqgan.pt",
                                                     "classes": [str(i) for i in range(41)]}))
    run(tmp_path, "--max-steps", "2")
    assert "no code grid to hold out (one grid, or one a class)" in capsys.readouterr().err


def test_a_run_with_T_other_than_N_trains_validates_and_is_scored_with_its_own_T(tmp_path):
    import evaluate
    write_codes(tmp_path)  # N = 16 codes a grid
    run(tmp_path, "--max-steps", "20", "--diffusion-steps", "7", "--eval-every", "20", "--val-draws", "2")
    ckpt = C.load_checkpoint(tmp_path / "absorbing.pt", "absorbing")
    model, kind = A.prior_from_checkpoint(ckpt)
    assert ckpt["diffusion_steps"] == kind.T == 7
    val = D.split_codes(D.load_codes(tmp_path / "codes.npy")[0].flatten(1))[1]
    logged = [r["val_elbo"] for r in map(json.loads, open(tmp_path / "absorbing_log.jsonl")) if "val_elbo" in r][-1]
    assert logged == pytest.approx(A.elbo_bits(model, val, 7, 16, n_draws=2, seed=1234).mean().item(), rel=1e-6)
    assert logged != pytest.approx(A.elbo_bits(model, val, 16, 16, n_draws=2, seed=1234).mean().item(), rel=1e-3)
    scored = evaluate.likelihood(tmp_path / "absorbing.pt", tmp_path / "codes.npy", 3, "cpu")[0]["elbo_bits_per_token"]
    assert scored == pytest.approx(A.elbo_bits(model, val, 7, 16, n_draws=3, seed=0).mean().item(), rel=1e-6)


def test_the_ema_is_decay_times_the_start_plus_the_rest_times_the_weights(tmp_path):
    write_codes(tmp_path)
    run(tmp_path, "--max-steps", "1", "--ema-decay", "0.9")
    ckpt = C.load_checkpoint(tmp_path / "absorbing.pt", "absorbing")
    torch.manual_seed(0)  # the run's seed: its network starts as this one
    start = TF.Transformer(TF.PriorConfig(**ckpt["config"])).state_dict()
    moved = [k for k in start if not torch.equal(start[k], ckpt["model"][k])]
    assert moved  # one update changed the weights
    for k in start:
        assert torch.allclose(ckpt["ema"][k], 0.9 * start[k] + 0.1 * ckpt["model"][k], atol=1e-7), k


def test_class_dropout_hides_that_fraction_of_the_classes_and_shows_the_others_true(tmp_path, monkeypatch):
    path = write_codes(tmp_path, n=200)
    labels = np.load(path)[:, 0, 0] % 16 // 3
    np.save(tmp_path / "labels.npy", labels)
    meta = json.loads((tmp_path / "codes.json").read_text())
    (tmp_path / "codes.json").write_text(json.dumps(dict(meta, classes=["0", "1", "2", "3", "4", "5"])))
    seen, losses = [], A.Absorbing.losses
    monkeypatch.setattr(A.Absorbing, "losses", lambda self, *a: (seen.append(a[-1].clone()), losses(self, *a))[1])
    run(tmp_path, "--max-steps", "40", "--class-dropout", "0.3", "--eval-every", "1000")
    y = torch.stack(seen)  # (steps, batch)
    hidden = y == 6  # "no class"
    assert abs(hidden.float().mean().item() - 0.3) < 4 * math.sqrt(0.3 * 0.7 / y.numel())
    train_labels = D.split_codes(torch.from_numpy(labels), torch.from_numpy(labels))[0]
    for step, row in enumerate(y):
        true = train_labels[C.batch_indices(step, len(train_labels), 16, 0)]
        assert torch.equal(row[~hidden[step]], true[~hidden[step]])


def a_whole_and_a_short_run(tmp_path):
    """Folders a (a 12-step run) and b (the same run, 5 steps), with the same codes."""
    a, b = tmp_path / "a", tmp_path / "b"
    write_codes(a)
    write_codes(b)
    run(a, "--max-steps", "12", "--eval-every", "100")
    run(b, "--max-steps", "5", "--eval-every", "100")
    return a, b


def test_resume_continues_the_same_run(tmp_path):
    a, b = a_whole_and_a_short_run(tmp_path)
    A.main(A.get_args(["--codes", str(b / "codes.npy"), "--out-dir", str(b), "--resume", "--max-steps", "12"]))
    ca, cb = (C.load_checkpoint(d / "absorbing.pt", "absorbing") for d in (a, b))
    assert ca["step"] == cb["step"] == 12
    for part in ("model", "ema"):
        for k in ca[part]:
            assert torch.equal(ca[part][k], cb[part][k]), (part, k)


def test_an_interrupted_run_resumes_to_its_own_length_not_the_default(tmp_path):
    a, b = a_whole_and_a_short_run(tmp_path)
    ckpt = C.load_checkpoint(b / "absorbing.pt", "absorbing")
    ckpt["args"]["max_steps"] = 12  # as if a 12-step run had stopped at step 5
    torch.save(ckpt, b / "absorbing.pt")
    A.main(A.get_args(["--codes", str(b / "codes.npy"), "--out-dir", str(b), "--resume"]))
    ca, cb = (C.load_checkpoint(d / "absorbing.pt", "absorbing") for d in (a, b))
    assert cb["step"] == 12 and cb["args"]["max_steps"] == 12
    assert all(torch.equal(ca["ema"][k], cb["ema"][k]) for k in ca["ema"])
    assert A.get_args([]).max_steps == 2500 and A.get_args(["--resume"]).max_steps is None  # the run's own


def test_resume_of_a_finished_run_trains_nothing_and_codes_of_another_shape_are_refused(tmp_path, capsys):
    a, _ = a_whole_and_a_short_run(tmp_path)
    before = C.load_checkpoint(a / "absorbing.pt", "absorbing")
    capsys.readouterr()
    A.main(A.get_args(["--codes", str(a / "codes.npy"), "--out-dir", str(a), "--resume"]))
    assert "has finished its 12 steps; nothing to train" in capsys.readouterr().out
    after = C.load_checkpoint(a / "absorbing.pt", "absorbing")
    assert after["step"] == 12 and all(torch.equal(before["ema"][k], after["ema"][k]) for k in after["ema"])
    other = write_codes(tmp_path / "k32", K=32)
    with pytest.raises(SystemExit, match="has 4x4 codes from 32, but the checkpoint's model was trained on 4x4 codes "
                                         "from 16"):
        A.main(A.get_args(["--codes", str(other), "--out-dir", str(a), "--resume"]))
    np.save(other, np.load(a / "codes.npy").reshape(-1, 2, 8))
    (tmp_path / "k32" / "codes.json").write_text(json.dumps({"codebook_size": 16}))
    with pytest.raises(SystemExit, match="has 2x8 codes from 16, but the checkpoint's model was trained on 4x4"):
        A.main(A.get_args(["--codes", str(other), "--out-dir", str(a), "--resume"]))


def test_torchrun_two_processes_match_one_process(tmp_path, run_script):
    one, two = tmp_path / "one", tmp_path / "two"
    write_codes(one)
    write_codes(two)
    flags = ["--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--batch-size", "8", "--max-steps", "6",
             "--log-every", "1", "--eval-every", "6", "--sample-every", "0", "--device", "cpu", "--bf16", "off"]
    run_script(["absorbing.py", "--codes", str(one / "codes.npy"), "--out-dir", str(one), *flags], nproc=1)
    run_script(["absorbing.py", "--codes", str(two / "codes.npy"), "--out-dir", str(two), *flags], nproc=2)
    logs = [[json.loads(line) for line in open(d / "absorbing_log.jsonl")] for d in (one, two)]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]]
    for a, b in zip(*logs):
        for key in ("loss", "elbo", "grad_norm", "val_elbo"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)
    ca, cb = (C.load_checkpoint(d / "absorbing.pt", "absorbing") for d in (one, two))
    assert ca["step"] == cb["step"] == 6 and len(cb["rng"]) == 2
    for k in ca["model"]:
        assert torch.allclose(ca["model"][k], cb["model"][k], atol=1e-5), k


def test_a_checkpoint_without_a_setting_of_this_code_is_a_one_line_error_at_resume(tmp_path):
    write_codes(tmp_path)
    run(tmp_path, "--max-steps", "2")
    ckpt = C.load_checkpoint(tmp_path / "absorbing.pt", "absorbing")
    del ckpt["args"]["lr_decay"]  # as written before the option existed: resuming at today's default would differ
    C.save_checkpoint(ckpt, tmp_path / "absorbing.pt")
    with pytest.raises(SystemExit, match="has no setting for --lr-decay .* older format"):
        run(tmp_path, "--resume", "--max-steps", "4")
