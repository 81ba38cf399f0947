"""Partial FC: equality with the full head, sampling, and a real 2-process gloo run."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from facesphere.errors import ConfigError
from facesphere.models.heads import create_head
from facesphere.models.partial_fc import PartialFC, shard_range, sharded_cross_entropy

HEAD_KWARGS: dict[str, dict[str, object]] = {
    "arcface": {"s": 16.0, "m": 0.5},
    "cosface": {"s": 16.0, "m": 0.35},
    "combined": {"s": 16.0, "m1": 1.2, "m2": 0.2, "m3": 0.1},
    "curricularface": {"s": 16.0},
    "adaface": {"s": 16.0},
    "magface": {"s": 16.0},
    "sphereface": {"m": 3, "lambda_base": 4.0},
    "subcenter_arcface": {"s": 16.0, "k": 2},
    "normface": {"s": 8.0},
}


def _batch(
    n: int, dim: int, num_classes: int, seed: int, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=gen, dtype=dtype)
    x = x * torch.empty(n, 1, dtype=dtype).uniform_(5.0, 60.0, generator=gen)
    y = torch.randint(0, num_classes, (n,), generator=gen)
    return x, y


def _full_weight(name: str, dim: int, num_classes: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    shape = create_head(name, dim, num_classes, **HEAD_KWARGS[name]).weight.shape
    return torch.randn(shape, generator=gen, dtype=torch.float64)


def _reference(
    name: str, weight: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Loss and gradients of the ordinary (unsharded) head."""
    head = create_head(name, weight.shape[-1], weight.shape[0], **HEAD_KWARGS[name])
    head = head.to(weight.dtype)
    with torch.no_grad():
        head.weight.copy_(weight)
    x = x.clone().requires_grad_()
    loss = head(x, y)
    loss.backward()
    assert x.grad is not None and head.weight.grad is not None
    out = {"loss": loss.detach(), "x_grad": x.grad, "w_grad": head.weight.grad}
    out.update({f"buf.{k}": v.clone() for k, v in head.named_buffers()})
    return out


# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(HEAD_KWARGS))
def test_full_sample_rate_equals_head(name: str) -> None:
    dim, classes = 8, 13
    weight = _full_weight(name, dim, classes, seed=1)
    x, y = _batch(10, dim, classes, seed=2)
    ref = _reference(name, weight, x, y)

    pfc = PartialFC(name, dim, classes, sample_rate=1.0, **HEAD_KWARGS[name]).double()
    assert (pfc.class_start, pfc.num_local) == (0, classes)
    with torch.no_grad():
        pfc.weight.copy_(weight)
    xp = x.clone().requires_grad_()
    loss = pfc(xp, y)
    loss.backward()
    assert pfc.last_index is None
    torch.testing.assert_close(loss.detach(), ref["loss"], atol=1e-6, rtol=0)
    torch.testing.assert_close(xp.grad, ref["x_grad"], atol=1e-6, rtol=0)
    torch.testing.assert_close(pfc.weight.grad, ref["w_grad"], atol=1e-6, rtol=0)
    for key, value in pfc.head.named_buffers():
        torch.testing.assert_close(value, ref[f"buf.{key}"], atol=1e-6, rtol=0)


def test_full_sample_rate_equals_head_float32() -> None:
    dim, classes = 16, 40
    weight = _full_weight("arcface", dim, classes, seed=3).float()
    x, y = _batch(32, dim, classes, seed=4, dtype=torch.float32)
    ref = _reference("arcface", weight, x, y)
    pfc = PartialFC("arcface", dim, classes, **HEAD_KWARGS["arcface"])
    with torch.no_grad():
        pfc.weight.copy_(weight)
    xp = x.clone().requires_grad_()
    loss = pfc(xp, y)
    loss.backward()
    torch.testing.assert_close(loss.detach(), ref["loss"], atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(xp.grad, ref["x_grad"], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(pfc.weight.grad, ref["w_grad"], atol=1e-6, rtol=1e-5)


def test_sampling_keeps_positives_and_count() -> None:
    classes = 50
    pfc = PartialFC("arcface", 8, classes, sample_rate=0.3)
    labels = torch.tensor([3, 3, 17, 8, 49, 0, 21, 17, 33, 8])
    positives = set(labels.tolist())
    negatives = classes - len(positives)
    expected_count = len(positives) + math.floor(0.3 * negatives + 0.5)
    seen_negatives = set()
    for _ in range(3):
        index, target = pfc.sample(labels)
        assert index is not None
        assert index.numel() == expected_count
        assert torch.equal(index, torch.unique(index))  # sorted, no repeats
        assert positives <= set(index.tolist())
        assert torch.equal(index[target], labels)  # labels remapped to sampled columns
        seen_negatives |= set(index.tolist()) - positives
    assert len(seen_negatives) > expected_count - len(positives)  # negatives are resampled


def test_sampled_loss_equals_head_on_sampled_classes() -> None:
    name, dim, classes = "curricularface", 8, 30
    weight = _full_weight(name, dim, classes, seed=5)
    x, y = _batch(12, dim, classes, seed=6)
    pfc = PartialFC(name, dim, classes, sample_rate=0.25, **HEAD_KWARGS[name]).double()
    with torch.no_grad():
        pfc.weight.copy_(weight)
    xp = x.clone().requires_grad_()
    loss = pfc(xp, y)
    loss.backward()
    index = pfc.last_index
    assert index is not None
    assert index.numel() < classes
    remap = torch.full((classes,), -1, dtype=torch.long)
    remap[index] = torch.arange(index.numel())
    assert (remap[y] >= 0).all()
    ref = _reference(name, weight[index], x, remap[y])
    torch.testing.assert_close(loss.detach(), ref["loss"], atol=1e-6, rtol=0)
    torch.testing.assert_close(xp.grad, ref["x_grad"], atol=1e-6, rtol=0)
    assert pfc.weight.grad is not None
    torch.testing.assert_close(pfc.weight.grad[index], ref["w_grad"], atol=1e-6, rtol=0)
    unsampled = torch.ones(classes, dtype=torch.bool)
    unsampled[index] = False
    assert (pfc.weight.grad[unsampled] == 0).all()


def test_sharded_cross_entropy_single_process_matches_torch() -> None:
    gen = torch.Generator().manual_seed(7)
    logits = (torch.randn(6, 9, generator=gen, dtype=torch.float64) * 20).requires_grad_()
    target = torch.randint(0, 9, (6,), generator=gen)
    torch.autograd.gradcheck(lambda z: sharded_cross_entropy(z, target), (logits,))
    ref = torch.nn.functional.cross_entropy(logits, target)
    torch.testing.assert_close(sharded_cross_entropy(logits, target), ref)


def test_shard_range_covers_all_classes() -> None:
    for classes, world in [(10, 3), (7, 7), (100, 8)]:
        ranges = [shard_range(classes, r, world) for r in range(world)]
        assert ranges[0][0] == 0
        for (s0, n0), (s1, _) in itertools.pairwise(ranges):
            assert s0 + n0 == s1
        assert sum(n for _, n in ranges) == classes
        assert max(n for _, n in ranges) - min(n for _, n in ranges) <= 1


# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5, float("nan"), True])
def test_invalid_sample_rate(rate: float) -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        PartialFC("arcface", 8, 10, sample_rate=rate)


@pytest.mark.parametrize("name", ["softmax", "lsoftmax"])
def test_non_cosine_heads_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="cosine-based"):
        PartialFC(name, 8, 10)


def test_unknown_head_and_bad_labels() -> None:
    with pytest.raises(ConfigError):
        PartialFC("nope", 8, 10)
    pfc = PartialFC("arcface", 4, 5)
    with pytest.raises(ValueError, match="labels"):
        pfc(torch.randn(3, 4), torch.tensor([0, 5, 1]))


# --------------------------------------------------------------------------------------------
DIST_HEADS = ["arcface", "curricularface", "adaface", "magface", "sphereface"]
DIST_DIM, DIST_CLASSES, DIST_PER_RANK = 8, 11, 6  # 11 classes: uneven shards of 6 and 5


def _dist_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        x, y = _batch(DIST_PER_RANK * world, DIST_DIM, DIST_CLASSES, seed=11)
        rows = slice(rank * DIST_PER_RANK, (rank + 1) * DIST_PER_RANK)
        results = {}
        for i, name in enumerate(DIST_HEADS):
            weight = _full_weight(name, DIST_DIM, DIST_CLASSES, seed=20 + i)
            pfc = PartialFC(name, DIST_DIM, DIST_CLASSES, **HEAD_KWARGS[name]).double()
            start, n = pfc.class_start, pfc.num_local
            with torch.no_grad():
                pfc.weight.copy_(weight[start : start + n])
            xl = x[rows].clone().requires_grad_()
            loss = pfc(xl, y[rows])
            loss.backward()
            results[name] = {
                "loss": loss.detach(),
                "x_grad": xl.grad,
                "w_grad": pfc.weight.grad,
                "start": start,
                "n": n,
                **{f"buf.{k}": v.clone() for k, v in pfc.head.named_buffers()},
            }
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_matches_single_process(tmp_path: Path) -> None:
    world = 2
    mp.spawn(
        _dist_worker,
        args=(world, str(tmp_path / "init"), str(tmp_path)),
        nprocs=world,
        join=True,
    )
    x, y = _batch(DIST_PER_RANK * world, DIST_DIM, DIST_CLASSES, seed=11)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    assert [(p["arcface"]["start"], p["arcface"]["n"]) for p in per_rank] == [(0, 6), (6, 5)]
    for i, name in enumerate(DIST_HEADS):
        ref = _reference(name, _full_weight(name, DIST_DIM, DIST_CLASSES, seed=20 + i), x, y)
        for rank, res in enumerate(per_rank):
            got = res[name]
            rows = slice(rank * DIST_PER_RANK, (rank + 1) * DIST_PER_RANK)
            cls = slice(got["start"], got["start"] + got["n"])
            torch.testing.assert_close(got["loss"], ref["loss"], atol=1e-5, rtol=0)
            torch.testing.assert_close(got["x_grad"], ref["x_grad"][rows], atol=1e-5, rtol=0)
            torch.testing.assert_close(got["w_grad"], ref["w_grad"][cls], atol=1e-5, rtol=0)
            for key in ref:
                if key.startswith("buf."):
                    torch.testing.assert_close(got[key], ref[key], atol=1e-6, rtol=0)
