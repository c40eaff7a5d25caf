"""Resumable training runs: one checkpoint file per run (network, optimiser, step, random state, config).

``python -m train reconstruction`` and ``python -m train restoration`` stop and start again where they
were: a run killed between two checkpoints repeats only the steps since the last one, with the same
random draws.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def resume(ckpt: Path, net, opt, seed: int = 0) -> tuple[int, np.random.Generator]:
    """(the step to start at, the run's random generator) from ``ckpt`` when it exists (loading the
    network's and optimiser's state into ``net`` and ``opt``), else (0, a fresh generator)."""
    import torch

    rng = np.random.default_rng(seed)
    if not ckpt.exists():
        return 0, rng
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    net.load_state_dict(state["net"])
    opt.load_state_dict(state["opt"])
    rng.bit_generator.state = state["rng"]
    log.info("resumed at step %d", state["step"])
    return state["step"], rng


def save(ckpt: Path, net, opt, step: int, rng: np.random.Generator, config: dict) -> None:
    """The checkpoint :func:`resume` reads (after ``step`` steps)."""
    import torch

    torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "step": step, "rng": rng.bit_generator.state,
                "config": config}, ckpt)
