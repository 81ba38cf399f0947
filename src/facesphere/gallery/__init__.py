"""facesphere.gallery."""
