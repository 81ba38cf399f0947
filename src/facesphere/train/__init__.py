"""facesphere.train."""
