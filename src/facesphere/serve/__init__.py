"""facesphere.serve."""
