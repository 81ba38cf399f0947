"""Model size and cost: parameter counts and FLOPs measured by ``torch.utils.flop_counter``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for param in model.parameters():
        if id(param) in seen or (trainable_only and not param.requires_grad):
            continue
        seen.add(id(param))
        total += param.numel()
    return total


def count_flops(
    model: nn.Module,
    input_size: Sequence[int] | None = None,
    batch_size: int = 1,
    device: torch.device | str | None = None,
) -> int:
    """Forward FLOPs for one batch, as counted by :class:`FlopCounterMode`.

    ``input_size`` is (width, height); by default the model's ``input_size`` attribute. Inputs
    have 3 channels. torch counts a multiply-add as 2 FLOPs, so MACs are half the result. The
    model is run once in eval mode under ``torch.no_grad`` (a model on the ``meta`` device works and
    costs nothing); its training flag is restored afterwards.
    """
    if input_size is None:
        input_size = getattr(model, "input_size", None)
        if input_size is None:
            raise ValueError("input_size is required for a model without an input_size attribute")
    if len(input_size) != 2:
        raise ValueError(f"input_size must be (width, height), got {tuple(input_size)}")
    width, height = (int(s) for s in input_size)
    shape = (3, height, width)
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros((batch_size, *shape), device=device)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
