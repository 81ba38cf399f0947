"""Training throughput on synthetic data (no data loading): images/s of a full training step.

Each configuration runs forward, Partial FC margin loss, backward and an SGD step on random
tensors already on the device.  Defaults are the usual large-scale setups (iresnet50 + arcface
+ Partial FC at batch 128, mobilefacenet at batch 512, 93,431 classes as in MS1MV3); on a CPU
pass a small ``--batch``. Usage:

    python bench/train_speed.py --synthetic --classes 93431 --batch 8 --steps 3 --json out.json
    python bench/train_speed.py --synthetic --device cuda --dtype bf16 --channels-last --compile
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch

from facesphere.models.backbones import create_backbone
from facesphere.models.partial_fc import PartialFC

SETUPS = [("iresnet50", "arcface", 128, 512), ("mobilefacenet", "arcface", 512, 512)]


def measure(
    backbone_name: str,
    head_name: str,
    batch: int,
    dim: int,
    args: argparse.Namespace,
) -> dict[str, object]:
    """Images/s of ``args.steps`` timed steps after ``args.warmup`` untimed ones."""
    device = torch.device(args.device)
    memory = torch.channels_last if args.channels_last else torch.contiguous_format
    backbone = create_backbone(backbone_name, embedding_dim=dim).to(device, memory_format=memory)
    head = PartialFC(head_name, dim, args.classes, args.sample_rate).to(device)
    params = list(backbone.parameters()) + list(head.parameters())
    fused = {"fused": True} if device.type == "cuda" else {}
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4, **fused)
    model = torch.compile(backbone) if args.compile else backbone
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.dtype)
    scaler = torch.amp.GradScaler(device.type, enabled=args.dtype == "fp16")
    images = torch.randn(batch, 3, 112, 112, device=device).contiguous(memory_format=memory)
    labels = torch.randint(0, args.classes, (batch,), device=device)

    def step() -> torch.Tensor:
        ctx = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with ctx:
            embeddings = model(images)
        loss = head(embeddings.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss.detach()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync()
    elapsed = time.perf_counter() - start
    return {
        "backbone": backbone_name,
        "head": f"{head_name}+partial_fc({args.sample_rate})",
        "batch": batch,
        "classes": args.classes,
        "device": str(device),
        "dtype": args.dtype,
        "channels_last": args.channels_last,
        "compile": args.compile,
        "steps": args.steps,
        "seconds_per_step": elapsed / args.steps,
        "images_per_s": batch * args.steps / elapsed,
        "loss": float(loss),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", action="store_true", help="random tensors (the only mode)")
    parser.add_argument("--classes", type=int, default=93431)
    parser.add_argument("--sample-rate", type=float, default=0.2)
    parser.add_argument("--batch", type=int, default=None, help="one batch for every setup")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--only", choices=[s[0] for s in SETUPS], default=None)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    if not args.synthetic:
        parser.error("only --synthetic is implemented (no data loading is measured)")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name, head, batch, dim in SETUPS:
        if args.only and name != args.only:
            continue
        rows.append(measure(name, head, args.batch or batch, dim, args))
        row = rows[-1]
        print(
            f"{row['backbone']:<14} batch {row['batch']:>4}  {row['images_per_s']:9.1f} img/s"
            f"  ({row['seconds_per_step']:.3f} s/step)",
            flush=True,
        )
    print()
    print(f"{'backbone':<14} {'head':<26} {'batch':>5} {'device':<6} {'dtype':<5} {'img/s':>9}")
    for row in rows:
        print(
            f"{row['backbone']:<14} {row['head']:<26} {row['batch']:>5} {row['device']:<6} "
            f"{row['dtype']:<5} {row['images_per_s']:>9.1f}"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
