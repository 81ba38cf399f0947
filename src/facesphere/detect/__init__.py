"""facesphere.detect."""
