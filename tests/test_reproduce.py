"""reproduce.py runs the project's commands end to end on tiny settings and prints REPRODUCTION.md's tables."""
import pytest

import common as C
import reproduce


def test_quick_mode_runs_every_comparison(tmp_path, run_script):
    out = run_script(["reproduce.py", "--quick", "--out-dir", str(tmp_path)], timeout=600).stdout
    assert "| absorbing | ELBO (bound)" in out and "| autoregressive | exact NLL" in out and "(2 seeds)" in out
    for row in ("reconstructions of held-out images", "samples, S = 64", "samples, S = 16", "the quick start's time"):
        assert f"| {row} | " in out  # the quick start
    assert (tmp_path / "samples.png").is_file()
    assert "| 64 |" in out and "| 16 |" in out and "| 0.7 |" in out  # Tab. 3 and Sec. 4.3 rows
    assert "| 3 | " in out and "| valid samples |" in out  # Fig. 5: the validation ELBO at the last step, samples
    for name, _, _ in reproduce.TAB5:
        assert f"| {name} |" in out
    assert "| 1.0 | 18 crops of 2 samples |" in out  # Fig. 4: 40x40 px samples, 3x3 windows at a stride of 4 px
    assert C.load_checkpoint(tmp_path / "tab5_noaug_noclamp_0" / "vqgan.pt", "vqgan")["args"]["diffaug"] == "off"
    assert C.load_checkpoint(tmp_path / "elbo_1" / "absorbing.pt", "absorbing")["args"]["loss"] == "elbo"
    for seed in (0, 1):
        ckpt = C.load_checkpoint(tmp_path / f"autoregressive_{seed}" / "absorbing.pt", "absorbing")
        assert ckpt["config"]["model"] == "autoregressive" and ckpt["args"]["seed"] == seed
        assert len(list((tmp_path / f"absorbing_{seed}" / "fake").glob("*.png"))) == 16


def test_missing_tokenizer_and_bad_flags(tmp_path):
    with pytest.raises(SystemExit, match="codes.npy does not exist; run python vqgan.py first"):
        reproduce.main(reproduce.get_args(["--out-dir", str(tmp_path)]))
    for flags in (["--seeds", "0"], ["--vqgan-seeds", "0"], ["--claims", "tab6"]):
        with pytest.raises(SystemExit):
            reproduce.get_args(flags)
    assert reproduce.spread([1.0, 3.0]) == "2.000 +- 1.414 (2 seeds)" and reproduce.spread([0.5], "{:.1%}") == "50.0%"
