"""The mask-and-replace prior (mask_replace.py): its closed forms against products of the explicit (K+1) x (K+1)
transition matrices, its posterior against Bayes' rule, its bound and its sampler against exact enumeration of a
tiny problem (N = 2 codes, K = 2 values, T = 4), and a real training run through the shared loop."""
import itertools
import math

import pytest
import torch
from scipy.stats import chisquare

import absorbing as A
import common as C
import mask_replace as M
import sample as S
import transformer as TF

N, K, T = 2, 2, 4
STATES = list(itertools.product(range(K + 1), repeat=N))  # every x_t of N codes, the mask being id K
DATA = list(itertools.product(range(K), repeat=N))


def one_step_matrix(sched, t, K):  # (K+1, K+1): row x_{t-1}, column x_t, from the one-step definitions
    abar, gbar = sched
    alpha = abar[t] / abar[t - 1]
    gamma = 1 - (1 - gbar[t]) / (1 - gbar[t - 1])
    beta = (1 - alpha - gamma) / K
    Q = torch.zeros(K + 1, K + 1, dtype=torch.float64)
    Q[:K, :K] = beta + alpha * torch.eye(K, dtype=torch.float64)
    Q[:K, K], Q[K, K] = gamma, 1.0
    return Q


def product(sched, s, t, K):  # q(x_t | x_s) as the product of the one-step matrices s+1..t
    Q = torch.eye(K + 1, dtype=torch.float64)
    for r in range(s + 1, t + 1):
        Q = Q @ one_step_matrix(sched, r, K)
    return Q


def closed_form(sched, s, t, K):  # the (K+1) x (K+1) matrix that transition() describes
    a, kb, c = (v.item() for v in M.transition(sched, s, t))
    Q = torch.zeros(K + 1, K + 1, dtype=torch.float64)
    Q[:K, :K] = kb / K + a * torch.eye(K, dtype=torch.float64)
    Q[:K, K], Q[K, K] = c, 1.0
    return Q


@pytest.mark.parametrize("mask_share", [0.9, 1.0, 0.0, 0.5])
def test_the_schedule_ends_where_the_paper_puts_it_and_its_steps_are_distributions(mask_share):
    sched = M.schedule(100, mask_share)
    a, kb, c = (v.item() for v in M.transition(sched, 0, 100))
    assert c == pytest.approx(mask_share * (1 - 9e-6)) and kb == pytest.approx((1 - mask_share) * (1 - 9e-6))
    for t in range(1, 101):
        Q = one_step_matrix(sched, t, 7)
        assert (Q >= -1e-15).all() and torch.allclose(Q.sum(1), torch.ones(8, dtype=torch.float64))
    assert (sched[0][1:] < sched[0][:-1]).all()  # abar falls
    with pytest.raises(ValueError, match="mask share"):
        M.schedule(10, 1.5)


@pytest.mark.parametrize("mask_share", [0.9, 0.3])
def test_cumulative_and_strided_transitions_are_products_of_the_one_step_matrices(mask_share):
    sched = M.schedule(6, mask_share)
    for s in range(0, 6):
        for t in range(s + 1, 7):  # s = 0: q(x_t | x_0); s = t - 1: one step; else D = t - s steps
            assert torch.allclose(closed_form(sched, s, t, 3), product(sched, s, t, 3), atol=1e-12), (s, t)


def test_q_sample_draws_the_cumulative_distribution():
    sched = M.schedule(10, 0.6)
    x_0 = torch.full((200_000, 1), 1)
    for t in (2, 6, 10):
        x_t = M.q_sample(x_0, torch.full((len(x_0),), t), sched, 3, torch.Generator().manual_seed(t))
        freq = torch.bincount(x_t.flatten(), minlength=4).double() / len(x_0)
        expected = closed_form(sched, 0, t, 3)[1]
        assert torch.allclose(freq, expected, atol=4 * math.sqrt(0.25 / len(x_0))), (t, freq, expected)


def bayes(sched, x_0, x_t, s, t, K):  # q(x_s | x_t, x_0) over x_s, by Bayes' rule on the explicit matrices
    joint = product(sched, 0, s, K)[x_0] * product(sched, s, t, K)[:, x_t]  # q(x_s | x_0) q(x_t | x_s)
    return joint / joint.sum()


@pytest.mark.parametrize("s,t", [(2, 3), (0, 1), (1, 4), (0, 3), (3, 5)])
def test_the_posterior_is_bayes_rule_and_mixes_over_a_predicted_x_0(s, t):
    sched, K_ = M.schedule(5, 0.7), 3
    x_0 = torch.tensor([0, 1, 2, 0, 1, 2, 2, 0])  # every pair of a code and each x_t it can become
    x_t = torch.tensor([0, 0, 2, 3, 3, 1, 3, 2])
    B = len(x_0)
    got = M.posterior(torch.nn.functional.one_hot(x_0, K_)[:, None], x_t[:, None], sched, torch.full((B,), s),
                      torch.full((B,), t))[:, 0]
    for i in range(B):
        assert torch.allclose(got[i], bayes(sched, x_0[i], x_t[i], s, t, K_), atol=1e-12), i
    p_0 = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)  # p(x_s | x_t) = sum_x0 q(x_s | x_t, x_0) p(x_0 | x_t)
    mixed = M.posterior(p_0.expand(1, 1, K_), x_t[None, :1], sched, torch.tensor([s]), torch.tensor([t]))[0, 0]
    assert torch.allclose(mixed, sum(p_0[k] * bayes(sched, k, x_t[0], s, t, K_) for k in range(K_)), atol=1e-12)


def test_mask_only_a_code_that_x_0_cannot_become_gives_no_nan():
    sched = M.schedule(5, 1.0)  # no replacement: a code x_t other than x_0 has probability 0
    p_0 = torch.tensor([[[0.5, 0.5]]], dtype=torch.float64)
    post = M.posterior(p_0, torch.tensor([[1]]), sched, torch.tensor([2]), torch.tensor([3]))
    assert torch.allclose(post[0, 0], torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    ruled_out = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)  # x_t = 1 truncated away, or underflowed
    post = M.posterior(ruled_out, torch.tensor([[1]]), sched, torch.tensor([2]), torch.tensor([3]))
    assert torch.equal(post[0, 0], torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))  # still never replaced


def test_truncation_keeps_the_smallest_set_holding_r():
    p = torch.tensor([[0.05, 0.5, 0.15, 0.3]], dtype=torch.float64)
    for r, kept in ((0.86, [1, 2, 3]), (0.5, [1]), (0.81, [1, 2, 3]), (0.8, [1, 3]), (1.0, [0, 1, 2, 3])):
        got = M.truncate(p, r)[0]
        assert (got > 0).nonzero().flatten().tolist() == kept, r
        assert torch.allclose(got[kept], p[0, kept] / p[0, kept].sum())


def tiny_prior(mask_share=0.9, seed=0):
    cfg = TF.PriorConfig(codebook_size=K, latent_h=1, latent_w=N, n_layer=1, n_head=2, n_embd=16,
                         model="mask-replace")
    kind = M.MaskReplace(cfg, T, {"mask_share": mask_share})
    torch.manual_seed(seed)
    model = kind.network().eval()
    for p in model.parameters():  # large enough weights that p(x_0 | x_t) differs from state to state and with t
        torch.nn.init.normal_(p, std=0.5)
    return kind, model


def state_ids(x):  # (B, N) ids 0..K -> (B,) index into STATES
    return (x * (K + 1) ** torch.arange(N - 1, -1, -1)).sum(1)


def predictions(model):  # p(x_0 | x_t) of every state at every t: {t: (len(STATES), N, K)}
    x = torch.tensor(STATES)
    with torch.no_grad():
        return {t: torch.log_softmax(model(x, t=torch.full((len(x),), t)).float(), -1).double().exp()
                for t in range(1, T + 1)}


def reverse_matrix(kind, p0, s, t, shortcut=False):  # (states, states): p(x_s | x_t), product over the N codes
    frm = s + 1 if shortcut else t
    P = torch.zeros(len(STATES), len(STATES), dtype=torch.float64)
    for i, x_t in enumerate(STATES):
        per_code = [sum(p0[i, n, k] * bayes(kind.sched, k, x_t[n], s, frm, K) for k in range(K)) for n in range(N)]
        for j, x_s in enumerate(STATES):
            P[i, j] = math.prod(per_code[n][x_s[n]] for n in range(N))
    return P


def prior_vector(kind):  # p(x_T) of every state
    g = kind.sched[1][-1].item()
    code = [(1 - g) / K] * K + [g]
    return torch.tensor([math.prod(code[v] for v in x) for x in STATES], dtype=torch.float64)


def model_distribution(kind, model, steps, shortcut=False):  # p(x_0) of the model's reverse process, over STATES
    p0, D, dist = predictions(model), T // steps, prior_vector(kind)
    for t in range(T, 0, -D):
        dist = dist @ reverse_matrix(kind, p0[t], t - D, t, shortcut)
    return dist


def test_the_bound_is_the_exact_expectation_of_log_q_over_p_and_bounds_the_models_nll():
    kind, model = tiny_prior()
    p0 = predictions(model)
    P = {t: reverse_matrix(kind, p0[t], t - 1, t) for t in range(1, T + 1)}
    p_x0 = model_distribution(kind, model, T)
    forward = {t: one_step_matrix(kind.sched, t, K) for t in range(1, T + 1)}
    for x_0 in DATA:
        # E_q[log q(x_1:T | x_0) - log p(x_0:T)], every chain x_1..x_T enumerated
        exact = 0.0
        for chain in itertools.product(range(len(STATES)), repeat=T):
            states = [STATES.index(x_0)] + list(chain)
            q = math.prod(forward[t][STATES[states[t - 1]][n], STATES[states[t]][n]].item()
                          for t in range(1, T + 1) for n in range(N))
            if q == 0:
                continue
            p = prior_vector(kind)[states[T]].item() * math.prod(P[t][states[t], states[t - 1]].item()
                                                                  for t in range(1, T + 1))
            exact += q * (math.log(q) - math.log(p))
        # the estimator's expectation: each t's term averaged over x_t ~ q(x_t | x_0), times T / T, + the prior term
        x_t = torch.tensor(STATES)
        weights = {t: torch.tensor([math.prod(product(kind.sched, 0, t, K)[x_0[n], x[n]].item() for n in range(N))
                                    for x in STATES], dtype=torch.float64) for t in range(1, T + 1)}
        with torch.no_grad():
            terms = {t: M.vlb_terms(model, torch.tensor([x_0] * len(STATES)), x_t, torch.full((len(STATES),), t),
                                    kind.sched, K)[0] for t in range(1, T + 1)}
        estimator = sum((weights[t] * terms[t]).sum() for t in terms).item() + N * kind.prior_kl
        assert estimator == pytest.approx(exact, rel=1e-6), x_0
        with torch.no_grad():  # the training loss's bound: one draw of t and x_t an example, in bits per token
            vlb = kind.losses(model, torch.tensor([x_0] * 20000), torch.Generator().manual_seed(0))[1]
        assert abs(vlb.mean().item() - exact / (N * math.log(2))) < 4 * vlb.std().item() / math.sqrt(len(vlb)), x_0
        assert exact > -math.log(p_x0[STATES.index(x_0)].item()) + 1e-6  # a bound, and not a tight one here
    assert p_x0.sum().item() == pytest.approx(1.0) and p_x0[[i for i, x in enumerate(STATES) if K in x]].sum() < 1e-12


@pytest.mark.parametrize("steps,shortcut", [(4, False), (2, False), (2, True)])
def test_the_sampler_draws_the_models_reverse_process(steps, shortcut):
    kind, model = tiny_prior(0.6)
    expected = model_distribution(kind, model, steps, shortcut)[[STATES.index(x) for x in DATA]]
    n = 20_000
    x = kind.sample(model, torch.full((n, 1, N), K), steps=steps, seed=1, shortcut=shortcut).view(n, N)
    counts = torch.bincount(x[:, 0] * K + x[:, 1], minlength=K ** N)
    assert expected.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert chisquare(counts.numpy(), (expected / expected.sum()).numpy() * n).pvalue > 1e-3
    frames = []  # the first jump from all masks, x_T -> x_{T-D}: its distribution over every state
    M.reverse_sample(model, torch.full((n, N), K), kind.sched, K, steps, seed=2, shortcut=shortcut,
                     on_step=lambda x_s: frames.append(x_s.clone()))
    first = reverse_matrix(kind, predictions(model)[T], T - T // steps, T, shortcut)[STATES.index((K,) * N)]
    counts = torch.bincount(state_ids(frames[0]), minlength=len(STATES))
    seen = first > 0
    first = first[seen] / first[seen].sum()
    assert counts[~seen].sum() == 0 and chisquare(counts[seen].numpy(), first.numpy() * n).pvalue > 1e-3
    if shortcut:  # another process than the exact one, whose jump keeps a mask less often
        exact = model_distribution(kind, model, steps)[[STATES.index(x) for x in DATA]]
        assert (exact - expected).abs().sum() > 1e-3
        masked = torch.full((1, 1), K)
        p0 = torch.full((1, 1, K), 1 / K, dtype=torch.float64)
        keep = {frm: M.posterior(p0, masked, kind.sched, torch.tensor([2]), torch.tensor([frm]))[0, 0, K].item()
                for frm in (3, 4)}
        assert keep[3] > keep[4] + 0.1  # from t = 4 to 2: the shortcut's one step of time 3, the exact jump


def test_the_network_sees_t_and_truncation_and_temperature_reach_the_sampler():
    kind, model = tiny_prior()
    x = torch.tensor(STATES)
    with torch.no_grad():
        assert not torch.allclose(model(x, t=torch.full((9,), 1)), model(x, t=torch.full((9,), 3)))
    start = torch.full((2000, 1, N), K)
    cold = kind.sample(model, start, temperature=0.5, seed=3)
    doubled = kind.sample(lambda x_t, positions=None, t=None: 2 * model(x_t, t=t), start, seed=3)
    assert torch.equal(cold, doubled) and not torch.equal(cold, kind.sample(model, start, seed=3))
    assert not torch.equal(kind.sample(model, start, seed=3, truncation=0.5), kind.sample(model, start, seed=3))
    with pytest.raises(SystemExit, match="--sample-steps 3 does not divide the prior's T = 4"):
        kind.sample(model, start, steps=3)
    with pytest.raises(SystemExit, match="mask-replace prior samples new images of its training size"):
        kind.sample(model, torch.zeros(2, 1, N, dtype=torch.long))


def test_mask_replace_from_training_to_samples_and_its_bound(tiny_run, tmp_path, capsys):
    import evaluate
    flags = ["--codes", str(tiny_run / "codes.npy"), "--out-dir", str(tmp_path), "--model", "mask-replace",
             "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--batch-size", "8", "--sample-every", "0",
             "--bf16", "off", "--eval-every", "2"]
    A.main(A.get_args(flags + ["--max-steps", "2"]))
    A.main(A.get_args(flags + ["--max-steps", "3", "--resume"]))
    whole = tmp_path / "whole"
    A.main(A.get_args(flags[:2] + ["--out-dir", str(whole)] + flags[4:] + ["--max-steps", "3"]))
    a, b = (C.load_checkpoint(d / "absorbing.pt", "absorbing") for d in (tmp_path, whole))
    assert a["config"]["model"] == "mask-replace" and a["diffusion_steps"] == 100 and a["args"]["mask_share"] == 0.9
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])  # resumed exactly
    out, _ = evaluate.likelihood(tmp_path / "absorbing.pt", tiny_run / "codes.npy", 2, "cpu")
    assert out["likelihood"].startswith("VLB (an upper bound") and out["vlb_bits_per_token"] > 0
    capsys.readouterr()
    S.main(S.get_args(["--ckpt", str(tmp_path / "absorbing.pt"), "--n-samples", "2", "--sample-steps", "10",
                       "--truncation", "0.86", "--out", str(tmp_path / "a.png")]))
    printed = capsys.readouterr().out
    assert "mask-replace prior's reverse sampler in 10 network calls" in printed
    revised = float(printed.split("; ")[-1].split("%")[0])
    assert 0 < revised < 100  # every step redraws every code: some drawn codes change
    S.main(S.get_args(["--ckpt", str(tiny_run / "absorbing.pt"), "--n-samples", "2", "--out", str(tmp_path / "b.png")]))
    assert "; 0.0% of the codes were changed" in capsys.readouterr().out  # absorbing: a revealed code stays
    with pytest.raises(SystemExit, match="--sample-steps 7 does not divide the prior's T = 100"):
        S.main(S.get_args(["--ckpt", str(tmp_path / "absorbing.pt"), "--sample-steps", "7"]))
    with pytest.raises(SystemExit, match="truncation and --posterior are the mask-replace prior's"):
        S.main(S.get_args(["--ckpt", str(tiny_run / "absorbing.pt"), "--truncation", "0.5"]))
    for bad in (["--truncation", "0"], ["--truncation", "1.5"]):
        with pytest.raises(SystemExit):
            S.get_args(bad)
    for bad in (["--mask-share", "1.5"], ["--aux-weight", "-1"]):
        with pytest.raises(SystemExit):
            A.get_args(flags + bad)
