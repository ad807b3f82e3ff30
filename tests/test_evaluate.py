import json
import math
import shutil
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

import absorbing
import common as C
import data
import evaluate
import shapes
from test_vqgan import write_idx


def gaussian_features(n=300, d=16, seed=0, shift=0.0):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / math.sqrt(d)  # correlated features
    return rng.normal(size=(n, d)) @ mixing + shift


def test_fid_matches_pytorch_fid():
    from pytorch_fid.fid_score import calculate_frechet_distance
    for seed in range(3):
        a, b = gaussian_features(seed=seed), gaussian_features(seed=seed + 10, shift=0.3) * 1.5
        stats = (*evaluate.statistics(a), *evaluate.statistics(b))
        with warnings.catch_warnings():  # pytorch-fid passes scipy's deprecated `disp` argument
            warnings.simplefilter("ignore", DeprecationWarning)
            reference = calculate_frechet_distance(*stats)
        assert evaluate.frechet_distance(*stats) == pytest.approx(reference, rel=1e-6)


def test_fid_nudges_a_singular_product_and_refuses_a_complex_square_root(monkeypatch):
    a, b = gaussian_features(seed=0), gaussian_features(seed=1, shift=0.3)
    stats = (*evaluate.statistics(a), *evaluate.statistics(b))
    sqrtm, calls = scipy.linalg.sqrtm, []

    def singular_first(m):  # the first call fails as a singular product's does; the nudged one is scipy's
        calls.append(m)
        return np.full_like(m, np.nan) if len(calls) == 1 else sqrtm(m)
    monkeypatch.setattr(scipy.linalg, "sqrtm", singular_first)
    offset = np.eye(len(stats[1])) * 1e-6
    diff = stats[0] - stats[2]
    expected = diff @ diff + np.trace(stats[1]) + np.trace(stats[3]) - 2 * np.trace(
        sqrtm((stats[1] + offset) @ (stats[3] + offset)).real)
    assert evaluate.frechet_distance(*stats) == pytest.approx(expected, rel=1e-9) and len(calls) == 2
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda m: sqrtm(m) + 0.01j * np.eye(len(m)))
    with pytest.raises(SystemExit, match="imaginary part of up to 0.01"):
        evaluate.frechet_distance(*stats)


def test_fid_of_identical_sets_is_zero():
    a = gaussian_features()
    assert abs(evaluate.frechet_distance(*evaluate.statistics(a), *evaluate.statistics(a.copy()))) < 1e-6


def test_fid_of_a_shifted_set_is_the_squared_shift():
    a = gaussian_features()
    shift = np.linspace(-1, 1, a.shape[1])
    fid = evaluate.frechet_distance(*evaluate.statistics(a), *evaluate.statistics(a + shift))
    assert fid == pytest.approx(shift @ shift, rel=1e-6)


def test_fid_of_two_gaussians_has_the_closed_form():
    # diagonal covariances: FID = |mu1 - mu2|^2 + sum_i (s1_i + s2_i - 2 sqrt(s1_i s2_i))
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 4.0, 0.5]), np.array([9.0, 1.0, 0.5])
    expected = 5.0 + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert evaluate.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("k", [1, 3, 5, 10])
def test_prdc_matches_the_prdc_package(k):
    from prdc import compute_prdc
    real, fake = gaussian_features(n=200, seed=1), gaussian_features(n=150, seed=2, shift=0.5)
    ours, reference = evaluate.prdc(real, fake, k), compute_prdc(real, fake, k)
    assert set(ours) == set(reference)
    for name in ours:
        assert ours[name] == pytest.approx(reference[name], abs=1e-12), name
    assert 0 < ours["precision"] < 1 and 0 < ours["coverage"] < 1  # a case where the balls matter


def test_prdc_of_far_apart_sets_is_zero_and_of_one_set_is_full():
    real = gaussian_features(n=100)
    assert evaluate.prdc(real, real + 100.0, 5) == dict(precision=0.0, recall=0.0, density=0.0, coverage=0.0)
    same = evaluate.prdc(real, real.copy(), 5)
    assert same["coverage"] == 1.0 and same["precision"] == 1.0 and same["recall"] == 1.0


def test_too_few_samples_and_mismatched_widths_are_one_line_errors():
    with pytest.raises(SystemExit, match="too few for --nearest-k 5; need at least 6"):
        evaluate.prdc(gaussian_features(n=5), gaussian_features(n=50), 5)
    with pytest.raises(SystemExit, match="16-d but fake ones 8-d"):
        evaluate.quality(gaussian_features(d=16), gaussian_features(d=8), 5)


def test_random_features_are_seeded_and_not_degenerate():
    images = torch.from_numpy(shapes.make_shapes(64, 32, seed=0)[0])
    feats = [evaluate.features_of(evaluate.random_network(seed)[0], images, "cpu") for seed in (0, 0, 1)]
    assert feats[0].shape == (64, 512)
    assert np.array_equal(feats[0], feats[1]) and not np.allclose(feats[0], feats[2])
    assert (feats[0].std(0) > 0).all()  # no constant feature: the covariance is not singular by construction


def run(capsys, *flags):
    evaluate.main(evaluate.get_args(["--json", *flags]))
    return json.loads(capsys.readouterr().out)


def test_quality_from_images_and_from_feature_files(tmp_path, capsys):
    out = run(capsys, "--real", "shapes", "--fake", "shapes", "--features", "random", "--num", "100")
    assert {"fid", "precision", "recall", "density", "coverage"} <= set(out)
    assert "NOT comparable" in out["features"]  # random features are labelled in every output
    np.save(tmp_path / "r.npy", gaussian_features(seed=1))
    np.save(tmp_path / "f.npy", gaussian_features(seed=2))
    out = run(capsys, "--real-features", str(tmp_path / "r.npy"), "--fake-features", str(tmp_path / "f.npy"))
    assert out["fid"] == pytest.approx(evaluate.quality(gaussian_features(seed=1), gaussian_features(seed=2), 5)["fid"])


def test_bad_inputs_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    np.save(tmp_path / "wide.npy", np.zeros((10, 4)))
    np.save(tmp_path / "narrow.npy", np.zeros((10, 3)))
    np.save(tmp_path / "flat.npy", np.zeros(10))
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    cases = [(["--real", str(tmp_path / "nope"), "--fake", "shapes", "--features", "random"], "does not exist"),
             (["--real", str(tmp_path / "empty"), "--fake", "shapes", "--features", "random"], "no readable image"),
             (["--real", str(tmp_path / "wide.npy"), "--fake", "shapes", "--features", "random"], "is a file"),
             (["--real-features", str(tmp_path / "wide.npy"), "--fake-features", str(tmp_path / "narrow.npy")],
              "4-d but fake ones 3-d"),
             (["--real-features", str(tmp_path / "flat.npy"), "--fake-features", str(tmp_path / "wide.npy")],
              "must be \\(N, D\\)"),
             (["--real-features", str(tmp_path / "junk.npy"), "--fake-features", str(tmp_path / "wide.npy")],
              "cannot read features"),
             ([], "nothing to measure")]
    for flags, message in cases:
        with pytest.raises(SystemExit, match=message) as e:
            evaluate.main(evaluate.get_args(flags))
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("flags", [["--fake", "shapes"], ["--codes", "c.npy"], ["--vqgan", "v.pt"],
                                   ["--real-features", "r.npy"], ["--real", "shapes", "--real-features", "r.npy",
                                                                  "--fake-features", "f.npy"], ["--nearest-k", "0"],
                                   ["--real", "shapes", "--fake", "shapes", "--crop-stride", "4"],
                                   ["--real", "shapes", "--vqgan", "v.pt", "--fake", "shapes", "--features",
                                    "classifier"]])
def test_bad_flag_combinations_are_rejected(flags, capsys):
    with pytest.raises(SystemExit):
        evaluate.get_args(flags)
    assert "error:" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained_prior(tiny_run, tmp_path_factory):
    """A small prior trained long enough on the tiny run's codes to learn something."""
    out = tmp_path_factory.mktemp("prior")
    (out / "vqgan.pt").symlink_to(tiny_run / "vqgan.pt")
    absorbing.main(absorbing.get_args(["--codes", str(tiny_run / "codes.npy"), "--out-dir", str(out), "--bf16", "off",
                                       "--max-steps", "150", "--n-layer", "1", "--n-embd", "32", "--n-head", "2",
                                       "--batch-size", "16", "--sample-every", "0", "--eval-every", "150"]))
    return out


def test_likelihood_beats_the_uniform_code_and_its_error_shrinks_with_draws(trained_prior, tiny_run):
    few, per_image = evaluate.likelihood(trained_prior / "absorbing.pt", tiny_run / "codes.npy", 16, "cpu")
    many, _ = evaluate.likelihood(trained_prior / "absorbing.pt", tiny_run / "codes.npy", 256, "cpu")
    assert many["elbo_bits_per_token"] < many["uniform_bits_per_token"] == math.log2(128)
    assert many["elbo_mc_error"] < few["elbo_mc_error"] / 2  # ~ 1/sqrt(draws): 4x smaller at 16x the draws
    assert per_image.shape == (few["n_images"],) and per_image.mean() == pytest.approx(few["elbo_bits_per_token"])
    assert many["code_bits_per_dim"] == pytest.approx(many["elbo_bits_per_token"] * 64 / (3 * 32 * 32))


def test_reconstruction_and_speed_report_sane_numbers(tiny_run, capsys):
    out = run(capsys, "--vqgan", str(tiny_run / "vqgan.pt"), "--real", "shapes", "--features", "random", "--num", "32")
    vq = absorbing.load_vqgan(tiny_run / "vqgan.pt", "cpu")
    x = data.to_float(torch.from_numpy(shapes.make_shapes(32, 32, seed=1)[0]))  # the held-out images, seed 1
    with torch.no_grad():
        x_hat, _, codes = vq(x)
    mse = ((x - x_hat.clamp(-1, 1)) ** 2).mean((1, 2, 3))  # per image
    assert out["psnr"] == pytest.approx((10 * torch.log10(4 / mse)).mean().item(), rel=1e-5)
    assert out["codebook_used"] == len(codes.unique()) / 128
    embed = evaluate.random_network(0)[0]
    with torch.no_grad():
        real, fake = embed(x).double().numpy(), embed(x_hat.clamp(-1, 1)).double().numpy()
    fid = evaluate.frechet_distance(*evaluate.statistics(real), *evaluate.statistics(fake))
    assert out["reconstruction_fid"] == pytest.approx(fid, rel=1e-4) and fid > 0
    out = run(capsys, "--speed", "--ckpt", str(tiny_run / "absorbing.pt"), "--batch-sizes", "2", "--steps", "8", "64",
              "--bf16", "off")
    sampling, training = out["speed"][:2], out["speed"][2]
    assert [row["steps"] for row in sampling] == [8, 64] and sampling[0]["calls"] <= 8
    assert sampling[1]["flops_per_image"] == pytest.approx(
        sampling[1]["calls"] * 2 * out["parameters"] * 64, rel=0.5)  # ~ 2 x params x N per call
    assert training["tokens_per_s"] > 0 and 0 < training["mfu"] < 1


def test_bf16_and_float32_give_the_same_elbo(trained_prior, tiny_run):
    runs = [evaluate.likelihood(trained_prior / "absorbing.pt", tiny_run / "codes.npy", 64, "cpu", bf16=bf16)[0]
            for bf16 in (False, True)]
    assert abs(runs[0]["elbo_bits_per_token"] - runs[1]["elbo_bits_per_token"]) < 0.01  # the same draws, seeded


def test_a_class_conditional_prior_is_scored_with_and_without_its_labels(trained_prior, tiny_run, tmp_path):
    ckpt = trained_prior / "absorbing.pt"
    with_labels = evaluate.likelihood(ckpt, tiny_run / "codes.npy", 4, "cpu")[0]
    assert absorbing.prior_from_checkpoint(C.load_checkpoint(ckpt, "absorbing"))[0].cfg.n_classes == 3
    assert with_labels["elbo_with_class_bits_per_token"] > 0
    for name in ("codes.npy", "codes.json"):  # the same codes, copied without labels.npy
        (tmp_path / name).write_bytes((tiny_run / name).read_bytes())
    without = evaluate.likelihood(ckpt, tmp_path / "codes.npy", 4, "cpu")[0]
    assert "elbo_with_class_bits_per_token" not in without
    assert without["elbo_bits_per_token"] == pytest.approx(with_labels["elbo_bits_per_token"])


# ----------------------------------------------------------------------------- the shapes judge


def test_the_judge_passes_real_images_and_names_their_kinds():
    images, labels = shapes.make_shapes(400, 32, seed=3)
    verdicts = [shapes.judge_shape_image(img) for img in images]
    valid = [(kind, shapes.SHAPE_KINDS[label]) for (reason, kind), label in zip(verdicts, labels) if reason is None]
    assert len(valid) >= 0.99 * len(images)
    assert all(kind == truth for kind, truth in valid)
    summary = shapes.judge_shapes(images[:40])  # the summary of the same verdicts
    kinds = [kind for reason, kind in verdicts[:40] if reason is None]
    assert summary["shape_valid"] == len(kinds) / 40 and summary["shape_kinds"] == {k: kinds.count(k) for k in
                                                                                      shapes.SHAPE_KINDS}


def test_ideal_shapes_fit_the_drawn_ones_and_not_the_other_kinds():
    from PIL import Image, ImageDraw
    for kind in range(3):
        for cx, cy, r in [(10.3, 12.8, 5.0), (16.0, 15.5, 7.9)]:
            img = Image.new("1", (32, 32))
            shapes.draw_shape(ImageDraw.Draw(img), kind, cx, cy, r, 1)
            ious = [shapes.fit_iou(np.asarray(img), k) for k in range(3)]
            assert ious[kind] > 0.9 and max(ious[k] for k in range(3) if k != kind) < ious[kind] - 0.05


def drawing(figures, background=(255, 255, 255)):
    """A 32x32 image with the given (kind, cx, cy, r, colour) shapes, drawn as the data draws them."""
    from PIL import Image, ImageDraw
    img = Image.new("RGB", (32, 32), background)
    for kind, cx, cy, r, colour in figures:
        shapes.draw_shape(ImageDraw.Draw(img), kind, cx, cy, r, colour)
    return np.asarray(img)


def test_the_judges_ideal_shapes_are_the_drawn_ones_to_the_pixel():
    # one geometry serves drawing and judging: drawn large (r = 400 px, where a 1% change of a size moves an edge by
    # 4 pixels), each kind covers its ideal mask but for the rasterised rim (IoU 1 - about 1/r)
    from PIL import Image, ImageDraw
    for kind in range(3):
        img = Image.new("L", (1024, 1024), 0)
        shapes.draw_shape(ImageDraw.Draw(img), kind, 512.0, 540.0, 400.0, 255)
        drawn = np.asarray(img) > 127
        ideal = shapes.ideal_shapes(kind, np.array([512.0]), np.array([540.0]), np.array([400.0]), (1024, 1024))[0]
        assert (drawn & ideal).sum() / (drawn | ideal).sum() > 0.995, shapes.SHAPE_KINDS[kind]


def test_the_judge_rejects_broken_drawings_for_the_right_reason():
    from PIL import Image, ImageDraw
    red, blue = shapes.COLOURS[0], shapes.COLOURS[2]
    blob = Image.fromarray(drawing([]))
    ImageDraw.Draw(blob).ellipse([4, 10, 27, 20], fill=red)  # a circle squashed to half its height
    noisy = drawing([(0, 16, 16, 6, red)]).copy()
    noisy[np.random.default_rng(0).random((32, 32)) < 0.05] = (90, 90, 90)
    grey = np.full((32, 32, 3), 128, np.uint8)
    cases = {"shape": np.asarray(blob),
             "mixed kinds": drawing([(0, 8, 8, 5, red), (1, 22, 22, 5, blue)]),
             "background": noisy,
             "count": drawing([]),
             "colour": drawing([(2, 16, 16, 7, (150, 60, 200))]),  # purple is not one of the four colours
             }
    for reason, img in cases.items():
        assert shapes.judge_shape_image(img) == (reason, None), reason
    assert shapes.judge_shape_image(grey) == ("background", None)
    four = drawing([(0, 7, 7, 5, red), (0, 24, 7, 5, red), (0, 7, 24, 5, blue), (0, 24, 24, 5, blue)], (20, 20, 20))
    assert shapes.judge_shape_image(four) == ("count", None)
    assert shapes.judge_shape_image(four[:, :15]) == (None, "circle")  # cropped to two circles: valid


def test_the_box_iou_passes_drawn_shapes_and_fails_a_triangle_the_judge_accepts_without_its_apex():
    images, labels = shapes.make_shapes(200, 32, seed=3)
    valid = [(img, label) for img, label in zip(images, labels) if shapes.judge_shape_image(img)[0] is None]
    ious = [shapes.box_iou(s, label) for img, label in valid for _, s in shapes.shape_regions(img)[1]]
    assert len(ious) > 200 and min(ious) >= 0.8  # every drawn shape of every kind fills its box as it should
    img = drawing([(2, 16, 16, 8, shapes.COLOURS[0])]).copy()
    inside = img[..., 1] < 128  # the red triangle's pixels
    ys = np.nonzero(inside)[0]
    img[:ys.min() + round(0.3 * (ys.max() - ys.min() + 1))] = 255  # its top 30% cut off: a blunt apex
    (_, blunt), = shapes.shape_regions(img)[1]
    assert shapes.judge_shape_image(img) == (None, "triangle") and shapes.fit_iou(blunt, 2) > 0.85
    assert shapes.box_iou(blunt, 2) < 0.8
    whole = images[list(labels).index(2)]  # an image of the data, of triangles
    n = len(shapes.shape_regions(whole)[1])
    summary = shapes.judge_shapes([img, whole])  # of its valid images' shapes, the share with box IoU >= 0.8
    assert summary["shape_box_iou"]["triangle"] == pytest.approx(n / (n + 1))
    assert summary["shape_box_iou"]["circle"] is None  # no valid circle among them


def test_generated_images_are_judged_when_compared_with_shapes(tmp_path, capsys):
    from PIL import Image
    images, _ = shapes.make_shapes(20, 32, seed=5)
    for i, img in enumerate(images):
        Image.fromarray(img if i % 2 else np.zeros_like(img)).save(tmp_path / f"{i:02d}.png")  # half are black
    out = run(capsys, "--real", "shapes", "--fake", str(tmp_path), "--features", "random", "--num", "20",
              "--nearest-k", "3")
    assert out["shape_valid"] == 0.5 and sum(out["shape_kinds"].values()) == 10
    assert out["shape_invalid"]["count"] == 10  # a black image is a clean background with no shape


def test_crops_of_larger_images_are_every_window_and_are_judged(tmp_path, capsys):
    from PIL import Image
    images, _ = shapes.make_shapes(6, 32, seed=5)
    wide = [np.concatenate([images[2 * i], images[2 * i + 1]], 1) for i in range(3)]  # (32, 64, 3): two side by side
    for i, img in enumerate(wide):
        Image.fromarray(img).save(tmp_path / f"{i}.png")
    found = evaluate.crops(str(tmp_path), 10, 32, 4)
    by_loop = [img[y:y + 32, x:x + 32] for img in wide for y in range(0, 1, 4) for x in range(0, 33, 4)]
    assert torch.equal(found, torch.from_numpy(np.stack(by_loop)))  # 9 windows of each image, in row-major order
    assert torch.equal(evaluate.crops(str(tmp_path), 10, 32, 32), torch.from_numpy(images))  # stride 32: the six
    out = run(capsys, "--real", "shapes", "--fake", str(tmp_path), "--features", "random", "--crop-stride", "32",
              "--nearest-k", "3", "--num", "6")
    assert out["shape_judged"] == 6 and out["shape_valid"] == shapes.judge_shapes(images)["shape_valid"]
    Image.fromarray(images[0]).save(tmp_path / "small.png")
    with pytest.raises(SystemExit, match="images of one size; .* 2 sizes"):
        evaluate.crops(str(tmp_path), 10, 32, 4)


def test_inception_weights_arrive_through_torch_hub_or_fail_in_one_line(tmp_path, monkeypatch):
    from urllib.error import HTTPError

    import pytorch_fid.inception as I
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def forbidden(url, *args, **kwargs):
        raise HTTPError(url, 403, "Forbidden", None, None)
    monkeypatch.setattr(torch.hub, "download_url_to_file", forbidden)
    with pytest.raises(SystemExit, match=rf"cannot download FID's Inception weights from {I.FID_WEIGHTS_URL} "
                                         rf"\(Forbidden\).*into {tmp_path}/checkpoints.*--features random"):
        evaluate.inception_network()

    with monkeypatch.context() as m:  # the FID network's tensor shapes, without weights
        m.setattr(I, "load_state_dict_from_url", lambda *a, **k: None)
        m.setattr(torch.nn.Module, "load_state_dict", lambda *a, **k: None)
        with torch.device("meta"):
            sizes = I.fid_inception_v3().state_dict()

    def online(url, dst, *args, **kwargs):  # each tensor a single repeated value (a small file)
        torch.save({k: torch.full((), 0.5 if "running_var" in k else 0.0).expand(v.shape) for k, v in sizes.items()},
                   dst)
    monkeypatch.setattr(torch.hub, "download_url_to_file", online)
    embed, net = evaluate.inception_network()
    assert (tmp_path / "checkpoints" / I.FID_WEIGHTS_URL.split("/")[-1]).is_file()
    with torch.no_grad():
        assert embed(torch.zeros(1, 3, 32, 32)).shape == (1, 2048)


def test_at_most_n_images_of_a_folder_are_a_random_choice_not_the_first_subfolder(tmp_path):
    from PIL import Image
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        for i in range(10):
            Image.new("RGB", (32, 32)).save(tmp_path / sub / f"{i}.png")
    chosen = evaluate.load_images(str(tmp_path), 10, 32).paths
    assert len(chosen) == 10 and {p.parent.name for p in chosen} == {"a", "b"}
    assert chosen == evaluate.load_images(str(tmp_path), 10, 32).paths  # the same choice every time
    assert len(evaluate.load_images(str(tmp_path), 50, 32)) == 20


def two_colour_folder(root, n, seed):
    """A labelled folder: class red holds reddish 32 px images, class blue bluish ones, each with a random square."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(("blue", "red")):
        (root / name).mkdir(parents=True)
        for i in range(n):
            img = rng.integers(0, 90, (32, 32, 3), dtype=np.uint8)
            img[..., 2 - 2 * k] += 120
            x, y = rng.integers(0, 20, 2)
            img[y:y + 12, x:x + 12] = 255
            Image.fromarray(img).save(root / name / f"{i}.png")


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # the grey fakes are all one image
def test_the_sets_own_classifier_scores_guided_samples_and_reconstructions_beside_their_floor(tmp_path, capsys,
                                                                                          monkeypatch, tiny_run):
    two_colour_folder(tmp_path / "real", 60, seed=0)
    val = data.load_data(str(tmp_path / "real"), None, 32)[1]  # the held-out images, in their class folders
    for right, wrong in (("blue", "red"), ("red", "blue")):
        for folder in ("right", "wrong"):
            (tmp_path / folder / (right if folder == "right" else wrong)).mkdir(parents=True, exist_ok=True)
        for p in val.paths:
            if p.parent.name == right:
                shutil.copy(p, tmp_path / "right" / right / p.name)
                shutil.copy(p, tmp_path / "wrong" / wrong / p.name)  # the same image, asked of the other class
    (tmp_path / "grey").mkdir()
    for i in range(6):
        Image.new("RGB", (32, 32), (128, 128, 128)).save(tmp_path / "grey" / f"{i}.png")
    flags = ["--real", str(tmp_path / "real"), "--features", "classifier", "--classifier",
             str(tmp_path / "c.pt"), "--classifier-steps", "40", "--num", "100"]
    right = run(capsys, *flags, "--fake", str(tmp_path / "right"))
    assert "NOT FID" in right["features"] and (tmp_path / "c.pt").is_file()
    assert right["floor_accuracy"] == 1.0 and right["class_accuracy"] == 1.0  # easy classes, held-out images
    assert right["fid"] < 1e-6 < right["floor_fid"]  # the fakes are the held-out images themselves
    wrong = run(capsys, *flags, "--fake", str(tmp_path / "wrong"))
    assert wrong["class_accuracy"] == 0.0 and wrong["fid"] == pytest.approx(right["fid"], abs=1e-6)
    (tmp_path / "right" / "red").rename(tmp_path / "right" / "1")  # a folder may name its class by index
    assert run(capsys, *flags, "--fake", str(tmp_path / "right"))["class_accuracy"] == 1.0
    grey = run(capsys, *flags, "--fake", str(tmp_path / "grey"))
    assert "class_accuracy" not in grey and grey["fid"] > 10 * grey["floor_fid"]  # not guided; far from real
    assert "training the classifier" not in capsys.readouterr().err  # trained once, on the first call
    # --vqgan: the floor's training images reconstructed, scored with their own labels
    monkeypatch.setattr(evaluate, "reconstructed", lambda path, images, device: torch.stack(list(images)))
    perfect = run(capsys, *flags, "--vqgan", "perfect.pt", "--img-size", "32")
    assert perfect["fid"] == pytest.approx(perfect["floor_fid"]) and perfect["class_accuracy"] == 1.0
    monkeypatch.setattr(evaluate, "reconstructed", lambda path, images, device: torch.stack(list(images)).flip(-1))
    assert run(capsys, *flags, "--vqgan", "swaps_red_and_blue.pt", "--img-size", "32")["class_accuracy"] == 0.0
    monkeypatch.undo()
    real = run(capsys, *flags, "--vqgan", str(tiny_run / "vqgan.pt"))  # a VQGAN of 3 steps: far from its floor
    assert real["fid"] > 2 * real["floor_fid"] and 0 <= real["class_accuracy"] <= 1
    with pytest.raises(SystemExit, match="does not exist") as e:
        evaluate.main(evaluate.get_args([*flags, "--vqgan", str(tmp_path / "none.pt")]))
    assert "\n" not in str(e.value)
    with pytest.raises(SystemExit, match="trained on 32px images, these are loaded at 28px: pass --img-size 32") as e:
        evaluate.main(evaluate.get_args([*flags, "--img-size", "28", "--classifier", str(tmp_path / "c28.pt"),
                                         "--classifier-steps", "2", "--vqgan", str(tiny_run / "vqgan.pt")]))
    assert "\n" not in str(e.value)
    two_colour_folder(tmp_path / "other" / "x", 3, seed=1)
    with pytest.raises(SystemExit, match="is the classifier of") as e:  # a cached network of another set
        evaluate.main(evaluate.get_args([*flags[:1], str(tmp_path / "other" / "x"), *flags[2:], "--fake",
                                         str(tmp_path / "grey")]))
    assert "\n" not in str(e.value)
    with pytest.raises(SystemExit, match="has no classes") as e:
        evaluate.main(evaluate.get_args(["--real", str(tmp_path / "grey"), "--fake", str(tmp_path / "grey"),
                                         "--features", "classifier", "--classifier", str(tmp_path / "g.pt")]))


def test_a_standard_set_by_name_gives_its_test_images_as_the_real_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # torchvision's files go to data/NAME
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 256, (30, 28, 28)), rng.integers(0, 256, (12, 28, 28))
    write_idx(tmp_path / "copy", "train", train, np.arange(30) % 10)
    write_idx(tmp_path / "copy", "t10k", test, np.arange(12) % 10)
    real = evaluate.load_images("fashion-mnist", 8, 28, data_dir=str(tmp_path / "copy"))
    got = np.stack([real[i].numpy()[..., 0] for i in range(len(real))])
    assert len(real) == 8 and all(any(np.array_equal(g, t) for t in test) for g in got)  # test images, not train
    fake = tmp_path / "fake"
    fake.mkdir()
    for i in range(8):
        Image.fromarray(train[i].astype(np.uint8)).save(fake / f"{i}.png")
    evaluate.main(evaluate.get_args(["--real", "fashion-mnist", "--data-dir", str(tmp_path / "copy"), "--fake",
                                     str(fake), "--features", "random", "--img-size", "28", "--num", "8", "--json"]))
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["fid"] > 0


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # FID of three images
def test_images_are_compared_at_the_side_they_were_made_at(tmp_path, tiny_run, capsys):
    for name, side, n in (("real", 28, 3), ("fake", 20, 2)):  # a 28px folder, and samples of a 20px model
        (tmp_path / name).mkdir()
        for i in range(n):
            Image.fromarray(np.full((side, side + 4 * i, 3), 9 * i, np.uint8)).save(tmp_path / name / f"{i}.png")
    real, fake = ["--real", str(tmp_path / "real")], ["--fake", str(tmp_path / "fake")]

    def default(*flags):
        return evaluate.image_side(evaluate.get_args(flags))

    assert default(*real, *fake) == 20  # the samples' own side
    assert default(*real, *fake, "--crop-stride", "4") == 28  # windows of the real images' side
    assert default(*real, "--vqgan", str(tiny_run / "vqgan.pt")) == 32  # what the VQGAN knows
    assert [default("--real", r) for r in ("fashion-mnist", "mnist", "cifar10", "shapes")] == [28, 28, 32, 32]
    evaluate.main(evaluate.get_args([*real, "--fake", str(tmp_path / "real"), "--features", "random",
                                     "--nearest-k", "2", "--json"]))
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["n_real"] == 3  # 28px images, none skipped
    evaluate.main(evaluate.get_args([*real, *fake, "--features", "random", "--nearest-k", "1", "--img-size", "40",
                                     "--json"]))  # down to half the side, resized up as vqgan.py does
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["n_real"] == 3
