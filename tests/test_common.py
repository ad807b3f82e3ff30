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


def test_orthogonalise_sends_every_singular_value_near_one_and_keeps_the_singular_vectors():
    torch.manual_seed(0)
    for A, B in [(8, 24), (24, 8), (16, 16)]:
        U, V = torch.linalg.qr(torch.randn(A, min(A, B)))[0], torch.linalg.qr(torch.randn(B, min(A, B)))[0]
        G = U @ torch.diag(torch.logspace(-1, 1, min(A, B))) @ V.T  # singular values over 2 decades
        X = C.orthogonalise(G)
        s = torch.linalg.svdvals(X)
        assert s.min() > 0.6 and s.max() < 1.25, ((A, B), s)
        assert torch.allclose(U.T @ X @ V, torch.diag(torch.diagonal(U.T @ X @ V)), atol=1e-4)  # X = U S' V^T


def test_muon_is_torchs_muon_in_bfloat16_and_close_to_it_in_float32():
    torch.manual_seed(0)
    start = [torch.randn(12, 20), torch.randn(30, 6)]
    grads = [[torch.randn_like(w) for w in start] for _ in range(4)]

    def train(make):
        params = [torch.nn.Parameter(w.clone()) for w in start]
        opt = make(params)
        for step in grads:
            for p, g in zip(params, step):
                p.grad = g.clone()
            opt.step()
        return [p.detach() for p in params]

    theirs = train(lambda ps: torch.optim.Muon(ps, lr=0.01, weight_decay=0.1, adjust_lr_fn="match_rms_adamw"))
    ours = train(lambda ps: C.Muon(ps, 0.01, 0.1, dtype=torch.bfloat16))
    ours32 = train(lambda ps: C.Muon(ps, 0.01, 0.1))
    for a, b, c, w in zip(theirs, ours, ours32, start):
        assert torch.equal(a, b)
        assert (c - a).abs().max() < 0.05 * (a - w).abs().max()  # bf16 rounding only
        assert (a - w).abs().max() > 0.01  # the weights did move
