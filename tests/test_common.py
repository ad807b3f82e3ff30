"""The shared plumbing: batch order and checkpoint loading."""
import json

import pytest
import torch

import common as C


def test_batches_depend_only_on_step_and_split_over_ranks():
    full = C.batch_indices(7, 50, 8, seed=1)
    assert full == C.batch_indices(7, 50, 8, seed=1)
    halves = [C.batch_indices(7, 50, 8, 1, rank=r, world_size=2) for r in (0, 1)]
    assert halves[0] + halves[1] == full
    epoch = sum((C.batch_indices(s, 48, 8, seed=1) for s in range(6)), [])
    assert sorted(epoch) == list(range(48))  # one epoch visits every image once


def test_wrong_checkpoint_is_one_line_error(tmp_path):
    torch.save({"kind": "absorbing", "version": 1}, tmp_path / "x.pt")
    with pytest.raises(SystemExit, match="is a absorbing checkpoint.*vqgan checkpoint is needed"):
        C.load_checkpoint(tmp_path / "x.pt", "vqgan")
    with pytest.raises(SystemExit, match="does not exist"):
        C.load_checkpoint(tmp_path / "missing.pt", "vqgan")


def test_a_new_run_starts_an_empty_log_and_a_resumed_one_drops_lines_after_its_checkpoint(tmp_path):
    log = tmp_path / "log.jsonl"
    for step in range(1, 6):
        C.append_log(log, dict(step=step, loss=1.0 / step))
    C.start_log(log, 3)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3]
    C.start_log(log, 0)
    assert log.read_text() == ""


def test_learning_rate_warms_up_then_stays_or_follows_a_half_cosine():
    import math
    constant = [C.learning_rate(s, 1.0, 10, 110, "constant") for s in range(110)]
    assert constant[0] == 0.1 and constant[9] == 1.0 and set(constant[9:]) == {1.0}
    cosine = [C.learning_rate(s, 2.0, 10, 110, "cosine") for s in range(111)]
    assert cosine[:10] == [2 * c for c in constant[:10]]
    assert cosine[60] == pytest.approx(1.0) and cosine[110] == pytest.approx(0.0, abs=1e-12)
    for s in range(10, 111):  # by the formula, step by step
        assert cosine[s] == pytest.approx(1.0 + math.cos(math.pi * (s - 10) / 100))
    assert all(a >= b for a, b in zip(cosine[10:], cosine[11:]))
