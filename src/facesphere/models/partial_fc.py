"""Partial FC (An et al., 2022): a margin-softmax head whose class centres are sharded over ranks.

Each rank of the process group owns a contiguous range of classes (its *shard*).  One step:

1. all-gather the embeddings (gradient-correct: the backward sums the gradient of the gathered
   tensor over ranks and hands each rank its own rows) and the labels;
2. keep every positive centre of the shard (a class present in the global batch) plus a uniform
   random sample of ``sample_rate`` of the remaining (negative) centres;
3. compute cosines to the sampled centres and apply the margin of any cosine-based head through
   :meth:`~facesphere.models.heads.MarginHead.apply_margin`;
4. softmax cross-entropy over all shards (row max and sum of exponentials all-reduced), with a
   hand-written backward that yields the exact gradient for the local logits.

The sampled centres are an indexed slice of the shard parameter, so their gradients land in the
right rows of ``self.head.weight`` (rows that were not sampled get zero gradient).  Without an
initialised process group everything runs in one process as a single shard.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx

from facesphere.models.heads import MarginHead, create_head
from facesphere.models.heads.base import clamp_cos, upcast

ProcessGroup = Any


def _world(group: ProcessGroup | None) -> tuple[int, int]:
    """(rank, world size) in ``group``; (0, 1) when torch.distributed is not in use."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def _all_reduce(t: Tensor, group: ProcessGroup | None, op: str = "sum") -> Tensor:
    """In-place all-reduce (``op`` is "sum" or "max"); a no-op in a single process."""
    if _world(group)[1] > 1:
        reduce_op = dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM
        dist.all_reduce(t, op=reduce_op, group=group)
    return t


def _gather_rows(t: Tensor, group: ProcessGroup | None) -> tuple[Tensor, list[int]]:
    """Concatenate every rank's ``t`` along dim 0 (sizes may differ); returns sizes too."""
    world = _world(group)[1]
    if world == 1:
        return t, [t.shape[0]]
    size = torch.tensor([t.shape[0]], device=t.device, dtype=torch.long)
    sizes_t = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes_t, size, group=group)
    sizes = [int(s) for s in sizes_t]
    longest = max(sizes)
    padded = t.new_zeros((longest, *t.shape[1:]))
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous(), group=group)
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)]), sizes


class _AllGather(torch.autograd.Function):
    """All-gather whose backward sums the gradient over ranks and returns the local slice."""

    @staticmethod
    def forward(ctx: FunctionCtx, t: Tensor, group: ProcessGroup | None) -> Tensor:
        gathered, sizes = _gather_rows(t.detach(), group)
        rank = _world(group)[0]
        ctx.group = group  # type: ignore[attr-defined]
        ctx.start = sum(sizes[:rank])  # type: ignore[attr-defined]
        ctx.size = sizes[rank]  # type: ignore[attr-defined]
        return gathered

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        grad = _all_reduce(grad.contiguous().clone(), ctx.group)  # type: ignore[attr-defined]
        start, size = ctx.start, ctx.size  # type: ignore[attr-defined]
        return grad[start : start + size], None


def all_gather_with_grad(t: Tensor, group: ProcessGroup | None = None) -> Tensor:
    """All-gather ``t`` over ``group`` along dim 0 with a gradient-correct backward."""
    if _world(group)[1] == 1:
        return t
    return _AllGather.apply(t, group)


class _ShardedCrossEntropy(torch.autograd.Function):
    """Mean softmax cross-entropy when the classes (columns) are split over ranks.

    ``target`` holds the local column of each row's class, or -1 when another rank owns it.
    Every rank returns the same global loss; the backward gives the local logits their exact
    gradient ``(softmax - onehot) / N`` (the loss is treated as computed once, not per rank).
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx, logits: Tensor, target: Tensor, group: ProcessGroup | None
    ) -> Tensor:
        logits = logits.detach()
        row_max = logits.max(dim=1).values
        _all_reduce(row_max, group, "max")
        exp = torch.exp(logits - row_max.unsqueeze(1))
        sum_exp = _all_reduce(exp.sum(dim=1), group)
        present = target >= 0
        column = target.clamp_min(0).unsqueeze(1)
        own = torch.where(present, logits.gather(1, column).squeeze(1), 0.0)
        own = _all_reduce(own, group)
        loss = (torch.log(sum_exp) + row_max - own).mean()
        ctx.save_for_backward(exp / sum_exp.unsqueeze(1), target)
        return loss

    @staticmethod
    def backward(ctx: FunctionCtx, grad_loss: Tensor) -> tuple[Tensor, None, None]:
        prob, target = ctx.saved_tensors  # type: ignore[attr-defined]
        grad = prob.clone()
        rows = torch.nonzero(target >= 0, as_tuple=True)[0]
        grad[rows, target[rows]] -= 1.0
        grad *= grad_loss / prob.shape[0]
        return grad, None, None


def sharded_cross_entropy(
    logits: Tensor, target: Tensor, group: ProcessGroup | None = None
) -> Tensor:
    """Cross-entropy over class columns split across the ranks of ``group`` (see module doc)."""
    return _ShardedCrossEntropy.apply(logits, target.long(), group)


def shard_range(num_classes: int, rank: int, world_size: int) -> tuple[int, int]:
    """(first class, number of classes) owned by ``rank``; the first ranks take the remainder."""
    base, extra = divmod(num_classes, world_size)
    start = rank * base + min(rank, extra)
    return start, base + (1 if rank < extra else 0)


class PartialFC(nn.Module):
    """Sharded, negative-sampling wrapper around a cosine-based margin head.

    Args:
        head: name of a registered cosine-based head (``softmax`` and ``lsoftmax`` are refused:
            their logits need more than cosines).
        embedding_dim: embedding size D.
        num_classes: total number of classes over all ranks.
        sample_rate: fraction in (0, 1] of the shard's negative centres sampled per step
            (rounded to the nearest integer); all positive centres are always kept.  1.0 uses
            every centre and skips sampling.
        process_group: the group to shard over; default the global group when torch.distributed
            is initialised, otherwise a single shard.
        **head_kwargs: forwarded to the head (``s``, ``m`` ...).

    The shard parameter is ``self.head.weight`` with ``num_local`` rows, holding classes
    ``class_start .. class_start + num_local - 1``.  Running statistics of the head (e.g.
    CurricularFace's ``t``) are computed from the global batch and stay equal on every rank.
    """

    def __init__(
        self,
        head: str,
        embedding_dim: int,
        num_classes: int,
        sample_rate: float = 1.0,
        *,
        process_group: ProcessGroup | None = None,
        **head_kwargs: Any,
    ) -> None:
        super().__init__()
        if (
            isinstance(sample_rate, bool)
            or not isinstance(sample_rate, numbers.Real)
            or not 0.0 < sample_rate <= 1.0
        ):
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
        self.sample_rate = float(sample_rate)
        self.process_group = process_group
        self.rank, self.world_size = _world(process_group)
        if not isinstance(num_classes, numbers.Integral) or num_classes < self.world_size:
            raise ValueError(
                f"num_classes ({num_classes!r}) must be an integer >= the number of ranks "
                f"({self.world_size})"
            )
        self.num_classes = int(num_classes)
        self.class_start, self.num_local = shard_range(num_classes, self.rank, self.world_size)
        module = create_head(head, embedding_dim, self.num_local, **head_kwargs)
        if not isinstance(module, MarginHead):
            raise ValueError(
                f"Partial FC needs a cosine-based margin head; {head!r} computes its logits "
                "from raw weights and feature norms"
            )
        self.head: MarginHead = module
        self.last_index: Tensor | None = None

    @property
    def weight(self) -> nn.Parameter:
        """This rank's shard of the class centres."""
        return self.head.weight

    def sample(self, labels: Tensor) -> tuple[Tensor | None, Tensor]:
        """Choose this step's centres from the global ``labels``.

        Returns ``(index, target)``: ``index`` are the sorted local rows of the sampled centres
        (None when every centre is used) and ``target`` the column of each label among them
        (-1 when the class belongs to another shard).
        """
        labels = labels.long()
        local = labels - self.class_start
        mine = (local >= 0) & (local < self.num_local)
        if self.sample_rate >= 1.0:
            return None, torch.where(mine, local, -1)
        positive = torch.zeros(self.num_local, dtype=torch.bool, device=labels.device)
        positive[local[mine]] = True
        negatives = torch.nonzero(~positive, as_tuple=True)[0]
        n_neg = min(negatives.numel(), math.floor(self.sample_rate * negatives.numel() + 0.5))
        order = torch.randperm(negatives.numel(), device=labels.device)[:n_neg]
        keep = positive.clone()
        keep[negatives[order]] = True
        index = torch.nonzero(keep, as_tuple=True)[0]
        column = torch.full((self.num_local,), -1, dtype=torch.long, device=labels.device)
        column[index] = torch.arange(index.numel(), device=labels.device)
        target = torch.where(mine, column[local.clamp(0, self.num_local - 1)], -1)
        return index, target

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Global mean loss for this rank's ``embeddings`` (B, D) and ``labels`` (B,)."""
        group = self.process_group
        all_embeddings = all_gather_with_grad(embeddings, group)
        all_labels = _gather_rows(labels.long(), group)[0]
        index, target = self.sample(all_labels)
        self.last_index = index
        weight = self.head.weight if index is None else self.head.weight[index]
        cos = self.head.cosine(all_embeddings, weight)
        # Each sample's own cosine lives on exactly one rank; share it (and check that).
        present = target >= 0
        column = target.clamp_min(0).unsqueeze(1)
        own = torch.where(present, clamp_cos(cos.detach()).gather(1, column).squeeze(1), 0.0)
        shared = _all_reduce(torch.stack([own, present.to(own.dtype)]), group)
        if not bool((shared[1] == 1).all()):
            raise ValueError(f"labels must lie in [0, {self.num_classes})")
        norms = upcast(all_embeddings).norm(dim=1)
        logits = self.head.apply_margin(cos, target, target_cos=shared[0], norms=norms)
        loss = sharded_cross_entropy(logits, target, group)
        extra = self.head.regularizer(embeddings)
        if extra is not None:
            # Each rank differentiates only its own samples' terms; the value is the global mean.
            local_sum = extra.sum()
            total = _all_reduce(local_sum.detach().clone(), group)
            loss = loss + (local_sum + (total - local_sum.detach())) / all_labels.numel()
        return loss
