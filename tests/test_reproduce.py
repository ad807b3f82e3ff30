"""reproduce.py runs the project's commands end to end on tiny settings and prints REPRODUCTION.md's tables."""
import contextlib
import importlib
import io
import json

import numpy as np
import pytest
import torch
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
    return json.loads(printed.getvalue()) if "--json" in flags else printed.getvalue()


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
    res = json.loads((tmp_path / "results" / "mask_replace.json").read_text())  # --quick: not the repo's results/
    assert [(r["name"], r["T"]) for r in res["runs"]] == [("abs", 64), ("mr", 100), ("mo", 100)]
    mr = res["runs"][1]
    assert mr["settings"]["model"] == "mask-replace" and res["runs"][2]["settings"]["mask_share"] == 1
    assert set(mr["samples"]) == {"100 exact", "25 exact", "10 exact", "25 shortcut", "10 shortcut"}
    bf16 = C.bf16_is_fast(torch.device("cpu"))  # as evaluate.py's --bf16 auto
    stats = evaluate.likelihood(tmp_path / "mr_s0" / "absorbing.pt", codes, 8, "cpu", bf16=bf16)[0]
    assert mr["bound"] == pytest.approx(stats["vlb_bits_per_token"])  # what evaluate.py gives for that checkpoint
    assert reproduce.render_mask_replace(res) in out


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


RESULTS = sorted((reproduce.REPO / "results").glob("*.json"))
NOT_THE_MODEL = {"codes", "out_dir", "device", "bf16", "resume", "compile", "log_every", "eval_every", "val_draws",
                 "sample_every", "sample_steps", "ckpt_every", "keep_every"}  # where, how and what a run reports


@pytest.mark.parametrize("path", RESULTS, ids=[p.stem for p in RESULTS])
def test_each_results_table_in_the_documents_is_rendered_from_its_file(path):
    doc, renderer = reproduce.TABLES[path.stem]
    start, end = reproduce.block(path.stem)
    text = (reproduce.REPO / doc).read_text()
    assert start in text and end in text, f"{doc} lost the markers of results/{path.name}"
    shown = text.split(start, 1)[1].split(end, 1)[0]
    assert shown == f"\n{renderer(json.loads(path.read_text()))}\n", \
        f"{doc}'s table of results/{path.name} is not what the file gives: python reproduce.py --render"


def stale(res, name):
    """What differs between each run of a results file and what its flags give today: [] when all are current. A
    setting a run does not record is younger than the run, and its default is what the run did."""
    import absorbing
    found = []
    for r in res["runs"]:
        today = vars(absorbing.get_args(["--codes", "codes.npy", "--preset", r["settings"]["preset"], *r["flags"]]))
        today["max_steps"] = today["max_steps"] or absorbing.MAX_STEPS
        found += [f"results/{name}.json, {r['label']} seed {r['seed']}: made with {key} = {r['settings'][key]}, "
                  f"today's is {value}: rerun {res['command']} to remake the table in {reproduce.TABLES[name][0]}"
                  for key, value in today.items()
                  if key not in NOT_THE_MODEL and value is not None and r["settings"].get(key, value) != value]
    return found


@pytest.mark.parametrize("path", RESULTS, ids=[p.stem for p in RESULTS])
def test_each_results_run_was_made_with_todays_defaults_and_its_own_flags(path, monkeypatch):
    import absorbing
    res = json.loads(path.read_text())
    assert stale(res, path.stem) == []
    monkeypatch.setitem(absorbing.PRIOR_PRESETS["small"], "lr", 1e-3)  # a default changed without re-running
    monkeypatch.setattr(absorbing, "MAX_STEPS", 1234)
    assert any("made with lr = 0.004, today's is 0.001" in line for line in stale(res, path.stem))
    assert any("made with max_steps = 2500, today's is 1234" in line for line in stale(res, path.stem))


def test_render_replaces_the_table_between_the_markers_only(tmp_path):
    res = {"command": "python reproduce.py --claims mask_replace", "cpu": "a CPU", "n_samples": 2, "runs": []}
    for name, label, flags in reproduce.KINDS:
        T = 64 if name == "abs" else 100
        samples = {f"{S} {post}": dict(valid=0.5, kinds={}, fid=1.0, seconds_per_image=0.01, revised=0.0)
                   for S in (T, T // 4, round(T / 10)) for post in ("exact", "shortcut")}
        res["runs"].append(dict(name=name, label=label, seed=0, flags=[str(f) for f in flags], T=T, bound=0.7,
                                samples=samples, settings={}))
    (tmp_path / "REPRODUCTION.md").write_text("before\n" + "\n".join(reproduce.block("mask_replace")) + "\nafter\n")
    reproduce.render("mask_replace", res, repo=tmp_path)
    text = (tmp_path / "REPRODUCTION.md").read_text()
    assert text.startswith("before\n") and text.endswith("\nafter\n")
    assert "| absorbing | 64; 64, 16, 6 | 0.700 | 50.0% |" in text
    (tmp_path / "REPRODUCTION.md").write_text("no markers")
    with pytest.raises(SystemExit, match="REPRODUCTION.md has no markers for results/mask_replace.json"):
        reproduce.render("mask_replace", res, repo=tmp_path)
