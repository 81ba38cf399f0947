"""Image input and the location of the shared data sets."""

from facesphere.io.data import data_dir
from facesphere.io.image import DEFAULT_MAX_PIXELS, ImageInput, load_image

__all__ = ["DEFAULT_MAX_PIXELS", "ImageInput", "data_dir", "load_image"]
