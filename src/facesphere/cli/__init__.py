"""facesphere.cli."""
