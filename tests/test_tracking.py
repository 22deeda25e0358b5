"""The video loop: voting (shared.video.tracks, .votes), boxes (shared.faces.boxes), tracks that follow real faces
and the determinism of shared.video.recognizer, who appeared (shared.video.appearances), the paced stream
(shared.video.streaming), and shared.video.videos: ids and cleanup. Every clip is written and decoded for real."""
import os
import time

import cv2
import numpy as np
import pytest

from shared.video import appearances, recognizer, streaming, videos
from shared.faces import engine, images
from shared.core.errors import UserError
from shared.faces.boxes import iou, iou_matrix, match
from shared.video.passes import _nms, find_faces, near_known
from shared.video.recognizer import Settings
from shared.video.tracks import FaceView, Track, decide, merge_spans, percent
from shared.video.votes import Voting

from .conftest import FIVE, VIDEO, needs_data, needs_video


# -- voting -------------------------------------------------------------------------

def test_decide_majority_with_unknown_as_a_candidate():
    assert decide([]) is None
    assert decide([], "a", True) == "a"
    assert decide([("a", 0.8)]) is None  # one vote never names a KOL...
    assert decide([("a", 0.9), ("a", 0.8)]) == "a"  # ...two do
    assert decide([("a", 0.9)]) == "a" and decide([(None, 0.5), ("a", 0.95)]) == "a"  # ... or one sure one
    assert decide([(None, 0.9), (None, 0.8), ("a", 0.6), ("a", 0.6)]) is None  # tie: unknown is surer
    assert decide([("a", 0.6), ("a", 0.6), ("b", 0.9), ("b", 0.9)]) == "b"  # tie on votes: higher summed confidence
    assert decide([("a", 0.6), ("b", 0.85), (None, 0.55)]) is None


def test_decide_keeps_the_current_name_unless_outvoted():
    votes = [("a", 0.9), ("a", 0.8), ("b", 0.99)]
    assert decide(votes, "a", True) == "a"
    assert decide(votes + [("b", 0.99)], "a", True) == "a"  # a tie keeps the name shown
    assert decide(votes + [("b", 0.9), ("b", 0.9)], "a", True) == "b"


def test_one_bad_vote_never_renames_a_track_but_takes_its_name_away_until_two_agree_again():
    """Issue 22: a vote against the name shown takes it away at once (the face reads "?"), never puts the
    other name on; two agreeing votes bring a name back."""
    t = Track(1, (10, 50, 50, 10), 0)
    shown = []
    for slug in ["lin", "lin", "elton", "lin", None, "lin", "elton", "lin", "lin"]:
        t.vote(slug, 0.8)
        shown.append(t.slug)
    assert shown == [None, "lin", None, None, None, "lin", None, None, "lin"]
    assert "elton" not in shown
    # a name shown comes from votes that agree: as sure as a track whose votes all agree at the same strength
    agreed = Track(2, (10, 50, 50, 10), 0)
    for _ in range(8):
        agreed.vote("lin", 0.8)
    assert agreed.slug == "lin" and t.votes == [("elton", 0.8), ("lin", 0.8), ("lin", 0.8)]
    assert t.confidence < agreed.confidence  # the dissenting vote since the name was lost still counts
    # "unknown" with the shown KOL nearest (a face turned away) is an ordinary vote; with another KOL nearest, dissent
    blurred = Track(3, (10, 50, 50, 10), 0)
    for slug, candidate in [("lin", "lin"), ("lin", "lin"), (None, "lin")]:
        blurred.vote(slug, 0.7, candidate)
    assert blurred.slug == "lin" and len(blurred.votes) == 3  # the majority of the latest votes keeps the name
    blurred.vote(None, 0.7, "lin")
    assert blurred.slug is None and len(blurred.votes) == 4  # ... and takes it when they turn (nothing forgotten)
    blurred.vote("lin", 0.7, "lin")
    blurred.vote("lin", 0.7, "lin")
    assert blurred.slug == "lin"
    blurred.vote(None, 0.7, "elton")
    assert blurred.slug is None and blurred.votes == [(None, 0.7)]


def test_a_stranger_matched_once_by_chance_is_never_named():
    t = Track(1, (10, 50, 50, 10), 0)
    shown = []
    for slug in ["elton", None, "madonna", None, None, "elton", None]:
        t.vote(slug, 0.7)
        shown.append(t.slug)
    assert shown == [None] * 7


def test_confidence_is_shown_as_a_percent_like_photos():
    assert percent(0.934) == "93%" and percent(1.0) == "100%" and percent(0.5) == "50%"
    v = FaceView((0, 10, 10, 0), 1, "lin", "Lin-Manuel Miranda", 0.934, True)
    assert v.label() == "Lin-Manuel Miranda 93%" and v.label(has_model=False) == "no model"
    assert FaceView((0, 10, 10, 0), 2, None, None, 0.81, False).label() == "unknown 81%"


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
    boxes = [a, (20, 30, 30, 20), (0, 10, 10, 5), (5, 15, 15, 5), (3, 3, 3, 3)]  # the last one empty
    assert np.allclose(iou_matrix(boxes, boxes[:3]), [[iou(x, y) for y in boxes[:3]] for x in boxes])
    assert iou_matrix([], boxes).shape == (0, 5)
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
        found = engine.detect(rgb)
        if len(found) == 1:
            top, right, bottom, left = found[0]
            m = (bottom - top) // 2
            crop = rgb[max(0, top - m):bottom + m, max(0, left - m):right + m]
            crop = cv2.resize(crop, (220, int(220 * crop.shape[0] / crop.shape[1])))
            box = engine.detect(crop)
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
    for index, _t, rgb, views, rec in recognizer.run(path, None):
        assert len(views) == 1, index
        v = views[0]
        top, right, bottom, left = v.box
        cx, cy = (left + right) / 2, (top + bottom) / 2
        size = right - left
        assert abs(cx - truth[index][0]) < 0.2 * size and abs(cy - truth[index][1]) < 0.2 * size, index
        assert v.label(has_model=False) == "no model" and not v.known
        seen.append(v.track)
    assert len(seen) == n and set(seen) == {seen[0]}  # one track from start to end
    s = Settings()
    assert rec.schedule.full_every >= round(s.full_every_s[0] * 25)  # a full look at most twice a second...
    assert rec.schedule.full_passes <= n // rec.schedule.full_every + 1
    assert rec.schedule.region_passes <= n // s.detect_every + 1  # ...and around the face every few frames
    assert rec.appearances() == [{"identity": None, "label": "unknown", "unknown": None, "first_s": 0.0,
                                  "last_s": round((n - 1) / 25, 2), "frames": n,
                                  "ranges": [[0.0, round(n / 25, 2)]]}]


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
    tracks = [[v.track for v in views] for _i, _t, _rgb, views, _rec in recognizer.run(path, None)]
    assert all(len(t) == 1 for t in tracks)
    assert set(x[0] for x in tracks[:20]) == {tracks[0][0]}
    assert set(x[0] for x in tracks[20:]) == {tracks[20][0]} and tracks[20][0] != tracks[0][0]


@needs_video
def test_a_video_without_faces_gives_no_tracks(tmp_path):
    rng = np.random.default_rng(0)
    clip = [cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), (9, 9), 3) for _ in range(15)]
    path = _write(tmp_path / "noise.mp4", clip)
    out = list(recognizer.run(path, None))
    assert len(out) == 15 and all(views == [] for *_, views, _ in out)
    assert out[-1][4].appearances() == []
    assert streaming.panel_lines(out[-1][4]) == ["No model trained yet: faces are not named"]


@needs_video
def test_closing_the_generator_releases_the_video():
    gen = recognizer.run(VIDEO / "short_hamilton_clip.mp4", None)
    for _ in range(5):
        next(gen)
    gen.close()
    with pytest.raises(StopIteration):
        next(gen)


def _celeb_rows(celeb_faces, name=str):
    """``(X, slugs, names)`` of the five celebrities, 8 photos each; ``name(folder)`` is the display name."""
    from shared.training.pool import kol_slug

    X, slugs, names = [], [], {}
    for person, items in celeb_faces.items():
        for _path, face in items[:8]:
            X.append(face.embedding)
            slugs.append(kol_slug(person))
            names[kol_slug(person)] = name(person)
    return X, slugs, names


def _hamilton_model(celeb_faces):
    """The five celebrities (8 photos each) and Lin-Manuel Miranda (slug ``lin``, one photo)."""
    from shared.recognition.model import train

    X, slugs, names = _celeb_rows(celeb_faces)
    lin = engine.analyze(images.load_image(VIDEO / "lin-manuel-miranda.png"))[0]
    X.append(lin.embedding)
    slugs.append("lin")
    names["lin"] = "Lin-Manuel Miranda"
    return train(np.array(X), slugs, names)


@needs_video
def test_workers_and_inline_give_the_same_frames(celeb_faces):
    """Jobs on the worker processes change the speed, never the result."""
    from shared.faces import parallel

    model = _hamilton_model(celeb_faces)

    def frames_of(executor):
        return [(i, [(v.box, v.track, v.slug, v.confidence) for v in views])
                for i, _t, _rgb, views, _rec in recognizer.run(VIDEO / "short_hamilton_clip.mp4", model,
                                                              executor=executor)]

    inline = frames_of(None)
    try:
        on_workers = frames_of(parallel.executor())
    finally:
        parallel.shutdown()
    assert len(inline) == 275 and on_workers == inline
    # names hold still: only Lin is ever named, and a track changes its answer at most three times (Lin's
    # votes here are weak, 8-62 % sure: since a track is embedded until its latest votes agree, his name may
    # read "?" a moment while his face turns, then come back; it was at most once before issue 22's round 6)
    per_track = {}
    for _, views in inline:
        for _box, track, slug, _conf in views:
            per_track.setdefault(track, []).append(slug)
    assert {i for seq in per_track.values() for i in seq} <= {"lin", None}
    assert any("lin" in seq for seq in per_track.values())
    for seq in per_track.values():
        assert sum(a != b for a, b in zip(seq, seq[1:])) <= 3, seq


@needs_data
def test_a_face_near_a_known_box_is_found_but_not_embedded_again():
    crop, box = _photo_with_one_face()
    canvas = np.full((400, 600, 3), 90, np.uint8)
    canvas[50:50 + crop.shape[0], 100:100 + crop.shape[1]] = crop
    boxes, vectors = find_faces(canvas)
    assert len(boxes) == 1 and vectors[0].shape == (128,)
    top, right, bottom, left = boxes[0]
    s = right - left
    moved = (top + 0.4 * s, right + 0.4 * s, bottom + 0.4 * s, left + 0.4 * s)  # the track, a few frames earlier
    assert near_known(boxes[0], [moved])
    again, skipped = find_faces(canvas, known=[moved])
    assert again == boxes and skipped == [None]
    far = (top, right + 3 * s, bottom, left + 3 * s)
    big = (top - s, right + s, bottom + s, left - s)  # 3x the side: another face
    for other in (far, big):
        _, vecs = find_faces(canvas, known=[other])
        assert np.allclose(vecs[0], vectors[0]), other
    # span: a strip embeds only the faces centred in its own part, the coarse call only the big ones
    cx = (left + right) / 2
    assert find_faces(canvas, span=(0, cx - 1, 0))[1] == [None]
    assert find_faces(canvas, span=(0, np.inf, s + 5))[1] == [None]
    assert np.allclose(find_faces(canvas, span=(cx - 1, cx + 1, s - 5))[1][0], vectors[0])


def test_a_full_pass_keeps_the_biggest_box_of_a_face_and_any_embedding_of_it():
    v = np.ones(128)
    found = [((10, 60, 60, 10), None), ((12, 58, 58, 12), v), ((200, 230, 230, 200), None)]
    kept = _nms(found)
    assert [k[0] for k in kept] == [(10, 60, 60, 10), (200, 230, 230, 200)]
    assert kept[0][1] is v and kept[1][1] is None


@needs_video
def test_settled_tracks_reuse_their_embedding_and_keep_their_names(celeb_faces):
    """Full passes skip faces whose track has settled: fewer embeddings, the same names.

    (Issue 22: a settled track is also re-verified on a schedule and when its box or look changes; that
    re-verification then embeds it, not the full pass, so reuse is compared here with it turned off.)"""
    model = _hamilton_model(celeb_faces)

    def run(reuse_s):
        names, rec = [], None
        for _i, _t, _rgb, views, rec in recognizer.run(VIDEO / "short_hamilton_clip.mp4", model,
                                                     settings=Settings(reuse_s=reuse_s, verify_s=1e9, verify_look=-2.0,
                                                                       verify_scale=1e9, verify_shift=1e9)):
            names.append(sorted(str(v.slug) for v in views))
        return names, rec.voting.embeddings

    reused, fewer = run(2.0)
    fresh, more = run(0.0)
    assert fewer < more
    # (a name at the edge of the rule's sure line may show on a few more frames when every pass embeds)
    assert {n for f in reused for n in f} <= {n for f in fresh for n in f} <= {"lin", "None"}
    same = sum(a == b for a, b in zip(reused, fresh))
    assert same >= 0.95 * len(fresh), (same, len(fresh))


# -- shared.video.videos: ids and the cleanup rule ----------------------------------------

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


# -- harder footage: small faces, strangers, cuts ------------------------------------

LFW = FIVE.parent / "lfw_dev"
needs_lfw = pytest.mark.skipif(not LFW.is_dir(), reason=f"lfw_dev photos not found at {LFW}")


def _face_patch(path, side):
    """The face of a one-face photo, cut square around dlib's box and resized so that box is ``side`` px."""
    rgb = images.load_image(path)
    found = engine.detect(rgb, upsample=1)
    if len(found) != 1:
        return None
    top, right, bottom, left = found[0]
    s = bottom - top
    cy, cx = (top + bottom) // 2, (left + right) // 2
    half = int(s * 0.9)
    if cy - half < 0 or cx - half < 0 or cy + half > rgb.shape[0] or cx + half > rgb.shape[1]:
        return None
    crop = rgb[cy - half:cy + half, cx - half:cx + half]
    k = side / float(s)
    return cv2.resize(crop, None, fx=k, fy=k, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC)


def _people(n, per_person=1, skip=0):
    """``[(name, [face photos])]`` of ``n`` lfw_dev people with at least ``per_person`` photos (sorted, deterministic)."""
    out = []
    for d in sorted(p for p in LFW.iterdir() if p.is_dir()):
        photos = sorted(d.glob("*.jpg"))
        if len(photos) >= per_person:
            out.append((d.name, photos))
    return out[skip:skip + n]


def _textured(h, w, seed, tone):
    rng = np.random.default_rng(seed)
    noise = cv2.resize(rng.integers(0, 60, (h // 16, w // 16, 3), dtype=np.uint8), (w, h))
    return np.clip(noise.astype(int) + np.array(tone), 0, 255).astype(np.uint8)


@needs_lfw
def test_faces_of_42_px_in_a_1080p_frame_are_found_and_followed(tmp_path):
    """Six small faces (the first six lfw_dev people with a usable photo) drifting across a 1080p frame.

    dlib's HOG detector, even on the frame scaled 1.5x, misses some faces that small (2 of 36
    lfw_dev faces at 40 px): at most one of the six may be missed, and never found then lost.
    """
    patches = []
    for _name, photos in _people(12):
        p = _face_patch(photos[0], 42)
        if p is not None:
            patches.append(p)
        if len(patches) == 6:
            break
    assert len(patches) == 6
    n = 40
    bg = _textured(1080, 1920, 1, (90, 100, 110))
    starts = [(200, 300), (700, 900), (400, 1500), (850, 200), (150, 1100), (600, 1700)]
    clip, truth = [], []
    for i in range(n):
        canvas = bg.copy()
        boxes = []
        for (y, x), p in zip(starts, patches):
            y, x = y + i, x + 2 * i
            canvas[y:y + p.shape[0], x:x + p.shape[1]] = p
            c = p.shape[0] / 2
            boxes.append((y + c - 21, x + c + 21, y + c + 21, x + c - 21))
        clip.append(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
        truth.append(boxes)
    path = _write(tmp_path / "small.mp4", clip)
    found_first = None
    for index, _t, _rgb, views, rec in recognizer.run(path, None):
        pairs, missed, extra = match(truth[index], [v.box for v in views], 0.3)
        assert not extra, (index, [v.box for v in views])  # nothing boxed where there is no face
        found = sorted(i for i, _ in pairs)
        found_first = found if found_first is None else found_first
        assert len(found) >= 5 and found == found_first, (index, missed)
    assert len(rec.trackset.live) == len(found_first) and not rec.trackset.ended  # one track per face throughout


def _scene_clip(tmp_path, scenes, fps=25.0, size=(640, 360)):
    """Write scenes ``[(frames, [(patch, (y, x))...], background seed)]`` with hard cuts; returns the path."""
    w, h = size
    clip = []
    for k, (n, placed, seed) in enumerate(scenes):
        bg = _textured(h, w, seed, (40 + 60 * (k % 3), 150 - 40 * (k % 3), 90))
        for i in range(n):
            canvas = bg.copy()
            for p, (y, x) in placed:
                canvas[y:y + p.shape[0], x + i:x + i + p.shape[1]] = p
            clip.append(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    return _write(tmp_path / "scenes.mp4", clip, fps)


def _celeb_model(celeb_faces):
    from shared.recognition.model import train

    X, slugs, names = _celeb_rows(celeb_faces, lambda p: p.replace("_", " ").title())
    return train(np.array(X), slugs, names)


@needs_lfw
def test_distinct_strangers_are_distinct_rows_and_one_stranger_seen_twice_is_one(tmp_path, celeb_faces):
    model = _celeb_model(celeb_faces)
    (a_name, a_photos), (b_name, b_photos) = _people(2, per_person=4, skip=3)
    a1 = next(p for p in (_face_patch(x, 120) for x in a_photos) if p is not None)
    a2 = next(p for p in (_face_patch(x, 120) for x in reversed(a_photos)) if p is not None)
    b1 = next(p for p in (_face_patch(x, 120) for x in b_photos) if p is not None)
    path = _scene_clip(tmp_path, [(25, [(a1, (60, 60))], 1), (25, [(b1, (80, 300))], 2), (25, [(a2, (50, 250))], 3)])
    out = list(recognizer.run(path, model))
    rows = out[-1][4].appearances()
    assert [r["label"] for r in rows] == ["unknown #1", "unknown #2"], rows
    assert all(r["identity"] is None for r in rows) and [r["unknown"] for r in rows] == [1, 2]
    first, second = rows
    assert [[round(a), round(b)] for a, b in first["ranges"]] == [[0, 1], [2, 3]]  # scenes 1 and 3 (seconds)
    assert [[round(a), round(b)] for a, b in second["ranges"]] == [[1, 2]]
    csv_lines = appearances.to_csv(rows).strip().split("\r\n")
    assert csv_lines[0] == "who,kol,start_s,end_s,seconds"
    assert [line.split(",")[0] for line in csv_lines[1:]] == ["unknown #1", "unknown #2", "unknown #1"]
    assert csv_lines[2] == "unknown #2,0,1.00,2.00,1.00"


def test_clustering_joins_only_tracks_whose_embeddings_are_all_close():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (2, 128))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    tracks = []
    for k, c in enumerate([0, 1, 0, 1, 0]):
        t = Track(k + 1, (0, 10, 10, 0), k * 10)
        for _ in range(3):
            t.remember(centres[c] + rng.normal(0, 0.01, 128))
        tracks.append(t)
    clusters = appearances.cluster_unknowns(tracks, threshold=0.6)
    assert [[t.id for t in c] for c in clusters] == [[1, 3, 5], [2, 4]]
    assert len(appearances.cluster_unknowns(tracks, threshold=0.05)) == 5


def _stored(tmp_path, path):
    """A video folder as shared.video.videos lays it out, around an existing clip."""
    import json

    from shared.faces import frames

    info = frames.probe(path)
    folder = tmp_path / "videos" / "00000000000000aa"
    folder.mkdir(parents=True)
    (folder / "source.mp4").write_bytes(path.read_bytes())
    (folder / "meta.json").write_text(json.dumps({"video": folder.name, "filename": "clip.mp4", "fps": info.fps,
                                                  "frames": info.frames, "width": info.width,
                                                  "height": info.height}))
    return folder


@needs_video
def _slow_stage(fps, intervals=2):
    """An ``observe`` hook for :func:`shared.video.streaming.stream` that makes recognising every frame
    take at least ``intervals`` frame intervals (1 / ``fps`` s each): a machine too slow for the
    clip, whatever this machine's speed (a sleep lasts at least as long as asked)."""
    def observe(_index, _views):
        time.sleep(intervals / fps)
    return observe


def test_a_paced_stream_drops_late_frames_to_stay_in_time_and_pace_0_sends_all(tmp_path):
    # the Hamilton clip at 240 fps, each frame made to take 2 frame intervals: so the stream falls
    # behind on every machine (a fast one kept up with 240 fps and dropped nothing, issue 20)
    from shared.faces import frames

    clip = [cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            for _i, _t, rgb in frames.iter_frames(VIDEO / "short_hamilton_clip.mp4", max_frames=120)]
    path = _write(tmp_path / "fast.mp4", clip, fps=240.0)
    folder = _stored(tmp_path, path)
    slow = _slow_stage(240.0)
    parts = [p for p in streaming.stream(folder, None, pace=True, observe=slow) if p.startswith(b"--frame\r\n")]
    s = videos.read_status(folder)
    assert s["state"] == "done" and s["processed"] == 120
    assert s["dropped"] > 0 and s["sent"] == len(parts) == 120 - s["dropped"]
    every = [p for p in streaming.stream(folder, None, pace=False, observe=slow) if p.startswith(b"--frame\r\n")]
    s = videos.read_status(folder)
    assert len(every) == 120 and s["dropped"] == 0 and s["sent"] == 120


def test_the_overlay_is_drawn_in_the_right_colours_on_the_jpeg_and_leaves_the_frame_alone():
    from shared.faces import draw

    frame = np.full((360, 640, 3), 120, np.uint8)
    before = frame.copy()
    jpeg = streaming.render(frame, [((100, 300, 200, 200), "Someone 90%", True), ((100, 500, 200, 400), "unknown 60%",
                                                                             False)], ("Seen most so far",), 95)
    assert np.array_equal(frame, before)
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(int)
    for x, colour in ((200, draw.KNOWN), (400, draw.UNKNOWN)):  # the left side of each box
        assert np.abs(rgb[150, x] - colour).max() < 30, (x, rgb[150, x])
    panel = rgb[:30, :150]
    assert panel.min() < 0.4 * 120 + 15 and panel.max() > 200  # a darkened box with white text
    assert np.abs(rgb[300, 600] - 120).max() < 10  # the rest of the frame as it was


def test_large_frames_are_streamed_scaled_down_with_their_boxes():
    """A 1080p frame goes out at the stream's longest side (1280 px), its boxes scaled with it;
    ``max_side=0`` keeps it as decoded, and smaller frames are never enlarged."""
    from shared.faces import draw

    frame = np.full((1080, 1920, 3), 120, np.uint8)
    items = [((300, 900, 600, 600), "Someone 90%", True)]
    small = cv2.imdecode(np.frombuffer(streaming.render(frame, items, (), 95), np.uint8), cv2.IMREAD_COLOR)
    assert small.shape == (720, 1280, 3)
    rgb = cv2.cvtColor(small, cv2.COLOR_BGR2RGB).astype(int)
    assert np.abs(rgb[300, 400] - draw.KNOWN).max() < 30  # the box's left side: x 600 * 2/3, row 450 * 2/3
    assert np.abs(rgb[600, 700] - 120).max() < 10  # on the unscaled box's bottom side: nothing
    full = cv2.imdecode(np.frombuffer(streaming.render(frame, items, (), 95, max_side=0), np.uint8), cv2.IMREAD_COLOR)
    assert full.shape == (1080, 1920, 3)
    sd = cv2.imdecode(np.frombuffer(streaming.render(frame[:360, :640], [], ()), np.uint8), cv2.IMREAD_COLOR)
    assert sd.shape == (360, 640, 3)


# -- how often to look again: backing off, and after faces cross ------------------


def _still_clip(tmp_path, name, small=None, appear=None, n=150):
    """A 640x360 clip, 25 fps, no cut: one face standing still; ``small`` pasted from frame ``appear`` on."""
    crop, _ = _photo_with_one_face()
    bg = _textured(360, 640, 1, (90, 100, 110))
    clip = []
    for i in range(n):
        canvas = bg.copy()
        canvas[40:40 + crop.shape[0], 40:40 + crop.shape[1]] = crop
        if small is not None and i >= appear:
            canvas[200:200 + small.shape[0], 450:450 + small.shape[1]] = small
        clip.append(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    return _write(tmp_path / name, clip)


def _full_pass_frames(path, settings=None):
    """The frames a full pass ran on, and the frame a face right of x=400 was first drawn (``None``: never)."""
    passes, first_right = set(), None
    for index, _t, _rgb, views, rec in recognizer.run(path, None, settings=settings):
        passes.add(rec.schedule.last_full)
        if first_right is None and any(v.box[3] > 400 for v in views):
            first_right = index
    return sorted(passes | {0}), first_right, rec


@needs_lfw
def test_scheduled_full_passes_back_off_while_nothing_new_appears(tmp_path):
    """640x360 at 25 fps: a full pass every 12 frames (0.5 s), every 24 once a scheduled pass found no new
    face. The schedule is decided lookahead (16) frames ahead: the pass at 12 is known to have found
    nothing only after the one at 24 was decided."""
    still = _still_clip(tmp_path, "still.mp4")
    passes, _, rec = _full_pass_frames(still)
    assert rec.schedule.full_every == 12 and passes == [0, 12, 24, 48, 72, 96, 120, 144]
    assert _full_pass_frames(still, Settings(full_backoff=1.0))[0] == list(range(0, 150, 12))
    # a face of 50 px (too small for the discovery passes) comes into view at frame 50: the next full pass
    # finds it, and the next one comes 16 frames later (the first not yet decided)
    small = _face_patch(_people(1)[0][1][0], 50)
    passes, first_seen, _ = _full_pass_frames(_still_clip(tmp_path, "appear.mp4", small, appear=50))
    assert passes[:6] == [0, 12, 24, 48, 72, 88]
    assert first_seen == 72


def _crossing(tmp_path, behind, front, speed):
    """Two KOLs crossing on a 640x360 clip: ``front`` (0.8x smaller) moves right ``speed`` px a frame,
    drawn over ``behind``, which moves left half as fast. Returns the path and, per frame, the two faces'
    boxes and whether the front one is in the picture."""
    patches = []
    for person, k in ((behind, 1.0), (front, 0.8)):
        photo = next(p for p in (_face_patch(x, 90) for x in sorted((FIVE / person).glob("val_*.jpg")))
                     if p is not None)
        patches.append(cv2.resize(photo, None, fx=k, fy=k))
    a, b = patches
    bg = _textured(360, 640, 3, (90, 100, 110))
    clip, truth = [], []
    for i in range(int(600 / speed)):
        canvas = bg.copy()
        ax, bx = int(400 - speed * i / 2), int(20 + speed * i)
        canvas[110:110 + a.shape[0], ax:ax + a.shape[1]] = a
        if bx + b.shape[1] <= 640:
            canvas[100:100 + b.shape[0], bx:bx + b.shape[1]] = b
        truth.append([(y + p.shape[0] / 2 - p.shape[0] / 3.6, x + p.shape[1] / 2 + p.shape[1] / 3.6,
                       y + p.shape[0] / 2 + p.shape[0] / 3.6, x + p.shape[1] / 2 - p.shape[1] / 3.6)
                      for (y, x), p in (((110, ax), a), ((100, bx), b))] + [bx + b.shape[1] <= 640])
        clip.append(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    return _write(tmp_path / f"{behind}-{front}-{speed}.mp4", clip), truth


@needs_data
def test_a_box_carried_onto_another_face_loses_its_name_at_the_next_look(tmp_path, celeb_faces):
    """Two KOLs cross, the smaller one in front: the box of the face behind can end up on the face in front
    and show its name there (in these four crossings it does, 104 frames in all, with the check off).

    Tracks that overlapped need a fresh embedding, and one far from the track's earlier ones ends the
    track: at most two region passes' worth of frames show a face with the other KOL's name."""
    model = _celeb_model(celeb_faces)
    clips = [(behind, front, _crossing(tmp_path, behind, front, speed))
             for behind, front, speed in (("elton_john", "madonna", 6), ("jerry_seinfeld", "ben_afflek", 6),
                                          ("jerry_seinfeld", "ben_afflek", 8), ("mindy_kaling", "jerry_seinfeld", 8))]

    def wrong_frames(settings):
        wrong = 0
        for behind, front, (path, truth) in clips:
            for index, _t, _rgb, views, _rec in recognizer.run(path, model, settings=settings):
                box_a, box_b, b_shown = truth[index]
                if iou(box_a, box_b) > 0.05:
                    continue  # one face covers the other
                for v in views:
                    for box, person, shown in ((box_a, behind, True), (box_b, front, b_shown)):
                        if shown and iou(v.box, box) >= 0.3 and v.slug is not None \
                                and not v.slug.startswith(person.replace("_", "-")):
                            wrong += 1
        return wrong

    assert wrong_frames(Settings()) <= 2 * Settings().detect_every
    # the same clips without the checks (issue 22's re-verification on a changed look or box catches it too;
    # a track embedded again until its latest votes agree catches some: 104 wrong frames before that, 33 now)
    assert wrong_frames(Settings(same_face=99.0, cross_iou=2.0, verify_s=1e9, verify_look=-2.0, verify_scale=1e9,
                                 verify_shift=1e9)) > 2 * Settings().detect_every


def test_a_track_settles_on_two_sure_agreeing_votes_or_three_and_not_before_a_vote_after_crossing():
    voting = Voting(model=object(), settings=Settings(), fps=25)  # any model: the rule only asks whether there is one

    def track(*votes, crossed=None):
        t = Track(1, (0, 10, 10, 0), 0)
        for frame, (slug, confidence) in enumerate(votes):
            t.vote(slug, confidence)
            t.voted = frame
        t.crossed = crossed
        return t

    assert not voting.settled(track()) and not voting.settled(track(("a", 0.99)))
    assert voting.settled(track(("a", 0.95), ("a", 0.97)))  # a third vote could not outvote these two
    assert voting.settled(track((None, 0.92), (None, 0.99)))
    assert not voting.settled(track(("a", 0.95), ("a", 0.7)))  # one of the two not sure enough
    assert not voting.settled(track(("a", 0.95), ("b", 0.95)))
    assert not voting.settled(track(("a", 0.95), (None, 0.95)))
    assert voting.settled(track(("a", 0.6), ("a", 0.6), ("a", 0.6)))  # three agreeing votes
    assert voting.settled(track((None, 0.6), ("a", 0.6), ("a", 0.6), ("a", 0.6)))  # the latest three agree
    mixed = Track(2, (0, 10, 10, 0), 0)
    for frame, (slug, candidate) in enumerate([("a", "a"), (None, "a"), ("a", "a")]):
        mixed.vote(slug, 0.6, candidate)
        mixed.voted = frame
    assert mixed.slug == "a" and not voting.settled(mixed)  # three votes that do not agree: embedded again
    assert not voting.settled(track(("a", 0.95), ("a", 0.97), crossed=1))  # crossed on the frame of its last vote
    assert voting.settled(track(("a", 0.95), ("a", 0.97), ("a", 0.9), crossed=1))  # ...and voted since
    assert Voting(model=None, settings=Settings(), fps=25).settled(track())  # nothing to vote on without a model



def _appear_clip(tmp_path, name, face, appear, hide=(), n=80):
    """A 640x360 clip, 25 fps, no cut: ``face`` pasted at (150, 380) from frame ``appear`` on, blurred beyond
    recognition on the frames in ``hide`` (as in motion blur: no detector finds it, the picture still moves)."""
    bg = _textured(360, 640, 1, (90, 100, 110))
    blurred = cv2.GaussianBlur(face, (0, 0), 9)
    clip = []
    for i in range(n):
        canvas = bg.copy()
        if i >= appear:
            canvas[150:150 + face.shape[0], 380:380 + face.shape[1]] = blurred if i in hide else face
        clip.append(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    return _write(tmp_path / name, clip)


@needs_data
def test_a_face_coming_into_view_is_named_on_the_discovery_pass_that_finds_it(tmp_path, celeb_faces):
    """Issue 22 (round 6): a discovery pass embeds the faces no track follows, so a face that comes into
    view between full passes is named from the frame it is found on (it waited for the next region pass)."""
    model = _celeb_model(celeb_faces)
    face = next(p for p in (_face_patch(x, 110) for x in sorted((FIVE / "elton_john").glob("val_*.jpg")))
                if p is not None)
    path = _appear_clip(tmp_path, "appear.mp4", face, appear=20)
    rare = Settings(full_every_s=(3.0, 3.0))  # full passes at 0 and 75 only: a discovery pass finds the face
    first = None
    for index, _t, _rgb, views, rec in recognizer.run(path, model, settings=rare):
        if views and first is None:
            first = index
            track = next(t for t in rec.trackset.live if t.id == views[0].track)
            assert track.born == index and len(track.votes) == 1, (index, track.born)
            assert views[0].slug is not None and views[0].slug.startswith("elton")
    assert first is not None and 20 <= first < 75


@needs_lfw
def test_a_face_no_pass_finds_for_under_a_second_keeps_its_track(tmp_path):
    """Issue 22 (round 6): a face that no pass finds for 0.8 s (blurred, turned away) keeps its track for
    ``Settings.lost_s``: three missed passes no longer end it (on the Friends dev clip three within 0.3 s
    did, and the face came back unnamed until the next full pass)."""
    face = _face_patch(_people(1)[0][1][0], 90)
    path = _appear_clip(tmp_path, "hidden.mp4", face, appear=0, hide=range(30, 50))
    c = 150 + face.shape[0] / 2, 380 + face.shape[1] / 2
    where = (c[0] - 45, c[1] + 45, c[0] + 45, c[1] - 45)  # the face's box (90 px)
    seen = {}
    for index, _t, _rgb, views, rec in recognizer.run(path, None):
        for v in views:
            if iou(v.box, where) >= 0.3:
                seen.setdefault(v.track, []).append(index)
    assert len(seen) == 1, seen
    drawn = seen[next(iter(seen))]
    assert min(drawn) == 0 and max(drawn) == 79 and 29 in drawn  # one track before and after


def test_a_full_pass_looks_for_faces_of_30_px_on_small_frames_and_40_px_from_720p():
    """Issue 22 (round 6): the plain loop (HOG upsampled once) finds faces of 36 px in the 640x360 dev clips;
    a full pass there scales the frame 2x (faces of ``Settings.small_face_px``, 30 px), at 720p 1.5x (40 px,
    as before: 2x cost tv720 20 % more CPU), at 1080p within ``Settings.max_full_pixels`` (40 px)."""
    from shared.video.passes import HOG_MIN_PX, full_scale

    s = Settings()
    assert full_scale((360, 640), s) == pytest.approx(2.0) and full_scale((720, 1280), s) == pytest.approx(1.5)
    assert full_scale((540, 960), s) == pytest.approx(2.0) and 1.5 < full_scale((600, 1066), s) < 2.0
    assert HOG_MIN_PX / full_scale((1080, 1920), s) <= 40.0
