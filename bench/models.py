"""Training throughput and memory of every backbone, and full FC vs Partial FC memory.

Part 1, backbones: for each registered backbone at its default input size, time
forward + backward steps (no optimizer step) on a batch and report images/s and the peak memory
a step needs above the weights and the input batch (gradients included):

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensor memory
  from PyTorch's caching allocator, not the cached pool or the CUDA context);
* CPU: the growth of the process's peak resident set size. The kernel's high-water mark
  (VmHWM) is reset through ``/proc/self/clear_refs`` and free heap memory is handed back with
  ``malloc_trim`` before each measurement; where that is impossible (not Linux) a thread samples
  the RSS every millisecond instead, which can miss short peaks. The table says which.

Part 2, the classification layer for very many identities (default 1M classes x 512-d, fp32):
a cosine head over all centres ("full FC") against Partial FC with ``sample_rate`` 0.1 built
the way ``facesphere.models.partial_fc`` builds it (the sampled centres are an indexed slice of
the full weight, so the weight gradient and the SGD momentum stay full size; the saving on one
device is in the logits and in the copies of the centres), plus both sharded over
``--fc-world-size`` ranks. Rows are measured when the estimate fits the memory budget and
computed otherwise; the ``source`` column says which, and measured rows show the estimate too.

    python bench/models.py --device cpu --batch 8 --steps 2 --models mobilefacenet iresnet18
    python bench/models.py --device cuda --dtype bfloat16 --json bench_models.json
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import math
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from facesphere.models.backbones import create_backbone, list_backbones
from facesphere.models.summary import count_params

MIB = 2**20
GIB = 2**30


# --------------------------------------------------------------------------- memory probes


def _proc_status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _sampled_rss_bytes() -> int:
    kib = _proc_status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    import resource  # fallback: peak so far, the best a non-Linux system offers

    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


class PeakMemory:
    """Context manager: ``peak`` = peak bytes during the block above the bytes held at entry."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0
        self.method = ""
        self._base = 0
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()
        self._max_seen = 0

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.method = "cuda max_memory_allocated"
            return self
        _malloc_trim()
        if _reset_peak_rss() and _proc_status_kib("VmHWM") is not None:
            self._base = (_proc_status_kib("VmRSS") or 0) * 1024
            self.method = "cpu peak RSS (VmHWM reset)"
            return self
        self._base = _sampled_rss_bytes()
        self._max_seen = self._base
        self.method = "cpu RSS sampled every 1 ms"
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._max_seen = max(self._max_seen, _sampled_rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self._sampler is None:
            peak = (_proc_status_kib("VmHWM") or 0) * 1024
        else:
            self._stop.set()
            self._sampler.join()
            peak = max(self._max_seen, _sampled_rss_bytes())
        self.peak = max(0, peak - self._base)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


# --------------------------------------------------------------------------- backbones


def bench_backbone(
    name: str, device: torch.device, batch: int, dtype: torch.dtype, steps: int, warmup: int
) -> dict[str, Any]:
    """Forward+backward images/s and peak step memory of one backbone."""
    model = create_backbone(name).to(device).train()
    h, w = model.input_size
    x = torch.randn(batch, 3, h, w, device=device)
    row: dict[str, Any] = {
        "name": name,
        "params": count_params(model),
        "input_size": [h, w],
        "batch": batch,
    }
    autocast = dtype != torch.float32

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=autocast):
            out = model(x)
        out.float().square().mean().backward()

    try:
        for _ in range(warmup):
            step()
        _sync(device)
        with PeakMemory(device) as memory:
            start = time.perf_counter()
            for _ in range(steps):
                step()
            _sync(device)
            elapsed = time.perf_counter() - start
    except RuntimeError as exc:
        if not _is_oom(exc):
            raise
        row["error"] = "out of memory"
        return row
    finally:
        model.zero_grad(set_to_none=True)
    row.update(
        {
            "images_per_s": batch * steps / elapsed,
            "step_ms": 1000.0 * elapsed / steps,
            "peak_mib": memory.peak / MIB,
            "memory_method": memory.method,
        }
    )
    return row


# --------------------------------------------------------------------------- FC vs Partial FC


def fc_estimate(
    num_classes: int,
    dim: int,
    batch: int,
    sample_rate: float,
    world_size: int = 1,
    bytes_per_value: int = 4,
) -> dict[str, int]:
    """Bytes a cosine classification layer holds on one rank during a training step.

    ``weight``, ``grad`` and ``momentum`` cover the rank's shard of the centres (Partial FC as
    built in facesphere keeps all three full size, the gradient of unsampled rows being zero).
    ``work`` is what the used centres cost besides: their copy when sampled, their L2-normalised
    copy saved for backward and two temporaries of the normalisation's backward. ``logits`` is
    (global batch x used centres); ``peak`` adds everything with the logits twice (they and
    their gradient), as if all were live at once: an upper bound where freed blocks are reused
    (the CUDA caching allocator), close to what RSS shows on CPU.
    """
    shard = math.ceil(num_classes / world_size)
    used = shard if sample_rate >= 1.0 else min(shard, math.ceil(sample_rate * shard))
    global_batch = batch * world_size
    centres = shard * dim * bytes_per_value
    copies = 3 if used == shard else 4
    work = copies * used * dim * bytes_per_value
    logits = global_batch * used * bytes_per_value
    parts = {
        "weight": centres,
        "grad": centres,
        "momentum": centres,
        "work": work,
        "logits": logits,
    }
    parts["peak"] = centres * 3 + work + 2 * logits
    return parts


def measure_fc(
    num_classes: int, dim: int, batch: int, sample_rate: float, device: torch.device
) -> tuple[int, str]:
    """Measured peak bytes of one training step of a cosine head (weight included), method."""
    generator = torch.Generator(device=device).manual_seed(0)
    weight = torch.randn(num_classes, dim, device=device, generator=generator).mul_(0.01)
    weight.requires_grad_(True)
    x = torch.randn(batch, dim, device=device, generator=generator)
    labels = torch.randint(num_classes, (batch,), device=device, generator=generator)
    held = weight.numel() * weight.element_size()
    with PeakMemory(device) as memory:
        if sample_rate < 1.0:
            count = math.ceil(sample_rate * num_classes)
            scores = torch.rand(num_classes, device=device, generator=generator)
            scores[labels] = 2.0  # positives always kept
            index = torch.topk(scores, count, sorted=False).indices.sort().values
            del scores
            remap = torch.full((num_classes,), -1, dtype=torch.long, device=device)
            remap[index] = torch.arange(count, device=device)
            targets = remap[labels]
            del remap
            centres = weight[index]
        else:
            targets = labels
            centres = weight
        logits = 64.0 * F.linear(F.normalize(x), F.normalize(centres))
        F.cross_entropy(logits, targets).backward()
        del logits, centres
        assert weight.grad is not None
        momentum = torch.zeros_like(weight)
        momentum.mul_(0.9).add_(weight.grad)
        with torch.no_grad():
            weight.add_(momentum, alpha=-0.1)
        _sync(device)
    del weight, momentum, x
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return held + memory.peak, memory.method


def _memory_budget(device: torch.device, cpu_max_gib: float) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.8 * free)
    available = _proc_status_kib_meminfo("MemAvailable")
    budget = int(cpu_max_gib * GIB)
    return min(budget, available // 2) if available else budget


def _proc_status_kib_meminfo(key: str) -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def bench_fc(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """Rows of the FC memory table: full FC and Partial FC, one device and sharded."""
    rows: list[dict[str, Any]] = []
    budget = _memory_budget(device, args.fc_cpu_max_gib)
    for classes in args.fc_classes:
        partial = f"Partial FC r={args.fc_sample_rate:g}"
        variants = [("full FC", 1.0, 1), (partial, args.fc_sample_rate, 1)]
        if args.fc_world_size > 1:
            variants += [
                ("full FC", 1.0, args.fc_world_size),
                (partial, args.fc_sample_rate, args.fc_world_size),
            ]
        for label, rate, world in variants:
            estimate = fc_estimate(classes, args.fc_dim, args.batch, rate, world)
            row: dict[str, Any] = {
                "head": label,
                "classes": classes,
                "dim": args.fc_dim,
                "batch_per_rank": args.batch,
                "ranks": world,
                **{f"{k}_mib": v / MIB for k, v in estimate.items()},
                "source": "computed",
            }
            wants = args.fc_measure == "always" or (
                args.fc_measure == "auto" and estimate["peak"] <= budget
            )
            if world == 1 and wants:
                try:
                    measured, method = measure_fc(classes, args.fc_dim, args.batch, rate, device)
                    row["measured_peak_mib"] = measured / MIB
                    row["source"] = f"measured ({method})"
                except RuntimeError as exc:
                    if not _is_oom(exc):
                        raise
                    row["source"] = "computed (measurement ran out of memory)"
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- output


def _print_table(headers: list[str], rows: list[list[str]], left: tuple[int, ...] = (0,)) -> None:
    """Columns padded to their widest cell; ``left`` columns left-aligned, others right."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for r in rows:
        print(
            "  ".join(
                c.ljust(w) if i in left else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ).rstrip()
        )


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_backbones(rows: list[dict[str, Any]], device: torch.device, dtype: str) -> None:
    methods = sorted({r["memory_method"] for r in rows if "memory_method" in r})
    print(f"\nBackbones: forward+backward on {device.type}, {dtype}")
    print(f"peak memory above weights and input: {', '.join(methods)}")
    table = [
        [
            r["name"],
            f"{r['params'] / 1e6:.2f}",
            "x".join(map(str, r["input_size"])),
            _fmt(r.get("images_per_s"), ".1f"),
            _fmt(r.get("step_ms"), ".0f"),
            _fmt(r.get("peak_mib"), ".0f") if "error" not in r else r["error"],
        ]
        for r in rows
    ]
    _print_table(["model", "params(M)", "input", "img/s", "step ms", "peak MiB"], table)


def print_fc(rows: list[dict[str, Any]]) -> None:
    print(
        "\nClassification layer, fp32, per rank, MiB (peak est. = weight+grad+momentum+work"
        "+2*logits; work = used centres' copies)"
    )
    table = [
        [
            r["head"],
            f"{r['classes']:,}",
            str(r["ranks"]),
            f"{r['weight_mib']:.0f}",
            f"{r['grad_mib']:.0f}",
            f"{r['momentum_mib']:.0f}",
            f"{r['work_mib']:.0f}",
            f"{r['logits_mib']:.1f}",
            f"{r['peak_mib']:.0f}",
            _fmt(r.get("measured_peak_mib"), ".0f"),
            r["source"],
        ]
        for r in rows
    ]
    headers = ["head", "classes", "ranks", "weight", "grad", "momentum", "work", "logits"]
    _print_table([*headers, "peak est.", "measured", "source"], table, left=(0, 10))


# --------------------------------------------------------------------------- main


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="bfloat16 runs the forward under torch.autocast",
    )
    parser.add_argument(
        "--models", nargs="+", default=None, help="subset of backbones (default all)"
    )
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per model")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    parser.add_argument("--skip-backbones", action="store_true")
    parser.add_argument("--skip-fc", action="store_true")
    parser.add_argument("--fc-classes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--fc-dim", type=int, default=512)
    parser.add_argument("--fc-sample-rate", type=float, default=0.1)
    parser.add_argument("--fc-world-size", type=int, default=8, help="ranks for the sharded rows")
    parser.add_argument(
        "--fc-measure",
        choices=["auto", "always", "never"],
        default="auto",
        help="auto: measure single-device rows whose estimate fits the budget",
    )
    parser.add_argument(
        "--fc-cpu-max-gib",
        type=float,
        default=4.0,
        help="CPU memory budget for FC measurements (also <= half of MemAvailable)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the tables and return (and optionally write) the results."""
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    names = args.models or list_backbones()
    unknown = sorted(set(names) - set(list_backbones()))
    if unknown:
        raise SystemExit(f"unknown backbones {unknown}; known: {', '.join(list_backbones())}")
    result: dict[str, Any] = {
        "config": {
            "device": args.device,
            "device_name": _device_name(device),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "batch": args.batch,
            "dtype": args.dtype,
            "steps": args.steps,
            "warmup": args.warmup,
        },
        "backbones": [],
        "fc_memory": [],
    }
    if not args.skip_backbones:
        for name in names:
            row = bench_backbone(name, device, args.batch, dtype, args.steps, args.warmup)
            result["backbones"].append(row)
            print(f"  {name}: {_fmt(row.get('images_per_s'), '.1f')} img/s", file=sys.stderr)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        print_backbones(result["backbones"], device, args.dtype)
    if not args.skip_fc:
        result["fc_memory"] = bench_fc(args, device)
        print_fc(result["fc_memory"])
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
