"""Classification heads for training face embeddings (softmax and margin-softmax family).

Every module of this package registers its heads in :data:`HEADS` (the registry imports them
on first use); build one with ``create_head(name, embedding_dim, num_classes, **options)``.
"""

from facesphere.models.heads.adaface import AdaFaceHead
from facesphere.models.heads.additive import (
    ArcFaceHead,
    CombinedMarginHead,
    CosFaceHead,
    SubCenterArcFaceHead,
)
from facesphere.models.heads.base import Head, MarginHead
from facesphere.models.heads.curricular import CurricularFaceHead
from facesphere.models.heads.lsoftmax import LSoftmaxHead, SphereFaceHead
from facesphere.models.heads.magface import MagFaceHead
from facesphere.models.heads.registry import HEADS, create_head, list_heads, register_head
from facesphere.models.heads.softmax import NormFaceHead, SoftmaxHead

__all__ = [
    "HEADS",
    "AdaFaceHead",
    "ArcFaceHead",
    "CombinedMarginHead",
    "CosFaceHead",
    "CurricularFaceHead",
    "Head",
    "LSoftmaxHead",
    "MagFaceHead",
    "MarginHead",
    "NormFaceHead",
    "SoftmaxHead",
    "SphereFaceHead",
    "SubCenterArcFaceHead",
    "create_head",
    "list_heads",
    "register_head",
]
