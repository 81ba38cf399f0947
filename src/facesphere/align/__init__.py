"""facesphere.align."""
