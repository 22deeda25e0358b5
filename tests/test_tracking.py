"""shared.tracking: voting, matching, tracks that follow real faces, determinism; shared.videos: ids and cleanup."""
import os
import time

import cv2
import numpy as np
import pytest

from shared import faces, images, tracking, videos
from shared.errors import UserError
from shared.tracking import Settings, Track, decide, iou, match, merge_spans

from .conftest import FIVE, VIDEO, needs_data, needs_video


# -- voting -------------------------------------------------------------------------

def test_decide_majority_with_unknown_as_a_candidate():
    assert decide([]) is None
    assert decide([], "a", True) == "a"
    assert decide([("a", 0.9)]) == "a"
    assert decide([(None, 0.9), (None, 0.8), ("a", 0.6)]) is None
    assert decide([("a", 0.6), ("b", 0.9)]) == "b"  # tie on votes: higher summed confidence


def test_decide_keeps_the_current_name_unless_outvoted():
    votes = [("a", 0.9), ("a", 0.8), ("b", 0.99)]
    assert decide(votes, "a", True) == "a"
    assert decide(votes + [("b", 0.99)], "a", True) == "a"  # a tie keeps the name shown
    assert decide(votes + [("b", 0.9), ("b", 0.9)], "a", True) == "b"


def test_one_bad_vote_never_renames_a_track():
    t = Track(1, (10, 50, 50, 10), 0)
    shown = []
    for identity in ["lin", "lin", "elton", "lin", None, "lin", "elton", "lin"]:
        t.vote(identity, 0.8)
        shown.append(t.identity)
    assert shown == ["lin"] * 8
    assert t.confidence == pytest.approx(0.8)


def test_track_spans_and_merge():
    t = Track(1, (0, 10, 10, 0), 0)
    for i in [0, 1, 2, 5, 6]:
        t.shown(i)
    assert t.spans == [[0, 2], [5, 6]] and t.frames_shown == 5
    assert merge_spans([[5, 6], [0, 2], [3, 4], [10, 12], [11, 20], [22, 22]]) == [[0, 6], [10, 20], [22, 22]]


# -- geometry -----------------------------------------------------------------------

def test_iou_and_greedy_matching():
    a = (0, 10, 10, 0)
    assert iou(a, a) == 1.0
    assert iou(a, (20, 30, 30, 20)) == 0.0
    assert iou(a, (0, 10, 10, 5)) == pytest.approx(0.5)
    tracks = [(0, 10, 10, 0), (0, 110, 10, 100)]
    dets = [(1, 111, 11, 101), (50, 60, 60, 50), (0, 10, 10, 1)]
    pairs, lost, new = match(tracks, dets, 0.3)
    assert sorted(pairs) == [(0, 2), (1, 0)] and lost == [] and new == [1]
    pairs, lost, new = match(tracks, [], 0.3)
    assert pairs == [] and lost == [0, 1] and new == []


# -- real faces moving through a synthetic video ------------------------------------

def _photo_with_one_face():
    for path in sorted((FIVE / "madonna").glob("train_*.jpg")):
        rgb = images.load_image(path)
        found = faces.detect(rgb)
        if len(found) == 1:
            top, right, bottom, left = found[0]
            m = (bottom - top) // 2
            crop = rgb[max(0, top - m):bottom + m, max(0, left - m):right + m]
            crop = cv2.resize(crop, (220, int(220 * crop.shape[0] / crop.shape[1])))
            box = faces.detect(crop)
            if len(box) == 1:
                return crop, box[0]
    pytest.skip("no single-face photo found")


def _write(path, frames_bgr, fps=25.0):
    h, w = frames_bgr[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for f in frames_bgr:
        out.write(f)
    out.release()
    return path


@needs_data
def test_a_moving_face_keeps_one_track_and_its_box_follows(tmp_path):
    crop, (ct, cr, cb, cl) = _photo_with_one_face()
    ch, cw = crop.shape[:2]
    n, step = 60, 4
    clip = []
    truth = []
    for i in range(n):
        canvas = np.full((360, 640, 3), 90, np.uint8)
        x, y = 20 + step * i, 40 + i
        canvas[y:y + ch, x:x + cw] = crop
        clip.append(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
        truth.append(((cl + cr) / 2 + x, (ct + cb) / 2 + y))
    path = _write(tmp_path / "moving.mp4", clip)
    seen = []
    for index, _t, rgb, views, rec in tracking.run(path, None):
        assert len(views) == 1, index
        v = views[0]
        top, right, bottom, left = v.box
        cx, cy = (left + right) / 2, (top + bottom) / 2
        size = right - left
        assert abs(cx - truth[index][0]) < 0.2 * size and abs(cy - truth[index][1]) < 0.2 * size, index
        assert v.label(has_model=False) == "no model" and not v.known
        seen.append(v.track)
    assert len(seen) == n and set(seen) == {seen[0]}  # one track from start to end
    assert rec.detections <= n // Settings().detect_every + 1  # detection only every few frames
    assert rec.appearances() == [{"identity": None, "first_s": 0.0, "last_s": round((n - 1) / 25, 2),
                                  "frames": n}]


@needs_data
def test_a_scene_cut_ends_the_track_at_once(tmp_path):
    crop, _ = _photo_with_one_face()
    ch, cw = crop.shape[:2]
    clip = []
    for i in range(40):
        canvas = np.full((360, 640, 3), 200 if i >= 20 else 30, np.uint8)
        x = 380 if i >= 20 else 30
        canvas[60:60 + ch, x:x + cw] = crop
        clip.append(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    path = _write(tmp_path / "cut.mp4", clip)
    tracks = [[v.track for v in views] for _i, _t, _rgb, views, _rec in tracking.run(path, None)]
    assert all(len(t) == 1 for t in tracks)
    assert set(x[0] for x in tracks[:20]) == {tracks[0][0]}
    assert set(x[0] for x in tracks[20:]) == {tracks[20][0]} and tracks[20][0] != tracks[0][0]


@needs_video
def test_a_video_without_faces_gives_no_tracks(tmp_path):
    rng = np.random.default_rng(0)
    clip = [cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), (9, 9), 3) for _ in range(15)]
    path = _write(tmp_path / "noise.mp4", clip)
    out = list(tracking.run(path, None))
    assert len(out) == 15 and all(views == [] for *_, views, _ in out)
    assert out[-1][4].appearances() == []
    assert out[-1][4].panel_lines() == ["No model trained yet: faces are not named"]


@needs_video
def test_closing_the_generator_releases_the_video():
    gen = tracking.run(VIDEO / "short_hamilton_clip.mp4", None)
    for _ in range(5):
        next(gen)
    gen.close()
    with pytest.raises(StopIteration):
        next(gen)


@needs_video
def test_pool_and_inline_give_the_same_frames(celeb_faces):
    """Jobs on the process pool change the speed, never the result."""
    from shared import classifier, parallel
    from shared.pool import kol_slug

    X, slugs, names = [], [], {}
    for person, items in celeb_faces.items():
        for _path, face in items[:8]:
            X.append(face.embedding)
            slugs.append(kol_slug(person))
            names[kol_slug(person)] = person
    lin = faces.analyze(images.load_image(VIDEO / "lin-manuel-miranda.png"))[0]
    X.append(lin.embedding)
    slugs.append("lin")
    names["lin"] = "Lin-Manuel Miranda"
    model = classifier.train(np.array(X), slugs, names)

    def frames_of(executor):
        return [(i, [(v.box, v.track, v.identity, v.confidence) for v in views])
                for i, _t, _rgb, views, _rec in tracking.run(VIDEO / "short_hamilton_clip.mp4", model,
                                                              executor=executor)]

    inline = frames_of(None)
    try:
        pooled = frames_of(parallel.pool())
    finally:
        parallel.shutdown()
    assert len(inline) == 275 and pooled == inline
    # names hold still: only Lin is ever named, and a track changes its name at most once (while settling)
    per_track = {}
    for _, views in inline:
        for _box, track, identity, _conf in views:
            per_track.setdefault(track, []).append(identity)
    assert {i for seq in per_track.values() for i in seq} <= {"lin", None}
    assert any("lin" in seq for seq in per_track.values())
    for seq in per_track.values():
        assert sum(a != b for a, b in zip(seq, seq[1:])) <= 1, seq


# -- shared.videos: ids and the cleanup rule ----------------------------------------

def test_video_ids_are_checked_before_the_disk(tmp_path):
    for bad in ["", "../../etc/passwd", "0123456789ABCDEF", "0123456789abcde", "0123456789abcdef0",
                "0123456789abcde/", None, 12]:
        with pytest.raises(UserError) as err:
            videos.video_dir(tmp_path, bad)
        assert err.value.status == 404
    with pytest.raises(UserError):
        videos.video_dir(tmp_path, "0123456789abcdef")  # well-formed but unknown
    assert videos.VIDEO_ID_RE.match(videos.new_id())


def _fake_video(root, vid, age_s, state="done"):
    folder = root / vid
    folder.mkdir(parents=True)
    (folder / "source.mp4").write_bytes(b"x")
    meta = folder / "meta.json"
    meta.write_text("{}")
    (folder / "status.json").write_text('{"state": "%s"}' % state)
    t = time.time() - age_s
    os.utime(meta, (t, t))
    os.utime(folder / "status.json", (t, t))
    return folder


def test_sweep_keeps_the_newest_and_drops_the_old(tmp_path):
    ids = [f"{i:016x}" for i in range(8)]
    for i, vid in enumerate(ids):
        _fake_video(tmp_path, vid, age_s=100 * (i + 1))  # ids[0] newest
    old = _fake_video(tmp_path, "00000000000000ff", age_s=videos.MAX_AGE_S + 10)
    busy = _fake_video(tmp_path, "00000000000000ee", age_s=10_000, state="streaming")
    os.utime(busy / "status.json")  # being watched right now
    half = tmp_path / "00000000000000dd"  # an interrupted upload (no meta.json)
    half.mkdir()
    os.utime(half, (time.time() - videos.BUSY_S - 5,) * 2)
    (tmp_path / "not-a-video").mkdir()
    deleted = videos.sweep(tmp_path, keep=5, spare=ids[0])
    left = {p.name for p in tmp_path.iterdir()}
    assert set(ids[:5]) <= left  # the spared upload + the 4 newest others = keep
    assert not set(ids[5:]) & left and old.name not in left and half.name not in left
    assert busy.name in left and "not-a-video" in left
    assert set(deleted) == set(ids[5:]) | {old.name, half.name}
