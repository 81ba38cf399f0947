"""facesphere: face detection, alignment, embedding and recognition."""
__version__ = "0.1.0"
