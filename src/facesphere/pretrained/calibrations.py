"""Measured operating points of the shipped recognizers (see facesphere.cards).

Written by `python bench/calibrate.py --write`; run it again rather than editing by hand.
"""

from facesphere.cards import Calibration, OperatingPoint

# dlib-resnet's weight in dlib-resnet+sface (sface has the rest)
DLIB_RESNET_SFACE_WEIGHT = 0.70

DLIB_RESNET_CALIBRATION = Calibration(
    dataset="celeba299 (all pairs of 6,151 photos with a retinaface face, labelling errors out)",
    points=(
        OperatingPoint(0.1, 0.8866, 0.0285),
        OperatingPoint(0.03, 0.9039, 0.0538),
        OperatingPoint(0.01, 0.9152, 0.0779),
        OperatingPoint(0.003, 0.9251, 0.1157),
        OperatingPoint(0.001, 0.9329, 0.1666),
        OperatingPoint(0.0003, 0.9405, 0.2425),
        OperatingPoint(0.0001, 0.9472, 0.3399),
        OperatingPoint(3e-05, 0.9541, 0.4740),
        OperatingPoint(1e-05, 0.9596, 0.5990),
        OperatingPoint(3e-06, 0.9659, 0.7428),
        OperatingPoint(1e-06, 0.9710, 0.8456),
    ),
    genuine_pairs=70929,
    impostor_pairs=18840226,
    note="",
)

SFACE_CALIBRATION = Calibration(
    dataset="celeba299 (all pairs of 6,151 photos with a retinaface face, labelling errors out)",
    points=(
        OperatingPoint(0.1, 0.2180, 0.0357),
        OperatingPoint(0.03, 0.2730, 0.0493),
        OperatingPoint(0.01, 0.3141, 0.0619),
        OperatingPoint(0.003, 0.3533, 0.0772),
        OperatingPoint(0.001, 0.3853, 0.0933),
        OperatingPoint(0.0003, 0.4172, 0.1153),
        OperatingPoint(0.0001, 0.4453, 0.1409),
        OperatingPoint(3e-05, 0.4801, 0.1812),
        OperatingPoint(1e-05, 0.5629, 0.3299),
        OperatingPoint(3e-06, 0.7114, 0.7507),
        OperatingPoint(1e-06, 0.7825, 0.9117),
    ),
    genuine_pairs=70929,
    impostor_pairs=18840226,
    note="",
)

DLIB_RESNET_SFACE_CALIBRATION = Calibration(
    dataset="celeba299 (all pairs of 6,151 photos with a retinaface face, labelling errors out)",
    points=(
        OperatingPoint(0.1, 0.6744, 0.0249),
        OperatingPoint(0.03, 0.7019, 0.0396),
        OperatingPoint(0.01, 0.7216, 0.0517),
        OperatingPoint(0.003, 0.7399, 0.0664),
        OperatingPoint(0.001, 0.7541, 0.0814),
        OperatingPoint(0.0003, 0.7685, 0.1026),
        OperatingPoint(0.0001, 0.7806, 0.1262),
        OperatingPoint(3e-05, 0.7951, 0.1655),
        OperatingPoint(1e-05, 0.8338, 0.3443),
        OperatingPoint(3e-06, 0.8840, 0.7196),
        OperatingPoint(1e-06, 0.9111, 0.8913),
    ),
    genuine_pairs=70929,
    impostor_pairs=18840226,
    note="fusion weight 0.70 for dlib-resnet",
)
