"""Video: tracker on synthetic detections, identity smoothing, and `facesphere video` end to end
on a short clip made here from LFW photos."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from facesphere.cards import Threshold
from facesphere.cli.main import app
from facesphere.errors import ConfigError
from facesphere.video.pipeline import (
    Overlay,
    identify_matches,
    interpolate_overlays,
    open_video,
    process_video,
)
from facesphere.video.tracker import (
    Detection,
    IdentitySmoother,
    Tracker,
    TrackerConfig,
    iou_matrix,
)

runner = CliRunner()


# -- helpers ---------------------------------------------------------------------------------


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def two_people(cosine: float, dim: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two unit embeddings with the given cosine similarity (like two different people)."""
    rng = np.random.default_rng(seed)
    a = unit(rng.normal(size=dim))
    other = rng.normal(size=dim)
    other = unit(other - (other @ a) * a)
    return a, unit(cosine * a + np.sqrt(1 - cosine**2) * other)


def noisy(e: np.ndarray, rng: np.random.Generator, scale: float = 0.015) -> np.ndarray:
    return unit(e + rng.normal(scale=scale, size=e.shape))


def box_at(x: float, y: float, size: float = 60) -> np.ndarray:
    return np.array([x, y, x + size, y + size], np.float32)


def track_with_box(tracker: Tracker, box: np.ndarray) -> int:
    """The id of the visible track whose box is `box`."""
    found = [t.id for t in tracker.tracks if t.visible and np.allclose(t.box, box)]
    assert len(found) == 1, found
    return found[0]


# -- tracker ---------------------------------------------------------------------------------


def test_iou_matrix() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    got = iou_matrix(a, b)
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got[0], [1.0, 50 / 150, 0.0])
    np.testing.assert_allclose(got[1], [0.0, 0.0, 0.0])


def crossing_rounds(with_embeddings: bool) -> tuple[Tracker, list[dict[str, int]]]:
    """Two faces walking through each other; returns the track id of each person per frame."""
    emb_a, emb_b = two_people(0.85)
    rng = np.random.default_rng(3)
    order = np.random.default_rng(4)
    tracker = Tracker(TrackerConfig(max_missed=1))
    ids: list[dict[str, int]] = []
    for t in range(14):
        people = {
            "a": (box_at(20 + 15 * t, 50), noisy(emb_a, rng)),
            "b": (box_at(207 - 15 * t, 50), noisy(emb_b, rng)),
        }
        dets = {
            name: Detection(box, embedding=emb if with_embeddings else None)
            for name, (box, emb) in people.items()
        }
        names = list(dets)
        order.shuffle(names)
        tracker.update([dets[n] for n in names], frame=t, time=t / 10)
        ids.append({n: track_with_box(tracker, dets[n].box) for n in dets})
    return tracker, ids


def test_crossing_faces_keep_their_ids_thanks_to_embeddings() -> None:
    tracker, ids = crossing_rounds(with_embeddings=True)
    assert all(frame == ids[0] for frame in ids), ids
    assert ids[0]["a"] != ids[0]["b"]
    assert len(tracker.all_tracks) == 2


def test_crossing_faces_swap_ids_on_overlap_alone() -> None:
    # The scenario is hard enough that box overlap alone gets it wrong: embeddings matter.
    _, ids = crossing_rounds(with_embeddings=False)
    assert ids[-1]["a"] == ids[0]["b"] and ids[-1]["b"] == ids[0]["a"]


def test_face_missing_one_frame_keeps_its_track() -> None:
    emb, _ = two_people(0.8)
    tracker = Tracker(max_missed=2)
    events = []
    for t in range(8):
        dets = [] if t == 3 else [Detection(box_at(40 + 5 * t, 40), embedding=emb)]
        events += tracker.update(dets, frame=t, time=t / 25)
        if t == 3:
            assert len(tracker.tracks) == 1 and tracker.tracks[0].missed == 1
    assert [e.kind for e in events] == ["appear"]
    assert len(tracker.all_tracks) == 1 and tracker.tracks[0].hits == 7
    events = tracker.finish()
    assert [(e.kind, e.track, e.frame, e.frames_seen) for e in events] == [("leave", 1, 7, 7)]


def test_track_without_max_missed_tolerance_restarts() -> None:
    emb, _ = two_people(0.8)
    tracker = Tracker(max_missed=0)
    kinds = []
    for t in range(5):
        dets = [] if t == 2 else [Detection(box_at(40 + 5 * t, 40), embedding=emb)]
        kinds += [(e.kind, e.track, e.frame) for e in tracker.update(dets, frame=t)]
    assert kinds == [("appear", 1, 0), ("leave", 1, 1), ("appear", 2, 3)]


def test_track_ends_after_max_missed_rounds() -> None:
    tracker = Tracker(max_missed=3)
    tracker.update([Detection(box_at(0, 0))], frame=0, time=0.0)
    for t in range(1, 4):
        assert tracker.update([], frame=t) == []
    (event,) = tracker.update([], frame=4, time=0.16)
    assert event.kind == "leave" and event.frame == 0 and event.time == 0.0
    assert tracker.tracks == [] and len(tracker.finished) == 1


def test_far_detection_of_another_person_starts_a_new_track() -> None:
    emb_a, emb_b = two_people(0.8)
    tracker = Tracker()
    tracker.update([Detection(box_at(0, 0), embedding=emb_a)], frame=0)
    events = tracker.update([Detection(box_at(200, 100), embedding=emb_b)], frame=1)
    assert [e.kind for e in events] == ["appear"] and events[0].track == 2


def scores_stream(frames: int, bad: dict[int, tuple[float, float]]) -> list[list]:
    """Per-frame gallery matches: Alice 0.95 and Bob 0.80, except the `bad` frames."""
    out = []
    for t in range(frames):
        alice, bob = bad.get(t, (0.95, 0.80))
        out.append([("Alice", alice), ("Bob", bob), ("Carol", 0.5)])
    return out


def run_identity(window: int, matches: list[list]) -> tuple[Tracker, list]:
    emb, _ = two_people(0.8)
    tracker = Tracker(window=window, threshold=0.9)
    events = []
    for t, found in enumerate(matches):
        det = Detection(box_at(50 + 2 * t, 50), embedding=emb, matches=found)
        events += tracker.update([det], frame=t, time=t / 25)
    return tracker, events


def test_one_bad_frame_does_not_change_the_smoothed_identity() -> None:
    matches = scores_stream(12, {6: (0.82, 0.93)})
    tracker, events = run_identity(5, matches)
    assert [(e.kind, e.identity) for e in events] == [("appear", "Alice")]
    assert tracker.tracks[0].identity == "Alice"
    assert tracker.tracks[0].identities_seen == {"Alice"}


def test_without_smoothing_the_bad_frame_flickers() -> None:
    matches = scores_stream(12, {6: (0.82, 0.93)})
    _, events = run_identity(1, matches)
    changes = [(e.frame, e.previous, e.identity) for e in events if e.kind == "identity"]
    assert changes == [(6, "Alice", "Bob"), (7, "Bob", "Alice")]


def test_lasting_identity_change_goes_through_after_the_window() -> None:
    matches = scores_stream(14, {t: (0.80, 0.93) for t in range(5, 14)})
    tracker, events = run_identity(5, matches)
    changes = [(e.frame, e.previous, e.identity) for e in events if e.kind == "identity"]
    assert changes == [(9, "Alice", "Bob")]
    assert tracker.tracks[0].identities_seen == {"Alice", "Bob"}


def test_identity_below_threshold_is_unknown() -> None:
    smoother = IdentitySmoother(window=3, threshold=0.9)
    assert smoother.update([("Alice", 0.85), ("Bob", 0.6)]) == (None, 0.85)
    assert smoother.update([("Alice", 0.91)]) == ("Alice", 0.91)
    assert smoother.update([]) == ("Alice", 0.91)
    assert smoother.update([]) == ("Alice", 0.91)
    assert smoother.update([]) == (None, None)  # everything left the window
    assert smoother.scores == {}


def test_tracker_config_rejects_bad_values() -> None:
    for bad in ({"window": 0}, {"max_missed": -1}, {"iou_weight": 1.5}):
        with pytest.raises(ValueError):
            TrackerConfig(**bad)


def test_event_to_dict_is_json_ready() -> None:
    tracker = Tracker()
    (event,) = tracker.update(
        [Detection(box_at(1, 2), matches=[("Alice", 0.97)])], frame=3, time=0.12
    )
    data = json.loads(json.dumps(event.to_dict()))
    assert data == {
        "event": "appear",
        "track": 1,
        "frame": 3,
        "time": 0.12,
        "box": [1.0, 2.0, 61.0, 62.0],
        "identity": "Alice",
        "score": 0.97,
    }


def test_interpolate_overlays() -> None:
    before = {1: Overlay(box_at(0, 0), "#1"), 2: Overlay(box_at(100, 0), "#2")}
    after = {1: Overlay(box_at(10, 20), "#1 x"), 3: Overlay(box_at(50, 50), "#3")}
    early = interpolate_overlays(before, after, 0, 4, 1)
    np.testing.assert_allclose(early[1].box, box_at(2.5, 5))
    assert early[1].label == "#1 x" and 2 in early and 3 not in early
    late = interpolate_overlays(before, after, 0, 4, 3)
    assert 2 not in late and 3 in late


# -- identification adapter ------------------------------------------------------------------


@dataclass
class FakeResult:
    identity: str | None
    matches: list[tuple[str, float]]


class FakeGallery:
    """A gallery of known embeddings: cosine similarity to each subject's mean embedding."""

    def __init__(self, subjects: dict[str, np.ndarray], threshold: float = 0.9) -> None:
        self.names = list(subjects)
        self.matrix = np.stack([unit(np.asarray(v)) for v in subjects.values()])
        self.threshold = threshold
        self.calls = 0

    def identify(
        self, embeddings: np.ndarray, top_k: int = 5, threshold: float | None = None
    ) -> list[FakeResult]:
        self.calls += 1
        scores = np.atleast_2d(embeddings) @ self.matrix.T
        results = []
        for row in scores:
            order = np.argsort(-row)[:top_k]
            matches = [(self.names[i], float(row[i])) for i in order]
            best = matches[0] if matches and matches[0][1] >= self.threshold else None
            results.append(FakeResult(best[0] if best else None, matches))
        return results

    def decision_threshold(
        self, threshold: float | None = None, fpir: float | None = None
    ) -> Threshold:
        return Threshold.given(self.threshold if threshold is None else threshold)


def test_identify_matches_plain_lists() -> None:
    a, b = two_people(0.5)
    gallery = FakeGallery({"Alice": a, "Bob": b})
    got = identify_matches(gallery, np.stack([a, b]), top_k=1, threshold=0.9)
    assert [m[0][0] for m in got] == ["Alice", "Bob"] and len(got[0]) == 1
    assert identify_matches(gallery, np.zeros((0, 128), np.float32), top_k=3, threshold=0.9) == []


# -- video end to end ------------------------------------------------------------------------
#
# The clip: Powell in frames 0-9 on the left, Jolie in frames 6-15 on the right, each moving.
# It runs on the dlib HOG detector and dlib engine, the fastest pipeline on a CPU.

PEOPLE = {"Colin_Powell": (0, 10), "Angelina_Jolie": (6, 16)}  # frames [first, end)
FRAMES = 16
FPS = 8.0
SIZE = (400, 240)
TILE = 150
FAST = ["--detector", "hog", "--engine", "dlib", "--recognizer", "dlib-resnet", "--no-progress"]


def photo(root: Path, name: str, number: int) -> np.ndarray:
    bgr = cv2.imread(str(root / "lfw" / "images" / name / f"{name}_{number:04d}.jpg"))
    assert bgr is not None
    return bgr


def position(name: str, t: int) -> tuple[int, int]:
    """Top-left corner of `name`'s photo at frame t."""
    if name == "Colin_Powell":
        return 5 + 2 * t, 40 + t
    return 235 - 2 * (t - 6), 50


@pytest.fixture(scope="module")
def clip(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    assert writer.isOpened()
    margin = (250 - TILE) // 2  # the centre of the 250x250 photo, at full resolution
    tiles = {
        name: photo(shared_data, name, 1)[margin : margin + TILE, margin : margin + TILE]
        for name in PEOPLE
    }
    for t in range(FRAMES):
        canvas = np.full((SIZE[1], SIZE[0], 3), 90, np.uint8)
        for name, (first, end) in PEOPLE.items():
            if first <= t < end:
                x, y = position(name, t)
                canvas[y : y + TILE, x : x + TILE] = tiles[name]
        writer.write(canvas)
    writer.release()
    return path


@pytest.fixture(scope="module")
def analyzer():
    from facesphere import FaceAnalyzer

    return FaceAnalyzer(detector="hog", recognizer="dlib-resnet", engine="dlib")


@pytest.fixture(scope="module")
def known(shared_data: Path, analyzer) -> dict[str, np.ndarray]:
    """Embeddings of other photos of the clip's two people, and of two distractors."""
    subjects = {}
    for name in [*PEOPLE, "George_W_Bush", "Tony_Blair"]:
        faces = analyzer.analyze(cv2.cvtColor(photo(shared_data, name, 2), cv2.COLOR_BGR2RGB))
        subjects[name] = faces[0].embedding
    return subjects


def read_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def stored_codec(path: Path) -> str:
    """The video codec of `path` as ffmpeg reads the file (h264, vp9, mpeg4, ...)."""
    import subprocess

    import imageio_ffmpeg

    probe = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    streams = [line for line in probe.stderr.splitlines() if "Video:" in line]
    assert len(streams) == 1, probe.stderr
    return streams[0].split("Video:")[1].split()[0].rstrip(",")


def test_video_cli_end_to_end(clip: Path, known: dict[str, np.ndarray], tmp_path: Path) -> None:
    from facesphere.gallery import Gallery

    gallery_path = tmp_path / "people.db"
    with Gallery.create(gallery_path) as gallery:
        for name, embedding in known.items():
            gallery.enroll(name, embedding[None])
    out, events_path = tmp_path / "annotated.mp4", tmp_path / "events.jsonl"
    result = runner.invoke(
        app,
        [
            "video", str(clip), "--gallery", str(gallery_path), "--out", str(out),
            "--json", str(events_path), "--every", "2", "--window", "3", "--json-summary",
            *FAST,
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["frames"] == FRAMES and summary["detection_frames"] == FRAMES // 2
    naming = summary["naming"]  # the gallery's identification threshold for its 4 subjects
    assert (naming["fpir"], naming["gallery_size"]) == (0.01, len(known)) and naming["far"] < 0.01
    assert summary["tracks"] == 2 and summary["unnamed_tracks"] == []
    assert summary["identities"] == {"Angelina_Jolie": [2], "Colin_Powell": [1]}

    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    assert [e["event"] for e in events] == ["appear", "appear", "leave", "leave"]
    by_kind = {(e["event"], e["identity"]): e for e in events}
    assert set(by_kind) == {
        ("appear", "Colin_Powell"),
        ("appear", "Angelina_Jolie"),
        ("leave", "Colin_Powell"),
        ("leave", "Angelina_Jolie"),
    }
    assert by_kind["appear", "Colin_Powell"]["frame"] == 0
    assert by_kind["appear", "Angelina_Jolie"]["frame"] == 6
    assert by_kind["appear", "Angelina_Jolie"]["time"] == pytest.approx(6 / FPS)
    assert by_kind["leave", "Colin_Powell"]["frame"] == 8  # its last detection frame
    assert by_kind["leave", "Angelina_Jolie"]["frame"] == 14
    assert by_kind["appear", "Colin_Powell"]["score"] >= 0.9
    x1, y1, x2, y2 = by_kind["appear", "Colin_Powell"]["box"]
    assert 5 <= x1 < x2 <= 5 + TILE and 40 <= y1 < y2 <= 40 + TILE

    assert summary["codec"] == "h264" and stored_codec(out) == "h264"
    original, annotated = read_frames(clip), read_frames(out)
    assert len(original) == FRAMES and len(annotated) == FRAMES
    assert annotated[0].shape == original[0].shape
    for t in (0, 1, 7, 15):  # detection frames, and interpolated or kept ones, are drawn on
        diff = np.abs(annotated[t].astype(int) - original[t].astype(int))
        assert diff.max() > 100, t
    # Frame 12 shows only Jolie, on the right: nothing is drawn on the left.
    left = np.abs(annotated[12][:, :200].astype(int) - original[12][:, :200].astype(int))
    assert left.max() < 60


def test_process_video_with_a_fake_gallery(
    clip: Path, analyzer, known: dict[str, np.ndarray]
) -> None:
    gallery = FakeGallery(known)
    seen = []
    summary = process_video(clip, analyzer, gallery, every=4, window=2, on_event=seen.append)
    assert gallery.calls == summary.detection_frames == 4
    assert summary.frames == FRAMES and summary.tracks == 2
    assert summary.identities == {"Angelina_Jolie": [2], "Colin_Powell": [1]}
    assert [(e.kind, e.identity) for e in seen if e.kind == "appear"] == [
        ("appear", "Colin_Powell"),
        ("appear", "Angelina_Jolie"),
    ]
    assert summary.events == seen


def test_video_cli_without_gallery_tracks_unnamed(clip: Path, tmp_path: Path) -> None:
    events_path = tmp_path / "events.jsonl"
    result = runner.invoke(
        app, ["video", str(clip), "--every", "8", "--json", str(events_path), *FAST]
    )
    assert result.exit_code == 0, result.output
    assert "16 frame(s) (2 analysed)" in result.stdout and "tracks: 2" in result.stdout
    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    assert sorted(e["event"] for e in events) == ["appear", "appear", "leave", "leave"]
    assert all(e["identity"] is None and e["score"] is None for e in events)


# -- annotated video codecs ------------------------------------------------------------------


def _frames(count: int, size: tuple[int, int]) -> list[np.ndarray]:
    """Frames whose halves have distinct flat colours, different in each frame."""
    width, height = size
    frames = []
    for t in range(count):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[:, : width // 2] = (20 * t, 100, 200 - 10 * t)
        frame[:, width // 2 :] = (250 - 20 * t, 40 + 10 * t, 60)
        frames.append(frame)
    return frames


@pytest.mark.parametrize(
    ("name", "codecs", "fourccs"),
    [
        ("out.mp4", ("h264",), ("avc1", "h264")),
        ("out.webm", ("vp9", "vp8"), ("vp90", "vp80", "vp09", "vp08")),
    ],
)
def test_written_videos_round_trip_in_browser_codecs(
    tmp_path: Path, name: str, codecs: tuple[str, ...], fourccs: tuple[str, ...]
) -> None:
    from facesphere.video.writer import BROWSER_CODECS, open_writer

    size = (161, 91)  # odd sides: H.264 in yuv420p needs even ones
    frames = _frames(12, size)
    writer = open_writer(tmp_path / name, 10.0, *size)
    assert writer.codec in codecs and writer.codec in BROWSER_CODECS
    for frame in frames:
        writer.write(frame)
    writer.release()
    assert stored_codec(tmp_path / name) in codecs
    capture = cv2.VideoCapture(str(tmp_path / name))
    fourcc = int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode().lower()
    capture.release()
    assert fourcc in fourccs, fourcc
    back = read_frames(tmp_path / name)
    assert len(back) == len(frames)
    for written, read in zip(frames, back):
        assert read.shape[0] >= size[1] and read.shape[1] >= size[0]
        read = read[: size[1], : size[0]]
        inner = (slice(10, -10), slice(10, size[0] // 2 - 10))  # away from the colour edge
        assert np.abs(read[inner].astype(int) - written[inner].astype(int)).mean() < 6


def test_without_an_h264_encoder_video_falls_back_with_a_warning(
    clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from facesphere.video import writer

    opencv = writer._opencv
    monkeypatch.setattr(writer, "ffmpeg_executable", lambda: None)
    monkeypatch.setattr(
        writer, "_opencv", lambda *a: None if a[3] == "avc1" else opencv(*a)
    )  # as on a build without H.264 at all
    out = tmp_path / "plain.mp4"
    result = runner.invoke(
        app, ["video", str(clip), "--every", "8", "--out", str(out), "--json-summary", *FAST]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["codec"] == "mp4v"
    assert "written as mp4v" in result.stderr and "browsers do not play" in result.stderr
    assert stored_codec(out) == "mpeg4" and len(read_frames(out)) == FRAMES
    webm = tmp_path / "plain.webm"
    result = runner.invoke(app, ["video", str(clip), "--every", "8", "--out", str(webm), *FAST])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr and "annotated video (vp9)" in result.stdout


# -- bad input -------------------------------------------------------------------------------


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_missing_video_exits_2(tmp_path: Path) -> None:
    line = one_line_error(runner.invoke(app, ["video", str(tmp_path / "nope.mp4")]))
    assert "not found" in line


def test_corrupt_video_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all " * 50)
    line = one_line_error(runner.invoke(app, ["video", str(bad), "--no-progress"]))
    assert "cannot read video" in line


def test_folder_as_video_exits_2(tmp_path: Path) -> None:
    line = one_line_error(runner.invoke(app, ["video", str(tmp_path), "--no-progress"]))
    assert line.endswith("not a regular file (a directory)")


def test_missing_gallery_exits_2(clip: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["video", str(clip), "--gallery", str(tmp_path / "none.db")])
    assert "gallery not found" in one_line_error(result)


def test_bad_every_exits_2(clip: Path) -> None:
    result = runner.invoke(app, ["video", str(clip), "--every", "0"])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_broken_gallery_exits_2(clip: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"this is no sqlite database" * 10)
    result = runner.invoke(app, ["video", str(clip), "--gallery", str(broken)])
    assert "cannot open gallery" in one_line_error(result)


def test_output_same_as_input_is_refused(clip: Path, analyzer) -> None:
    with pytest.raises(ConfigError, match="is the input"):
        process_video(clip, analyzer, out=clip)


def test_open_video_reports_size_and_fps(clip: Path) -> None:
    capture, fps, width, height, count = open_video(clip)
    capture.release()
    assert (fps, width, height, count) == (FPS, *SIZE, FRAMES)


@pytest.mark.parametrize("option", ["--out", "--json"])
def test_unwritable_output_exits_2(clip: Path, tmp_path: Path, option: str) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = runner.invoke(app, ["video", str(clip), option, str(blocker / "x" / "out"), *FAST])
    assert "cannot" in one_line_error(result)


@dataclass
class _EdgeFace:
    box: np.ndarray
    score: float = 0.9
    embedding: np.ndarray = field(default_factory=lambda: np.eye(1, 8, dtype=np.float32)[0])


class _EdgeAnalyzer:
    """Finds one face reaching past every edge of the frame (as detectors do at borders)."""

    def analyze(self, rgb: np.ndarray) -> list[_EdgeFace]:
        height, width = rgb.shape[:2]
        return [_EdgeFace(np.array([-30.0, -12.0, width + 25.0, height + 40.0], np.float32))]


def test_video_boxes_are_clipped_to_the_frame(clip: Path) -> None:
    seen = []
    process_video(clip, _EdgeAnalyzer(), every=4, on_event=seen.append)
    boxes = [event.to_dict()["box"] for event in seen]
    assert boxes
    width, height = SIZE
    for x1, y1, x2, y2 in boxes:
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height, (x1, y1, x2, y2)


def test_a_failing_ffmpeg_is_a_video_error(tmp_path: Path) -> None:
    import imageio_ffmpeg

    from facesphere.errors import VideoError
    from facesphere.video.writer import FfmpegWriter

    out = tmp_path / "missing-folder" / "x.mp4"  # ffmpeg cannot open it
    writer = FfmpegWriter(imageio_ffmpeg.get_ffmpeg_exe(), out, 10.0, (64, 48), "libx264")
    with pytest.raises(VideoError, match="cannot write video"):
        for frame in _frames(12, (64, 48)):
            writer.write(frame)
        writer.release()
    assert not out.exists()
