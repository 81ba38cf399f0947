"""Chinese whispers clustering, pairwise scores, and `facesphere cluster` on LFW photos."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facesphere.cli.main import app
from facesphere.cluster import (
    average_linkage,
    chinese_whispers,
    cluster_embeddings,
    pairwise_scores,
    relabel_by_size,
)
from facesphere.errors import ConfigError
from facesphere.pretrained.cards import DLIB_RESNET, DLIB_RESNET_SFACE

runner = CliRunner()


def blobs(rng: np.random.Generator, sizes: list[int], spread: float, dim: int = 64):
    """Unit vectors around random centres: (vectors, true labels)."""
    centres = rng.standard_normal((len(sizes), dim))
    labels = np.repeat(np.arange(len(sizes)), sizes)
    vectors = centres[labels] + spread * rng.standard_normal((len(labels), dim))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), labels


def test_pairwise_scores_by_hand() -> None:
    # clusters {0,1} {2,3,4}; people {0,1,2} {3,4}: 2 of the 4 pairs put together are right,
    # and 2 of the 4 same-person pairs were put together
    scores = pairwise_scores(np.array([7, 7, 7, 9, 9]), np.array([1, 1, 0, 0, 0]))
    assert (scores.precision, scores.recall) == (0.5, 0.5)
    assert (scores.predicted_pairs, scores.true_pairs, scores.clusters, scores.people) == (
        4,
        4,
        2,
        2,
    )
    perfect = pairwise_scores(np.array([3, 3, 5]), np.array([0, 0, 1]))
    assert perfect.f1 == 1.0
    lumped = pairwise_scores(np.array([1, 2, 3, 3]), np.zeros(4, int))
    assert lumped.recall == 1.0 and lumped.precision == pytest.approx(1 / 6)
    with pytest.raises(ValueError):
        pairwise_scores(np.zeros(3), np.zeros(4))


def test_relabel_by_size() -> None:
    labels = relabel_by_size(np.array([5, 9, 9, 2, 9, 2]))
    assert list(labels) == [2, 0, 0, 1, 0, 1]


def test_chinese_whispers_recovers_groups() -> None:
    rng = np.random.default_rng(3)
    vectors, truth = blobs(rng, [12, 7, 5, 3, 1, 1], spread=0.25)
    labels = chinese_whispers(vectors, threshold=0.6)
    scores = pairwise_scores(truth, labels)
    assert scores.precision == 1.0 and scores.recall == 1.0
    assert list(np.bincount(labels)) == [12, 7, 5, 3, 1, 1]
    # over every similarity nothing joins; copies of one face all join
    assert len(set(chinese_whispers(vectors, threshold=1.01))) == len(vectors)
    assert set(chinese_whispers(np.repeat(vectors[:1], 9, axis=0), threshold=0.99)) == {0}


def test_chinese_whispers_is_deterministic_and_handles_empty() -> None:
    rng = np.random.default_rng(5)
    vectors, _ = blobs(rng, [20, 20, 20], spread=0.6)
    first = chinese_whispers(vectors, threshold=0.3, seed=1)
    assert np.array_equal(first, chinese_whispers(vectors, threshold=0.3, seed=1))
    assert len(chinese_whispers(np.zeros((0, 8)), threshold=0.5)) == 0


def test_average_linkage_matches_scipy() -> None:
    hierarchy = pytest.importorskip("scipy.cluster.hierarchy")
    rng = np.random.default_rng(11)
    for trial in range(15):
        vectors, _ = blobs(rng, [int(n) for n in rng.integers(1, 12, size=5)], spread=0.8, dim=16)
        threshold = float(rng.uniform(0.1, 0.6))
        ours = average_linkage(vectors, threshold)
        tree = hierarchy.linkage(vectors, method="average", metric="cosine")
        theirs = hierarchy.fcluster(tree, 1 - threshold, criterion="distance")
        same = pairwise_scores(theirs, ours)
        assert same.f1 == 1.0 and same.clusters == same.people, (trial, threshold)


def test_average_linkage_resists_chaining() -> None:
    # a path of faces, each similar to the next only: single links would chain them all
    angles = np.linspace(0, 1.6, 9)
    path = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    assert len(set(chinese_whispers(path, threshold=0.95))) < len(set(average_linkage(path, 0.95)))
    labels = average_linkage(path, threshold=0.95)
    for label in set(labels):
        members = path[labels == label]
        if len(members) > 1:  # every cluster keeps its mean pairwise similarity over 0.95
            sims = members @ members.T
            assert sims[np.triu_indices(len(members), 1)].mean() >= 0.95
    with pytest.raises(ConfigError, match="unknown cluster method 'kmeans'; known: average"):
        cluster_embeddings(path, 0.9, method="kmeans")


def test_default_thresholds_are_per_method() -> None:
    # two unit vectors at cosine 0.94: over average's default (0.93), under Chinese whispers'
    angle = np.arccos(0.94)
    pair = np.array([[1.0, 0.0], [np.cos(angle), np.sin(angle)]])
    cuts = {job: t.value for job, t in DLIB_RESNET.thresholds.items() if job.startswith("cl")}
    assert cuts == {"cluster-average": 0.93, "cluster-chinese-whispers": 0.95}
    assert len(set(cluster_embeddings(pair, card=DLIB_RESNET))) == 1
    assert len(set(cluster_embeddings(pair, method="chinese-whispers", card=DLIB_RESNET))) == 2
    assert len(set(cluster_embeddings(pair, threshold=0.95))) == 2
    with pytest.raises(ConfigError, match="needs a threshold or the model card"):
        cluster_embeddings(pair)


PEOPLE = ["Colin_Powell", "George_W_Bush", "Serena_Williams"]


def test_cluster_cli_on_lfw(shared_data: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    (photos / "more").mkdir(parents=True)
    for person in PEOPLE:
        for number in range(1, 5):
            name = f"{person}_{number:04d}.jpg"
            target = photos / ("more" if number == 4 else ".") / name
            target.symlink_to(shared_data / "lfw" / "images" / person / name)
    Image.fromarray(np.full((100, 100, 3), 128, np.uint8)).save(photos / "blank.png")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    report_path = tmp_path / "report.json"
    links = tmp_path / "links"
    result = runner.invoke(
        app,
        ["cluster", str(photos), "--json", str(report_path), "--link", str(links), "-j", "1"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["images"] == 14 and report["faces"] == 12
    assert report["threshold"] == DLIB_RESNET_SFACE.threshold("cluster-average").value
    assert report["no_face"] == [str(photos / "blank.png")]
    assert [row["path"] for row in report["unreadable"]] == [str(photos / "broken.jpg")]
    members = [(m["path"], c["id"]) for c in report["clusters"] for m in c["members"]]
    members += [(m["path"], -1 - i) for i, m in enumerate(report["unclustered"])]
    truth = np.array([next(p for p in PEOPLE if p in path) for path, _ in members])
    scores = pairwise_scores(truth, np.array([label for _, label in members]))
    assert scores.precision >= 0.9 and scores.recall >= 0.6, scores
    assert len(report["clusters"]) == 3
    for cluster in report["clusters"]:
        folder = links / f"cluster_{cluster['id']:03d}"
        linked = sorted(os.path.realpath(p) for p in folder.iterdir())
        expected = sorted(os.path.realpath(m["path"]) for m in cluster["members"])
        assert linked == expected and all(p.is_symlink() for p in folder.iterdir())
    again = runner.invoke(app, ["cluster", str(photos), "--link", str(links)])
    assert again.exit_code == 2 and "new or empty" in again.stderr


def test_cluster_cli_errors(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["cluster", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and missing.stderr.startswith("error: not a folder")
    empty = runner.invoke(app, ["cluster", str(tmp_path)])
    assert empty.exit_code == 2 and "no image files" in empty.stderr
    Image.fromarray(np.full((80, 80, 3), 10, np.uint8)).save(tmp_path / "dark.png")
    faceless = runner.invoke(app, ["cluster", str(tmp_path), "--json", "-", "-j", "1"])
    assert faceless.exit_code == 3 and "no face found" in faceless.stderr
    assert json.loads(faceless.stdout)["no_face"] == [str(tmp_path / "dark.png")]
