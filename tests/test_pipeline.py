"""The default pipeline on real LFW photos: detection, landmarks, embeddings, decisions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facesphere import FaceAnalyzer, NoFaceError, verify
from facesphere.eval.pairs import read_lfw_pairs
from facesphere.pipeline.executors import LocalPool
from facesphere.pipeline.runner import analyze_files

LFW_PHOTOS = [
    "Aaron_Eckhart/Aaron_Eckhart_0001.jpg",
    "Angelina_Jolie/Angelina_Jolie_0001.jpg",
    "Colin_Powell/Colin_Powell_0001.jpg",
    "Serena_Williams/Serena_Williams_0001.jpg",
    "Vladimir_Putin/Vladimir_Putin_0001.jpg",
]


@pytest.fixture(scope="module")
def analyzer() -> FaceAnalyzer:
    return FaceAnalyzer()


def test_detects_one_face_near_the_centre(analyzer: FaceAnalyzer, shared_data: Path) -> None:
    for name in LFW_PHOTOS:
        faces = analyzer.detect(shared_data / "lfw" / "images" / name)
        assert faces, f"no face in {name}"
        central = [
            f
            for f in faces
            if abs((f.box[0] + f.box[2]) / 2 - 125) < 25
            and abs((f.box[1] + f.box[3]) / 2 - 125) < 30
        ]
        assert len(central) == 1, f"{name}: {[f.box for f in faces]}"
        face = central[0]
        assert 60 < face.box[2] - face.box[0] < 160
        # landmarks lie inside the box: eyes above the nose, the mouth below it
        x1, _, x2, y2 = face.box
        assert face.landmark_scheme == "standard5"  # the default detector's own points
        assert ((face.landmarks[:, 0] > x1) & (face.landmarks[:, 0] < x2)).all()
        eyes, nose, mouth = face.landmarks[:2, 1], face.landmarks[2, 1], face.landmarks[3:, 1]
        assert eyes.max() < nose < mouth.min() and mouth.max() < y2


def test_embeddings_are_unit_vectors(analyzer: FaceAnalyzer, shared_data: Path) -> None:
    vectors = analyzer.embed(shared_data / "lfw" / "images" / LFW_PHOTOS[0])
    assert vectors.shape == (1, analyzer.card.embedding_dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_lfw_pairs_are_decided_right(analyzer: FaceAnalyzer, shared_data: Path) -> None:
    pairs = read_lfw_pairs(shared_data / "lfw" / "pairs.txt", shared_data / "lfw" / "images")
    chosen = pairs[:5] + pairs[300:305]
    for pair in chosen:
        result = analyzer.verify(pair.path_a, pair.path_b)
        assert result.same == pair.same, (pair, result.similarity)


def test_no_face_raises(analyzer: FaceAnalyzer, shared_data: Path) -> None:
    blank = np.full((200, 200, 3), 128, np.uint8)
    assert analyzer.detect(blank) == []
    with pytest.raises(NoFaceError, match="no face"):
        analyzer.verify(blank, shared_data / "lfw" / "images" / LFW_PHOTOS[0])
    # The centre fallback still yields one face.
    faces = analyzer.analyze(blank, fallback="centre")
    assert len(faces) == 1 and faces[0].source == "centre"


def test_module_level_verify(shared_data: Path) -> None:
    a = shared_data / "lfw" / "images" / "Colin_Powell" / "Colin_Powell_0001.jpg"
    b = shared_data / "lfw" / "images" / "Colin_Powell" / "Colin_Powell_0002.jpg"
    assert verify(a, b).same


def test_worker_pool_matches_one_process(analyzer: FaceAnalyzer, shared_data: Path) -> None:
    paths = [str(shared_data / "lfw" / "images" / name) for name in LFW_PHOTOS[:4]]
    serial = list(
        analyze_files(paths, analyzer.config, LocalPool(1), progress=False, analyzer=analyzer)
    )
    pooled = list(analyze_files(paths, analyzer.config, LocalPool(2), progress=False))
    assert [r.path for r in pooled] == paths
    for one, two in zip(serial, pooled):
        assert len(one.faces) == len(two.faces)
        np.testing.assert_allclose(one.faces[0].embedding, two.faces[0].embedding, atol=1e-6)


def test_batched_analysis_equals_one_by_one(analyzer: FaceAnalyzer, shared_data: Path) -> None:
    paths = [shared_data / "lfw" / "images" / name for name in LFW_PHOTOS[:3]]
    together = analyzer.analyze_many(paths)
    for path, faces in zip(paths, together):
        alone = analyzer.analyze(path)
        assert len(alone) == len(faces)
        np.testing.assert_allclose(alone[0].embedding, faces[0].embedding, atol=1e-5)


def test_torch_and_dlib_engines_agree(shared_data: Path) -> None:
    a = shared_data / "lfw" / "images" / "Colin_Powell" / "Colin_Powell_0001.jpg"
    b = shared_data / "lfw" / "images" / "Colin_Powell" / "Colin_Powell_0003.jpg"
    dlib_pipeline = {"detector": "cnn", "recognizer": "dlib-resnet"}
    torch_result = FaceAnalyzer(**dlib_pipeline, engine="torch").verify(a, b)
    dlib_result = FaceAnalyzer(**dlib_pipeline, engine="dlib").verify(a, b)
    np.testing.assert_allclose(torch_result.face_a.box, dlib_result.face_a.box, atol=1.0)
    assert abs(torch_result.similarity - dlib_result.similarity) < 1e-3


def test_main_face_policies() -> None:
    from facesphere.pipeline.analyzer import Face, main_face

    def face(x1: float, y1: float, x2: float, y2: float) -> Face:
        return Face(np.array([x1, y1, x2, y2], np.float32), 1.0, np.zeros((5, 2)))

    big_corner, small_centre = face(0, 0, 120, 120), face(100, 100, 150, 150)
    assert main_face([small_centre, big_corner], 250, 250, "largest") is big_corner
    assert main_face([big_corner, small_centre], 250, 250, "central") is small_centre
    assert main_face([], 250, 250, "central") is None
    with pytest.raises(ValueError, match="policy"):
        main_face([big_corner], 250, 250, "first")
