"""Speed of the torch ports of dlib's models against dlib itself.

Embedding: faces/s for dlib's ResNet (one chip per call), torch at batch 1 and 32, and
onnxruntime at batch 32. Detection: images/s for dlib's CNN (MMOD) detector and the torch port
on 640x480 photos composed from the shared LFW images. Usage:

    python bench/speed.py --images 4 --json speed.json [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from facesphere.io.data import data_dir

NAMES = [
    "Aaron_Eckhart",
    "George_W_Bush",
    "Colin_Powell",
    "Tony_Blair",
    "Serena_Williams",
    "Gerhard_Schroeder",
    "Donald_Rumsfeld",
    "Jean_Chretien",
]


def _photo(name: str) -> np.ndarray:
    root = data_dir() / "lfw" / "images" / name
    return np.asarray(Image.open(root / f"{name}_0001.jpg").convert("RGB"))


def scenes(n: int) -> list[np.ndarray]:
    """`n` 640x480 scenes: an upscaled photo, or three photos pasted on a canvas."""
    out = []
    for i in range(n):
        if i % 2 == 0:
            img = Image.fromarray(_photo(NAMES[i % len(NAMES)])).resize((640, 480))
            out.append(np.asarray(img))
        else:
            canvas = np.full((480, 640, 3), 100, np.uint8)
            for j in range(3):
                y, x = (j % 2) * 230, j * 195
                canvas[y : y + 250, x : x + 250] = _photo(NAMES[(i + j) % len(NAMES)])
            out.append(canvas)
    return out


def chips(n: int) -> np.ndarray:
    """`n` 150x150 face chips (resized LFW centre crops)."""
    out = []
    for i in range(n):
        img = Image.fromarray(_photo(NAMES[i % len(NAMES)])).crop((50, 50, 200, 200))
        out.append(np.asarray(img))
    return np.stack(out)


def rate(fn: Callable[[], object], count: int, repeat: int = 1) -> float:
    """Items per second of `fn()` processing `count` items (best of `repeat` after a warm-up)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return count / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--images", type=int, default=4, help="640x480 images for detection")
    parser.add_argument("--faces", type=int, default=64, help="chips for batched embedding")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()

    import torch

    from facesphere.detect.mmod import MMODDetector
    from facesphere.export import export_model
    from facesphere.pretrained.cards import DLIB_MMOD, DLIB_RESNET
    from facesphere.pretrained.files import card_file
    from facesphere.recognize.dlib_resnet import DlibResNetRecognizer

    if args.threads:
        torch.set_num_threads(args.threads)
    faces = chips(args.faces)
    few = faces[:8]
    results: dict[str, dict[str, float]] = {"embed_faces_per_s": {}, "detect_images_per_s": {}}
    emb = results["embed_faces_per_s"]

    if args.device == "cpu":  # dlib (and our ONNX run) are CPU-only
        import dlib
        import onnxruntime as ort

        rec = dlib.face_recognition_model_v1(str(card_file(DLIB_RESNET)))
        emb["dlib"] = rate(lambda: [rec.compute_face_descriptor(c) for c in few], len(few))
    t1 = DlibResNetRecognizer(device=args.device, batch_size=1)
    emb["torch_b1"] = rate(lambda: t1.embed_chips(few), len(few))
    t32 = DlibResNetRecognizer(device=args.device, batch_size=32)
    emb["torch_b32"] = rate(lambda: t32.embed_chips(faces), len(faces))
    if args.device == "cpu":
        with tempfile.TemporaryDirectory() as tmp:
            path = export_model("dlib-resnet", Path(tmp) / "resnet.onnx")
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        x = faces.transpose(0, 3, 1, 2).astype(np.float32)

        def run_onnx() -> None:
            for s in range(0, len(x), 32):
                sess.run(None, {"input": x[s : s + 32]})

        emb["onnx_b32"] = rate(run_onnx, len(faces))

    imgs = scenes(args.images)
    det = results["detect_images_per_s"]
    if args.device == "cpu":
        cnn = dlib.cnn_face_detection_model_v1(str(card_file(DLIB_MMOD)))
        det["dlib_cnn"] = rate(lambda: [cnn(im, 0) for im in imgs[:2]], min(2, len(imgs)))
    tdet = MMODDetector(device=args.device)
    det["torch_cnn"] = rate(lambda: [tdet.detect(im) for im in imgs], len(imgs))

    print(f"device={args.device} torch_threads={torch.get_num_threads()}")
    for group, values in results.items():
        print(group)
        for key, value in values.items():
            print(f"  {key:<10} {value:10.2f}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
