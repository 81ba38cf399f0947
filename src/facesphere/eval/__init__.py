"""facesphere.eval."""
