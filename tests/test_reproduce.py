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
import tables
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


def test_quick_mode_runs_every_comparison_and_its_results_files_hold_what_the_runs_measured(tmp_path, monkeypatch,
                                                                                             capsys):
    monkeypatch.setattr(reproduce, "run", in_process)
    images, labels = shapes.make_shapes(200)  # a labelled folder: shapes images in a subfolder per kind
    for i, (img, k) in enumerate(zip(images, labels)):
        (tmp_path / "set" / shapes.SHAPE_KINDS[k]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(tmp_path / "set" / shapes.SHAPE_KINDS[k] / f"{i}.png")
        split = tmp_path / "icons" / ("heldout" if i % 5 == 0 else "train") / shapes.SHAPE_KINDS[k]  # a plain folder
        split.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(split / f"{i}.png")
    reproduce.main(reproduce.get_args(["--quick", "--out-dir", str(tmp_path), "--claims", *reproduce.CLAIMS,
                                       "--real-set", str(tmp_path / "set"), "--icons", str(tmp_path / "icons")]))
    out = capsys.readouterr().out
    res = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")}  # not the repo's
    assert set(res) == set(reproduce.CLAIMS) == set(tables.TABLES)
    for name, r in res.items():
        assert tables.TABLES[name][1](r) in out and "threads" in r["cpu"]  # each table, printed as rendered
    qs = res["quickstart"]
    assert [r["name"] for r in qs["runs"]] == ["vqgan", "prior"] and list(qs["seconds"]) == ["VQGAN", "prior",
                                                                                               "64 samples"]
    assert (tmp_path / "samples.png").is_file() and qs["runs"][0]["settings"]["max_steps"] == 3
    curve = qs["runs"][1]["curve"]
    assert [c["step"] for c in curve] == [1, 2, 3]  # a judged copy of every step (--quick)
    images = np.stack([np.asarray(Image.open(f)) for f in sorted((tmp_path / "curve_absorbing_000003").glob("*.png"))])
    assert len(images) == 8 and curve[2]["valid"] == shapes.judge_shapes(images)["shape_valid"]
    minutes = tables.render_quickstart(qs).split("| minutes from the start | ")[1].split(" |\n")[0].split(" | ")
    assert [float(m) for m in minutes] == sorted(map(float, minutes))
    codes = tmp_path / "codes.npy"
    for r in res["tab4"]["runs"]:  # Tab. 4: the likelihood evaluate.py gives each checkpoint, unconditional
        ckpt = tmp_path / f"uncond_{r['name']}_s0" / "absorbing.pt"
        stats = evaluate.likelihood(ckpt, codes, 8, "cpu", bf16=C.bf16_is_fast(torch.device("cpu")))[0]
        assert r["bits"] == pytest.approx(stats["nll_bits_per_token" if r["name"] == "autoregressive" else
                                                "elbo_bits_per_token"])
        ckpt = C.load_checkpoint(ckpt, "absorbing")
        assert ckpt["config"]["model"] == r["name"] and ckpt["config"]["n_classes"] == 0
        assert set(r["samples"]) == ({"64"} if r["name"] == "autoregressive" else {"64", "16"})  # T/4: departures
    elbo = res["fig5"]["runs"][1]
    val = [e["val_elbo"] for e in map(json.loads, open(tmp_path / "uncond_elbo_s0" / "absorbing_log.jsonl"))
           if "val_elbo" in e]
    assert elbo["settings"]["loss"] == "elbo" and elbo["val_elbo"]["3"] == val[-1]  # Fig. 5: its log's last value
    assert [r["settings"]["conv"] for r in res["departures"]["runs"]] == [3, 3, 3, 0, 3]
    paper = [(r["settings"]["optimizer"], r["settings"]["lr"], r["settings"]["lr_decay"])
             for r in res["departures"]["runs"] if r["name"].startswith("adamw")]
    assert paper == [("adamw", 4e-3, "cosine"), ("adamw", 2e-4, "constant")]  # at Muon's rate, at the paper's
    assert res["departures"]["runs"][0] == res["tab4"]["runs"][0]  # one absorbing run, measured once
    assert res["tab3"]["runs"][0]["samples"]["16 paper"]["flags"] == ["--sample-steps", "16", *tables.PAPER_SAMPLER]
    assert set(res["tab3"]["runs"][0]["samples"]) == {f"{S} {name}" for S in (64, 16) for name, _ in tables.SAMPLERS}
    asked = res["guidance"]["runs"][0]["samples"]["2 square"]
    assert asked["flags"] == ["--class", "square", "--guidance", "2"] and asked["judged"] == 6  # PRDC needs 6
    assert res["fig4"]["runs"][0]["samples"]["0.7 windows"]["judged"] == 18  # 40x40 px samples: 3x3 windows each
    for r in res["tab5"]["runs"]:
        scores = in_process("evaluate.py", "--vqgan", tmp_path / f"tab5_{r['name']}_s0" / "vqgan.pt", "--real",
                            "shapes", "--features", "random", "--num", 16, "--json")
        assert r["reconstruction_fid"] == scores["reconstruction_fid"] and r["valid"] == scores["shape_valid"]
    assert [r["settings"]["diffaug"] for r in res["tab5"]["runs"]][:3] == ["on", "on", "off"]
    mr = res["mask_replace"]
    assert [(r["name"], r["T"]) for r in mr["runs"]] == [("abs", 64), ("mr", 100), ("mo", 100)]
    assert mr["runs"][1]["settings"]["model"] == "mask-replace" and mr["runs"][2]["settings"]["mask_share"] == 1
    assert set(mr["runs"][1]["samples"]) == {"100 exact", "25 exact", "10 exact", "25 shortcut", "10 shortcut"}
    stats = evaluate.likelihood(tmp_path / "mr_s0" / "absorbing.pt", codes, 8, "cpu",
                                bf16=C.bf16_is_fast(torch.device("cpu")))[0]  # as evaluate.py's --bf16 auto
    assert mr["runs"][1]["bound"] == pytest.approx(stats["vlb_bits_per_token"])
    real = res["real_set"]  # the README's real set: its classes from the folders, its guided samples scored
    assert real["classes"] == list(shapes.SHAPE_KINDS) and set(real["runs"][1]["samples"]) == {"1", "2"}
    guided = real["runs"][1]["samples"]["2"]
    scores = in_process("evaluate.py", "--real", tmp_path / "set", "--img-size", 32, "--num", 6, "--fake",
                        tmp_path / "real_set" / "fake_w2", "--features", "classifier", "--classifier",
                        tmp_path / "classifier_set.pt", "--json")  # the cached classifier, the same images
    assert guided["class_accuracy"] == scores["class_accuracy"] and guided["fid"] == scores["fid"]
    assert guided["features"].startswith("a small CNN trained on the real")
    rebuilt = real["runs"][0]["reconstructions"]  # the VQGAN's reconstructions of the floor's own training images
    assert rebuilt["floor_fid"] == guided["floor_fid"] and 0 <= rebuilt["class_accuracy"] <= 1
    assert len(list((tmp_path / "real_set" / "fake_w2" / "square").glob("*.png"))) == 0  # folders by class index
    assert len(list((tmp_path / "real_set" / "fake_w2" / "1").glob("*.png"))) == 2
    assert Image.open(tmp_path / "set_classes.png").size == (2 * 33 + 1, 3 * 33 + 1)  # a row of 2 per class
    icons = res["icons"]  # the plain folder: two priors, their samples and the floor against the held-out images
    assert icons["n_heldout"] == 40 and [r["name"] for r in icons["runs"]] == ["vqgan", "abs", "mr"]
    assert [r["bound_name"] for r in icons["runs"][1:]] == ["ELBO", "VLB"] and list(icons["seconds"])[0] == "VQGAN"
    for r in icons["runs"][1:]:
        scores = in_process("evaluate.py", "--real", tmp_path / "icons" / "heldout", "--features", "random", "--num",
                            40, "--fake", tmp_path / "icons" / r["name"] / "samples", "--json")
        assert r["samples"]["fid"] == scores["fid"] and len(list((tmp_path / "icons" / r["name"] / "samples")
                                                                .glob("*.png"))) == 40
    stats = evaluate.likelihood(tmp_path / "icons" / "abs" / "absorbing.pt", tmp_path / "icons" / "codes.npy", 8,
                                "cpu", bf16=C.bf16_is_fast(torch.device("cpu")))[0]
    assert icons["runs"][1]["bound"] == pytest.approx(stats["elbo_bits_per_token"])
    floor = in_process("evaluate.py", "--real", tmp_path / "icons" / "heldout", "--features", "random", "--num", 40,
                       "--fake", tmp_path / "icons" / "train", "--json")
    assert icons["floor"]["fid"] == floor["fid"] and (tmp_path / "icons_samples.png").is_file()
    with pytest.raises(SystemExit, match="already holds a VQGAN; the quick start is timed from nothing"):
        reproduce.main(reproduce.get_args(["--quick", "--out-dir", str(tmp_path), "--claims", "quickstart"]))
    with pytest.raises(SystemExit, match="real_set already holds a VQGAN; the run is timed from nothing"):
        reproduce.main(reproduce.get_args(["--quick", "--out-dir", str(tmp_path), "--claims", "real_set"]))
    with pytest.raises(SystemExit, match="needs train/ and heldout/ folders"):
        reproduce.main(reproduce.get_args(["--quick", "--out-dir", str(tmp_path / "new"), "--claims", "icons",
                                           "--icons", str(tmp_path / "set")]))


def test_a_command_runs_in_its_own_process_and_a_failure_is_one_line(tmp_path):
    out = reproduce.run("evaluate.py", "--real", "shapes", "--fake", "shapes", "--features", "random", "--num", 8,
                        "--json")
    assert out["shape_judged"] == 8 and out["features"].startswith("seeded random-weight CNN")
    with pytest.raises(SystemExit, match="error: evaluate.py --ckpt .* failed: .*does not exist"):
        reproduce.run("evaluate.py", "--ckpt", tmp_path / "none.pt", "--codes", tmp_path / "none.npy", "--json")


def test_missing_tokenizer_and_bad_flags(tmp_path):
    with pytest.raises(SystemExit, match="codes.npy does not exist; run python vqgan.py first"):
        reproduce.main(reproduce.get_args(["--out-dir", str(tmp_path)]))
    for flags in (["--seeds", "0"], ["--vqgan-seeds", "0"], ["--claims", "tab6"], ["--curve-every", "0"],
                  ["--prior-steps", "0"], ["--per-class", "1"]):
        with pytest.raises(SystemExit):
            reproduce.get_args(flags)
    assert tables.cell([1.0, 3.0]) == "2.000 +- 1.414" and tables.cell([0.5], "{:.1%}") == "50.0%"


def test_a_quick_start_timed_on_another_cpu_is_kept_beside_the_new_time_when_the_recipe_is_the_same(monkeypatch):
    def runs(where, lr):  # bf16: what --bf16 auto gave on each CPU
        return [dict(settings=dict(out_dir=where, max_steps=1200, ch_mult=[1, 2] if where == "/a" else (1, 2))),
                dict(settings=dict(out_dir=where, codes=where, lr=lr, bf16=where == "/a"))]
    times = {"VQGAN": 60.0, "prior": 120.0, "64 samples": 6.0}
    previous = dict(cpu="CPU A", seconds=times, timed_elsewhere=[dict(cpu="CPU B", seconds=times)], runs=runs("/a", 1))
    monkeypatch.setattr(reproduce, "cpu_description", lambda: "CPU B")
    # the previous file's settings read back from JSON (lists), this run's from its checkpoints (tuples)
    assert reproduce.times_elsewhere(previous, runs("/b", 1)) == [dict(cpu="CPU A", seconds=times)]  # B: this run's
    assert reproduce.times_elsewhere(previous, runs("/b", 2)) == []  # another recipe: its times say nothing of this
    res = json.loads((tables.REPO / "results" / "quickstart.json").read_text())
    res["timed_elsewhere"] = [dict(cpu="CPU A", seconds=times)]
    assert "; 3.1 minutes on CPU A: VQGAN 1.0, prior 2.0." in tables.render_quickstart(res)


RESULTS = sorted((tables.REPO / "results").glob("*.json"))
NOT_THE_MODEL = {"codes", "out_dir", "device", "bf16", "resume", "compile", "log_every", "eval_every", "val_draws",
                 "sample_every", "sample_steps", "ckpt_every", "keep_every", "data_dir", "num_workers",
                 "encode_only"}  # where, how and what a run reports


@pytest.mark.parametrize("path", RESULTS, ids=[p.stem for p in RESULTS])
def test_each_results_table_in_the_documents_is_rendered_from_its_file(path):
    doc, renderer = tables.TABLES[path.stem]
    start, end = tables.block(path.stem)
    text = (tables.REPO / doc).read_text()
    assert start in text and end in text, f"{doc} lost the markers of results/{path.name}"
    shown = text.split(start, 1)[1].split(end, 1)[0]
    assert shown == f"\n{renderer(json.loads(path.read_text()))}\n", \
        f"{doc}'s table of results/{path.name} is not what the file gives: python reproduce.py --render"


def stale(res, name):
    """What differs between each run of a results file and what its flags give today: [] when all are current. A
    setting a run does not record is younger than the run, and its default is what the run did."""
    import absorbing
    import vqgan
    found = []
    for r in res["runs"]:
        if r.get("script") == "vqgan.py":
            today = vars(vqgan.get_args(r["flags"]))
        else:
            today = vars(absorbing.get_args(["--codes", "codes.npy", "--preset", r["settings"]["preset"], *r["flags"]]))
        today = json.loads(json.dumps(today))  # tuples as the file's lists
        found += [f"results/{name}.json, {r['label']} seed {r['seed']}: made with {key} = {r['settings'][key]}, "
                  f"today's is {value}: rerun {res['command']} to remake the table in {tables.TABLES[name][0]}"
                  for key, value in today.items()
                  if key not in NOT_THE_MODEL and value is not None and r["settings"].get(key, value) != value]
    return found


@pytest.mark.parametrize("path", RESULTS, ids=[p.stem for p in RESULTS])
def test_each_table_names_the_cpu_it_was_measured_on(path):
    res = json.loads(path.read_text())  # bf16 where the CPU has it: the same recipe gives other weights elsewhere
    assert res["cpu"] in tables.TABLES[path.stem][1](res)


@pytest.mark.parametrize("path", RESULTS, ids=[p.stem for p in RESULTS])
def test_each_results_run_was_made_with_todays_defaults_and_its_own_flags(path, monkeypatch):
    import absorbing
    import vqgan
    res = json.loads(path.read_text())
    assert stale(res, path.stem) == []
    monkeypatch.setitem(absorbing.PRIOR_PRESETS["small"], "lr", 1e-3)  # defaults changed without re-running
    for preset in vqgan.PRESETS.values():  # the small presets, Fashion-MNIST's a copy of SMALL with its own size
        if preset["disc_start"] == 1000:
            monkeypatch.setitem(preset, "disc_start", 999)
    found = stale(res, path.stem)
    for r in res["runs"]:
        vq = r.get("script") == "vqgan.py"
        changed = "disc_start = 1000, today's is 999" if vq else "lr = 0.004, today's is 0.001"
        told = f"{r['label']} seed {r['seed']}: made with {changed}: rerun {res['command']}"
        assert ("--disc-start" if vq else "--lr") in r["flags"] or any(told in line for line in found)


def test_render_replaces_the_table_between_the_markers_only(tmp_path):
    res = {"command": "python reproduce.py --claims mask_replace", "cpu": "a CPU", "n_samples": 2, "runs": []}
    for name, label, flags in tables.KINDS:
        T = 64 if name == "abs" else 100
        samples = {f"{S} {post}": dict(valid=0.5, kinds={}, fid=1.0, seconds_per_image=0.01, revised=0.0)
                   for S in (T, T // 4, round(T / 10)) for post in ("exact", "shortcut")}
        res["runs"].append(dict(name=name, label=label, seed=0, flags=[str(f) for f in flags], T=T, bound=0.7,
                                samples=samples, settings={}))
    (tmp_path / "REPRODUCTION.md").write_text("before\n" + "\n".join(tables.block("mask_replace")) + "\nafter\n")
    tables.render("mask_replace", res, repo=tmp_path)
    text = (tmp_path / "REPRODUCTION.md").read_text()
    assert text.startswith("before\n") and text.endswith("\nafter\n")
    assert "| absorbing | 64; 64, 16, 6 | 0.700 | 50.0% |" in text
    (tmp_path / "REPRODUCTION.md").write_text("no markers")
    with pytest.raises(SystemExit, match="REPRODUCTION.md has no markers for results/mask_replace.json"):
        tables.render("mask_replace", res, repo=tmp_path)


def test_comparisons_sample_at_temperature_1_unless_told_and_the_quick_start_at_sample_pys_default(monkeypatch):
    import sample
    calls = []

    def fake_run(*argv):
        calls.append([str(a) for a in argv])
        if argv[0] == "sample.py":
            return "sampled (0.01 s per image)"
        return dict(shape_valid=1.0, shape_kinds={}, shape_invalid={}, shape_judged=1, fid=0.0, precision=1.0,
                    recall=1.0)

    monkeypatch.setattr(reproduce, "run", fake_run)
    reproduce.judged("p.pt", "out", 2, "--sample-steps", 64)
    reproduce.judged("p.pt", "out", 2, "--temperature", 0.7)
    temperatures = [c[c.index("--temperature") + 1:] for c in calls if c[0] == "sample.py"]
    assert [t[0] for t in temperatures] == ["1.0", "0.7"] and "--temperature" not in temperatures[1]
    assert sample.get_args([]).temperature == sample.TEMPERATURE == reproduce.TEMPERATURE
