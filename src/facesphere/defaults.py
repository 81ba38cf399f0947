"""The default pipeline, in one place: the detector and recognizer every entry point (Python
API, CLI, service, galleries) uses unless told otherwise.

Chosen by measurement (README, "Choosing the default pipeline"; bench/lfw.py, bench/identify.py,
bench/detect.py). dlib's public-domain pipeline stays one flag away:
``--detector cnn --recognizer dlib-resnet``.
"""

DEFAULT_DETECTOR = "retinaface"
DEFAULT_RECOGNIZER = "dlib-resnet+sface"
