"""The gallery back ends, one module each (see `facesphere.gallery.backend`)."""
