"""Measured operating points of the shipped recognizers (see facesphere.cards).

Written by `python bench/calibrate.py --write`; run it again rather than editing by hand.
"""

from facesphere.cards import Calibration, OperatingPoint

# dlib-resnet's weight in dlib-resnet+sface (sface has the rest)
DLIB_RESNET_SFACE_WEIGHT = 0.80

DLIB_RESNET_CALIBRATION = Calibration(
    dataset="celeba299 (all pairs of 6,300 photos, 299 people, labelling errors out; yunet)",
    points=(
        OperatingPoint(0.1, 0.8869, 0.0726),
        OperatingPoint(0.03, 0.9041, 0.0993),
        OperatingPoint(0.01, 0.9156, 0.1232),
        OperatingPoint(0.003, 0.9263, 0.1630),
        OperatingPoint(0.001, 0.9354, 0.2264),
        OperatingPoint(0.0003, 0.9459, 0.3488),
        OperatingPoint(0.0001, 0.9553, 0.5242),
        OperatingPoint(3e-05, 0.9637, 0.7071),
        OperatingPoint(1e-05, 0.9690, 0.8161),
        OperatingPoint(3e-06, 0.9734, 0.8885),
        OperatingPoint(1e-06, 0.9772, 0.9360),
    ),
    genuine_pairs=74735,
    impostor_pairs=19763657,
    note="",
)

SFACE_CALIBRATION = Calibration(
    dataset="celeba299 (all pairs of 6,300 photos, 299 people, labelling errors out; yunet)",
    points=(
        OperatingPoint(0.1, 0.2049, 0.0891),
        OperatingPoint(0.03, 0.2611, 0.1114),
        OperatingPoint(0.01, 0.3038, 0.1315),
        OperatingPoint(0.003, 0.3453, 0.1562),
        OperatingPoint(0.001, 0.3813, 0.1838),
        OperatingPoint(0.0003, 0.4235, 0.2286),
        OperatingPoint(0.0001, 0.4754, 0.3010),
        OperatingPoint(3e-05, 0.5635, 0.4790),
        OperatingPoint(1e-05, 0.6448, 0.6869),
        OperatingPoint(3e-06, 0.7079, 0.8347),
        OperatingPoint(1e-06, 0.7595, 0.9239),
    ),
    genuine_pairs=74735,
    impostor_pairs=19763657,
    note="",
)

DLIB_RESNET_SFACE_CALIBRATION = Calibration(
    dataset="celeba299 (all pairs of 6,300 photos, 299 people, labelling errors out; yunet)",
    points=(
        OperatingPoint(0.1, 0.7402, 0.0696),
        OperatingPoint(0.03, 0.7638, 0.0893),
        OperatingPoint(0.01, 0.7807, 0.1064),
        OperatingPoint(0.003, 0.7964, 0.1269),
        OperatingPoint(0.001, 0.8098, 0.1506),
        OperatingPoint(0.0003, 0.8252, 0.1907),
        OperatingPoint(0.0001, 0.8450, 0.2722),
        OperatingPoint(3e-05, 0.8722, 0.4590),
        OperatingPoint(1e-05, 0.8943, 0.6610),
        OperatingPoint(3e-06, 0.9112, 0.8053),
        OperatingPoint(1e-06, 0.9250, 0.8970),
    ),
    genuine_pairs=74735,
    impostor_pairs=19763657,
    note="fusion weight 0.80 for dlib-resnet",
)
