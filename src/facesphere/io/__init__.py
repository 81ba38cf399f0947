"""facesphere.io."""
