"""A training run resumed from its checkpoint goes on as if it had not stopped (train/checkpoints.py):
the network's and optimiser's state, the step and the random draws all come back."""

from __future__ import annotations

import numpy as np
import torch

from train import checkpoints


def _run(net, opt, rng, steps: int) -> list[float]:
    draws = []
    for _ in range(steps):
        x = torch.from_numpy(rng.normal(size=(4, 3)).astype(np.float32))
        loss = net(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        draws.append(float(x[0, 0]))
    return draws


def _fresh():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    return net, torch.optim.Adam(net.parameters(), lr=0.01)


def test_a_run_resumed_from_its_checkpoint_matches_one_that_never_stopped(tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    net, opt = _fresh()
    start, rng = checkpoints.resume(ckpt, net, opt)
    assert start == 0
    whole = _run(net, opt, rng, 6)
    final = {k: v.clone() for k, v in net.state_dict().items()}

    net, opt = _fresh()
    _, rng = checkpoints.resume(tmp_path / "other.pt", net, opt)
    first = _run(net, opt, rng, 4)
    checkpoints.save(tmp_path / "other.pt", net, opt, 4, rng, {"what": "test"})
    net, opt = _fresh()  # a new process: nothing but the file
    start, rng = checkpoints.resume(tmp_path / "other.pt", net, opt)
    assert start == 4
    assert first + _run(net, opt, rng, 2) == whole
    assert all(torch.equal(final[k], v) for k, v in net.state_dict().items())
