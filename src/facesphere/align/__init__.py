"""Five-point alignment: similarity transforms and canonical templates."""

from facesphere.align.similarity import (
    estimate_similarity,
    invert_affine,
    transform_points,
    warp_affine,
)
from facesphere.align.templates import (
    DLIB_150,
    STANDARD_112,
    TEMPLATES,
    AlignmentTemplate,
    align_face,
    dlib5_to_standard5,
)

__all__ = [
    "DLIB_150",
    "STANDARD_112",
    "TEMPLATES",
    "AlignmentTemplate",
    "align_face",
    "dlib5_to_standard5",
    "estimate_similarity",
    "invert_affine",
    "transform_points",
    "warp_affine",
]
