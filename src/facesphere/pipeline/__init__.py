"""The pipeline: `FaceAnalyzer` (detect -> landmarks -> align -> embed -> compare) and the
process-pool runner that applies it to many files."""

from facesphere.pipeline.analyzer import Face, FaceAnalyzer, Verification, main_face, verify

__all__ = ["Face", "FaceAnalyzer", "Verification", "main_face", "verify"]
