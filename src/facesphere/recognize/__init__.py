"""Face recognizers behind one registry: `dlib-resnet`, `sface`, the fused `dlib-resnet+sface`,
and exported model files."""

from facesphere.recognize.base import Recognizer, l2_normalize
from facesphere.recognize.registry import (
    RECOGNIZERS,
    create_recognizer,
    list_recognizers,
    register_recognizer,
)

__all__ = [
    "RECOGNIZERS",
    "Recognizer",
    "create_recognizer",
    "l2_normalize",
    "list_recognizers",
    "register_recognizer",
]
