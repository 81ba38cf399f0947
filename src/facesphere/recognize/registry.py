"""The recognizer registry: `register_recognizer`, `create_recognizer`, `list_recognizers`.

`create_recognizer` also takes the path of a file written by `facesphere export` (`.onnx`, or
`.pt`/`.ts` TorchScript): such files carry their model card and load as recognizers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from facesphere.recognize.base import Recognizer
from facesphere.registry import Registry

RECOGNIZERS: Registry[Recognizer] = Registry("recognizer", package="facesphere.recognize")
register_recognizer = RECOGNIZERS.register
list_recognizers = RECOGNIZERS.names
EXPORTED_SUFFIXES = (".onnx", ".pt", ".ts")


def is_exported_model(name: str) -> bool:
    """Whether `name` is the path of an exported model rather than a registered name."""
    return Path(name).suffix.lower() in EXPORTED_SUFFIXES


def create_recognizer(name: str, **options: Any) -> Recognizer:
    """Build the recognizer registered as `name` (options such as `engine`, `device`,
    `batch_size`), or load the exported model file `name` (option `device`)."""
    if is_exported_model(name):
        from facesphere.recognize.exported import ExportedRecognizer

        return ExportedRecognizer(name, **options)
    return RECOGNIZERS.create(name, **options)
