"""facesphere.models.backbones."""
