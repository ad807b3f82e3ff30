"""The shared plumbing: batch order and checkpoint loading."""
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
