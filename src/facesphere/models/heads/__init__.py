"""facesphere.models.heads."""
