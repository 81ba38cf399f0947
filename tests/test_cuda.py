"""The CUDA path: the same results on the GPU as on the CPU, and bf16 training steps.

Marked ``cuda`` and left out of the default suite (CI has no GPU); run them on a GPU machine
with ``python -m pytest -m cuda`` (``make test-cuda``). Without a GPU they fail, not skip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module", autouse=True)
def gpu() -> None:
    if not torch.cuda.is_available():
        pytest.fail("these tests need a CUDA device (run them with -m cuda on a GPU machine)")


def _photo(shared_data: Path, name: str) -> np.ndarray:
    from facesphere.io.image import load_image

    return load_image(shared_data / "lfw" / "images" / name / f"{name}_0001.jpg")


@pytest.mark.parametrize(("name", "side"), [("dlib-resnet", 150), ("sface", 112)])
def test_recognizer_embeddings_match_cpu(shared_data: Path, name: str, side: int) -> None:
    from facesphere.recognize.registry import create_recognizer

    chips = np.stack(
        [
            _photo(shared_data, n)[50 : 50 + side, 50 : 50 + side]
            for n in ("Colin_Powell", "Tony_Blair")
        ]
        * 20
    )
    cpu = create_recognizer(name, device="cpu").embed_chips(chips)
    gpu = create_recognizer(name, device="cuda", batch_size=16).embed_chips(chips)
    assert gpu.shape == cpu.shape == (40, 128)
    assert (np.sum(cpu * gpu, axis=1) > 0.9999).all()


def test_mmod_boxes_match_cpu(shared_data: Path) -> None:
    from facesphere.detect.mmod import MMODDetector

    image = _photo(shared_data, "Colin_Powell")
    cpu = MMODDetector(device="cpu").detect(image)
    gpu = MMODDetector(device="cuda").detect(image)
    assert len(cpu) == len(gpu) >= 1
    for det_c, det_g in zip(cpu, gpu, strict=True):
        np.testing.assert_allclose(det_g.box, det_c.box, atol=1.0)
        assert abs(det_g.score - det_c.score) < 1e-3


@pytest.mark.parametrize("name", ["thunder", "yunet", "retinaface"])
def test_landmark_detections_match_cpu(shared_data: Path, name: str) -> None:
    from facesphere.detect.registry import create_detector

    on_cpu = create_detector(name, device="cpu")
    on_gpu = create_detector(name, device="cuda")
    for image in (_photo(shared_data, n) for n in ("Colin_Powell", "Tony_Blair")):
        cpu, gpu = on_cpu.detect(image), on_gpu.detect(image)
        assert len(cpu) == len(gpu) >= 1
        for det_c, det_g in zip(cpu, gpu, strict=True):
            np.testing.assert_allclose(det_g.box, det_c.box, atol=0.5)
            np.testing.assert_allclose(det_g.landmarks, det_c.landmarks, atol=0.5)
            assert abs(det_g.score - det_c.score) < 1e-3


def test_analyzer_on_cuda_verifies_like_cpu(shared_data: Path) -> None:
    from facesphere.pipeline.analyzer import FaceAnalyzer

    a = shared_data / "lfw" / "images" / "Colin_Powell" / "Colin_Powell_0001.jpg"
    b = shared_data / "lfw" / "images" / "Colin_Powell" / "Colin_Powell_0002.jpg"
    on_cpu = FaceAnalyzer(device="cpu").verify(a, b)
    on_gpu = FaceAnalyzer(device="cuda").verify(a, b)
    assert on_gpu.same and abs(on_gpu.similarity - on_cpu.similarity) < 1e-3


@pytest.mark.parametrize("name", ["arcface", "cosface", "combined", "adaface", "magface"])
def test_heads_finite_under_bf16_autocast(name: str) -> None:
    from facesphere.models.heads import create_head

    torch.manual_seed(0)
    head = create_head(name, embedding_dim=64, num_classes=1000).cuda()
    x = torch.randn(256, 64, device="cuda", requires_grad=True)
    labels = torch.randint(0, 1000, (256,), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = head(x, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_partial_fc_bf16_training_step_lowers_loss() -> None:
    from facesphere.models.backbones import create_backbone
    from facesphere.models.partial_fc import PartialFC

    torch.manual_seed(0)
    backbone = create_backbone("mobilefacenet", embedding_dim=128).cuda()
    head = PartialFC("arcface", 128, 5000, 0.2).cuda()
    params = list(backbone.parameters()) + list(head.parameters())
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, fused=True)
    images = torch.randn(64, 3, 112, 112, device="cuda")
    labels = torch.randint(0, 5000, (64,), device="cuda")
    losses = []
    for _ in range(15):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            embeddings = backbone(images)
        loss = head(embeddings.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0], losses
