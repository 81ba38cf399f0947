"""`FaceAnalyzer`: detection -> 5-point alignment -> embedding -> comparison, in one object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facesphere.align.templates import TEMPLATES, AlignmentTemplate, align_to_template
from facesphere.cards import ModelCard, Threshold
from facesphere.defaults import DEFAULT_DETECTOR, DEFAULT_RECOGNIZER
from facesphere.detect.registry import DETECTORS, create_detector
from facesphere.device import check_device
from facesphere.errors import ConfigError, ModelError, NoFaceError
from facesphere.io.image import DEFAULT_MAX_PIXELS, ImageInput, load_image
from facesphere.landmarks.base import Landmarker
from facesphere.landmarks.registry import LANDMARKERS, create_landmarker
from facesphere.recognize.base import Recognizer, l2_normalize
from facesphere.recognize.exported import read_card
from facesphere.recognize.fused import fuse_embeddings, split_fused
from facesphere.recognize.registry import RECOGNIZERS, create_recognizer, is_exported_model

# `landmarker` choices besides a registered name: the detector's own points when they are in
# the recognizer's scheme, else dlib-shape5 (`auto`); always the detector's own (`detector`).
AUTO_LANDMARKS = "auto"
DETECTOR_LANDMARKS = "detector"
DEFAULT_LANDMARKER = "dlib-shape5"


@dataclass
class Face:
    """One face: box (x1, y1, x2, y2), detector score, five landmarks and where it came from.

    `extra_landmarks` holds the same face's points in other schemes when a recognizer's
    templates need them (dlib's five points beside a detector's own, for a fused recognizer).
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    landmark_scheme: str = "dlib5"
    source: str = "detector"
    embedding: np.ndarray | None = field(default=None, repr=False)
    extra_landmarks: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def points_for(self, template: AlignmentTemplate) -> tuple[np.ndarray, str]:
        """The landmarks (and their scheme) to align this face to `template`: those in the
        template's own scheme when the face has them."""
        if template.scheme in self.extra_landmarks:
            return self.extra_landmarks[template.scheme], template.scheme
        return self.landmarks, self.landmark_scheme

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))

    def located(self) -> dict[str, Any]:
        """Where the face is and how sure the detector was: what identification answers list
        beside each face's matches."""
        return {
            "box": [round(float(v), 2) for v in self.box],
            "detection_score": round(float(self.score), 4),
        }

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
    threshold that `decided` (calibrated: with the FAR it was taken at and the FRR measured
    there; or given by the caller) and the `model` that embedded the faces."""

    same: bool
    similarity: float
    decided: Threshold
    faces_a: int
    faces_b: int
    face_a: Face | None = None
    face_b: Face | None = None
    model: str = ""

    @property
    def threshold(self) -> float:
        return self.decided.value

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (boxes of the compared faces, no embeddings)."""
        return {
            "same": self.same,
            "similarity": round(self.similarity, 6),
            **self.decided.describe(),
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
    detector: str = DEFAULT_DETECTOR,
    recognizer: str = DEFAULT_RECOGNIZER,
    landmarker: str = AUTO_LANDMARKS,
    engine: str | None = None,
    device: str = "cpu",
    upsample: int | None = None,
    max_side: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any], ModelCard]:
    """Check FaceAnalyzer's stage options without loading any model (names, options, device,
    an exported recognizer's card, landmarks that every template of the recognizer can be
    aligned from): ConfigError / ModelError when one is wrong. Returns the detector's options,
    those every stage takes, and the recognizer's card."""
    check_device(device)
    common: dict[str, Any] = {"device": device}
    if engine is not None:
        common["engine"] = engine
    detector_options = dict(common)
    if upsample is not None:
        detector_options["upsample"] = upsample
    if max_side is not None:
        detector_options["max_side"] = max_side
    DETECTORS.check(detector, **detector_options)
    card = recognizer_card(recognizer, common)
    if landmarker == DETECTOR_LANDMARKS:
        detector_card = DETECTORS.card(detector)
        scheme = None if detector_card is None else detector_card.landmark_scheme
        if scheme is None:
            raise ConfigError(f"detector {detector!r} places no landmarks; choose a landmarker")
        _check_alignable(scheme, card, f"detector {detector!r}")
    elif landmarker != AUTO_LANDMARKS:
        LANDMARKERS.check(landmarker, **common)
        landmarker_card = LANDMARKERS.card(landmarker)
        if landmarker_card is not None and landmarker_card.landmark_scheme is not None:
            _check_alignable(landmarker_card.landmark_scheme, card, f"landmarker {landmarker!r}")
    return detector_options, common, card


def _check_alignable(scheme: str, card: ModelCard, source: str) -> None:
    """ConfigError unless points in `scheme` align every template of `card` (dlib5 points
    give standard5 ones, not the other way round)."""
    for name in card.templates:
        needed = TEMPLATES[name].scheme
        if scheme != needed and not (scheme == "dlib5" and needed == "standard5"):
            raise ConfigError(
                f"{source} places {scheme} landmarks, but {card.name}'s {name} template needs "
                f"{needed} ones; use landmarker 'auto'"
            )


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
    the detector's default). max_side: the detector's working resolution, the longer side an
    image larger than that is scaled down to (None: the detector's default, 2048; 0: none, the
    image's own). flip: average the embeddings of each chip and its mirror.
    threshold: cosine similarity at or above which two faces are one person (None: the
    recognizer card's calibrated verification threshold at `far`). far: the false-accept rate
    the threshold is taken at (None: the card's default, 1e-3 for the shipped recognizers).
    max_pixels: refuse larger images. `card` is the recognizer's model card (templates, input
    size, calibration, licence); the landmark model and the recognizer load on first use.
    """

    def __init__(
        self,
        detector: str = DEFAULT_DETECTOR,
        recognizer: str = DEFAULT_RECOGNIZER,
        landmarker: str = AUTO_LANDMARKS,
        engine: str | None = None,
        device: str = "cpu",
        upsample: int | None = None,
        max_side: int | None = None,
        flip: bool = True,
        threshold: float | None = None,
        far: float | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        detector_options, common, card = check_config(
            detector, recognizer, landmarker, engine, device, upsample, max_side
        )
        if threshold is not None and far is not None:
            raise ConfigError("give a threshold or a FAR, not both")
        self.config = {
            "detector": detector,
            "recognizer": recognizer,
            "landmarker": landmarker,
            "engine": engine,
            "device": device,
            "upsample": upsample,
            "max_side": max_side,
            "flip": flip,
            "threshold": threshold,
            "far": far,
            "max_pixels": max_pixels,
        }
        self.detector = create_detector(detector, **detector_options)
        self.card: ModelCard = card
        self._recognizer_name = recognizer
        self._recognizer: Recognizer | None = None
        self.templates: list[AlignmentTemplate] = [TEMPLATES[t] for t in self.card.templates]
        self._stage_options = common
        self._landmarker_name = landmarker
        self._landmarker: Landmarker | None = None
        if landmarker not in (AUTO_LANDMARKS, DETECTOR_LANDMARKS):
            self._landmarker = create_landmarker(landmarker, **common)
        self.flip = flip
        # the verification threshold: the caller's, else the card's at `far` (None when the
        # card has no calibration: then verify needs a threshold per call)
        self.calibrated: Threshold | None = None
        if threshold is None:
            if self.card.calibration is not None or far is not None:
                self.calibrated = self.card.verification_threshold(far)
            if self.calibrated is not None:
                threshold = self.calibrated.value
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
        if self._landmarker_name == DETECTOR_LANDMARKS:
            return True
        schemes = {t.scheme for t in self.templates}
        return (
            self._landmarker_name == AUTO_LANDMARKS
            and self.detector.card.landmark_scheme in schemes
        )

    def _needs_dlib_points(self, scheme: str) -> bool:
        """Whether faces with `scheme` points also need dlib's five for some template (auto
        landmarks only: a named landmarker or the detector's points serve every template)."""
        return (
            self._landmarker_name == AUTO_LANDMARKS
            and scheme != "dlib5"
            and any(t.scheme == "dlib5" for t in self.templates)
        )

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
            if faces and self._needs_dlib_points(faces[0].landmark_scheme):
                points = self.landmarker.predict(image, np.stack([f.box for f in faces]))
                for face, dlib_points in zip(faces, points):
                    face.extra_landmarks["dlib5"] = dlib_points
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

    def align(self, image: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
        """Aligned chips (N, H, W, 3) for `faces`, one array per template of the recognizer
        (one for a single model, one per member of a fused one)."""
        return [align_faces(image, faces, template) for template in self.templates]

    def embed_chips(self, *chips: np.ndarray) -> np.ndarray:
        """Embeddings of aligned chips (one array per template), averaged with their mirror
        images when `flip` is on (per member of a fused recognizer, before fusing)."""
        arrays = [np.asarray(c)[None] if np.ndim(c) == 3 else np.asarray(c) for c in chips]
        if not self.flip or len(arrays[0]) == 0:
            return self.recognizer.embed_chips(*arrays)
        return _flip_averaged(self.recognizer, arrays)

    def embed(self, img: ImageInput, faces: list[Face] | None = None) -> np.ndarray:
        """L2-normalised embeddings (N, D) of `faces` in `img` (all detected faces if None)."""
        image = self.load(img)
        if faces is None:
            faces = self.detect(image)
        return self._attach_embeddings(faces, *self.align(image, faces))

    def _attach_embeddings(self, faces: list[Face], *chips: np.ndarray) -> np.ndarray:
        """Embed the aligned `chips` of `faces` and store each vector on its face."""
        vectors = self.embed_chips(*chips)
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
        self._attach_embeddings(flat, *(np.concatenate(c) for c in zip(*chips)))
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
        far: float | None = None,
    ) -> Verification:
        """Compare the largest face of `a` with the largest face of `b`, at `threshold`, else
        the card's threshold at `far`, else the analyzer's.

        Raises NoFaceError when either image has no face, ConfigError when no threshold is
        set and the recognizer's card has none calibrated.
        """
        self.decision_threshold(threshold, far)
        faces_a, faces_b = self.analyze(a), self.analyze(b)
        return self.verify_faces(faces_a, faces_b, source_a, source_b, threshold, far)

    def decision_threshold(
        self, threshold: float | None = None, far: float | None = None
    ) -> Threshold:
        """The threshold deciding 'same person': `threshold` if given, else the card's at
        `far` if given, else the analyzer's (the caller's or the card's calibrated one);
        ConfigError when there is none, or for both arguments."""
        if threshold is not None and far is not None:
            raise ConfigError("give a threshold or a FAR, not both")
        if threshold is not None:
            return Threshold.given(threshold)
        if far is not None:
            return self.card.verification_threshold(far)
        if self.calibrated is not None:
            return self.calibrated
        if self.threshold is None:
            return self.card.verification_threshold()  # raises, naming the model
        return Threshold.given(self.threshold)

    def verify_faces(
        self,
        faces_a: list[Face],
        faces_b: list[Face],
        source_a: str = "a",
        source_b: str = "b",
        threshold: float | None = None,
        far: float | None = None,
    ) -> Verification:
        """`verify` on faces already analyzed (largest first): compares the first of each."""
        if not faces_a:
            raise NoFaceError(source_a)
        if not faces_b:
            raise NoFaceError(source_b)
        decided = self.decision_threshold(threshold, far)
        face_a, face_b = faces_a[0], faces_b[0]
        score = float(face_a.embedding @ face_b.embedding)
        return Verification(
            score >= decided.value,
            score,
            decided,
            len(faces_a),
            len(faces_b),
            face_a,
            face_b,
            self.card.name,
        )


def align_faces(image: np.ndarray, faces: list[Face], template: AlignmentTemplate) -> np.ndarray:
    """Chips (N, H, W, 3) of `faces` aligned to `template`, each from its points for it."""
    chips = [align_to_template(image, *face.points_for(template), template) for face in faces]
    width, height = template.size
    return np.stack(chips) if chips else np.zeros((0, height, width, 3), np.uint8)


def _flip_averaged(recognizer: Recognizer, chips: list[np.ndarray]) -> np.ndarray:
    """Unit embeddings of `chips` (one array per template), each the mean of the chip's and its
    mirror image's; a fused recognizer's members are averaged one by one, then fused again."""
    count = len(chips[0])
    both = recognizer.embed_chips(*(np.concatenate([c, c[:, :, ::-1]]) for c in chips))
    card = recognizer.card
    if not card.members:
        return l2_normalize(both[:count] + both[count:])
    parts = split_fused(card, both)
    return fuse_embeddings(card, [l2_normalize(p[:count] + p[count:]) for p in parts])


def verify(a: ImageInput, b: ImageInput, analyzer: FaceAnalyzer | None = None) -> Verification:
    """Compare the largest faces of two images with the default pipeline."""
    return (analyzer or FaceAnalyzer()).verify(a, b)
