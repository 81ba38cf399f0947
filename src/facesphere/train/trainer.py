"""The recognition training loop: backbone + Partial FC margin head, single process or
torchrun DDP, on :mod:`facesphere.train.engine` (config, schedule, RNG, optimizer, logs,
checkpoints).

Launched by ``torchrun`` (``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` set) it joins the process
group over ``env://`` (NCCL on GPUs, gloo on CPU); otherwise it runs as one process.  The
backbone is data parallel; the class centres are sharded over ranks (Partial FC), and the
backbone gradients are summed over ranks (the loss is already the global mean), so a run on
W ranks with batch B follows the same path as one process with batch W*B (up to batch-norm
statistics, which stay per rank).

Checkpoints (``checkpoints/step-NNNNNNNN/rank-R.pt``) hold the model, this rank's head shard,
optimizer, scaler, scheduler, RNG states and the data position (epoch, step in epoch, the
epoch's permutation); augmentation is seeded by sample position, so resuming reproduces the
uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from facesphere.cards import TRAINING_NORMALIZATION
from facesphere.errors import ConfigError, TrainingError
from facesphere.models.checkpoint import (
    CHECKPOINT_FORMAT,
    backbone_template,
    load_backbone_state,
    save_backbone,
    trained_card,
)
from facesphere.train.config import TrainConfig
from facesphere.train.data import (
    EpochSampler,
    Subset,
    TrainDataset,
    center_crop,
    crop_size,
    draw_pairs,
    epoch_loader,
    open_source,
    split_identities,
    to_crop,
)
from facesphere.train.engine import (
    CheckpointStore,
    CsvLog,
    LRSchedule,
    build_optimizer,
    load_checkpoint,
    require_finite,
    rng_state,
    seed_everything,
    set_rng_state,
)

log = logging.getLogger("facesphere.train")

METRIC_COLUMNS = ["step", "epoch", "loss", "lr", "images_per_s", "elapsed_s"]
VAL_COLUMNS = ["step", "accuracy", "std", "best"]


@dataclass
class TrainResult:
    """What a run did: its folder, the last step, the last logged loss, the best accuracy."""

    output: Path
    step: int
    loss: float | None
    best_accuracy: float | None


# -- distributed ---------------------------------------------------------------------------------


def _setup_distributed(config: TrainConfig) -> tuple[int, int, torch.device]:
    """Join the process group when launched by torchrun; returns (rank, world, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    want_cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    if want_cuda and not torch.cuda.is_available():
        raise ConfigError("'cuda' requested but CUDA is not available", key="device")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if want_cuda else "gloo", init_method="env://")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    if want_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def _sum_hook(state, bucket):  # unannotated: DDP rejects string annotations on hooks
    """DDP communication hook: sum (not average) the gradients over ranks."""
    future = dist.all_reduce(bucket.buffer(), async_op=True).get_future()
    return future.then(lambda f: f.value()[0])


# -- model pieces --------------------------------------------------------------------------------


def _build_head(
    config: TrainConfig, num_classes: int, world: int, device: torch.device
) -> nn.Module:
    """Partial FC over the cosine heads; a plain head (single process only) otherwise."""
    from facesphere.models.heads import MarginHead, create_head
    from facesphere.models.partial_fc import PartialFC

    probe = create_head(config.head, 4, 2, **config.head_kwargs)
    if isinstance(probe, MarginHead):
        head: nn.Module = PartialFC(
            config.head,
            config.embedding_dim,
            num_classes,
            config.sample_rate,
            **config.head_kwargs,
        )
        weight = head.head.weight
        # The same centres whatever the number of ranks: draw them all, keep this shard.
        generator = torch.Generator().manual_seed(config.seed + 17)
        full = torch.randn((num_classes, *weight.shape[1:]), generator=generator) * 0.01
        with torch.no_grad():
            weight.copy_(full[head.class_start : head.class_start + head.num_local])
    else:
        if world > 1 or config.sample_rate < 1.0:
            raise ConfigError(
                f"{config.head!r} is not cosine-based: it cannot be sharded or sampled "
                "(use one process and sample_rate 1.0)",
                key="head",
            )
        head = create_head(config.head, config.embedding_dim, num_classes, **config.head_kwargs)
    return head.to(device)


def lr_schedule(config: TrainConfig, total: int) -> LRSchedule:
    """The run's learning-rate schedule over ``total`` steps."""
    return LRSchedule(
        total=total,
        warmup=config.warmup_steps,
        shape=config.schedule,
        floor=config.min_lr / config.lr,
        poly_power=config.poly_power,
    )


def _clip(backbone: list[Tensor], head: list[Tensor], max_norm: float, world: int) -> None:
    """Clip by the global gradient norm (backbone grads are equal on all ranks; head shards
    are not, so their squared norms are summed over ranks).  No host sync."""
    grads_b = [p.grad for p in backbone if p.grad is not None]
    grads_h = [p.grad for p in head if p.grad is not None]
    zero = torch.zeros((), device=(grads_b or grads_h)[0].device)
    sq_b = sum((g.float().pow(2).sum() for g in grads_b), zero)
    sq_h = sum((g.float().pow(2).sum() for g in grads_h), zero.clone())
    if world > 1:
        dist.all_reduce(sq_h)
    coef = (max_norm / (torch.sqrt(sq_b + sq_h) + 1e-6)).clamp(max=1.0)
    for g in grads_b + grads_h:
        g.mul_(coef.to(g.dtype))


# -- validation ----------------------------------------------------------------------------------


class Validator:
    """10-fold verification accuracy (with flip) on pairs of held-out images."""

    def __init__(
        self, config: TrainConfig, val_subset: Subset | None, template: str = "standard112"
    ) -> None:
        from facesphere.eval.pairs import read_pair_list

        self.batch_size = config.val.batch_size
        if config.val.pairs:
            pairs = read_pair_list(config.val.pairs, config.val.root or ".", config.val.folds)
            paths = sorted({str(p.path_a) for p in pairs} | {str(p.path_b) for p in pairs})
            where = {p: i for i, p in enumerate(paths)}
            kind, fraction = config.data.kind, config.data.crop_fraction
            size = crop_size(template)
            self.images = np.stack([self._read_file(p, kind, fraction, size) for p in paths])
            self.pairs = np.array([(where[str(p.path_a)], where[str(p.path_b)]) for p in pairs])
            self.same = np.array([p.same for p in pairs])
            self.folds = np.array([p.fold for p in pairs])
        else:
            assert val_subset is not None
            self.pairs, self.same, self.folds = draw_pairs(
                val_subset.labels, config.val.pairs_per_fold, config.val.folds, config.seed
            )
            used = np.unique(self.pairs)
            where = np.full(len(val_subset), -1)
            where[used] = np.arange(len(used))
            self.images = np.stack([val_subset.read(int(i)) for i in used])
            self.pairs = where[self.pairs]

    @staticmethod
    def _read_file(path: str, kind: str, fraction: float, size: tuple[int, int]) -> np.ndarray:
        from facesphere.io.image import load_image

        image = load_image(path)
        return center_crop(image, fraction, size) if kind == "center_crop" else to_crop(image, size)

    @torch.no_grad()
    def embed(self, model: nn.Module, device: torch.device, channels_last: bool) -> np.ndarray:
        was_training = model.training
        model.eval()
        out = []
        for start in range(0, len(self.images), self.batch_size):
            chips = TRAINING_NORMALIZATION.apply(self.images[start : start + self.batch_size])
            x = torch.from_numpy(chips).to(device).permute(0, 3, 1, 2)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            emb = model(x).float() + model(x.flip(3)).float()
            out.append(torch.nn.functional.normalize(emb, dim=1).cpu())
        model.train(was_training)
        return torch.cat(out).numpy()

    def accuracy(
        self, model: nn.Module, device: torch.device, channels_last: bool
    ) -> tuple[float, float]:
        from facesphere.eval.metrics import kfold_accuracy

        emb = self.embed(model, device, channels_last)
        scores = (emb[self.pairs[:, 0]] * emb[self.pairs[:, 1]]).sum(axis=1)
        result = kfold_accuracy(scores, self.same, self.folds)
        return result.mean, result.std


# -- checkpoints ---------------------------------------------------------------------------------


def _save_backbone(
    path: Path, backbone: nn.Module, config: TrainConfig, step: int, extra: dict | None = None
) -> None:
    """A backbone file with the card of this run's model."""
    card = trained_card(
        config.backbone,
        config.embedding_dim,
        backbone_template(backbone),
        step,
        str(config.data.source),
    )
    save_backbone(path, backbone, card, config.backbone, config.backbone_kwargs, step, extra)


def _train_mode(model: nn.Module, freeze_bn: bool) -> None:
    """Training mode; with ``freeze_bn`` batch norms keep normalising with running stats."""
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# -- the run -------------------------------------------------------------------------------------


class _Logger:
    """metrics.csv / val.csv (rank 0) and TensorBoard when it is installed."""

    def __init__(self, output: Path, config: TrainConfig, start_step: int, enabled: bool) -> None:
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        self.metrics = CsvLog(output / "metrics.csv", METRIC_COLUMNS, start_step)
        self.val = CsvLog(output / "val.csv", VAL_COLUMNS, start_step)
        if config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(output / "tensorboard"), purge_step=start_step)
            except ImportError:
                log.warning("tensorboard is not installed: skipping TensorBoard logs")

    def metric(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.metrics.append(row)
        if self.writer is not None:
            for key in ("loss", "lr", "images_per_s"):
                self.writer.add_scalar(f"train/{key}", row[key], row["step"])

    def validation(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.val.append(row)
        if self.writer is not None:
            self.writer.add_scalar("val/accuracy", row["accuracy"], row["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def train(config: TrainConfig, stop_at: int | None = None) -> TrainResult:
    """Run (or resume) training as described by ``config``.

    ``stop_at`` ends this invocation after that global step (saving a checkpoint), as if the
    job were interrupted; the schedule still follows ``steps``/``epochs``.
    """
    from facesphere.models.backbones import create_backbone

    rank, world, device = _setup_distributed(config)
    output = config.output_dir()
    if rank == 0:
        output.mkdir(parents=True, exist_ok=True)
        (output / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    seed_everything(config.seed)
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False

    # Backbone first: its template sets the crop size of the data.
    backbone = create_backbone(
        config.backbone, embedding_dim=config.embedding_dim, **config.backbone_kwargs
    )
    template = backbone_template(backbone)

    # Data.
    source = open_source(config.data, template)
    train_set, val_set = split_identities(source, config.data, config.seed)
    sampler = EpochSampler(len(train_set), config.batch_size, world, config.seed)
    dataset = TrainDataset(train_set, config.augment, config.seed)
    spe = sampler.steps_per_epoch
    total = config.steps if config.steps is not None else spe * (config.epochs or 0)
    if rank == 0:
        (output / "identities.json").write_text(json.dumps(train_set.identities))

    # Model, head, optimizer.
    if config.init_backbone:
        state, _ = load_backbone_state(config.init_backbone)
        backbone.load_state_dict(state)
    memory = torch.channels_last if config.channels_last else torch.contiguous_format
    backbone = backbone.to(device, memory_format=memory)
    head = _build_head(config, train_set.num_classes, world, device)
    backbone_params = list(backbone.parameters())
    head_params = list(head.parameters())
    optimizer = build_optimizer(
        config.optimizer,
        backbone_params + head_params,
        config.lr,
        config.weight_decay,
        config.momentum,
        device=device,
    )
    scheduler = lr_schedule(config, total).scheduler(optimizer)
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
    model: nn.Module = backbone
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(backbone, device_ids=ids)
        model.register_comm_hook(None, _sum_hook)
    if config.compile:
        model = torch.compile(model)

    # Resume.
    step, best = 0, None
    permutation: np.ndarray | None = None
    store = CheckpointStore(output, config.keep_checkpoints)
    resume_path = store.resume_path(config.resume)
    if resume_path is not None:
        blob = load_checkpoint(resume_path, CHECKPOINT_FORMAT, rank)
        if blob["world_size"] != world:
            raise TrainingError(
                f"{resume_path} was written by {blob['world_size']} ranks; "
                "resume with the same number"
            )
        backbone.load_state_dict(blob["model"])
        head.load_state_dict(blob["head"])
        optimizer.load_state_dict(blob["optimizer"])
        scheduler.load_state_dict(blob["scheduler"])
        scaler.load_state_dict(blob["scaler"])
        set_rng_state(blob["rng"])
        step, best = int(blob["step"]), blob.get("best")
        permutation = np.asarray(blob["permutation"])
        if rank == 0:
            log.info("resumed from %s at step %d", resume_path, step)

    validator = None
    if config.val.every and rank == 0:
        validator = Validator(config, val_set, template)
    logger = _Logger(output, config, step, rank == 0)
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)

    def save(at: int, epoch: int, in_epoch: int, perm: np.ndarray) -> None:
        blob = {
            "format": CHECKPOINT_FORMAT,
            "version": 1,
            "config": config.to_dict(),
            "template": template,
            "world_size": world,
            "rank": rank,
            "step": at,
            "epoch": epoch,
            "step_in_epoch": in_epoch,
            "permutation": perm,
            "num_classes": train_set.num_classes,
            "model": _unwrap(model).state_dict(),
            "head": head.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rng_state(),
            "best": best,
        }
        store.write(at, blob, rank)
        _barrier(world)
        if rank == 0:
            store.commit(at)

    end = total if stop_at is None else min(total, stop_at)
    bar = tqdm(
        total=total,
        initial=step,
        desc="train",
        unit="step",
        disable=not config.progress or rank != 0,
        dynamic_ncols=True,
    )
    loss_sum = torch.zeros((), device=device)
    interval_steps, last_loss = 0, None
    started = tick = time.perf_counter()
    _train_mode(model, config.freeze_bn)
    head.train()
    try:
        while step < end:
            epoch, in_epoch = divmod(step, spe)
            if permutation is None or in_epoch == 0:
                permutation = sampler.permutation(epoch)
            loader = epoch_loader(
                dataset,
                sampler,
                epoch,
                in_epoch,
                rank,
                config.num_workers,
                permutation,
                pin_memory=device.type == "cuda",
            )
            for images, labels in loader:
                images = images.to(device, non_blocking=True, memory_format=memory)
                labels = labels.to(device, non_blocking=True)
                amp_ctx = (
                    torch.autocast(device.type, dtype=autocast_dtype)
                    if autocast_dtype is not None
                    else contextlib.nullcontext()
                )
                with amp_ctx:
                    embeddings = model(images)
                loss = head(embeddings.float(), labels)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if config.grad_clip:
                    scaler.unscale_(optimizer)
                    _clip(backbone_params, head_params, config.grad_clip, world)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                loss_sum += loss.detach()
                interval_steps += 1
                step += 1
                in_epoch += 1
                bar.update()
                log_due = step % config.log_every == 0 or step == end
                val_due = bool(config.val.every) and (step % config.val.every == 0 or step == total)
                checkpoint_due = (
                    bool(config.checkpoint_every) and step % config.checkpoint_every == 0
                ) or step == end
                if log_due or val_due or checkpoint_due:
                    # A diverged run stops before it logs, validates or saves anything.
                    require_finite(float(loss_sum), step)
                if log_due:
                    now = time.perf_counter()
                    last_loss = float(loss_sum) / interval_steps
                    rate = interval_steps * sampler.global_batch / max(now - tick, 1e-9)
                    lr = optimizer.param_groups[0]["lr"]
                    logger.metric(
                        {
                            "step": step,
                            "epoch": epoch,
                            "loss": f"{last_loss:.6f}",
                            "lr": f"{lr:.6g}",
                            "images_per_s": f"{rate:.1f}",
                            "elapsed_s": f"{now - started:.1f}",
                        }
                    )
                    bar.set_postfix(loss=f"{last_loss:.3f}", lr=f"{lr:.3g}", img_s=f"{rate:.0f}")
                    loss_sum.zero_()
                    interval_steps, tick = 0, now
                if val_due:
                    if validator is not None:
                        acc, std = validator.accuracy(_unwrap(model), device, config.channels_last)
                        improved = best is None or acc > best
                        if improved:
                            best = acc
                            _save_backbone(
                                output / "best.pt", _unwrap(model), config, step, {"accuracy": acc}
                            )
                        _train_mode(model, config.freeze_bn)
                        logger.validation(
                            {
                                "step": step,
                                "accuracy": f"{acc:.4f}",
                                "std": f"{std:.4f}",
                                "best": int(improved),
                            }
                        )
                        log.info("step %d: validation accuracy %.4f", step, acc)
                    if world > 1:
                        shared = torch.tensor([best if best is not None else -1.0])
                        dist.broadcast(shared, 0)
                        best = float(shared) if float(shared) >= 0 else None
                    tick = time.perf_counter()
                if checkpoint_due:
                    save(step, *divmod(step, spe), permutation)
                    tick = time.perf_counter()
                if step >= end:
                    break
        if rank == 0 and step >= total:
            _save_backbone(output / "model.pt", _unwrap(model), config, step)
    finally:
        bar.close()
        logger.close()
    return TrainResult(output, step, last_loss, best)


def main_worker(config: TrainConfig, stop_at: int | None = None) -> TrainResult:
    """Entry point used by the CLI: run, then leave the process group cleanly."""
    try:
        return train(config, stop_at)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
