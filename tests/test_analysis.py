"""Video analysis on the queue and the screen-time report (issue 24: shared/library/analysis.py, screentime.py,
main_server/analysis.py).

Clips are cut from ``../shared/data/video/dev/friends_tux.mp4`` (written and decoded for real: known cuts at frames
36, 92, 123, 148, 241, 376, 898, ...); the model is the six Friends people from their reference photos. The
chunk tests run the queue's tasks in this process (inline, no worker); the live tests start the main server under
gunicorn with two real queue workers and talk to it over HTTP.
"""
import io

import numpy as np
import pytest
from werkzeug.datastructures import FileStorage

from shared.core import config
from shared.faces import frames
from shared.library import analysis, screentime
from shared.recognition.store import ModelStore
from shared.training.jobqueue import worker
from shared.video import framelog, recognizer

from . import _synth
from ._synth import JSON, write_clip
from .builders import reference_model
from .conftest import VIDEO, LiveServers, screenshot, signed_in
from .servers import wait_for
from .test_browser_flows import images_load, wait_until

DEV = VIDEO / "dev"
FRIENDS = DEV / "friends_tux.mp4"
FRIENDS_FPS = 23.976
needs_dev = pytest.mark.skipif(not FRIENDS.is_file(), reason=f"dev clips not found at {DEV} (set KOL_SHARED_DATA)")


@pytest.fixture(scope="module")
def friends_model():
    """The six Friends people, from their reference photos."""
    if not FRIENDS.is_file():
        pytest.skip(f"dev clips not found at {DEV}")
    return reference_model(DEV / "friends_tux_people")


def _clip(path, first, last):
    """Frames ``first`` .. ``last`` (inclusive) of friends_tux written to ``path`` (``.webm``: VP8, which the
    browser's player can play; else MPEG-4 part 2)."""
    return write_clip(path, [rgb for i, _, rgb in frames.iter_frames(FRIENDS, max_frames=last + 1) if i >= first],
                      FRIENDS_FPS, fourcc="VP80" if str(path).endswith(".webm") else "mp4v")


def _chunked(path, model, chunk_s, thumbs):
    """The chunks of ``path`` as the queue's tasks cut and analyse them, and their join."""
    info = frames.probe(path)
    edges = analysis.nominal_edges(info.frames, info.fps, chunk_s)
    window = analysis.search_frames(info.fps, chunk_s)
    chunks = []
    for k, nominal in enumerate(edges):
        start, cut = analysis.boundary(path, nominal, window)
        stop = analysis.boundary(path, edges[k + 1], window)[0] if k + 1 < len(edges) else None
        chunks.append(analysis.analyse_chunk(path, model, start, stop, info.fps, thumbs, cut))
    return chunks, analysis.join(chunks)


def _one_pass(path, model):
    info = frames.probe(path)
    return [framelog.row(i, info.fps, views, True) for i, _, _, views, _ in recognizer.run(path, model)]


def _names(rows):
    return [(r["frame"], sorted((tuple(f["box"]), f["label"]) for f in r["faces"])) for r in rows]


@needs_dev
def test_chunks_cut_at_scene_cuts_join_into_exactly_the_one_pass_frames(tmp_path, friends_model):
    """Frames 0-249 (cuts at 36, 92, 123, 148, 241) in chunks of 3 s: every edge moves to a cut, and the joined
    per-frame file has every frame once, in order, with the same boxes and labels as one pass of the stream's loop."""
    path = _clip(tmp_path / "cuts.mp4", 0, 249)
    (tmp_path / "thumbs").mkdir()
    chunks, (rows, tracks, thumbs) = _chunked(path, friends_model, 3.0, tmp_path / "thumbs")
    assert [(c["start"], c["cut"]) for c in chunks] == [(0, True), (92, True), (148, True)]
    one = _one_pass(path, friends_model)
    assert [r["frame"] for r in rows] == list(range(250)) == [r["frame"] for r in one]
    assert _names(rows) == _names(one)
    assert any(f["known"] for r in rows for f in r["faces"]), "nobody was named: the test would prove little"
    # track ids are renumbered across chunks: no two chunks share one
    assert len({t["id"] for t in tracks}) == len(tracks) == sum(len(c["tracks"]) for c in chunks)
    assert thumbs and all((tmp_path / "thumbs" / th["file"]).is_file() for th in thumbs)


@needs_dev
def test_a_part_decodes_exactly_its_frames_of_the_real_clip():
    """friends_tux.mp4 as published (H.264 whose container says 23.92 fps): a part starting at the cut at frame 241
    or at frame 600 gets exactly those frames, pixel for pixel, as one pass decodes them (OpenCV's seek lands a
    frame early there)."""
    one = {i: rgb for i, _, rgb in frames.iter_frames(FRIENDS, max_frames=606)}
    for start in (241, 600):
        part = list(frames.iter_range(FRIENDS, start, start + 5))
        assert [i for i, _, _ in part] == list(range(start, start + 5))
        assert all(np.array_equal(rgb, one[i]) for i, _, rgb in part), start
    assert [i for i, _, _ in frames.iter_range(FRIENDS, 1205)] == [1205, 1206, 1207, 1208]  # to the end


AOC = VIDEO / "sadtalker_WDA_AlexandriaOcasioCortez_000.mp4"


@needs_dev
def test_chunks_with_hard_edges_keep_every_frame_once_and_stitch_the_tracks(tmp_path, friends_model):
    """The AOC clip (200 frames, one shot, her face in every frame) in chunks of 2 s: the edges are hard, yet every
    frame is in the joined file exactly once and her face keeps one track id across each edge (the join stitches
    the tracks that meet there; without the stitch each part would start a new one)."""
    (tmp_path / "thumbs").mkdir()
    chunks, (rows, tracks, _) = _chunked(AOC, friends_model, 2.0, tmp_path / "thumbs")
    assert [(c["start"], c["cut"]) for c in chunks] == [(0, True), (50, False), (100, False), (150, False)]
    one = _one_pass(AOC, friends_model)
    assert [r["frame"] for r in rows] == list(range(200)) == [r["frame"] for r in one]
    for edge in (50, 100, 150):
        before = [f["track"] for f in rows[edge - 1]["faces"]]
        assert before and before == [f["track"] for f in rows[edge]["faces"]], (edge, rows[edge - 1], rows[edge])
    unstitched, _, _ = analysis.join(chunks, iou_match=2.0)  # no two boxes overlap that much
    assert len({f["track"] for r in unstitched for f in r["faces"]}) > len({f["track"] for r in rows for f in r["faces"]})
    # a join that drops or doubles a frame at an edge is refused
    for broken in ([dict(chunks[0], rows=chunks[0]["rows"][:-1]), *chunks[1:]],
                   [dict(chunks[0], rows=chunks[0]["rows"] + chunks[1]["rows"][:1]), *chunks[1:]]):
        with pytest.raises(ValueError, match="starts at frame"):
            analysis.join(broken)


def _upload(path, name=None):
    return FileStorage(io.BytesIO(path.read_bytes()), filename=name or path.name)


def _limits(**changes):
    return {**{k: config.DEFAULTS[k] for k in ("ANALYSIS_MAX_VIDEO_S", "ANALYSIS_MAX_PIXELS", "ANALYSIS_MAX_VIDEOS",
                                               "ANALYSIS_CHUNK_S")}, **changes}


@needs_dev
def test_a_failed_part_fails_its_video_with_the_reason_and_the_other_goes_on(tmp_path, friends_model):
    """Two videos; the file of one disappears before its parts run: that video reads failed with a sentence and
    has no results, the other is done (the queue's tasks run here, in order, as a worker runs them)."""
    data = tmp_path / "data"
    worker.configure(data)
    version = ModelStore(data / "models").save(friends_model)
    root = analysis.root_of(data)
    a, b = _clip(tmp_path / "a.mp4", 40, 87), _clip(tmp_path / "b.mp4", 92, 147)
    record = analysis.create(root, [_upload(a), _upload(b)], None, _limits(ANALYSIS_CHUNK_S=1), version)
    gone, kept = record["videos"]
    analysis.source_path(root / record["analysis"] / gone["video"]).unlink()
    for v in record["videos"]:
        for i in range(len(v["edges"])):
            analysis.run_chunk(record["analysis"], v["video"], i)
    # every part is there but not joined yet: not done, no results
    assert analysis.status(None, root, record["analysis"], reader=_Admin())["videos"][1]["state"] == "running"
    with pytest.raises(Exception, match="not finished"):
        analysis.result(root, record["analysis"], kept["video"], _Admin())
    for v in record["videos"]:
        analysis.run_finish(record["analysis"], v["video"])
    status = analysis.status(None, root, record["analysis"], reader=_Admin())
    by_id = {v["video"]: v for v in status["videos"]}
    assert by_id[gone["video"]]["state"] == "failed" and "failed unexpectedly" in by_id[gone["video"]]["error"]
    assert by_id[kept["video"]]["state"] == "done" and by_id[kept["video"]]["done"] == 56
    assert status["state"] == "failed"
    assert not (root / record["analysis"] / gone["video"] / "tracks.json").exists()
    with pytest.raises(Exception, match="not finished"):
        analysis.result(root, record["analysis"], gone["video"], _Admin())
    rows = framelog.read(root / record["analysis"] / kept["video"])["frames"]
    assert [r["frame"] for r in rows] == list(range(56))


class _Admin:
    """A principal with the admin role (what :func:`shared.core.owners.may_read` reads)."""
    is_admin = True


# -- bad input over the main app: a sentence, nothing kept, nothing queued --------------------------------------
@pytest.fixture
def analysis_client(data_dir):
    from main_server import create_app

    app = create_app({"TESTING": True, "DATA_DIR": str(data_dir), "SECRET_KEY": "test",
                      "REDIS_URL": "redis://127.0.0.1:9/0", "ANALYSIS_MAX_VIDEO_S": 60, "ANALYSIS_MAX_PIXELS": 640 * 360})
    return signed_in(app.test_client(), "member")


def _post(client, files):
    return client.post("/analysis", data={"file": [(io.BytesIO(body), name) for name, body in files]},
                       headers=JSON, content_type="multipart/form-data")


def _left(data_dir):
    root = analysis.root_of(data_dir)
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def test_bad_uploads_get_a_sentence_and_leave_nothing(analysis_client, data_dir, tmp_path):
    clip = write_clip(tmp_path / "ok.mp4", [np.full((90, 160, 3), 80, np.uint8)] * 10, 10)
    long_clip = write_clip(tmp_path / "long.mp4", [np.full((36, 64, 3), 80, np.uint8)] * 610, 10)
    big = write_clip(tmp_path / "big.mp4", [np.full((720, 1280, 3), 80, np.uint8)] * 3, 10)
    cases = {
        "nothing": ([], 400, "Choose one or more videos"),
        "text": ([("notes.txt", b"hello")], 415, "not a video this tool accepts"),
        "photo as mp4": ([("clip.mp4", _synth.jpeg())], 415, "still photo"),
        "not decodable": ([("clip.mp4", b"not a video at all\n" * 100)], 415, "not a video this tool can decode"),
        "zip of photos": ([("photos.zip", _synth.build_zip({"a.jpg": _synth.jpeg()}))], 415, "no video"),
        "too long": ([("long.mp4", long_clip.read_bytes())], 413, "ANALYSIS_MAX_VIDEO_S"),
        "too many pixels": ([("big.mp4", big.read_bytes())], 413, "ANALYSIS_MAX_PIXELS"),
        "one good, one bad": ([("ok.mp4", clip.read_bytes()), ("clip.mp4", b"junk" * 100)], 415, "not a video this tool can decode"),
    }
    for case, (files, status, words) in cases.items():
        r = _post(analysis_client, files)
        assert r.status_code == status, (case, r.status_code, r.get_data(as_text=True)[:300])
        assert words in r.get_json()["error"], (case, r.get_json())
        assert _left(data_dir) == [], case
    # a good upload while the queue is down: 503 with its sentence, nothing kept
    r = _post(analysis_client, [("ok.mp4", clip.read_bytes())])
    assert r.status_code == 503 and "job queue" in r.get_json()["error"]
    assert _left(data_dir) == []


def test_analysis_pages_need_sign_in_and_are_the_uploaders(data_dir, tmp_path, redis_url):
    """Anonymous: 401; another member: the 404 of an unknown id; its uploader and admins: the page (queued on a
    real Redis with no worker, so it stays queued)."""
    from main_server import create_app

    app = create_app({"TESTING": True, "DATA_DIR": str(data_dir), "SECRET_KEY": "test", "REDIS_URL": redis_url})
    clip = write_clip(tmp_path / "ok.mp4", [np.full((90, 160, 3), 80, np.uint8)] * 10, 10)
    owner = signed_in(app.test_client(), "member")
    r = _post(owner, [("ok.mp4", clip.read_bytes())])
    assert r.status_code == 202, r.get_data(as_text=True)[:300]
    assert r.get_json()["state"] == "queued" and r.get_json()["videos"][0]["filename"] == "ok.mp4"
    url = f"/analysis/{r.get_json()['analysis']}.json"
    assert app.test_client().get(url, headers=JSON).status_code == 401
    assert owner.get(url, headers=JSON).get_json()["videos"][0]["state"] == "queued"
    other = app.extensions["accounts"].create_token("someone-else", "member", created_by="tests")[0]
    r = app.test_client().get(url, headers={**JSON, "Authorization": f"Bearer {other}"})
    assert r.status_code == 404 and r.get_json()["error"] == analysis.NO_SUCH
    assert signed_in(app.test_client(), "admin").get(url, headers=JSON).status_code == 200
    assert app.test_client().get("/screentime", headers=JSON).status_code == 401


# -- over real HTTP, with real workers ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def analysed(tmp_path_factory, redis_server, friends_model):
    """The main server under gunicorn with two real queue workers and the Friends model; two clips uploaded in
    one request (chunks of 1 s) and analysed to the end. Yields ``(servers, status)``."""
    base = tmp_path_factory.mktemp("analysis")
    ModelStore(base / "data" / "models").save(friends_model)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KOL_ANALYSIS_CHUNK_S", "1")
        servers = LiveServers(base / "data", base, names=("main",), redis_url=redis_server.url(4000), workers=2)
    try:
        a, b = _clip(base / "monica.webm", 40, 87), _clip(base / "sofa.webm", 1160, 1208)
        r = servers.http.post(servers.urls["main"] + "/analysis", headers=JSON,
                              files=[("file", ("monica.webm", a.read_bytes())), ("file", ("sofa.webm", b.read_bytes()))])
        assert r.status_code == 202, r.text[:300]
        url = servers.urls["main"] + f"/analysis/{r.json()['analysis']}.json"
        status = wait_for("both videos analysed", lambda: (lambda s: s if s["state"] in ("done", "failed") else None)(
            servers.http.get(url).json()), timeout_s=900)
        yield servers, status
    finally:
        servers.stop()


@pytest.mark.live
@needs_dev
def test_two_uploaded_videos_are_analysed_by_the_workers_into_results_and_screen_time(analysed):
    servers, status = analysed
    main = servers.urls["main"]
    assert status["state"] == "done", status
    assert [(v["filename"], v["done"]) for v in status["videos"]] == [("monica.webm", 48), ("sofa.webm", 49)]
    for v in status["videos"]:
        prefix = f"{main}/analysis/{status['analysis']}/{v['video']}"
        data = servers.http.get(prefix + "/tracks.json").json()
        assert [r["frame"] for r in data["frames"]] == list(range(v["done"]))
        assert set(data) == {"video", "fps", "frame_count", "frames"}
        assert servers.http.get(prefix + "/tracks.vtt").text.startswith("WEBVTT")
        assert servers.http.get(prefix + "/appearances.csv").text.startswith("who,kol,start_s,end_s,seconds")
        part = servers.http.get(prefix + "/source", headers={"Range": "bytes=0-99"})
        assert part.status_code == 206 and len(part.content) == 100
    report = servers.http.get(f"{main}/screentime?analysis={status['analysis']}", headers=JSON).json()
    names = [k["identity"] for k in report["kols"]]
    assert "Monica Geller" in names, report
    monica = next(k for k in report["kols"] if k["identity"] == "Monica Geller")
    assert monica["seconds"] > 0.5 and monica["videos"][0]["filename"] == "monica.webm"
    moments = [m for k in report["kols"] for v in k["videos"] for m in v["moments"]]
    assert moments and all(m["thumb"] for m in moments), moments  # each moment has its face crop
    sofa = status["videos"][1]["video"]
    only = servers.http.get(f"{main}/screentime?video={status['analysis']}:{sofa}", headers=JSON).json()
    assert [v["filename"] for v in only["videos"]] == ["sofa.webm"] and "Monica Geller" not in str(only["kols"])
    csv = servers.http.get(f"{main}/screentime.csv?analysis={status['analysis']}").text
    assert csv.splitlines()[0] == ",".join(screentime.CSV_COLUMNS) and "Monica Geller" in csv
    # each finished video is kept in the library (shared.library.feed.keep_analysed), its faces searchable
    kept = wait_for("both videos kept in the library", lambda: (lambda m: m if len(m) == 2 else None)(
        servers.http.get(f"{main}/library", params={"kind": "video"}, headers=JSON).json()["media"]), timeout_s=300)
    assert sorted(m["name"] for m in kept) == ["monica.webm", "sofa.webm"]
    assert all(m["faces"] > 0 for m in kept), kept


@pytest.mark.live
@pytest.mark.browser
@needs_dev
def test_screen_time_report_in_a_browser(analysed, page):
    servers, status = analysed
    servers.sign_in(page)
    page.goto(servers.urls["main"] + f"/analysis/{status['analysis']}")
    page.wait_for_selector("text=per-frame JSON")
    screenshot(page, "analysis-progress")
    page.goto(servers.urls["main"] + f"/screentime?analysis={status['analysis']}")
    page.wait_for_selector("svg.bars rect")
    assert "Monica Geller" in page.inner_text("main")
    thumbs = page.locator(".moments img")
    assert thumbs.count() >= 1
    assert images_load(page) >= 1  # every thumbnail loads
    screenshot(page, "screen-time")
    page.emulate_media(media="print")
    assert not page.locator("header.topbar").is_visible()
    screenshot(page, "screen-time-print")
    page.emulate_media(media="screen")
    with page.expect_navigation():
        thumbs.first.click()
    wait_until(page, "document.querySelector('video.moment') && document.querySelector('video.moment').readyState >= 1",
               60)
    start = float(page.get_attribute("video.moment", "data-start"))
    now = page.evaluate("document.querySelector('video.moment').currentTime")
    assert abs(now - start) < 0.6, (now, start)
    assert page.errors == []
