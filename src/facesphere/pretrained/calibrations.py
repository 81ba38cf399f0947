"""Measured operating points of the shipped recognizers (see facesphere.cards).

Written by `python bench/calibrate.py --write`; run it again rather than editing by hand.
"""

from facesphere.cards import Calibration, OperatingPoint

# dlib-resnet's weight in dlib-resnet+sface (sface has the rest)
DLIB_RESNET_SFACE_WEIGHT = 0.80

DLIB_RESNET_CALIBRATION = Calibration(
    dataset="celeba299 (all pairs of 6,158 photos with a yunet face, labelling errors out)",
    points=(
        OperatingPoint(0.1, 0.8866, 0.0321),
        OperatingPoint(0.03, 0.9038, 0.0564),
        OperatingPoint(0.01, 0.9151, 0.0796),
        OperatingPoint(0.003, 0.9250, 0.1157),
        OperatingPoint(0.001, 0.9328, 0.1659),
        OperatingPoint(0.0003, 0.9406, 0.2434),
        OperatingPoint(0.0001, 0.9472, 0.3391),
        OperatingPoint(3e-05, 0.9544, 0.4804),
        OperatingPoint(1e-05, 0.9603, 0.6142),
        OperatingPoint(3e-06, 0.9660, 0.7444),
        OperatingPoint(1e-06, 0.9716, 0.8538),
    ),
    genuine_pairs=71168,
    impostor_pairs=18883003,
    note="",
)

SFACE_CALIBRATION = Calibration(
    dataset="celeba299 (all pairs of 6,158 photos with a yunet face, labelling errors out)",
    points=(
        OperatingPoint(0.1, 0.2047, 0.0503),
        OperatingPoint(0.03, 0.2606, 0.0696),
        OperatingPoint(0.01, 0.3027, 0.0890),
        OperatingPoint(0.003, 0.3428, 0.1131),
        OperatingPoint(0.001, 0.3758, 0.1388),
        OperatingPoint(0.0003, 0.4095, 0.1729),
        OperatingPoint(0.0001, 0.4396, 0.2109),
        OperatingPoint(3e-05, 0.4773, 0.2694),
        OperatingPoint(1e-05, 0.5446, 0.4066),
        OperatingPoint(3e-06, 0.6722, 0.7427),
        OperatingPoint(1e-06, 0.7501, 0.9056),
    ),
    genuine_pairs=71168,
    impostor_pairs=18883003,
    note="",
)

DLIB_RESNET_SFACE_CALIBRATION = Calibration(
    dataset="celeba299 (all pairs of 6,158 photos with a yunet face, labelling errors out)",
    points=(
        OperatingPoint(0.1, 0.7401, 0.0292),
        OperatingPoint(0.03, 0.7638, 0.0460),
        OperatingPoint(0.01, 0.7804, 0.0629),
        OperatingPoint(0.003, 0.7953, 0.0825),
        OperatingPoint(0.001, 0.8072, 0.1034),
        OperatingPoint(0.0003, 0.8189, 0.1318),
        OperatingPoint(0.0001, 0.8284, 0.1614),
        OperatingPoint(3e-05, 0.8398, 0.2087),
        OperatingPoint(1e-05, 0.8631, 0.3591),
        OperatingPoint(3e-06, 0.9037, 0.7329),
        OperatingPoint(1e-06, 0.9232, 0.8812),
    ),
    genuine_pairs=71168,
    impostor_pairs=18883003,
    note="fusion weight 0.80 for dlib-resnet",
)
