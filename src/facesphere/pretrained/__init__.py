"""facesphere.pretrained."""
