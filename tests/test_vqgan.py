"""Stage 1: the quantizer, the losses, the data, and short real training runs."""
import argparse
import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import common as C
import data as D
import shapes
import vqgan as V

# ----------------------------------------------------------------------------- quantizer


def test_nearest_code_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    z, codebook = torch.randn(5, 7, 16, generator=g), torch.randn(40, 16, generator=g)
    brute = torch.tensor([[min(range(40), key=lambda j: ((z[b, i] - codebook[j]) ** 2).sum().item())
                           for i in range(7)] for b in range(5)])
    assert torch.equal(V.nearest_code(z, codebook), brute)


def test_straight_through_gradient_is_identity():
    model = V.VQGAN(V.VQGANConfig(codebook_size=16, emb_dim=8))
    z = torch.randn(2, 8, 4, 4, requires_grad=True)
    z_q, _, codes = model.quantize(z)
    assert torch.allclose(z_q, model.codebook(codes).permute(0, 3, 1, 2), atol=1e-6)  # forward: the codes
    w = torch.randn_like(z_q)
    (z_q * w).sum().backward()
    assert torch.allclose(z.grad, w)  # backward: d z_q / d z = identity


def test_vq_loss_weighs_codebook_and_commitment_terms():
    beta = 0.25
    z = torch.randn(3, 5, 8, requires_grad=True)
    e = torch.randn(3, 5, 8, requires_grad=True)
    V.vq_loss(z, e, beta).backward()
    n = z.numel()
    # ||sg[z] - e||^2 moves the codes with weight 1; beta * ||z - sg[e]||^2 moves the encoder with weight beta
    assert torch.allclose(e.grad, 2 * (e - z).detach() / n, atol=1e-7)
    assert torch.allclose(z.grad, beta * 2 * (z - e).detach() / n, atol=1e-7)


def test_codebook_usage():
    assert D.codebook_usage(torch.tensor([3, 3, 3, 3]), 8) == (1.0, 1 / 8)
    p, used = D.codebook_usage(torch.arange(8).repeat(5), 8)
    assert math.isclose(p, 8) and used == 1.0

def test_code_redundancy_matches_counting_by_hand():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 2, (30, 8, 8, 3), dtype=np.uint8) * 255  # 4x4 patches: some contents repeat
    images[:, :4, :4] = 255  # one plain patch in every image
    codes = rng.integers(0, 3, (30, 2, 2))
    by_content = {}
    for n in range(30):
        for i in range(2):
            for j in range(2):
                key = images[n, 4 * i:4 * i + 4, 4 * j:4 * j + 4].tobytes()
                by_content.setdefault(key, []).append(codes[n, i, j])
    repeated = [ks for ks in by_content.values() if len(ks) > 1]
    total = sum(len(ks) for ks in repeated)
    bits = sum(-c * math.log2(c / len(ks)) for ks in repeated for c in np.unique(ks, return_counts=True)[1]) / total
    agreement = sum(np.unique(ks, return_counts=True)[1].max() for ks in repeated) / total
    ours = D.code_redundancy(images, codes)
    assert ours == pytest.approx((bits, agreement, total / 120)) and 0 < bits and agreement < 1


def test_code_redundancy_is_zero_for_one_code_per_content_and_none_without_repeats():
    images, _ = shapes.make_shapes(20)
    patches = images.reshape(20, 8, 4, 8, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(20, 8, 8, -1)
    codes = patches.sum(-1) % 1000  # a function of the patch's content
    bits, agreement, repeated = D.code_redundancy(images, codes)
    assert bits == 0 and agreement == 1 and 0.5 < repeated <= 1
    noise = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), np.uint8)  # no two patches alike
    bits, agreement, repeated = D.code_redundancy(noise, codes[:2])
    assert bits is None and agreement is None and repeated == 0

# ----------------------------------------------------------------------------- adversarial part


def test_adaptive_weight_is_ratio_of_gradient_norms_and_clamped():
    torch.manual_seed(0)
    last = torch.nn.Linear(4, 3)
    x = torch.randn(6, 4)
    out = last(x)
    target = torch.randn(6, 3)
    rec = (out - target).abs().mean()
    gan = -(out * torch.tensor([1.0, -2.0, 0.5])).mean()
    # by hand: d rec / dW = sign(out - t)^T x / numel, d gan / dW = -c^T x / numel
    g_rec = (torch.sign(out - target).detach().t() @ x) / out.numel()
    g_gan = (-torch.tensor([1.0, -2.0, 0.5]).view(3, 1).expand(3, 6) @ x) / out.numel()
    expected = g_rec.norm() / (g_gan.norm() + 1e-4)
    lam = V.adaptive_weight(rec, gan, last.weight, lambda_max=100.0)
    assert torch.allclose(lam, expected, rtol=1e-5)
    small = V.adaptive_weight(rec, gan, last.weight, lambda_max=0.5 * expected.item())
    assert math.isclose(small.item(), 0.5 * expected.item(), rel_tol=1e-6)  # the clamp of Eq. 9c
    assert not lam.requires_grad


def test_diffaug_switch_decides_what_the_discriminator_sees():
    """--diffaug off (Tab. 5): the discriminator gets the images themselves; on: augmented ones, real and fake."""
    seen = []

    class Recording(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, x):
            seen.append(x.detach().clone())
            return self.scale * x.mean((1, 2, 3), keepdim=True)

    cfg = V.VQGANConfig(img_size=8, nf=8, ch_mult=(1, 2), res_blocks=1, attn_resolutions=(), emb_dim=4,
                        codebook_size=8)
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    for switch in ("off", "on"):
        torch.manual_seed(0)
        model, disc = V.VQGAN(cfg), Recording()
        opt, d_opt = torch.optim.Adam(model.parameters(), lr=0.0), torch.optim.SGD(disc.parameters(), lr=0.0)
        args = argparse.Namespace(disc_start=0, bf16=False, perceptual_weight=0.0, lambda_max=1.0, diffaug=switch,
                                  out_dir="unused")
        seen.clear()
        V.train_step(model, disc, opt, d_opt, x, 0, args, None)
        x_hat = model(x)[0].detach()
        assert torch.allclose(seen[0], x_hat, atol=1e-6) == (switch == "off")  # the generator's GAN term
        assert torch.allclose(seen[1], torch.cat([x, x_hat]), atol=1e-6) == (switch == "off")  # the discriminator's


def test_the_gan_switches_on_at_disc_start_and_each_network_steps_on_its_own_loss():
    class Scaled(torch.nn.Module):  # a discriminator of one weight: scale * the image's mean
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, x):
            return self.scale * x.mean((1, 2, 3), keepdim=True)

    cfg = V.VQGANConfig(img_size=8, nf=8, ch_mult=(1, 2), res_blocks=1, attn_resolutions=(), emb_dim=4,
                        codebook_size=8)
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    torch.manual_seed(0)
    model, disc = V.VQGAN(cfg), Scaled()
    opt, d_opt = torch.optim.Adam(model.parameters(), lr=0.0), torch.optim.SGD(disc.parameters(), lr=1.0)
    args = argparse.Namespace(disc_start=3, bf16=False, perceptual_weight=0.0, lambda_max=1e4, diffaug="off",
                              out_dir="unused")
    off = V.train_step(model, disc, opt, d_opt, x, 2, args, None)  # steps count from 0: step 2 is before the start
    assert off["gan"] == off["lam"] == off["d"] == 0 and disc.scale.item() == 1
    on = V.train_step(model, disc, opt, d_opt, x, 3, args, None)
    x_hat, _, _ = model(x)  # the same as in the step: the autoencoder's learning rate is 0
    real, fake = x.mean((1, 2, 3)), x_hat.detach().mean((1, 2, 3))  # (B,) the logits at scale 1
    assert on["gan"] == pytest.approx(-fake.mean().item(), rel=1e-5)  # the generator's hinge term: -D(fake)
    rec, gan = (x - x_hat).abs().mean(), -Scaled()(x_hat).mean()  # lambda at the decoder's last layer (Eq. 9)
    lam = V.adaptive_weight(rec, gan, model.decoder[-1].weight, 1e4)
    assert on["lam"] == pytest.approx(lam.item(), rel=1e-5)
    scale = torch.ones((), requires_grad=True)  # one SGD step of the discriminator on its hinge loss alone
    d_loss = V.hinge_d_loss(scale * real, scale * fake)
    d_loss.backward()
    assert on["d"] == pytest.approx(d_loss.item(), rel=1e-5)
    assert disc.scale.item() == pytest.approx(1 - scale.grad.item(), rel=1e-5)


def test_diffaug_keeps_shape_is_differentiable_and_translates_with_zeros():
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    y = V.diffaug(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    # a grey image stays flat under the colour changes; the shift (at most 2 of 16 pixels) fills with zeros
    torch.manual_seed(0)
    out = V.diffaug(torch.full((64, 3, 16, 16), 0.3))
    for img in out:
        centre = img[0, 8, 8]  # the centre never leaves the frame
        assert ((img == centre) | (img == 0)).all()
    assert (out == 0).any()  # some images were shifted


def test_hinge_d_loss():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert math.isclose(V.hinge_d_loss(real, fake).item(), 0.5 * ((0 + 0.5) / 2 + (0 + 1) / 2))


def test_patch_discriminator_gives_patch_logits():
    d = V.patch_discriminator(ndf=16, n_layers=3)
    assert d(torch.randn(2, 3, 64, 64)).shape == (2, 1, 6, 6)


def test_lpips_weights_arrive_through_torch_hub_or_fail_in_one_line(tmp_path, monkeypatch):
    import torchvision
    from urllib.error import URLError
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    fetched = []

    def offline(url, dst, *args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(SystemExit, match=r"cannot download .*https://download.pytorch.org/models/vgg16-397923af.pth "
                                         rf"\(.*name resolution\).*into {tmp_path}/checkpoints.*--perceptual-weight 0"):
        V.load_lpips("cpu")

    def online(url, dst, *args, **kwargs):  # VGG16's tensors, each a single repeated value (a small file)
        fetched.append(url)
        with torch.device("meta"):
            shapes = torchvision.models.vgg16().state_dict()
        torch.save({k: torch.full((), 0.01).expand(v.shape) for k, v in shapes.items()}, dst)
    monkeypatch.setattr(torch.hub, "download_url_to_file", online)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    net = V.load_lpips("cpu")
    assert torch.equal(torch.rand(3), expected)  # its random init left the run's stream alone: resume stays exact
    assert fetched == ["https://download.pytorch.org/models/vgg16-397923af.pth"]
    assert (tmp_path / "checkpoints" / "vgg16-397923af.pth").is_file()
    assert (net.net.slice1[0].weight == 0.01).all()  # the fetched weights are the ones used
    V.load_lpips("cpu")  # the second time from the cache
    assert len(fetched) == 1

# ----------------------------------------------------------------------------- data


def test_shapes_are_deterministic_and_labelled():
    a, la = shapes.make_shapes(20, 32, seed=3)
    b, lb = shapes.make_shapes(20, 32, seed=3)
    c, _ = shapes.make_shapes(20, 32, seed=4)
    assert a.shape == (20, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(la, lb) and not np.array_equal(a, c)
    assert set(la.tolist()) <= {0, 1, 2}
    # image i does not depend on how many images were asked for
    assert np.array_equal(shapes.make_shapes(5, 32, seed=3)[0], a[:5])


def _write_images(folder):
    folder.mkdir()
    rgb = (np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(folder / "rgb.png")
    Image.fromarray(rgb).save(folder / "photo.JPG")
    Image.fromarray(rgb[..., 0]).save(folder / "grey.bmp")
    Image.fromarray(rgb).convert("P").save(folder / "palette.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    rgba = np.concatenate([rgb, np.zeros((40, 60, 1), np.uint8)], axis=2)  # fully transparent: white
    Image.fromarray(rgba).save(folder / "sub" / "clear.png") if (folder / "sub").mkdir() is None else None
    Image.fromarray((np.full((50, 50), 65535)).astype(np.uint16)).save(folder / "sixteen.png")
    Image.fromarray(rgb).save(folder / "small.webp")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (folder / "notes.txt").write_text("not an image")


def test_folder_loader_handles_modes_sizes_and_skips_corrupt(tmp_path, capsys):
    folder = tmp_path / "imgs"
    _write_images(folder)
    paths = D.scan_folder(folder)
    assert "skipped 1 image file(s)" in capsys.readouterr().err
    assert {p.name for p in paths} == {"rgb.png", "photo.JPG", "grey.bmp", "palette.png", "cmyk.jpg", "clear.png",
                                       "sixteen.png", "small.webp"}
    for p in paths:
        img = D.load_image(p, 24)
        assert img.shape == (24, 24, 3) and img.dtype == np.uint8
    assert (D.load_image(folder / "sub" / "clear.png", 24) == 255).all()  # transparent over white
    assert (D.load_image(folder / "sixteen.png", 24) == 255).all()  # 16-bit white is white


def test_folder_split_is_deterministic_and_disjoint(tmp_path):
    folder = tmp_path / "imgs"
    _write_images(folder)
    train, val = D.load_data(str(folder), None, 16)[:2]
    train2, val2 = D.load_data(str(folder), None, 16)[:2]
    assert train.paths == train2.paths and val.paths == val2.paths
    assert len(val) == 1 and not set(train.paths) & set(val.paths) and len(train) + len(val) == 8
    assert train[0].shape == (16, 16, 3)


def test_subfolders_are_classes_only_when_every_image_has_one(tmp_path):
    for name, n in (("cats", 3), ("dogs", 4), ("cats/big", 2)):
        (tmp_path / "a" / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (20, 20), (i * 40, 0, 0)).save(tmp_path / "a" / name / f"{i}.png")
    train, val, labels, classes, val_labels = D.load_data(str(tmp_path / "a"), None, 16)
    assert classes == ["cats", "dogs"]  # the top-level subfolder, however deep the file
    for part, part_labels in ((train, labels), (val, val_labels)):
        assert [classes[k] for k in part_labels] == [p.relative_to(tmp_path / "a").parts[0] for p in part.paths]
    Image.new("RGB", (20, 20)).save(tmp_path / "a" / "loose.png")  # an image outside any class: no classes
    assert D.load_data(str(tmp_path / "a"), None, 16)[2:] == (None, [], None)
    assert D.load_data("shapes", None, 32, n_shapes=20)[3] == ["circle", "square", "triangle"]


@pytest.mark.parametrize("side,preset,size,how", [
    (20, "28px", 20, "trained at their own size: 10x10 codes"),
    (21, "28px", 28, "resized up to 28 px (not a multiple of 2)"),
    (28, "28px", 28, ""), (30, "28px", 28, ""), (48, "32px", 32, ""), (64, "64px", 64, ""), (200, "64px", 64, ""),
    (300, "256px", 256, "")])
def test_a_folder_gets_the_preset_of_its_image_size(tmp_path, capsys, side, preset, size, how):
    for i in range(5):
        Image.new("RGB", (side + i, side), (i, 0, 0)).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    args = V.get_args(["--data", str(tmp_path)])
    assert args.preset == preset and args.img_size == size
    assert args.attn_resolutions == ((10,) if side == 20 else V.PRESETS[preset]["attn_resolutions"])
    said = capsys.readouterr().out
    assert f"images of {side} px (the median shorter side of 5 of its images){', ' + how if how else ''} -> " \
           f"preset {preset}" in said
    assert V.get_args(["--data", str(tmp_path), "--img-size", "256"]).preset == "256px"  # --img-size decides
    args = V.get_args(["--data", str(tmp_path), "--preset", "32px", "--codebook-size", "64"])  # overrides win
    assert (args.preset, args.img_size, args.codebook_size) == ("32px", 32, 64)


def write_idx(folder, prefix, images, labels):
    """MNIST's file format (big-endian sizes, then the bytes), gzipped, as the dataset's site ships it."""
    import gzip
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(np.array([2051, n, h, w], ">i4").tobytes() + images.astype(np.uint8).tobytes())
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(np.array([2049, n], ">i4").tobytes() + labels.astype(np.uint8).tobytes())


def test_a_standard_set_from_a_local_copy_and_offline_without_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # torchvision's files go to data/NAME
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 256, (30, 28, 28)), rng.integers(0, 256, (6, 28, 28))
    write_idx(tmp_path / "copy", "train", train, np.arange(30) % 10)
    write_idx(tmp_path / "copy", "t10k", test, np.arange(6) % 10)
    got_train, got_val, labels, classes, _ = D.load_data("fashion-mnist", str(tmp_path / "copy"), 28)
    assert len(got_train) == 30 and len(got_val) == 6 and labels.tolist() == (np.arange(30) % 10).tolist()
    assert classes[0] == "T-shirt/top" and len(classes) == 10  # the dataset's own names
    assert np.array_equal(got_train[3].numpy(), np.repeat(train[3][..., None], 3, -1))  # grey as RGB, 28 px
    assert D.load_data("fashion-mnist", str(tmp_path / "copy"), 32)[0][0].shape == (32, 32, 3)  # resized
    args = V.get_args(["--data", "mnist"])
    assert (args.img_size, args.ch_mult, args.attn_resolutions, args.num_workers) == (28, (1, 2), (14,), 0)
    with pytest.raises(SystemExit, match="cannot get mnist from https://.* put train-images-idx3-ubyte.gz, .* into "
                                         "a folder and pass --data-dir FOLDER"):
        D.load_data("mnist", None, 28)  # offline here: torchvision's download fails, in one line
    with pytest.raises(SystemExit, match="--data-dir .*empty holds no copy of cifar10"):
        D.load_data("cifar10", str(tmp_path / "empty"), 32)


def test_a_28px_folder_one_image_and_a_one_image_class_train(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for i in range(12):  # class a: 11 images of 28 px; class b: one
        sub = tmp_path / "imgs" / ("a" if i < 11 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(sub / f"{i}.png")
    train, val, labels, classes, _ = D.load_data(str(tmp_path / "imgs"), None, 28)
    assert classes == ["a", "b"] and sorted(labels.tolist()) == [0] * 10 + [1] and len(val) == 1
    assert "class(es) b of" in capsys.readouterr().err  # kept for training, none held out
    run(tmp_path / "out", "--data", str(tmp_path / "imgs"), "--max-steps", "2", "--batch-size", "4")
    assert np.load(tmp_path / "out" / "codes.npy").shape == (11, 14, 14)  # the 28px preset: 14x14 codes
    assert json.loads((tmp_path / "out" / "codes.json").read_text())["classes"] == ["a", "b"]
    one = tmp_path / "one"
    one.mkdir()
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(one / "x.png")
    run(tmp_path / "out1", "--data", str(one), "--max-steps", "2", "--batch-size", "2")
    said = capsys.readouterr()
    assert "no image to hold out (one image, or one a class): validation falls back" in said.err
    assert "no two patches are equal" in said.out  # random pixels: no redundancy to measure
    assert json.loads((tmp_path / "out1" / "codes.json").read_text(), parse_constant=int)["code_bits"] is None
    assert np.load(tmp_path / "out1" / "codes.npy").shape == (1, 8, 8)
    import absorbing as A  # the next stage learns the one grid, validating on it
    A.main(A.get_args(["--codes", str(tmp_path / "out1" / "codes.npy"), "--out-dir", str(tmp_path / "out1"),
                       "--max-steps", "2", "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--sample-every", "0"]))
    assert "no code grid to hold out (one grid, or one a class)" in capsys.readouterr().err
    val = [json.loads(line) for line in (tmp_path / "out1" / "absorbing_log.jsonl").read_text().splitlines()][-1]
    assert val["step"] == 2 and math.isfinite(val["val_elbo"]) and val["val_elbo_err"] > 0  # the error of its draws


def test_dataset_names_keep_their_presets():
    assert V.get_args([]).preset == "shapes" and V.get_args([]).img_size == 32
    ffhq, churches = V.get_args(["--data", "ffhq"]), V.get_args(["--data", "churches"])
    assert ffhq.img_size == 256 and ffhq.max_steps == 1_400_000 and churches.max_steps == 2_200_000
    for name in ("32px", "64px", "256px"):  # every scale preset has codes of at least 8x8
        cfg = V.PRESETS[name]
        assert cfg["img_size"] // 2 ** (len(cfg["ch_mult"]) - 1) >= 8


def test_empty_folder_and_missing_preset_folder_are_one_line_errors(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no readable image"):
        D.load_data(str(tmp_path / "empty"), None, 32)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r"data/ffhq does not exist.*ffhq-dataset"):
        D.load_data("ffhq", None, 256)


# ----------------------------------------------------------------------------- model and runs


def test_paper_preset_gives_16x16_codes(capsys):
    cfg = V.VQGANConfig(**{k: V.PRESETS["ffhq"][k] for k in V.VQGANConfig.__dataclass_fields__})
    with torch.device("meta"):  # shapes only: nothing allocated, nothing initialised
        model = V.VQGAN(cfg)
        assert model.encoder(torch.zeros(1, 3, 256, 256)).shape == (1, 256, 16, 16)  # 16x16 code vectors of D = 256
    n = sum(p.numel() for p in model.parameters())
    with capsys.disabled():
        print(f"\npaper-preset VQGAN: {n / 1e6:.1f}M parameters")
    assert 50e6 < n < 100e6


def test_bad_flags_are_rejected(capsys):
    with pytest.raises(SystemExit):
        V.get_args(["--img-size", "30"])
    assert "not divisible by the down-sampling factor 4" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        V.get_args(["--max-steps", "0"])


def run(tmp_path, *flags):
    args = V.get_args(["--out-dir", str(tmp_path), "--n-shapes", "256", "--log-every", "5", "--sample-every", "1000",
                       "--ckpt-every", "1000", "--bf16", "off", *flags])
    V.main(args)
    return args


def test_a_channels_last_vqgan_computes_what_the_contiguous_one_does():
    """vqgan.py trains on a CPU in channels-last order, for speed: the losses and gradients must not change."""
    torch.manual_seed(0)
    cfg = V.VQGANConfig(img_size=16, nf=16, ch_mult=(1, 2), attn_resolutions=(8,), norm="position",
                        local_encoder=False)
    nets = [V.VQGAN(cfg), V.VQGAN(cfg)]
    for net in nets[0].modules():  # no zero-initialised layer: every gradient flows
        if isinstance(net, torch.nn.Conv2d):
            torch.nn.init.normal_(net.weight, std=0.1)
    nets[1].load_state_dict(nets[0].state_dict())
    nets[1].to(memory_format=torch.channels_last)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    grads = []
    for net, xx in zip(nets, (x, x.contiguous(memory_format=torch.channels_last))):
        x_hat, loss_vq, codes = net(xx)
        ((xx - x_hat).abs().mean() + loss_vq).backward()
        grads.append((x_hat, codes, {n: p.grad for n, p in net.named_parameters()}))
    assert nets[1].decoder[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(grads[0][1], grads[1][1])
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-5)
    for n, g in grads[0][2].items():
        assert g is not None and g.abs().sum() > 0, n
        assert torch.allclose(g, grads[1][2][n], atol=1e-5, rtol=1e-4), n


def test_short_run_lowers_loss_and_writes_codes(tmp_path):
    run(tmp_path, "--max-steps", "60", "--disc-start", "40", "--batch-size", "16")
    log = [json.loads(line) for line in open(tmp_path / "vqgan_log.jsonl")]
    l1 = [r["l1"] for r in log if "l1" in r]
    assert l1[-1] < 0.7 * l1[0]
    assert any(r["lam"] > 0 for r in log if "lam" in r)  # the GAN switched on
    codes = np.load(tmp_path / "codes.npy")
    meta = json.loads((tmp_path / "codes.json").read_text())
    assert codes.shape == (256, 8, 8) and np.issubdtype(codes.dtype, np.integer)
    assert codes.min() >= 0 and codes.max() < meta["codebook_size"] == 128
    assert meta["vqgan"] == "vqgan.pt" and meta["latent_shape"] == [8, 8]
    assert np.load(tmp_path / "labels.npy").shape == (256,)
    assert (tmp_path / "recon_000060.png").exists()


def test_the_codebook_learns_at_its_multiple_of_the_rate_on_the_same_schedule(tmp_path):
    run(tmp_path, "--max-steps", "3", "--batch-size", "4", "--lr", "1e-3", "--codebook-lr-mult", "10")
    ckpt = C.load_checkpoint(tmp_path / "vqgan.pt", "vqgan")
    lrs = [g["lr"] for g in ckpt["opt"]["param_groups"]] + [g["lr"] for g in ckpt["d_opt"]["param_groups"]]
    cosine = 1e-3 * 0.5 * (1 + math.cos(math.pi * 2 / 3))  # the last step's (step 2 of 3) rate on the half cosine
    assert lrs == pytest.approx([cosine, 10 * cosine, cosine])
    assert len(ckpt["opt"]["param_groups"][1]["params"]) == 1  # the codebook alone in the second group


def a_whole_and_an_interrupted_run(tmp_path):
    """Folders a (a 12-step run) and b (the same run stopped at step 7, as its checkpoint says)."""
    a, b = tmp_path / "a", tmp_path / "b"
    # a constant rate: a cosine's horizon moves with --max-steps, so a run extended on resume is another schedule
    run(a, "--max-steps", "12", "--disc-start", "6", "--batch-size", "8", "--lr-decay", "constant")
    run(b, "--max-steps", "7", "--disc-start", "6", "--batch-size", "8", "--lr-decay", "constant")
    ckpt = C.load_checkpoint(b / "vqgan.pt", "vqgan")
    ckpt["args"]["max_steps"] = 12  # as if a 12-step run had been stopped at step 7
    C.save_checkpoint(ckpt, b / "vqgan.pt")
    return a, b


def assert_same_run(a, b):
    ca, cb = (C.load_checkpoint(d / "vqgan.pt", "vqgan") for d in (a, b))
    assert ca["step"] == cb["step"] == 12 and cb["args"]["max_steps"] == 12
    for part in ("model", "disc"):
        for k in ca[part]:
            assert torch.equal(ca[part][k], cb[part][k]), (part, k)
    assert torch.equal(ca["opt"]["state"][0]["exp_avg"], cb["opt"]["state"][0]["exp_avg"])
    assert np.array_equal(np.load(a / "codes.npy"), np.load(b / "codes.npy"))


def test_resume_continues_the_same_run_to_its_own_length(tmp_path):
    a, b = a_whole_and_an_interrupted_run(tmp_path)
    V.main(V.get_args(["--out-dir", str(b), "--resume"]))  # no --max-steps: the run's own 12, not the preset's
    assert_same_run(a, b)


def test_resume_of_a_finished_run_trains_nothing_and_an_extension_trains_on(tmp_path, capsys):
    a, b = a_whole_and_an_interrupted_run(tmp_path)
    V.main(V.get_args(["--out-dir", str(b), "--resume", "--max-steps", "12"]))
    assert_same_run(a, b)
    before = C.load_checkpoint(b / "vqgan.pt", "vqgan")
    capsys.readouterr()
    V.main(V.get_args(["--out-dir", str(b), "--resume"]))  # finished: nothing trained, the codes written again
    after = C.load_checkpoint(b / "vqgan.pt", "vqgan")
    assert after["step"] == 12 and all(torch.equal(before["model"][k], after["model"][k]) for k in after["model"])
    assert "settings: " in capsys.readouterr().out
    V.main(V.get_args(["--out-dir", str(b), "--resume", "--max-steps", "14"]))
    assert C.load_checkpoint(b / "vqgan.pt", "vqgan")["step"] == 14


def test_encode_only_writes_the_codes_of_a_trained_tokenizer_and_needs_one(tiny_run, tmp_path):
    shutil.copy(tiny_run / "vqgan.pt", tmp_path / "vqgan.pt")
    V.main(V.get_args(["--out-dir", str(tmp_path), "--encode-only"]))  # its own data: 64 shapes images
    assert np.array_equal(np.load(tmp_path / "codes.npy"), np.load(tiny_run / "codes.npy"))
    assert json.loads((tmp_path / "codes.json").read_text())["vqgan"] == "vqgan.pt"
    assert C.load_checkpoint(tmp_path / "vqgan.pt", "vqgan")["step"] == 3  # nothing trained
    with pytest.raises(SystemExit, match="checkpoint .*vqgan.pt does not exist"):
        V.main(V.get_args(["--out-dir", str(tmp_path / "none"), "--encode-only"]))


def test_quantize_weighs_the_codebook_term_fully_the_commitment_by_beta_and_passes_the_decoder_by():
    torch.manual_seed(0)
    vq = V.VQGAN(V.VQGANConfig(beta=0.3))
    z = torch.randn(2, 32, 8, 8, requires_grad=True)
    z_q, loss, codes = vq.quantize(z)
    e = vq.codebook.weight[codes].permute(0, 3, 1, 2)  # (B, D, h, w): each position's code vector
    g_z, g_e = torch.autograd.grad(loss, [z, vq.codebook.weight], retain_graph=True)
    # L_VQ = ||sg[z] - e||^2 + beta ||z - sg[e]||^2 (means over the n values): the encoder gets 2 beta (z - e) / n, each
    # code 2 (e - z) / n summed over the positions that chose it
    n = z.numel()
    assert torch.allclose(g_z, 2 * 0.3 * (z - e).detach() / n, atol=1e-8)
    per_position = (2 * (e - z) / n).detach().permute(0, 2, 3, 1).reshape(-1, 32)
    assert torch.allclose(g_e, torch.zeros_like(g_e).index_add_(0, codes.flatten(), per_position), atol=1e-8)
    # straight through: the decoder's gradient reaches the encoder unchanged and the codebook not at all
    r = torch.randn_like(z_q)
    g_z, g_e = torch.autograd.grad((z_q * r).sum(), [z, vq.codebook.weight], allow_unused=True)
    assert torch.allclose(g_z, r) and (g_e is None or not g_e.any())


def test_attention_at_the_latent_size_is_optional_and_kept_by_the_paper_preset():
    def attention_blocks(**kw):
        return sum(isinstance(m, V.AttnBlock) for m in V.VQGAN(V.VQGANConfig(**kw)).modules())
    assert attention_blocks(attn_resolutions=(8,)) == 4  # encoder and decoder: one after the level, one in the middle
    assert attention_blocks(attn_resolutions=()) == 0
    paper = V.VQGANConfig(**{k: v for k, v in V.PAPER.items() if k in V.VQGANConfig.__dataclass_fields__})
    assert paper.img_size // paper.downsample in paper.attn_resolutions


def test_the_local_encoder_sees_only_its_own_patch():
    torch.manual_seed(0)
    model = V.VQGAN(V.VQGANConfig(local_encoder=True))  # f = 4: 8x8 codes of 32x32 images
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    changed = x.clone()
    changed[:, :, 4:8, 8:12] = torch.rand(3, 4, 4)  # the patch of code (1, 2) only
    z, z_changed = model.encoder(x), model.encoder(changed)
    differs = (z - z_changed).abs().amax(1)[0] > 0  # (8, 8)
    assert differs[1, 2] and differs.sum() == 1
    images, _ = shapes.make_shapes(16)
    codes = model.encode(D.to_float(torch.from_numpy(images))).numpy()
    assert D.code_redundancy(images, codes)[0] == 0  # equal patches, equal codes, even with random weights
    paper_codes = V.VQGAN(V.VQGANConfig()).encode(D.to_float(torch.from_numpy(images))).numpy()
    assert D.code_redundancy(images, paper_codes)[0] > 0  # the paper's encoder sees the context


def test_position_norm_normalises_each_position_alone_where_group_norm_sees_the_image():
    torch.manual_seed(0)
    x = torch.randn(2, 32, 5, 6) * 3 + 1
    pn, gn = V.norm(32, "position"), V.norm(32, "group")
    torch.nn.init.normal_(pn.weight)
    torch.nn.init.normal_(pn.bias)
    by_hand = torch.empty_like(x)
    for b in range(2):
        for i in range(5):
            for j in range(6):
                v = x[b, :, i, j]
                by_hand[b, :, i, j] = (v - v.mean()) / (v.var(unbiased=False) + 1e-6).sqrt() * pn.weight + pn.bias
    assert torch.allclose(pn(x), by_hand, atol=1e-5)
    y = x.clone()
    y[:, :, 4, 5] += 10  # something bright in the far corner
    assert torch.equal(pn(y)[:, :, :4], pn(x)[:, :, :4])  # every other position: unchanged
    assert not torch.allclose(gn(y)[:, :, :4], gn(x)[:, :, :4])  # GroupNorm: the whole image moves
    assert V.VQGAN(V.VQGANConfig(norm="position")).decoder[-3].__class__ is V.PositionNorm
    assert isinstance(V.VQGAN(V.VQGANConfig()).decoder[-3], torch.nn.GroupNorm)  # the paper's, by default


def test_codes_unused_for_restart_after_steps_move_onto_encoder_outputs():
    torch.manual_seed(0)
    model = V.VQGAN(V.VQGANConfig(codebook_size=16, emb_dim=8, restart_after=2)).train()
    with torch.no_grad():
        model.codebook.weight[8:] += 100.0  # codes 8..15 are far from every encoder output: never chosen
    before = model.codebook.weight.detach().clone()
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    z = model.encoder(x).permute(0, 2, 3, 1).reshape(-1, 8)  # the encoder outputs of the batch
    model(x)
    assert torch.equal(model.codebook.weight, before) and (model.idle[8:] == 1).all()  # idle once: kept
    x_hat, loss, _ = model(x)  # idle twice: restarted
    (loss + x_hat.mean()).backward()  # the restart, made after the lookup, leaves the graph usable
    moved = model.codebook.weight.detach()[8:]
    assert all((z == row).all(1).any() for row in moved)  # each restarted code is one of the encoder outputs
    chosen = torch.unique(V.nearest_code(z, before))
    assert torch.equal(model.codebook.weight[chosen], before[chosen]) and (model.idle == 0).all()
    with torch.no_grad():
        model(x)  # evaluation (no gradients) never restarts
    assert torch.equal(model.codebook.weight.detach()[8:], moved)
