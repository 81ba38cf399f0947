"""facesphere.video."""
