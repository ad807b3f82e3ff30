"""Interrupted runs, numerical faults, untrusted and wrong files, bad flags, torchrun: across the scripts."""
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

import absorbing as A
import common as C
import data as D
import evaluate as E
import sample as S
import vqgan as V
from conftest import REPO, SCRIPT_ENV

# each script's run on the CPU: small, with a checkpoint every 2 steps and a log line every step
VQGAN_FLAGS = ["vqgan.py", "--n-shapes", "64", "--batch-size", "8", "--disc-start", "6", "--log-every", "1",
               "--sample-every", "1000", "--ckpt-every", "2", "--bf16", "off", "--device", "cpu"]
PRIOR_FLAGS = ["absorbing.py", "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--batch-size", "32",
               "--log-every", "1", "--eval-every", "1000", "--sample-every", "0", "--ckpt-every", "2", "--bf16", "off",
               "--device", "cpu"]


def flags_for(script, out, codes):
    if script == "vqgan":
        return [*VQGAN_FLAGS, "--out-dir", str(out)]
    return [*PRIOR_FLAGS, "--out-dir", str(out), "--codes", str(codes)]


def wait_for_step(proc, log, step, timeout=120):
    """Wait until the run's log reports `step`; the run must still be going."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        if any(json.loads(line).get("step", 0) >= step for line in lines if line.endswith("}")):
            return
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.01)
    raise AssertionError(f"step {step} not reached")


def assert_same_state(script, a, b, parts):
    ca, cb = (C.load_checkpoint(d / f"{script}.pt", script) for d in (a, b))
    assert ca["step"] == cb["step"]
    for part in parts:
        for k, v in ca[part].items():
            assert torch.equal(v, cb[part][k]), (part, k)
    for opt in ("opt", "muon") if "muon" in ca else ("opt",):  # the small prior's Muon keeps its momentum apart
        for i, state in ca[opt]["state"].items():
            for k, v in state.items():
                assert torch.equal(v, cb[opt]["state"][i][k]), (opt, i, k)


@pytest.mark.parametrize("script,steps,parts", [("vqgan", 14, ("model", "disc")), ("absorbing", 30, ("model", "ema"))])
def test_sigkill_at_a_random_step_then_resume_is_bit_identical(script, steps, parts, tiny_run, tmp_path, run_script,
                                                              start_script):
    kill_at = steps // 2  # odd: the last checkpoint is a step before, so the lines logged after it must be dropped
    whole, killed = tmp_path / f"{script}_whole", tmp_path / f"{script}_killed"
    flags = lambda out: [*flags_for(script, out, tiny_run / "codes.npy"), "--max-steps", str(steps)]  # noqa: E731
    run_script(flags(whole))
    proc = start_script(flags(killed))
    wait_for_step(proc, killed / f"{script}_log.jsonl", kill_at)
    proc.kill()
    proc.wait()
    interrupted_at = C.load_checkpoint(killed / f"{script}.pt", script)["step"]
    assert interrupted_at < steps, f"killed at step {kill_at}, but the run had finished"
    run_script([*flags(killed), "--resume"])
    assert_same_state(script, whole, killed, parts)
    logs = [list(map(json.loads, (d / f"{script}_log.jsonl").read_text().splitlines())) for d in (whole, killed)]
    resumed = [r for r in logs[1] if "settings" in r][-1]
    assert resumed["settings"]["resume"] and resumed["step"] == interrupted_at  # the resumed run logs its settings
    # the lines written after the last checkpoint were dropped, then written again
    assert [r for r in logs[0] if "settings" not in r] == [r for r in logs[1] if "settings" not in r]


@pytest.mark.parametrize("script,sig", [("vqgan", signal.SIGINT), ("absorbing", signal.SIGTERM)])
def test_sigint_and_sigterm_write_a_final_checkpoint(script, sig, tiny_run, tmp_path, start_script):
    out = tmp_path / script
    proc = start_script([*flags_for(script, out, tiny_run / "codes.npy"), "--max-steps", "100000",
                         "--ckpt-every", "100000"])
    wait_for_step(proc, out / f"{script}_log.jsonl", 3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"stopped by {sig.name} at step ") and "--resume continues" in line
    assert C.load_checkpoint(out / f"{script}.pt", script)["step"] == int(line.split("at step ")[1].split(";")[0])


def test_kill_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "absorbing.pt"
    C.save_checkpoint(dict(kind="absorbing", version=1, step=1), path)
    dying_save = f"""
import os, signal, torch, common
def save(obj, f):  # half a file written, then the process is killed
    open(f, "wb").write(b"PK" * 1000)
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = save
common.save_checkpoint(dict(kind="absorbing", version=1, step=2), {str(path)!r})
"""
    done = subprocess.run([sys.executable, "-c", dying_save], cwd=REPO, env=SCRIPT_ENV)
    assert done.returncode == -signal.SIGKILL
    assert C.load_checkpoint(path, "absorbing")["step"] == 1
    C.save_checkpoint(dict(kind="absorbing", version=1, step=3), path)  # the leftover temporary file is no obstacle
    assert C.load_checkpoint(path, "absorbing")["step"] == 3


def nan_on_call(monkeypatch, module, name, call):
    """Make module.name return NaN (in its first output) from its `call`-th call on."""
    original, calls = getattr(module, name), []

    def wrapped(*args, **kwargs):
        calls.append(1)
        out = original(*args, **kwargs)
        if len(calls) < call:
            return out
        return (out[0] * float("nan"), *out[1:]) if isinstance(out, tuple) else out * float("nan")
    monkeypatch.setattr(module, name, wrapped)


@pytest.mark.parametrize("script", ["vqgan", "absorbing"])
def test_non_finite_loss_stops_before_the_update_and_keeps_the_checkpoint(script, tiny_run, tmp_path, monkeypatch):
    module = V if script == "vqgan" else A
    nan_on_call(monkeypatch, V, "vq_loss", 5) if script == "vqgan" else \
        nan_on_call(monkeypatch, A, "training_losses", 5)
    args = module.get_args([*flags_for(script, tmp_path, tiny_run / "codes.npy")[1:], "--max-steps", "10"])
    with pytest.raises(SystemExit, match="non-finite loss or gradient at step 5; stopped before the update, .* keeps"):
        module.main(args)
    ckpt = C.load_checkpoint(tmp_path / f"{script}.pt", script)
    assert ckpt["step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


class Payload:
    """Unpickling this creates a file: what a malicious checkpoint would do, harmlessly."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def test_crafted_pickle_is_refused_and_its_payload_never_runs(tmp_path):
    marker, evil = tmp_path / "payload_ran", tmp_path / "evil.pt"
    torch.save(dict(kind="absorbing", version=1, model=Payload(str(marker))), evil)
    for load in (lambda: C.load_checkpoint(evil, "absorbing"), lambda: S.main(S.get_args(["--ckpt", str(evil)])),
                 lambda: E.main(E.get_args(["--speed", "--ckpt", str(evil)]))):
        with pytest.raises(SystemExit, match="cannot load .*evil.pt as a checkpoint") as e:
            load()
        assert "\n" not in str(e.value)
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # the check above is real: without weights_only the payload runs
    assert marker.exists()


def test_wrong_kind_and_newer_checkpoints_are_one_line_errors(tiny_run, tmp_path):
    vq, prior = str(tiny_run / "vqgan.pt"), str(tiny_run / "absorbing.pt")
    with pytest.raises(SystemExit, match="is a vqgan checkpoint .* absorbing checkpoint is needed"):
        S.main(S.get_args(["--ckpt", vq]))
    with pytest.raises(SystemExit, match="is a absorbing checkpoint .* vqgan checkpoint is needed"):
        S.main(S.get_args(["--ckpt", prior, "--vqgan", prior]))
    with pytest.raises(SystemExit, match="is a absorbing checkpoint .* vqgan checkpoint is needed"):
        E.main(E.get_args(["--vqgan", prior, "--real", "shapes", "--features", "random"]))
    newer = torch.load(prior, weights_only=True)
    newer["version"] = C.CHECKPOINT_VERSION + 1
    torch.save(newer, tmp_path / "newer.pt")
    with pytest.raises(SystemExit, match="format version 2, newer than this code's 1; update the code"):
        S.main(S.get_args(["--ckpt", str(tmp_path / "newer.pt")]))


def test_bad_image_files_are_counted_skips(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2500)  # the decompression-bomb guard, at 50x50 pixels
    folder = tmp_path / "imgs"
    folder.mkdir()
    rgb = (np.random.default_rng(0).random((48, 48, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(folder / "good.png")
    Image.new("RGB", (100, 100)).save(folder / "huge.png")  # over twice the limit: Pillow's bomb error
    (folder / "empty.jpg").write_bytes(b"")
    Image.fromarray(rgb).save(folder / "whole.jpg")
    (folder / "truncated.jpg").write_bytes((folder / "whole.jpg").read_bytes()[:300])
    Image.new("RGB", (8, 8)).save(folder / "tiny.png")
    frames = [Image.new("RGB", (40, 40), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(folder / "animated.png", save_all=True, append_images=frames[1:])
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    paths = D.scan_folder(folder, 32)
    assert sorted(p.name for p in paths) == ["animated.png", "cmyk.jpg", "good.png", "whole.jpg"]
    err = capsys.readouterr().err
    assert "skipped 1 image file(s) in" in err and "too large (the decompression-bomb guard)" in err
    assert "skipped 2 image file(s)" in err and "unreadable" in err and "smaller than 32px" in err
    assert (D.load_image(folder / "animated.png", 32) == [255, 0, 0]).all()  # the first frame
    for name in ("good.png", "huge.png"):
        (folder / name).unlink()
    with pytest.raises(SystemExit, match="no readable image .* of at least 50px"):  # half the side: resized up
        D.load_data(str(folder), None, 100)


@pytest.mark.parametrize("module,flags,message", [
    (V, ["--img-size", "30"], "not divisible by the down-sampling factor"),
    (V, ["--max-steps", "0"], "must be a positive integer"),
    (V, ["--restart-after", "-1"], "--restart-after must be >= 0"),
    (A, ["--n-embd", "30", "--n-head", "4"], "not divisible by --n-head"),
    (A, ["--batch-size", "-1"], "must be a positive integer"),
    (A, ["--lr", "-0.001"], "must be a positive number"),
    (A, ["--lr", "nan"], "must be a positive number"),
    (A, ["--keep-every", "-1"], "--keep-every must be >= 0"),
    (V, ["--lr", "0"], "must be a positive number"),
    (S, ["--sample-steps", "0"], "must be a positive integer"),
    (S, ["--temperature", "0"], "--temperature must be > 0"),
    (S, ["--temperature", "-1"], "--temperature must be > 0"),
    (E, ["--speed", "--steps", "0"], "must be a positive integer")])
def test_impossible_flags_are_rejected_by_the_parser(module, flags, message, capsys):
    with pytest.raises(SystemExit):
        module.get_args(flags)
    assert message in capsys.readouterr().err


def test_torchrun_vqgan_two_processes_match_one_process(tmp_path, run_script):
    """Before the discriminator starts the VQGAN's step has no randomness, so two processes sharing a global batch
    follow the one-process run: the first step's loss (before any update) to float precision, the second (one
    all-reduced update later) to 1e-4. Later the quantizer's nearest-code choices turn rounding differences into
    small discrete ones, so the curve agrees to 1e-2. (After the discriminator starts, its BatchNorm statistics and
    DiffAug's draws are per process, as in taming: the curves then agree in distribution only.)"""
    flags = ["vqgan.py", "--n-shapes", "64", "--batch-size", "8", "--max-steps", "5", "--disc-start", "100",
             "--log-every", "1", "--sample-every", "1000", "--bf16", "off", "--device", "cpu"]
    run_script([*flags, "--out-dir", str(tmp_path / "one")])
    run_script([*flags, "--out-dir", str(tmp_path / "two")], nproc=2)
    logs = [[json.loads(line) for line in open(tmp_path / d / "vqgan_log.jsonl")] for d in ("one", "two")]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]]  # only rank 0 writes the log
    for a, b in zip(*logs):
        for key in ("loss", "l1", "vq", "val_psnr"):
            if key in a:
                tolerance = {1: 1e-6, 2: 1e-4}.get(a["step"], 1e-2)
                assert b[key] == pytest.approx(a[key], rel=tolerance), (a["step"], key)
