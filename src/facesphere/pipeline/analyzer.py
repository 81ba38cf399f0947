"""`FaceAnalyzer`: detection -> 5-point alignment -> embedding -> comparison, in one object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facesphere.align.templates import TEMPLATES, AlignmentTemplate, align_to_template
from facesphere.cards import VERIFY, ModelCard
from facesphere.detect.registry import DETECTORS, create_detector
from facesphere.device import check_device
from facesphere.errors import ConfigError, ModelError, NoFaceError
from facesphere.io.image import DEFAULT_MAX_PIXELS, ImageInput, load_image
from facesphere.landmarks.base import Landmarker
from facesphere.landmarks.registry import LANDMARKERS, create_landmarker
from facesphere.recognize.base import Recognizer, l2_normalize
from facesphere.recognize.exported import read_card
from facesphere.recognize.registry import RECOGNIZERS, create_recognizer, is_exported_model

# `landmarker` choices besides a registered name: the detector's own points when they are in
# the recognizer's scheme, else dlib-shape5 (`auto`); always the detector's own (`detector`).
AUTO_LANDMARKS = "auto"
DETECTOR_LANDMARKS = "detector"
DEFAULT_LANDMARKER = "dlib-shape5"


@dataclass
class Face:
    """One face: box (x1, y1, x2, y2), detector score, five landmarks and where it came from."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    landmark_scheme: str = "dlib5"
    source: str = "detector"
    embedding: np.ndarray | None = field(default=None, repr=False)

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (no embedding)."""
        return {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 4),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
            "landmark_scheme": self.landmark_scheme,
            "source": self.source,
        }


@dataclass
class Verification:
    """The result of comparing two images' faces: the decision, the cosine similarity, the
    threshold that decided and where it came from (`model`, the false-accept rate `far` it was
    calibrated at; None for a threshold given by the caller)."""

    same: bool
    similarity: float
    threshold: float
    faces_a: int
    faces_b: int
    face_a: Face | None = None
    face_b: Face | None = None
    model: str = ""
    far: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (boxes of the compared faces, no embeddings)."""
        return {
            "same": self.same,
            "similarity": round(self.similarity, 6),
            "threshold": self.threshold,
            "far": self.far,
            "model": self.model,
            "faces_a": self.faces_a,
            "faces_b": self.faces_b,
            "box_a": None if self.face_a is None else self.face_a.to_dict()["box"],
            "box_b": None if self.face_b is None else self.face_b.to_dict()["box"],
        }


MAIN_FACE_POLICIES = ("largest", "central")


def main_face(faces: list[Face], width: int, height: int, policy: str = "largest") -> Face | None:
    """The face a photo is about: the `largest`, or the `central` one (box centre nearest the
    photo's centre; right for photos cut around one person, like LFW's)."""
    if policy not in MAIN_FACE_POLICIES:
        raise ValueError(f"policy must be one of {MAIN_FACE_POLICIES}, not {policy!r}")
    if not faces:
        return None
    if policy == "largest":
        return max(faces, key=lambda f: f.area)
    centre = np.array([width / 2.0, height / 2.0])
    return min(faces, key=lambda f: float(np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre)))


def centre_face_box(width: int, height: int, fraction: float = 1 / 2.2) -> np.ndarray:
    """The box of a face centred in its photo, `fraction` of the shorter side wide.

    The default matches photos cut LFW-style (a square 2.2 times the face box around it).
    """
    side = min(width, height) * fraction
    cx, cy = width / 2.0, height / 2.0
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], np.float32)


def check_config(
    detector: str = "cnn",
    recognizer: str = "dlib-resnet",
    landmarker: str = AUTO_LANDMARKS,
    engine: str | None = None,
    device: str = "cpu",
    upsample: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any], ModelCard]:
    """Check FaceAnalyzer's stage options without loading any model (names, options, device,
    an exported recognizer's card): ConfigError / ModelError when one is wrong. Returns the
    detector's options, those every stage takes, and the recognizer's card."""
    check_device(device)
    common: dict[str, Any] = {"device": device}
    if engine is not None:
        common["engine"] = engine
    detector_options = dict(common)
    if upsample is not None:
        detector_options["upsample"] = upsample
    DETECTORS.check(detector, **detector_options)
    if landmarker not in (AUTO_LANDMARKS, DETECTOR_LANDMARKS):
        LANDMARKERS.check(landmarker, **common)
    return detector_options, common, recognizer_card(recognizer, common)


def recognizer_card(recognizer: str, options: dict[str, Any]) -> ModelCard:
    """The card of a registered recognizer (its `options` checked) or of an exported file,
    read without loading the model."""
    if is_exported_model(recognizer):
        return read_card(recognizer)
    RECOGNIZERS.check(recognizer, **options)
    card = RECOGNIZERS.card(recognizer)
    if card is None:
        raise ModelError(f"recognizer {recognizer!r} is registered without a model card")
    return card


class FaceAnalyzer:
    """The face pipeline: `detect(img)`, `embed(img)`, `verify(a, b)`.

    detector, landmarker, recognizer: registered names (`create_detector` etc.; a recognizer may
    also be the path of an exported model); landmarker `auto` takes the detector's own points
    when they are in the recognizer's scheme, else dlib's 5-point model, and `detector` always
    the detector's. engine: `torch` (facesphere's ports) or `dlib` (dlib itself) for every stage,
    None for each model's default. device: `cpu` or `cuda`. upsample: detector upsampling (None:
    the detector's default). flip: average the embeddings of each chip and its mirror.
    threshold: cosine similarity at or above which two faces are one person (None: the
    recognizer card's calibrated verification threshold). max_pixels: refuse larger images.
    `card` is the recognizer's model card (template, input size, thresholds, licence); the
    landmark model and the recognizer load on first use.
    """

    def __init__(
        self,
        detector: str = "cnn",
        recognizer: str = "dlib-resnet",
        landmarker: str = AUTO_LANDMARKS,
        engine: str | None = None,
        device: str = "cpu",
        upsample: int | None = None,
        flip: bool = True,
        threshold: float | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        detector_options, common, card = check_config(
            detector, recognizer, landmarker, engine, device, upsample
        )
        self.config = {
            "detector": detector,
            "recognizer": recognizer,
            "landmarker": landmarker,
            "engine": engine,
            "device": device,
            "upsample": upsample,
            "flip": flip,
            "threshold": threshold,
            "max_pixels": max_pixels,
        }
        self.detector = create_detector(detector, **detector_options)
        self.card: ModelCard = card
        self._recognizer_name = recognizer
        self._recognizer: Recognizer | None = None
        self.template: AlignmentTemplate = TEMPLATES[str(self.card.template)]
        self._stage_options = common
        self._landmarker_name = landmarker
        self._landmarker: Landmarker | None = None
        if landmarker not in (AUTO_LANDMARKS, DETECTOR_LANDMARKS):
            self._landmarker = create_landmarker(landmarker, **common)
        elif landmarker == DETECTOR_LANDMARKS and self.detector.card.landmark_scheme is None:
            raise ConfigError(f"detector {detector!r} places no landmarks; choose a landmarker")
        self.flip = flip
        self.threshold_far: float | None = None
        if threshold is None:
            try:
                calibrated = self.card.threshold(VERIFY)
            except ModelError:
                calibrated = None
            if calibrated is not None:
                threshold, self.threshold_far = calibrated.value, calibrated.far
        self.threshold = threshold
        self.max_pixels = max_pixels

    @property
    def recognizer(self) -> Recognizer:
        """The recognizer, built on first use (detection alone never loads it)."""
        if self._recognizer is None:
            self._recognizer = create_recognizer(self._recognizer_name, **self._stage_options)
        return self._recognizer

    @property
    def landmarker(self) -> Landmarker:
        """The landmark model, built on first use."""
        if self._landmarker is None:
            self._landmarker = create_landmarker(DEFAULT_LANDMARKER, **self._stage_options)
        return self._landmarker

    def _uses_detector_points(self) -> bool:
        scheme = self.detector.card.landmark_scheme
        if self._landmarker_name == DETECTOR_LANDMARKS:
            return True
        return self._landmarker_name == AUTO_LANDMARKS and scheme == self.template.scheme

    # -- detection ---------------------------------------------------------------------------

    def load(self, img: ImageInput) -> np.ndarray:
        """Load any supported image input as RGB uint8 (raises ImageError)."""
        return load_image(img, max_pixels=self.max_pixels)

    def detect(self, img: ImageInput) -> list[Face]:
        """All faces in `img`, largest first, each with box, score and five landmarks (the
        detector's own or the landmarker's, see the class docstring)."""
        image = self.load(img)
        detections = self.detector.detect(image)
        if not detections:
            return []
        if self._uses_detector_points():
            faces = [
                Face(d.box, d.score, d.landmarks, str(d.landmark_scheme))
                for d in detections
                if d.landmarks is not None
            ]
        else:
            boxes = np.stack([d.box for d in detections])
            landmarks = self.landmarker.predict(image, boxes)
            scheme = str(self.landmarker.card.landmark_scheme)
            faces = [Face(d.box, d.score, p, scheme) for d, p in zip(detections, landmarks)]
        return sorted(faces, key=lambda f: -f.area)

    def centre_face(self, image: np.ndarray) -> Face:
        """A face assumed at the centre of a face-centred photo (used when detection fails)."""
        box = centre_face_box(image.shape[1], image.shape[0])
        points = self.landmarker.predict(image, box[None])[0]
        scheme = str(self.landmarker.card.landmark_scheme)
        return Face(box, 0.0, points, scheme, source="centre")

    # -- embedding ---------------------------------------------------------------------------

    def align(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        """Aligned chips (N, H, W, 3) for `faces`, in the recognizer's template."""
        template = self.template
        chips = [align_to_template(image, f.landmarks, f.landmark_scheme, template) for f in faces]
        width, height = template.size
        return np.stack(chips) if chips else np.zeros((0, height, width, 3), np.uint8)

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """Embeddings of aligned chips, averaged with their mirror images when `flip` is on."""
        chips = np.asarray(chips)
        if chips.ndim == 3:
            chips = chips[None]
        if not self.flip or len(chips) == 0:
            return self.recognizer.embed_chips(chips)
        both = self.recognizer.embed_chips(np.concatenate([chips, chips[:, :, ::-1]]))
        return l2_normalize(both[: len(chips)] + both[len(chips) :])

    def embed(self, img: ImageInput, faces: list[Face] | None = None) -> np.ndarray:
        """L2-normalised embeddings (N, D) of `faces` in `img` (all detected faces if None)."""
        image = self.load(img)
        if faces is None:
            faces = self.detect(image)
        return self._attach_embeddings(faces, self.align(image, faces))

    def _attach_embeddings(self, faces: list[Face], chips: np.ndarray) -> np.ndarray:
        """Embed the aligned `chips` of `faces` and store each vector on its face."""
        vectors = self.embed_chips(chips)
        for face, vector in zip(faces, vectors):
            face.embedding = vector
        return vectors

    def analyze(self, img: ImageInput, fallback: str = "none") -> list[Face]:
        """Detect and embed every face; with `fallback="centre"` a photo without a detected face
        yields one centre face instead of none."""
        return self.analyze_many([img], fallback)[0]

    def analyze_many(self, images: list[ImageInput], fallback: str = "none") -> list[list[Face]]:
        """`analyze` for several images, embedding all their faces in shared forward passes.

        Raises ImageError for the first unreadable image.
        """
        if fallback not in ("none", "centre"):
            raise ValueError(f"fallback must be 'none' or 'centre', not {fallback!r}")
        per_image, chips = [], []
        if not images:
            return []
        for img in images:
            image = self.load(img)
            faces = self.detect(image)
            if not faces and fallback == "centre":
                faces = [self.centre_face(image)]
            per_image.append(faces)
            chips.append(self.align(image, faces))
        flat = [face for faces in per_image for face in faces]
        self._attach_embeddings(flat, np.concatenate(chips))
        return per_image

    # -- comparison --------------------------------------------------------------------------

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Cosine similarity of L2-normalised embeddings (rows of a against rows of b)."""
        return np.atleast_2d(a) @ np.atleast_2d(b).T

    def verify(
        self,
        a: ImageInput,
        b: ImageInput,
        source_a: str = "a",
        source_b: str = "b",
        threshold: float | None = None,
    ) -> Verification:
        """Compare the largest face of `a` with the largest face of `b`, at `threshold` (None:
        the analyzer's).

        Raises NoFaceError when either image has no face, ModelError when no threshold is set
        and the recognizer's card has none calibrated.
        """
        self.decision_threshold(threshold)
        faces_a, faces_b = self.analyze(a), self.analyze(b)
        return self.verify_faces(faces_a, faces_b, source_a, source_b, threshold)

    def decision_threshold(self, threshold: float | None = None) -> float:
        """`threshold`, else the analyzer's threshold deciding 'same person' (ModelError when
        none is set or calibrated)."""
        if threshold is not None:
            return float(threshold)
        if self.threshold is None:
            return self.card.threshold(VERIFY).value  # raises, naming the model
        return float(self.threshold)

    def verify_faces(
        self,
        faces_a: list[Face],
        faces_b: list[Face],
        source_a: str = "a",
        source_b: str = "b",
        threshold: float | None = None,
    ) -> Verification:
        """`verify` on faces already analyzed (largest first): compares the first of each."""
        if not faces_a:
            raise NoFaceError(source_a)
        if not faces_b:
            raise NoFaceError(source_b)
        far = self.threshold_far if threshold is None else None
        threshold = self.decision_threshold(threshold)
        face_a, face_b = faces_a[0], faces_b[0]
        score = float(face_a.embedding @ face_b.embedding)
        return Verification(
            score >= threshold,
            score,
            threshold,
            len(faces_a),
            len(faces_b),
            face_a,
            face_b,
            self.card.name,
            far,
        )


def verify(a: ImageInput, b: ImageInput, analyzer: FaceAnalyzer | None = None) -> Verification:
    """Compare the largest faces of two images with the default pipeline."""
    return (analyzer or FaceAnalyzer()).verify(a, b)
