"""The gallery back ends: choosing one by target, what both keep (the model check, the card,
deletion), and what only PostgreSQL has (thumbnails, URLs, an unreachable server)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from facesphere.cli.main import app
from facesphere.errors import ConfigError
from facesphere.gallery import (
    Gallery,
    GalleryError,
    GalleryExistsError,
    GalleryNotFoundError,
    ModelMismatchError,
)
from facesphere.gallery.backend import backend_for, list_backends
from facesphere.gallery.backends.postgres import PostgresBackend, rebuild_memory_mb, split_url
from facesphere.gallery.backends.sqlite import SqliteBackend
from facesphere.gallery.errors import BackendUnavailableError
from facesphere.pretrained.cards import DLIB_RESNET
from facesphere.serve.config import ServeConfig


def unit(rng: np.random.Generator, n: int, dim: int = 128) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_index_rebuild_memory_grows_with_the_graph() -> None:
    assert rebuild_memory_mb(0, 128) == 64  # the floor
    small, wide = rebuild_memory_mb(1_000_000, 128), rebuild_memory_mb(1_000_000, 512)
    assert 1500 < small < wide  # 512-d needs its vectors' 1.5 KB more a face
    assert wide > 2 * 2048  # a million 512-d faces need twice the old fixed 2 GB
    assert rebuild_memory_mb(2_000_000, 512) == pytest.approx(2 * wide, abs=1)
    assert rebuild_memory_mb(100_000_000, 512) == 32 * 1024  # the ceiling


def test_back_ends_are_chosen_by_target() -> None:
    assert list_backends() == ["postgres", "sqlite"]
    assert backend_for(Path("postgresql://x/y")) is SqliteBackend  # a Path is always a file
    assert backend_for("people.db") is SqliteBackend
    assert backend_for("postgresql://u@h/db?gallery=g") is PostgresBackend
    assert backend_for("POSTGRES://u@h/db?gallery=g") is PostgresBackend
    with pytest.raises(GalleryError, match="no gallery back end for mysql://"):
        backend_for("mysql://u@h/db")
    conninfo, name, public = split_url("postgresql://ann:secret@h:5/db?sslmode=require&gallery=g")
    assert (conninfo, name) == ("postgresql://ann:secret@h:5/db?sslmode=require", "g")
    assert public == "postgresql://ann@h:5/db?sslmode=require&gallery=g"  # no password
    for bad in (
        "postgresql://h/db",
        "postgresql://h/db?gallery=",
        "postgresql://h/db?gallery=a&gallery=b",
    ):
        with pytest.raises(GalleryError, match="needs one"):
            split_url(bad)


def test_serve_config_takes_a_database_of_galleries() -> None:
    config = ServeConfig(gallery_url="postgresql://u@h/db")
    assert ServeConfig.from_json(config.to_json()).gallery_url == "postgresql://u@h/db"
    for bad in ("postgresql://u@h/db?gallery=one", "/srv/galleries", "mysql://h/db"):
        with pytest.raises(ConfigError, match="gallery_url"):
            ServeConfig(gallery_url=bad)


def test_create_open_and_model_check(gallery_target) -> None:
    with pytest.raises(GalleryNotFoundError, match="not found"):
        Gallery(gallery_target)
    assert not Gallery.exists(gallery_target)
    with Gallery.create(gallery_target, card=DLIB_RESNET) as g:
        made = (g.gallery_id, g.created_at)
    assert Gallery.exists(gallery_target)
    with pytest.raises(GalleryExistsError):
        Gallery.create(gallery_target)
    with pytest.raises(ModelMismatchError, match="512-d"):
        Gallery.create(gallery_target, model="dlib-resnet", dim=512, exist_ok=True)
    with pytest.raises(ModelMismatchError, match="version 1"):
        Gallery.create(gallery_target, model="dlib-resnet", model_version="2", exist_ok=True)
    with Gallery.create(gallery_target, card=DLIB_RESNET, exist_ok=True) as g:
        assert (g.gallery_id, g.created_at) == made
        assert (g.model, g.model_version, g.dim) == ("dlib-resnet", "1", 128)
        assert g.card == DLIB_RESNET
        with pytest.raises(ModelMismatchError, match="not arcface"):
            g.identify(unit(np.random.default_rng(0), 1), model="arcface")
        with pytest.raises(ModelMismatchError, match="not 64-d"):
            g.enroll("ann", np.ones((1, 64)))
        assert len(g) == 0 and g.subjects() == []


def test_a_deleted_gallery_stops_answering(gallery_target) -> None:
    rng = np.random.default_rng(1)
    first = Gallery.create(gallery_target)
    first.enroll("ann", unit(rng, 2))
    second = Gallery(gallery_target)
    assert second.identify(unit(rng, 1), threshold=-1.0)[0].identity == "ann"
    first.delete()
    assert not second.on_disk() and not Gallery.exists(gallery_target)
    with pytest.raises(GalleryNotFoundError):
        second.identify(unit(rng, 1), threshold=-1.0)
    with pytest.raises(GalleryNotFoundError):
        second.generation()
    second.close()
    with Gallery.create(gallery_target) as again:  # the name is free again
        assert len(again) == 0


def test_postgres_thumbnails_stored_with_their_faces(postgres_url: str) -> None:
    from postgres import gallery_url

    rng = np.random.default_rng(2)
    with Gallery.create(gallery_url(postgres_url)) as g:
        ids = g.enroll("ann", unit(rng, 2), thumbnails=[b"\xff\xd8jpeg", None])
        assert g.face_thumbnail(ids[0]) == b"\xff\xd8jpeg"
        assert g.face_thumbnail(ids[1]) is None and g.face_thumbnail(10**9) is None
        with pytest.raises(GalleryError, match="1 thumbnails for 2"):
            g.enroll("bob", unit(rng, 2), thumbnails=[b"x"])
        with pytest.raises(GalleryError, match="must be bytes"):
            g.enroll("bob", unit(rng, 1), thumbnails=["not bytes"])
        assert [s.name for s in g.subjects()] == ["ann"]  # nothing stored on bad input


def test_unreachable_database_is_a_clear_failure() -> None:
    url = "postgresql://nobody@127.0.0.1:1/none?gallery=g&connect_timeout=2"
    with pytest.raises(BackendUnavailableError, match="database error"):
        Gallery(url)
    result = CliRunner().invoke(app, ["gallery", "list", url])
    assert result.exit_code == 1 and "database error" in result.output
