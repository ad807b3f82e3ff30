"""Stage 3: the mixture-of-windows sampler (Eq. 8), the other samplers, guidance, inpainting, the command line."""
import itertools
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import chisquare
from test_absorbing import DATA, MASK, oracle, random_joint, state_id

import absorbing as A
import transformer as TF
import common as C
import data as D
import sample as S
import shapes
import vqgan as V


def tiny_prior(K=5, h=3, w=3):
    torch.manual_seed(0)
    cfg = TF.PriorConfig(codebook_size=K, latent_h=h, latent_w=w, n_layer=1, n_head=2, n_embd=16)
    return TF.Transformer(cfg).eval()


@pytest.mark.parametrize("size,window", [(8, 8), (9, 4), (16, 8), (17, 5), (5, 1)])
@pytest.mark.parametrize("stride", [1, 2, 3, 7, 100])
def test_windows_cover_every_position(size, window, stride):
    starts = S.window_starts(size, window, stride)
    covered = set()
    for s in starts:
        assert 0 <= s <= size - window
        covered |= set(range(s, s + window))
    assert covered == set(range(size)) and starts == sorted(set(starts))


def test_mixture_at_training_size_is_the_normal_sampler():
    model = tiny_prior()
    x = torch.full((4, 3, 3), 5)
    a = A.sample(model, x, 5, steps=4, temperature=0.8, seed=2, predict=S.mixture_denoiser(3, 3, 1))
    b = A.sample(model, x, 5, steps=4, temperature=0.8, seed=2)
    assert torch.equal(a, b)


@pytest.mark.parametrize("h,w", [(3, 3), (2, 3), (3, 2)])  # a non-square window: h and w must not be swapped
@pytest.mark.parametrize("stride", [1, 2])
def test_mixture_is_the_average_over_the_windows_that_contain_each_position(stride, h, w):
    model = tiny_prior(h=h, w=w)
    g = torch.Generator().manual_seed(0)
    x = torch.where(torch.rand(2, 5, 6, generator=g) < 0.5, torch.randint(0, 5, (2, 5, 6), generator=g), 5)
    reveal = (x == 5) & (torch.rand(2, 5, 6, generator=g) < 0.7)
    got = S.mixture_denoiser(h, w, stride)(model, x, reveal, 0.7)
    expected = []
    for b, i, j in reveal.nonzero().tolist():  # row-major, as the sampler writes them
        probs = []
        for r in S.window_starts(5, h, stride):
            for c in S.window_starts(6, w, stride):
                if r <= i < r + h and c <= j < c + w:
                    logits = model(x[b:b + 1, r:r + h, c:c + w].reshape(1, h * w))[0, (i - r) * w + (j - c)]
                    probs.append((logits / 0.7).softmax(-1))
        expected.append(torch.stack(probs).mean(0))
    assert torch.allclose(got, torch.stack(expected), atol=1e-6)


def kind_and_model(sampler):
    """A kind of prior with a tiny network of 3x3 codes from 5 (the autoregressive one for its raster sampler)."""
    cfg = TF.PriorConfig(codebook_size=5, latent_h=3, latent_w=3, n_layer=1, n_head=2, n_embd=16,
                         model="autoregressive" if sampler == "raster" else "absorbing")
    kind = A.KINDS[cfg.model](cfg, 9)
    torch.manual_seed(0)
    model = kind.network().eval()
    for p in model.parameters():  # weights large enough that the temperature matters
        torch.nn.init.normal_(p, std=0.3)
    return kind, model


@pytest.mark.parametrize("sampler", ["random", "cosine", "confidence", "remask", "raster"])
def test_every_sampler_divides_the_logits_by_the_temperature(sampler):
    # sampling at temperature 1/2 is sampling, with the same draws, the network whose logits are doubled (x / 0.5 and
    # 2 x are the same float), and it is not sampling at temperature 1
    kind, model = kind_and_model(sampler)
    options = {} if sampler == "raster" else dict(sampler=sampler, steps=4)
    x = torch.full((64, 3, 3), 5)
    cold = kind.sample(model, x, temperature=0.5, seed=3, **options)
    doubled = kind.sample(lambda x_t, positions=None: 2 * model(x_t, positions), x, seed=3, **options)
    assert torch.equal(cold, doubled)
    assert not torch.equal(cold, kind.sample(model, x, temperature=1.0, seed=3, **options))


def test_the_temperature_flag_reaches_the_sampler(tiny_run, tmp_path):
    ckpt = C.load_checkpoint(tiny_run / "absorbing.pt", "absorbing")
    for name in ("head.weight", "head.bias"):  # the same network with its logits doubled
        ckpt["ema"][name] = 2 * ckpt["ema"][name]
    C.save_checkpoint(dict(ckpt, vqgan=str(tiny_run / "vqgan.pt")), tmp_path / "doubled.pt")
    images = {}
    runs = (("cold", tiny_run / "absorbing.pt", "0.5"), ("doubled", tmp_path / "doubled.pt", "1"),
            ("warm", tiny_run / "absorbing.pt", "1"))
    for name, ckpt_path, temperature in runs:
        S.main(S.get_args(["--ckpt", str(ckpt_path), "--n-samples", "8", "--temperature", temperature, "--out",
                           str(tmp_path / f"{name}.png"), "--bf16", "off"]))
        images[name] = np.asarray(Image.open(tmp_path / f"{name}.png"))
    assert np.array_equal(images["cold"], images["doubled"]) and not np.array_equal(images["cold"], images["warm"])


def test_large_sample_every_code_revealed_and_decoded_size(tiny_run, tmp_path):
    out = tmp_path / "big.png"
    S.main(S.get_args(["--ckpt", str(tiny_run / "absorbing.pt"), "--n-samples", "2", "--latent-size", "12", "10",
                       "--window-stride", "3", "--sample-steps", "20", "--out", str(out),
                       "--images", str(tmp_path / "each"), "--gif", str(tmp_path / "u.gif")]))
    assert Image.open(tmp_path / "each" / "00000.png").size == (40, 48)  # W * f, H * f with f = 4
    assert Image.open(tmp_path / "u.gif").n_frames > 5


def test_a_larger_grid_is_decoded_window_by_window_each_code_from_the_nearest_window():
    torch.manual_seed(0)
    vq = V.VQGAN(V.VQGANConfig(img_size=8, nf=8, ch_mult=(1, 2), res_blocks=1, attn_resolutions=(), emb_dim=4,
                               codebook_size=8)).eval()  # f = 2: windows of 4x4 codes
    codes = torch.randint(0, 8, (2, 7, 10))
    got = S.decode(vq, codes, False)
    windows = [(r, c) for r in S.window_starts(7, 4, 2) for c in S.window_starts(10, 4, 2)]
    for i in range(7):
        for j in range(10):  # by hand: the first window whose centre is nearest (Chebyshev) to code (i, j)
            inside = [(r, c) for r, c in windows if r <= i < r + 4 and c <= j < c + 4]
            r, c = min(inside, key=lambda rc: max(abs(i - rc[0] - 1.5), abs(j - rc[1] - 1.5)))
            alone = vq.decode(codes[:, r:r + 4, c:c + 4]).clamp(-1, 1)
            patch = alone[:, :, 2 * (i - r):2 * (i - r) + 2, 2 * (j - c):2 * (j - c) + 2]
            assert torch.allclose(got[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2], patch, atol=1e-6), (i, j)
    assert torch.equal(S.decode(vq, codes[:, :4, :4], False), vq.decode(codes[:, :4, :4]).clamp(-1, 1))
    assert not torch.allclose(S.decode(vq, codes, False, whole=True), got, atol=1e-3)  # the paper's way differs


# ----------------------------------------------------------------------------- samplers and guidance


@pytest.mark.parametrize("fraction,exact", [(1 / 3, True), (1.0, False)])
def test_remasking_one_code_at_a_time_leaves_the_joint_unchanged(fraction, exact):
    # start from exact samples of a joint; corrector steps with the joint's own conditionals, one code a step,
    # are Gibbs steps and keep it; redrawing every code at once gives the product of the marginals instead
    joint = random_joint(seed=6)
    model = oracle(joint)
    g = torch.Generator().manual_seed(0)
    x = torch.tensor(DATA)[torch.multinomial(joint.flatten(), 60000, replacement=True, generator=g)]  # (B, N)
    x = A.remask(model, x, torch.ones_like(x, dtype=torch.bool), 4, fraction, MASK, seed=1)
    counts = np.array([(state_id(x) == state_id(torch.tensor([s]))).sum().item() for s in DATA])
    pvalue = chisquare(counts, joint.flatten().numpy() * counts.sum()).pvalue
    assert pvalue > 1e-3 if exact else pvalue < 1e-6


def test_remasking_leaves_fixed_codes_alone():
    model = tiny_prior()
    x = torch.randint(0, 5, (4, 9))
    free = torch.zeros(4, 9, dtype=torch.bool)
    free[:, 4:] = True
    seen = []
    y = A.remask(lambda x_t, p: (seen.append(x_t.clone()), model(x_t, p))[1], x, free, 3, 0.4, 5, seed=2)
    assert torch.equal(y[:, :4], x[:, :4]) and (y < 5).all() and len(seen) == 3
    assert all(((s == 5).sum(1) == 2).all() for s in seen)  # round(0.4 * 5) codes of each row, redrawn each step


def test_the_remask_sampler_picks_a_code_whatever_step_revealed_it():
    # 8 reverse steps on 9 codes, then one corrector step on one code: it should pick each code alike, so the step
    # that revealed its pick is step s as often as step s revealed codes. With the reverse process's random streams
    # it would pick (and redraw, with the same noise) the codes of one step only
    model, calls = tiny_prior(), []

    def predict(model, x, reveal, temperature):
        calls.append(reveal.view(len(x), -1).clone())
        return A.denoise(model, x, reveal, temperature)

    A.Absorbing(model.cfg, 9).sample(model, torch.full((3000, 9), 5), steps=9, seed=3, sampler="remask",
                                     remask_steps=1, remask_fraction=1 / 9, predict=predict)
    *reverse, picked = calls  # (B, 9) bool each
    assert len(reverse) == 8 and (picked.sum(1) == 1).all()
    step = torch.stack(reverse).int().argmax(0)[picked]  # (B,) the reverse step that revealed the pick
    expected = torch.stack(reverse).sum((1, 2)).double() / 9  # (8,) codes each step revealed, over all rows
    assert chisquare(torch.bincount(step, minlength=8).numpy(), expected.numpy()).pvalue > 1e-3


def test_remasking_never_touches_a_row_without_free_codes():
    model, seen = tiny_prior(), []
    x = torch.randint(0, 5, (2, 9))
    free = torch.ones(2, 9, dtype=torch.bool)
    free[0] = False  # a row sampled whole, beside one to revise
    y = A.remask(lambda x_t, p: (seen.append(x_t.clone()), model(x_t, p))[1], x, free, 3, 0.5, 5, seed=0)
    assert torch.equal(y[0], x[0]) and all(len(s) == 1 and (s == 5).sum() == 1 for s in seen)  # row 1 runs alone


def test_confidence_sampler_reveals_at_least_one_code_a_step():
    # at S = N the cosine schedule alone would leave steps with nothing to reveal (floor(64 cos(pi/2 j/64)) is 63
    # for j = 1 to 7) and reveal several codes at once later: each call reveals one code, as MaskGIT's
    n = 64
    logits = torch.randn(2, n, 4, generator=torch.Generator().manual_seed(0))

    def model(x_t, positions=None):
        return logits.reshape(-1, 4)[positions]

    for steps in (64, 32):
        frames = []
        A.confidence_sample(model, torch.full((2, n), 4), 4, steps, seed=0, on_step=lambda x: frames.append(x.clone()))
        revealed = torch.stack([(f != 4).sum(1) for f in frames])  # (steps, B)
        assert len(frames) == steps and (revealed.diff(dim=0, prepend=torch.zeros(1, 2, dtype=torch.long)) >= 1).all()
        assert (revealed[-1] == n).all() and (revealed.diff(dim=0) == 1).all() == (steps == n)


def test_confidence_sampler_reveals_the_most_confident_codes_on_the_cosine_schedule():
    # a denoiser that ignores x_t: position i gives code 0 probability q_i (between 1 - 1e-3 and 1 - 1e-4, all
    # different), so the candidate is code 0 and its confidence is log q_i: without Gumbel noise, codes come in
    # order of q_i
    B, n, K = 3, 16, 4
    g = torch.Generator().manual_seed(0)
    q = 1 - 1e-4 * (1 + 9 * torch.stack([torch.randperm(n, generator=g) for _ in range(B)]) / n)  # (B, n)
    logits = torch.stack([q.log()] + [((1 - q) / (K - 1)).log()] * (K - 1), -1)  # (B, n, K)

    def model(x_t, positions=None):
        return logits.reshape(-1, K)[positions]

    frames = []
    x = A.confidence_sample(model, torch.full((B, n), K), K, 4, seed=0, noise=0.0,
                            on_step=lambda x: frames.append(x.clone()))
    assert (x == 0).all() and len(frames) == 4
    for j, frame in enumerate(frames, 1):
        revealed = frame != K
        left = math.floor(n * math.cos(math.pi / 2 * j / 4)) if j < 4 else 0
        assert (revealed.sum(1) == n - left).all()  # the cosine schedule
        for b in range(B):  # the revealed codes are the most confident ones
            assert q[b][revealed[b]].min() > torch.cat([q[b][~revealed[b]], torch.zeros(1)]).max()


def test_confidence_sampler_with_noise_reveals_first_a_code_drawn_by_its_noisy_confidence():
    # 3 positions, K = 2, a denoiser that ignores x_t: position i gives code 0 probability q_i. At S = 2, step 1 keeps
    # one of the 3 candidates (floor(3 cos(pi/4)) = 2 stay masked), the highest log p(candidate) + c Gumbel with
    # c = noise (1 - 1/2) = 1, so given the candidates v, position i wins with probability p_i(v_i) / sum_j p_j(v_j)
    # (the Gumbel-max trick). By enumeration of the candidates, against 30000 runs of the sampler (chi-square).
    q = torch.tensor([0.9, 0.6, 0.2], dtype=torch.float64)
    probs = torch.stack([q, 1 - q], -1)  # (3, 2)

    def model(x_t, positions=None):
        return probs.log().expand(len(x_t), -1, -1).reshape(-1, 2)[positions]

    exact = torch.zeros(3, 2, dtype=torch.float64)  # P(the first code revealed is at position i with value v)
    for v in itertools.product(range(2), repeat=3):
        p_v = probs[torch.arange(3), torch.tensor(v)]  # (3,) each candidate's probability
        for i in range(3):
            exact[i, v[i]] += p_v.prod() * p_v[i] / p_v.sum()
    frames = []
    A.confidence_sample(model, torch.full((30000, 3), 2), 2, 2, seed=0, noise=2.0,
                        on_step=lambda x: frames.append(x.clone()))
    first = frames[0]
    assert ((first != 2).sum(1) == 1).all()  # one code revealed by the first step
    at = (first != 2).int().argmax(1)
    counts = torch.zeros(3, 2).index_put_((at, first[torch.arange(len(first)), at]), torch.ones(len(first)),
                                          accumulate=True)
    assert chisquare(counts.flatten().numpy(), (exact.flatten() * len(first)).numpy()).pvalue > 1e-3


def test_confidence_sampler_keeps_known_codes_and_counts_calls():
    model = tiny_prior()
    x = torch.full((2, 9), 5)
    x[:, :3] = 2
    calls = []
    y = A.confidence_sample(lambda x_t, p: (calls.append(1), model(x_t, p))[1], x, 5, 4, seed=1)
    assert (y[:, :3] == 2).all() and (y < 5).all() and len(calls) == 4


def conditional_prior(n_classes=3):
    torch.manual_seed(0)
    model = TF.Transformer(TF.PriorConfig(codebook_size=5, latent_h=3, latent_w=3, n_layer=1, n_head=2, n_embd=16,
                                        n_classes=n_classes)).eval()
    torch.nn.init.normal_(model.cls_emb.weight, std=1.0)  # classes that matter
    return model


def test_guidance_weights_0_and_1_are_the_unconditional_and_conditional_models():
    model = conditional_prior()
    x = torch.randint(0, 6, (4, 9))
    positions = torch.tensor([0, 5, 9, 30, 35])
    with torch.no_grad():
        uncond, cond = model(x, positions), model(x, positions, y=torch.full((4,), 2))
        assert not torch.allclose(uncond, cond, atol=1e-3)  # the class changes the prediction
        assert torch.equal(S.guided(model, 2, 0.0)(x, positions), uncond)
        assert torch.equal(S.guided(model, 2, 1.0)(x, positions), cond)  # one call of the conditional model
        assert torch.allclose(S.guided(model, 2, 3.0)(x, positions), uncond + 3 * (cond - uncond), atol=1e-5)
        assert torch.allclose(S.guided(model, 2, 3.0)(x)[0, 5], uncond[1] + 3 * (cond[1] - uncond[1]), atol=1e-5)
        assert torch.equal(model(x, positions, y=torch.full((4,), 3)), uncond)  # class id n_classes: no class


def test_class_names_and_indices_and_unknown_classes():
    ckpt = dict(classes=["circle", "square", "triangle"])
    assert S.class_index(ckpt, "square") == 1 and S.class_index(ckpt, "2") == 2
    with pytest.raises(SystemExit, match="no class 'hexagon'; its classes are 0 circle, 1 square, 2 triangle"):
        S.class_index(ckpt, "hexagon")
    with pytest.raises(SystemExit, match="no class '3'"):
        S.class_index(ckpt, "3")
    with pytest.raises(SystemExit, match="needs a class-conditional prior"):
        S.class_index(dict(classes=[]), "0")


def test_without_a_class_each_image_draws_one_from_the_training_frequencies():
    ckpt = dict(classes=["a", "b", "c"], class_counts=torch.tensor([600, 300, 100]))
    labels = S.image_classes(ckpt, None, 20000, seed=0)
    assert chisquare(torch.bincount(labels, minlength=3).numpy(), [12000, 6000, 2000]).pvalue > 1e-3
    assert (S.image_classes(ckpt, 2, 5, seed=0) == 2).all()
    assert S.image_classes(dict(classes=[]), None, 5, seed=0) is None


@pytest.mark.parametrize("sampler", ["random", "confidence", "cosine", "remask"])
def test_every_sampler_from_the_command_line_within_its_calls(tiny_run, tmp_path, capsys, sampler):
    S.main(S.get_args(["--ckpt", str(tiny_run / "absorbing.pt"), "--n-samples", "3", "--sample-steps", "6",
                       "--sampler", sampler, "--class", "square", "--guidance", "2", "--out", str(tmp_path / "s.png")]))
    calls = int(capsys.readouterr().out.split(" network calls")[0].split()[-1])
    assert 1 <= calls <= 6 and Image.open(tmp_path / "s.png").size == (1 + 33 * 2, 1 + 33 * 2)


def test_the_default_sampler_reveals_one_code_a_call_and_binomial_counts_skip_empty_steps(tiny_run, tmp_path, capsys):
    def run(*flags):  # -> (sampler named, network calls) of one new sample
        S.main(S.get_args(["--ckpt", str(tiny_run / "absorbing.pt"), "--n-samples", "1", "--out",
                           str(tmp_path / "s.png"), *flags]))
        out = capsys.readouterr().out.split(" network calls")[0].split()
        return out[-4], int(out[-1])

    assert run() == ("cosine", 64)  # exact counts: one code a call at S = N
    sampler, calls = run("--sampler", "random", "--counts", "binomial")  # each of the 64 codes' steps on its own
    assert sampler == "random" and calls < 64  # some of the 64 steps reveal nothing and cost nothing


def test_autoregressive_prior_from_training_to_samples_and_its_exact_likelihood(tiny_run, tmp_path, capsys):
    import evaluate
    A.main(A.get_args(["--codes", str(tiny_run / "codes.npy"), "--out-dir", str(tmp_path), "--model", "autoregressive",
                       "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--batch-size", "8", "--max-steps", "3",
                       "--sample-every", "0", "--bf16", "off"]))
    ckpt = C.load_checkpoint(tmp_path / "absorbing.pt", "absorbing")
    assert ckpt["config"]["model"] == "autoregressive"
    out, _ = evaluate.likelihood(tmp_path / "absorbing.pt", tiny_run / "codes.npy", 2, "cpu")
    assert out["likelihood"].startswith("exact NLL") and out["nll_bits_per_token"] > 0
    assert "elbo_bits_per_token" not in out
    capsys.readouterr()
    S.main(S.get_args(["--ckpt", str(tmp_path / "absorbing.pt"), "--n-samples", "2", "--out", str(tmp_path / "a.png")]))
    assert "autoregressive prior's raster sampler in 64 network calls" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="autoregressive prior samples new images .* in raster order"):
        S.main(S.get_args(["--ckpt", str(tmp_path / "absorbing.pt"), "--sample-steps", "8"]))
    with pytest.raises(SystemExit, match="autoregressive prior samples new images .* in raster order"):
        S.main(S.get_args(["--ckpt", str(tmp_path / "absorbing.pt"), "--sampler", "cosine"]))


def make_inpainting_inputs(tmp_path, size=(32, 32), mask_box=(8, 8, 20, 16)):
    image = shapes.draw_shapes(5, 32, seed=0)[0]
    Image.fromarray(image).save(tmp_path / "img.png")
    mask = Image.new("L", size, 0)
    mask.paste(255, mask_box)
    mask.save(tmp_path / "mask.png")
    return image


def test_inpainting_keeps_known_codes_and_pixels_outside_the_region(tiny_run, tmp_path):
    image = make_inpainting_inputs(tmp_path)
    vq = A.load_vqgan(tiny_run / "vqgan.pt", "cpu")
    codes, img, masked = S.inpaint_inputs(vq, tmp_path / "img.png", tmp_path / "mask.png", 128, "cpu")
    # the mask covers pixels 8..19 x 8..15: code patches (4 pixels) 2..4 across and 2..3 down
    assert masked.nonzero().tolist() == [[r, c] for r in (2, 3) for c in (2, 3, 4)]
    prior = A.prior_from_checkpoint(C.load_checkpoint(tiny_run / "absorbing.pt", "absorbing"))[0]
    x = A.sample(prior, codes.expand(3, -1, -1), 128, seed=0)
    assert (x[:, ~masked] == vq.encode(img)[:, ~masked]).all() and (x < 128).all()
    S.main(S.get_args(["--ckpt", str(tiny_run / "absorbing.pt"), "--inpaint", str(tmp_path / "img.png"), "--mask",
                       str(tmp_path / "mask.png"), "--n-samples", "3", "--out", str(tmp_path / "inpaint.png")]))
    grid = np.asarray(Image.open(tmp_path / "inpaint.png"))  # image, masked view, 3 completions, 1-pixel borders
    panels = [grid[1:33, 1 + 33 * k:33 + 33 * k] for k in range(5)]
    assert np.array_equal(panels[0], image)
    outside = np.ones((32, 32), bool)
    outside[8:16, 8:20] = False
    for completion in panels[2:]:
        assert np.array_equal(completion[outside], image[outside])
    assert (panels[1][~outside] == 127).all() or (panels[1][~outside] == 128).all()  # the region shown grey


def test_a_non_square_image_and_mask_are_read_as_the_same_centre_square(tiny_run, tmp_path):
    wide = np.concatenate([np.zeros((32, 8, 3), np.uint8), shapes.draw_shapes(5, 32, seed=0)[0],
                           np.zeros((32, 8, 3), np.uint8)], 1)  # (32, 48): the shapes image with 8 pixels each side
    Image.fromarray(wide).save(tmp_path / "wide.png")
    mask = Image.new("L", (48, 32), 0)
    mask.paste(255, (16, 8, 28, 16))  # pixels 8..19 x 8..15 of the centre square
    mask.save(tmp_path / "wide_mask.png")
    vq = A.load_vqgan(tiny_run / "vqgan.pt", "cpu")
    _, img, masked = S.inpaint_inputs(vq, tmp_path / "wide.png", tmp_path / "wide_mask.png", 128, "cpu")
    assert masked.nonzero().tolist() == [[r, c] for r in (2, 3) for c in (2, 3, 4)]
    assert np.array_equal(D.to_uint8(img)[0].numpy(), shapes.draw_shapes(5, 32, seed=0)[0])
    mask = Image.new("L", (48, 32), 0)
    mask.paste(255, (0, 0, 6, 32))  # white only outside the centre square
    mask.save(tmp_path / "wide_mask.png")
    with pytest.raises(SystemExit, match="no white pixel in the centre square"):
        S.inpaint_inputs(vq, tmp_path / "wide.png", tmp_path / "wide_mask.png", 128, "cpu")


def test_more_samples_than_a_batch_with_classes_are_batched_per_class(tiny_run, tmp_path, capsys):
    # one class; or each image's class drawn from the training frequencies, batches of one class each
    for flags, shown in ((["--class", "square"], " of class square: "), ([], " of class ")):
        capsys.readouterr()
        S.main(S.get_args(["--ckpt", str(tiny_run / "absorbing.pt"), "--n-samples", "5", "--batch-size", "2",
                           "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "grid.png"), *flags]))
        lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("batch of ")]
        sizes = [int(line.split()[2]) for line in lines]
        assert sum(sizes) == 5 and max(sizes) <= 2 and all(shown in line for line in lines)
        assert len(list((tmp_path / "imgs").glob("*.png"))) == 5


def test_bad_inputs_are_one_line_errors(tiny_run, tmp_path):
    prior = str(tiny_run / "absorbing.pt")
    uncond = C.load_checkpoint(prior, "absorbing")
    uncond["classes"] = []
    C.save_checkpoint(uncond, tmp_path / "uncond.pt")
    with pytest.raises(SystemExit, match="--guidance 2.0 needs a class-conditional prior"):
        S.main(S.get_args(["--ckpt", str(tmp_path / "uncond.pt"), "--vqgan", str(tiny_run / "vqgan.pt"),
                           "--guidance", "2"]))
    with pytest.raises(SystemExit, match="is a vqgan checkpoint.*absorbing checkpoint is needed"):
        S.main(S.get_args(["--ckpt", str(tiny_run / "vqgan.pt")]))
    with pytest.raises(SystemExit, match="smaller than the prior's 8x8 window"):
        S.main(S.get_args(["--ckpt", prior, "--latent-size", "6", "16"]))
    inpaint = ["--ckpt", prior, "--inpaint", str(tmp_path / "img.png"), "--mask", str(tmp_path / "mask.png")]
    make_inpainting_inputs(tmp_path, size=(40, 32))
    with pytest.raises(SystemExit, match="mask .* is 40x32 but the image .* is 32x32"):
        S.main(S.get_args(inpaint))
    make_inpainting_inputs(tmp_path, mask_box=(0, 0, 0, 0))
    with pytest.raises(SystemExit, match="no white pixel"):
        S.main(S.get_args(inpaint))
    for flags in (["--temperature", "0"], ["--inpaint", "a.png"], ["--n-samples", "-1"]):
        with pytest.raises(SystemExit):
            S.get_args(flags)
    other = C.load_checkpoint(tiny_run / "vqgan.pt", "vqgan")
    for change, shown in ((dict(codebook_size=64), "8x8 grids of 64"), (dict(img_size=64), "16x16 grids of 128")):
        config = dict(other["config"], **change)  # a real tokenizer of another size
        model = V.VQGAN(V.VQGANConfig.from_dict(config)).state_dict()
        C.save_checkpoint(dict(other, config=config, model=model), tmp_path / "other.pt")
        with pytest.raises(SystemExit, match=f"makes {shown} codes, the prior models 8x8 grids of 128"):
            S.main(S.get_args(["--ckpt", prior, "--vqgan", str(tmp_path / "other.pt")]))
