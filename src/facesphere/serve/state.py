"""`ServiceState`: what the endpoints of one app share (its configuration, key store, analyzer
and its work queue, open galleries and image decoding)."""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facesphere.errors import ImageError
from facesphere.gallery import Gallery, GalleryNotFoundError
from facesphere.gallery.backend import backend_for
from facesphere.gallery.folder import (
    GALLERY_SUFFIX,
    gallery_file,
    gallery_names,
    valid_gallery_name,
)
from facesphere.io.image import load_image
from facesphere.serve.config import ServeConfig
from facesphere.serve.keys import KEYS_FILE, KeyStore
from facesphere.serve.work import WorkQueue

if TYPE_CHECKING:
    from facesphere.pipeline.analyzer import FaceAnalyzer

log = logging.getLogger("facesphere.serve")


class ServiceState:
    """The shared state of one app.

    The analyzer is `analyzer` when given (it keeps its own options), else one built from
    `config.analyzer` on first use; it runs at most `config.analysis_slots()` analyses at once
    (`analyzing()`, from several threads: its models only read their weights). Galleries live
    in the galleries folder (`config.galleries_path()`) as `<name>.sqlite`, or, instead, in
    the database at `config.gallery_url` (gallery `name` of `postgresql://...` is
    `postgresql://...?gallery=name`), and stay open once used.
    """

    def __init__(self, config: ServeConfig, analyzer: FaceAnalyzer | None = None) -> None:
        self.config = config
        self.home = config.home_path()
        self.keys = KeyStore(self.home / KEYS_FILE)
        self.max_upload_bytes = int(config.max_upload_bytes)
        self.max_pixels = int(config.max_pixels)
        self.galleries_dir = config.galleries_path()
        self.gallery_url = config.gallery_url
        self._gallery_backend = None if self.gallery_url is None else backend_for(self.gallery_url)
        self._analyzer = analyzer
        self._build_lock = threading.Lock()
        self.work = WorkQueue(config.analysis_slots(), config.queue_size, config.request_timeout_s)
        self._galleries: dict[str, Gallery] = {}
        self._galleries_lock = threading.Lock()
        if self.gallery_url is None:
            self._gallery_file = re.compile(
                re.escape(str(self.galleries_dir)) + r"/([^/\s]+)" + re.escape(GALLERY_SUFFIX)
            )
        else:  # a gallery's URL, however its back end prints it
            self._gallery_file = re.compile(r"[A-Za-z][\w+.-]*://\S*?[?&]gallery=([^\s&]+)")

    # -- the analyzer ------------------------------------------------------------------------

    @property
    def analyzer_loaded(self) -> bool:
        """Whether the analyzer is built."""
        return self._analyzer is not None

    def analyzer(self) -> FaceAnalyzer:
        """The analyzer, built on first use (only read its card and settings without holding
        `analyzing()`)."""
        if self._analyzer is None:
            with self._build_lock:
                if self._analyzer is None:
                    self._analyzer = self._build_analyzer()
        return self._analyzer

    def _build_analyzer(self) -> FaceAnalyzer:
        from facesphere.pipeline.analyzer import FaceAnalyzer

        if self.config.torch_threads:
            import torch

            torch.set_num_threads(int(self.config.torch_threads))
        return FaceAnalyzer(**{**self.config.analyzer, "max_pixels": self.max_pixels})

    @contextlib.contextmanager
    def analyzing(self) -> Iterator[FaceAnalyzer]:
        """The analyzer, holding one of the work queue's analysis slots (ServiceBusyError,
        503, when none comes free within the request's budget)."""
        analyzer = self.analyzer()
        with self.work.slot():
            yield analyzer

    # -- images ------------------------------------------------------------------------------

    def decode(self, data: bytes, field: str = "image") -> np.ndarray:
        """Pixels of an uploaded image; ImageError naming `field` and the reason otherwise."""
        try:
            return load_image(data, max_pixels=self.max_pixels)
        except ImageError as exc:
            raise ImageError(field, exc.reason) from exc
        except Exception as exc:  # a decoder failing on hostile bytes is still bad input
            log.warning("decoding %s failed: %s: %s", field, type(exc).__name__, exc)
            raise ImageError(field, "cannot decode image") from exc

    # -- galleries ---------------------------------------------------------------------------

    def gallery_target(self, name: str) -> str | Path:
        """Where gallery `name` is: its file in the galleries folder, or its URL in the
        database of galleries."""
        if self._gallery_backend is not None:
            return self._gallery_backend.gallery_target(self.gallery_url, name)
        return gallery_file(name, self.galleries_dir)

    def _cached_gallery(self, name: str) -> Gallery | None:
        """The open gallery `name`, unless its file was deleted or replaced since it was
        opened (then it is closed and forgotten). Call with `_galleries_lock` held."""
        gallery = self._galleries.get(name)
        if gallery is not None and not gallery.on_disk():
            del self._galleries[name]
            gallery.close()
            return None
        return gallery

    def gallery(self, name: str) -> Gallery:
        """The open gallery `name` (GalleryNotFoundError when there is none)."""
        with self._galleries_lock:
            gallery = self._cached_gallery(name)
            if gallery is None:
                try:
                    gallery = Gallery(self.gallery_target(name))
                except GalleryNotFoundError:
                    raise GalleryNotFoundError(f"no gallery named {name!r}") from None
                self._galleries[name] = gallery
            return gallery

    def create_gallery(self, name: str) -> tuple[Gallery, bool]:
        """Create gallery `name` for the analyzer's model, recording its card; (the gallery,
        whether it is new). ModelMismatchError when it exists for another model."""
        card = self.analyzer().card
        with self._galleries_lock:
            cached = self._cached_gallery(name)
            if cached is not None:
                cached.check_model(*card.model_key)
                return cached, False
            target = self.gallery_target(name)
            existed = Gallery.exists(target)
            gallery = Gallery.create(target, exist_ok=True, card=card)
            self._galleries[name] = gallery
            return gallery, not existed

    def delete_gallery(self, name: str) -> None:
        """Delete gallery `name` with its files (GalleryNotFoundError when there is none)."""
        gallery = self.gallery(name)
        with self._galleries_lock:
            self._galleries.pop(name, None)
            gallery.delete()

    def gallery_names(self) -> list[str]:
        """The names of the galleries in the galleries folder (or the database of
        galleries), sorted."""
        if self._gallery_backend is not None:
            names = self._gallery_backend.gallery_names(self.gallery_url)
            return [n for n in names if valid_gallery_name(n)]
        return gallery_names(self.galleries_dir)

    def public_message(self, message: str) -> str:
        """`message` without the server's paths: a gallery's file (or URL) becomes its quoted
        name, any other path under the galleries or home folder starts with `<galleries>` or
        `<home>`."""
        message = self._gallery_file.sub(lambda m: repr(m.group(1)), message)
        message = message.replace(str(self.galleries_dir), "<galleries>")
        return message.replace(str(self.home), "<home>")

    def close(self) -> None:
        """Close the open galleries."""
        with self._galleries_lock:
            for gallery in self._galleries.values():
                try:
                    gallery.close()
                except Exception:
                    log.exception("closing gallery %s failed", gallery.location)
            self._galleries.clear()
