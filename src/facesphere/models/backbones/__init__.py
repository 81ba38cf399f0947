"""Face recognition backbones: aligned RGB crops in, (N, embedding_dim) embeddings out.

The first use of the registry imports every family module of this package. Build one with
``create_backbone("iresnet50", embedding_dim=512)``; ``list_backbones()`` gives the names.
Every model has ``forward_features`` (the map before the neck), ``forward``, and the
attributes ``embedding_dim`` and ``input_size``; crops are 112x112 ``standard112`` unless the
model has a ``template`` attribute naming another alignment template (``dlib-resnet``:
``dlib150``, 150x150).
"""

from facesphere.models.backbones._registry import (
    BACKBONES,
    create_backbone,
    list_backbones,
    register_backbone,
)

__all__ = [
    "BACKBONES",
    "create_backbone",
    "list_backbones",
    "register_backbone",
]
