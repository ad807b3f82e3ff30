"""Stage 3: the mixture-of-windows sampler (Eq. 8), inpainting, and the command line."""
import numpy as np
import pytest
import torch
from PIL import Image

import absorbing as A
import common as C
import sample as S
import vqgan as V


def tiny_prior(K=5, h=3, w=3):
    torch.manual_seed(0)
    return A.Transformer(A.PriorConfig(codebook_size=K, latent_h=h, latent_w=w, n_layer=1, n_head=2, n_embd=16)).eval()


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


@pytest.mark.parametrize("stride", [1, 2])
def test_mixture_is_the_average_over_the_windows_that_contain_each_position(stride):
    model = tiny_prior()
    g = torch.Generator().manual_seed(0)
    x = torch.where(torch.rand(2, 5, 6, generator=g) < 0.5, torch.randint(0, 5, (2, 5, 6), generator=g), 5)
    reveal = (x == 5) & (torch.rand(2, 5, 6, generator=g) < 0.7)
    got = S.mixture_denoiser(3, 3, stride)(model, x, reveal, 0.7)
    expected = []
    for b, i, j in reveal.nonzero().tolist():  # row-major, as the sampler writes them
        probs = []
        for r in S.window_starts(5, 3, stride):
            for c in S.window_starts(6, 3, stride):
                if r <= i < r + 3 and c <= j < c + 3:
                    logits = model(x[b:b + 1, r:r + 3, c:c + 3].reshape(1, 9))[0, (i - r) * 3 + (j - c)]
                    probs.append((logits / 0.7).softmax(-1))
        expected.append(torch.stack(probs).mean(0))
    assert torch.allclose(got, torch.stack(expected), atol=1e-6)


def test_large_sample_every_code_revealed_and_decoded_size(tiny_run, tmp_path):
    out = tmp_path / "big.png"
    S.main(S.get_args(["--ckpt", str(tiny_run / "absorbing.pt"), "--n-samples", "2", "--latent-size", "12", "10",
                       "--window-stride", "3", "--sample-steps", "20", "--out", str(out),
                       "--images", str(tmp_path / "each"), "--gif", str(tmp_path / "u.gif")]))
    assert Image.open(tmp_path / "each" / "00000.png").size == (40, 48)  # W * f, H * f with f = 4
    assert Image.open(tmp_path / "u.gif").n_frames > 5


def make_inpainting_inputs(tmp_path, size=(32, 32), mask_box=(8, 8, 20, 16)):
    image = V.draw_shapes(5, 32, seed=0)[0]
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
    prior = A.prior_from_checkpoint(C.load_checkpoint(tiny_run / "absorbing.pt", "absorbing"))
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


def test_bad_inputs_are_one_line_errors(tiny_run, tmp_path):
    prior = str(tiny_run / "absorbing.pt")
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
