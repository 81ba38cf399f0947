"""Train one backbone with several margin heads on the same budget, then score each on LFW.

    python bench/experiments.py --steps 300 --json out/experiments/results.json \\
        --plot docs/experiments_loss.png

Every head trains ``--backbone`` from scratch with the same data, seed, batch, optimizer and
schedule (each head keeps its own default ``s``/``m``), through the ordinary trainer. Each
model then embeds LFW pair crops cached once by ``bench/lfw_crops.py`` (same crop as the
training data: ``--lfw-mode center`` for ``data.kind: center_crop``, ``aligned`` for shards
from ``facesphere prepare``), with flip averaging, and is scored with the 10-fold protocol
(threshold picked on 9 folds) plus TAR at FAR 1e-3 / 1e-2 over all pairs. LFW is only scored,
never used for training or tuning. ``--jobs`` trains heads in parallel processes.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

HEADS = ("softmax", "normface", "cosface", "arcface", "sphereface", "adaface")


def run_config(args: argparse.Namespace, head: str) -> dict[str, Any]:
    """The trainer config (a plain mapping) for one head; only the head differs between runs."""
    return {
        "backbone": args.backbone,
        "embedding_dim": args.embedding_dim,
        "head": head,
        "batch_size": args.batch_size,
        "optimizer": "sgd",
        "lr": args.lr,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "warmup_steps": max(1, args.steps // 10),
        "schedule": "cosine",
        "steps": args.steps,
        "seed": args.seed,
        "device": "cpu",
        "output": str(args.out / head),
        "log_every": args.log_every,
        "checkpoint_every": 0,
        "keep_checkpoints": 1,
        "progress": False,
        "tensorboard": False,
        "data": {
            "kind": args.kind,
            "source": str(args.source),
            "max_identities": args.max_identities,
        },
        "augment": {"flip": True},
    }


def embed(model: Any, images: np.ndarray, flip: bool, batch: int = 64) -> np.ndarray:
    """Unit embeddings of uint8 crops (N, 112, 112, 3), summed with their mirror images."""
    import torch

    from facesphere.cards import TRAINING_NORMALIZATION

    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            chips = TRAINING_NORMALIZATION.apply(images[start : start + batch])
            x = torch.from_numpy(chips).permute(0, 3, 1, 2)
            emb = model(x)
            if flip:
                emb = emb + model(x.flip(3))
            out.append(torch.nn.functional.normalize(emb, dim=1))
    return torch.cat(out).numpy()


def score_lfw(model: Any, lfw: dict[str, np.ndarray], flip: bool = True) -> dict[str, float]:
    """10-fold accuracy, TAR@FAR and AUC of `model` on cached LFW crops."""
    from facesphere.eval.metrics import auc, kfold_accuracy, roc_curve, tar_at_far

    emb = embed(model, lfw["images"], flip)
    pairs = lfw["pairs"]
    scores = (emb[pairs[:, 0]] * emb[pairs[:, 1]]).sum(axis=1)
    folds = kfold_accuracy(scores, lfw["same"], lfw["fold"])
    curve = roc_curve(scores, lfw["same"])
    return {
        "lfw_accuracy": float(folds.mean),
        "lfw_std": float(folds.std),
        "tar_far_1e-3": float(tar_at_far(curve, 1e-3)),
        "tar_far_1e-2": float(tar_at_far(curve, 1e-2)),
        "auc": float(auc(curve)),
        "lfw_pairs": len(pairs),
        "lfw_images": len(lfw["images"]),
    }


def run_head(config: dict[str, Any], lfw_cache: str, threads: int, flip: bool) -> dict[str, Any]:
    """Train one head (unless its model.pt exists) and score it on LFW; runs in a worker."""
    import torch

    torch.set_num_threads(threads)
    from facesphere.models.checkpoint import load_backbone
    from facesphere.train.config import config_from_dict
    from facesphere.train.trainer import train

    output = Path(config["output"])
    wall, cpu = time.perf_counter(), time.process_time()
    trained = not (output / "model.pt").is_file()
    if trained:
        train(config_from_dict(config))
    train_wall, train_cpu = time.perf_counter() - wall, time.process_time() - cpu
    model, _ = load_backbone(output / "model.pt")
    with np.load(lfw_cache) as blob:
        lfw = {key: blob[key] for key in blob.files}
    wall, cpu = time.perf_counter(), time.process_time()
    result = score_lfw(model, lfw, flip)
    losses = read_losses(output / "metrics.csv")
    return {
        "head": config["head"],
        "steps": config["steps"],
        "trained_now": trained,
        "train_wall_s": round(train_wall, 1),
        "train_cpu_s": round(train_cpu, 1),
        "eval_wall_s": round(time.perf_counter() - wall, 1),
        "eval_cpu_s": round(time.process_time() - cpu, 1),
        "first_loss": losses[0][1] if losses else None,
        "final_loss": losses[-1][1] if losses else None,
        **result,
    }


def read_losses(metrics: Path) -> list[tuple[int, float]]:
    """(step, loss) rows of a run's metrics.csv."""
    if not metrics.is_file():
        return []
    with open(metrics, newline="") as handle:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(handle)]


def plot_losses(runs: dict[str, Path], out: Path) -> None:
    """One small PNG: each head's training loss over steps (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=80)
    for head, folder in runs.items():
        rows = read_losses(folder / "metrics.csv")
        if not rows:
            continue
        steps, losses = zip(*rows)
        axes[0].plot(steps, losses, label=head)
        axes[1].plot(steps, np.array(losses) / losses[0], label=head)
    axes[0].set(title="training loss", xlabel="step", yscale="log")
    axes[1].set(title="loss / first logged loss", xlabel="step")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def markdown_table(results: list[dict[str, Any]]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| head | final loss | LFW acc (10-fold) | TAR@FAR=1e-3 | TAR@FAR=1e-2 | AUC "
        "| train CPU s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['head']} | {r['final_loss']:.3f} | {100 * r['lfw_accuracy']:.2f} ± "
            f"{100 * r['lfw_std']:.2f} | {100 * r['tar_far_1e-3']:.1f} | "
            f"{100 * r['tar_far_1e-2']:.1f} | {r['auc']:.3f} | {r['train_cpu_s']:.0f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line arguments."""
    from facesphere.io.data import data_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--heads", default=",".join(HEADS), help="comma-separated head names")
    parser.add_argument("--backbone", default="mobilefacenet")
    parser.add_argument("--embedding-dim", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--kind", choices=("center_crop", "shards"), default="center_crop")
    parser.add_argument("--source", type=Path, default=data_dir() / "celeba299")
    parser.add_argument("--max-identities", type=int, default=None)
    parser.add_argument("--lfw-mode", choices=("center", "aligned"), default=None)
    parser.add_argument("--lfw-per-fold", type=int, default=600, help="600: all LFW pairs")
    parser.add_argument("--lfw-cache", type=Path, default=None)
    parser.add_argument("--no-flip", action="store_true", help="embed without flip averaging")
    parser.add_argument("--out", type=Path, default=Path("out/experiments"))
    parser.add_argument("--jobs", type=int, default=1, help="heads trained in parallel")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.lfw_mode is None:
        args.lfw_mode = "center" if args.kind == "center_crop" else "aligned"
    if args.lfw_cache is None:
        args.lfw_cache = Path("out") / f"lfw_{args.lfw_mode}_{args.lfw_per_fold}.npz"
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Train and score every head; print a Markdown table, write JSON and a loss plot."""
    from lfw_crops import load_or_build

    from facesphere.io.data import data_dir

    args = parse_args(argv)
    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    load_or_build(args.lfw_cache, data_dir() / "lfw", args.lfw_mode, args.lfw_per_fold)
    configs = {head: run_config(args, head) for head in heads}
    context = get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        futures = {
            head: pool.submit(run_head, config, str(args.lfw_cache), args.threads, not args.no_flip)
            for head, config in configs.items()
        }
        results = []
        for future in futures.values():
            results.append(future.result())
            print(json.dumps(results[-1]), flush=True)
    print(markdown_table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        setup = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"setup": setup, "results": results}, indent=2))
    if args.plot:
        plot_losses({head: args.out / head for head in heads}, args.plot)
    return results


if __name__ == "__main__":
    main()
