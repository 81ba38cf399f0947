"""Batch against single-image requests through the REST service over loopback.

Starts `facesphere serve` on 127.0.0.1 (a free port, a temporary FACESPHERE_HOME with one API
key), then embeds the same LFW photos (250x250 JPEG) from one client: one `POST /v1/embed`
per photo, then `POST /v1/embed/batch` with `--batch` photos per request (multipart, and the
same as base64 JSON), and prints images/s per way; it also checks that every way gives the
same embeddings. Usage:

    python bench/serve_batch.py --images 32 --batch 8 16 --json serve_batch.json
"""

from __future__ import annotations

import argparse
import base64
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from report import write_report  # bench/report.py

from facesphere.io.data import data_dir
from facesphere.serve.keys import KeyStore
from facesphere.serve.process import ServerProcess


def photos(count: int) -> list[bytes]:
    """`count` LFW photos, the first of each person in name order."""
    folders = sorted(p for p in (data_dir() / "lfw" / "images").iterdir() if p.is_dir())
    found = [sorted(folder.glob("*.jpg"))[0].read_bytes() for folder in folders[:count]]
    if len(found) < count:
        raise SystemExit(f"only {len(found)} LFW people found")
    return found


def timed(http: httpx.Client, images: list[bytes], way: str, batch: int) -> dict[str, Any]:
    """Embed `images` one way; the elapsed time and each image's faces."""
    faces: list[list[dict[str, Any]]] = []
    begin = time.perf_counter()
    if way == "single":
        for image in images:
            response = http.post("/v1/embed", files={"image": ("a.jpg", image)})
            response.raise_for_status()
            faces.append(response.json()["faces"])
    else:
        for start in range(0, len(images), batch):
            chunk = images[start : start + batch]
            if way == "batch multipart":
                response = http.post(
                    "/v1/embed/batch", files=[("images", ("a.jpg", image)) for image in chunk]
                )
            else:
                encoded = [base64.b64encode(image).decode() for image in chunk]
                response = http.post("/v1/embed/batch", json={"images": encoded})
            response.raise_for_status()
            faces.extend(result["faces"] for result in response.json()["results"])
    seconds = time.perf_counter() - begin
    return {
        "way": way,
        "batch": 1 if way == "single" else batch,
        "images": len(images),
        "seconds": round(seconds, 3),
        "images_per_s": round(len(images) / seconds, 2),
        "faces": faces,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="Photos embedded per way.")
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 16], help="Batch sizes.")
    parser.add_argument("--json", type=Path, default=None, help="Write the results here.")
    args = parser.parse_args()

    images = photos(args.images)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fs-bench-batch-") as tmp:
        home = Path(tmp)
        _, key = KeyStore(home / "keys.sqlite").create("bench", "read")
        extra = ["--max-images", str(max(args.batch))]
        with (
            ServerProcess(home, extra_args=extra) as server,
            httpx.Client(
                base_url=server.url,
                headers={"Authorization": f"Bearer {key}"},
                timeout=300.0,
                trust_env=False,
            ) as http,
        ):
            timed(http, images[:2], "single", 1)  # warm up: models loaded, caches filled
            rows.append(timed(http, images, "single", 1))
            for batch in args.batch:
                rows.append(timed(http, images, "batch multipart", batch))
                rows.append(timed(http, images, "batch base64 JSON", batch))
    reference = rows[0]["faces"]
    for row in rows:
        same = len(row["faces"]) == len(reference) and all(
            len(a) == len(b)
            and all(np.allclose(x["embedding"], y["embedding"], atol=1e-4) for x, y in zip(a, b))
            for a, b in zip(row["faces"], reference)
        )
        row["same_embeddings"] = bool(same)
        row["faces_found"] = sum(len(faces) for faces in row.pop("faces"))

    print(f"embed over loopback, one client, {args.images} LFW photos (250x250 JPEG)")
    print(f"{'way':<18} {'batch':>5} {'seconds':>8} {'images/s':>9} {'faces':>6} {'same':>5}")
    for r in rows:
        print(
            f"{r['way']:<18} {r['batch']:>5} {r['seconds']:>8.2f} {r['images_per_s']:>9.2f}"
            f" {r['faces_found']:>6} {'yes' if r['same_embeddings'] else 'NO':>5}"
        )
    if args.json:
        write_report(args.json, "serve-batch-embed", rows)


if __name__ == "__main__":
    main()
