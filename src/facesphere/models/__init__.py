"""facesphere.models."""
