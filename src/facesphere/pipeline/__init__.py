"""The pipeline: `FaceAnalyzer` (detect -> landmarks -> align -> embed -> compare) and the
batch runner that applies it to many files through an executor (`pipeline.executors`: a local
process pool, or Ray), resuming from a progress journal (`pipeline.journal`)."""

from facesphere.pipeline.analyzer import Face, FaceAnalyzer, Verification, main_face, verify

__all__ = ["Face", "FaceAnalyzer", "Verification", "main_face", "verify"]
