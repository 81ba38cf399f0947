"""Face recognition backbones: aligned RGB crops in, (N, embedding_dim) embeddings out.

Importing this package registers every family. Build one with
``create_backbone("iresnet50", embedding_dim=512)``; ``list_backbones()`` gives the names.
Every model has ``forward_features`` (the map before the neck), ``forward``, and the
attributes ``embedding_dim`` and ``input_size``; crops are 112x112 ``standard112`` unless the
model has a ``template`` attribute naming another alignment template (``dlib_resnet``:
``dlib150``, 150x150).
"""

from facesphere.models.backbones import (
    dlib_resnet,
    efficientnet,
    inception_lite,
    iresnet,
    mobilefacenet,
    shufflenet,
    vit,
)
from facesphere.models.backbones._registry import (
    BACKBONES,
    create_backbone,
    list_backbones,
    register_backbone,
)

__all__ = [
    "BACKBONES",
    "create_backbone",
    "dlib_resnet",
    "efficientnet",
    "inception_lite",
    "iresnet",
    "list_backbones",
    "mobilefacenet",
    "register_backbone",
    "shufflenet",
    "vit",
]
