"""reproduce.py runs the project's commands end to end on tiny settings and prints REPRODUCTION.md's tables."""
import contextlib
import importlib
import io
import json

import numpy as np
import pytest
from PIL import Image

import common as C
import evaluate
import reproduce
import shapes


def in_process(*argv):
    """reproduce.run, with each script's main called here instead of in a new Python process (the same command line,
    the same --json output): the pipeline's logic at a fraction of the cost of 50 interpreter start-ups."""
    script, *flags = map(str, argv)
    module = importlib.import_module(script.removesuffix(".py"))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        module.main(module.get_args(flags))
    return json.loads(printed.getvalue()) if "--json" in flags else None


def test_quick_mode_runs_every_comparison_and_prints_what_the_runs_measured(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(reproduce, "run", in_process)
    reproduce.main(reproduce.get_args(["--quick", "--out-dir", str(tmp_path)]))
    out = capsys.readouterr().out
    for row in ("reconstructions of held-out images", "samples, S = 64", "samples, S = 16", "the quick start's time"):
        assert f"| {row} | " in out  # the quick start
    assert (tmp_path / "samples.png").is_file()
    curve = out.split("Time to quality")[1].split("\n\n")[1].splitlines()[2:]  # the rows of the time-to-quality table
    assert [row.split(" | ")[0] for row in curve] == ["| 1", "| 2", "| 3"]  # a judged copy of every step (--quick)
    minutes = [float(row.split(" | ")[1]) for row in curve]
    assert minutes == sorted(minutes) and "threads" in out.split("Time to quality")[1].splitlines()[0]
    images = np.stack([np.asarray(Image.open(f)) for f in sorted((tmp_path / "curve_3").glob("*.png"))])
    assert curve[2].endswith(f" | {shapes.judge_shapes(images)['shape_valid']:.1%} |")  # what its 8 samples scored
    codes = tmp_path / "codes.npy"
    for model, what in (("absorbing", "ELBO (bound)"), ("autoregressive", "exact NLL")):  # Tab. 4: the runs' numbers
        ckpt = tmp_path / f"{model}_0" / "absorbing.pt"
        stats = evaluate.likelihood(ckpt, codes, 8, "cpu")[0]
        bits = stats["nll_bits_per_token" if model == "autoregressive" else "elbo_bits_per_token"]
        assert f"| {model} | {what} {bits:.3f} | " in out
        ckpt = C.load_checkpoint(ckpt, "absorbing")
        assert ckpt["config"]["model"] == model and ckpt["config"]["n_classes"] == 0
        assert len(list((tmp_path / f"{model}_0" / "fake").glob("*.png"))) == 16
    assert "| 64 |" in out and "| 16 |" in out and "| 0.7 |" in out  # Tab. 3 and Sec. 4.3 rows
    val = [r["val_elbo"] for r in map(json.loads, open(tmp_path / "elbo_0" / "absorbing_log.jsonl")) if "val_elbo" in r]
    assert "| 3 | " in out and f" | {val[-1]:.3f} |\n" in out  # Fig. 5: the ELBO run's validation ELBO at step 3
    assert C.load_checkpoint(tmp_path / "elbo_0" / "absorbing.pt", "absorbing")["args"]["loss"] == "elbo"
    for name, folder, _ in reproduce.TAB5:
        scores = in_process("evaluate.py", "--vqgan", tmp_path / f"tab5_{folder}_0" / "vqgan.pt", "--real", "shapes",
                            "--features", "random", "--num", 16, "--json")
        assert f"| {name} | {scores['reconstruction_fid']:.3f} | {scores['psnr']:.2f} | " in out
    assert C.load_checkpoint(tmp_path / "tab5_noaug_noclamp_0" / "vqgan.pt", "vqgan")["args"]["diffaug"] == "off"
    assert "| 1.0 | 18 crops of 2 samples |" in out  # Fig. 4: 40x40 px samples, 3x3 windows at a stride of 4 px


def test_a_command_runs_in_its_own_process_and_a_failure_is_one_line(tmp_path):
    out = reproduce.run("evaluate.py", "--real", "shapes", "--fake", "shapes", "--features", "random", "--num", 8,
                        "--json")
    assert out["shape_judged"] == 8 and out["features"].startswith("seeded random-weight CNN")
    with pytest.raises(SystemExit, match="error: evaluate.py --ckpt .* failed: .*does not exist"):
        reproduce.run("evaluate.py", "--ckpt", tmp_path / "none.pt", "--codes", tmp_path / "none.npy", "--json")


def test_missing_tokenizer_and_bad_flags(tmp_path):
    with pytest.raises(SystemExit, match="codes.npy does not exist; run python vqgan.py first"):
        reproduce.main(reproduce.get_args(["--out-dir", str(tmp_path)]))
    for flags in (["--seeds", "0"], ["--vqgan-seeds", "0"], ["--claims", "tab6"], ["--curve-every", "0"]):
        with pytest.raises(SystemExit):
            reproduce.get_args(flags)
    assert reproduce.spread([1.0, 3.0]) == "2.000 +- 1.414 (2 seeds)" and reproduce.spread([0.5], "{:.1%}") == "50.0%"
