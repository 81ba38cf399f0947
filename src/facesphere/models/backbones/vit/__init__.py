"""Vision Transformers for faces, with RoPE, relative bias and linear attention options."""

from facesphere.models.backbones.vit.model import (
    ATTENTIONS,
    POS_EMBEDS,
    FaceViT,
    check_vit_options,
    vit_s,
    vit_t,
)

__all__ = ["ATTENTIONS", "POS_EMBEDS", "FaceViT", "check_vit_options", "vit_s", "vit_t"]
