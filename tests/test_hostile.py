"""Hostile input against every route of the three servers: always a readable 4xx, never a 500.

The battery is driven by :data:`ROUTES` (one row per route of the spec, plus
``/healthz`` and the file routes): add a row and the new route gets every case
that fits it. Each answer must be a 4xx with a readable message (an HTML page,
or exactly ``{"error": "<sentence>"}`` with ``Accept: application/json``), with
no stack trace, and the server must keep answering ``/healthz`` afterwards.
Most cases use the Flask test clients; a few run over real HTTP against gunicorn.
"""
import io
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import _synth
from ._synth import JSON
from .conftest import signed_in

TRACE = re.compile(r"Traceback \(most recent call last\)|File \"/|werkzeug\.exceptions|jinja2\.exceptions")


@dataclass
class Route:
    server: str            # "main", "process" or "video"
    path: str
    methods: tuple         # methods the route accepts
    upload: str = None     # "zip", "image", "images" (repeated field) or "video": what its POST takes
    field: str = "file"    # the upload's form field
    ids: tuple = ()        # request values it reads as ids ("job", "video", "kol", "crop", "run" ...)
    json_ok: bool = True   # answers JSON errors with Accept: application/json


ROUTES = [
    Route("main", "/healthz", ("GET",)),
    Route("main", "/", ("GET",)),
    Route("main", "/trainModel", ("GET",)),
    Route("main", "/trainExplain", ("GET",)),
    Route("main", "/trainByImage", ("GET", "POST"), upload="zip", field="zip"),
    Route("main", "/trainByVideo", ("GET", "POST"), upload="zip", field="zip"),
    Route("main", "/uploadVideoPage", ("GET",)),
    Route("main", "/predictVideoResult", ("GET", "POST"), upload="video"),
    Route("main", "/predictSinglePage", ("GET",)),
    Route("main", "/predictSingleImage", ("GET", "POST"), upload="image"),
    Route("main", "/predictBatchPage", ("GET",)),
    Route("main", "/predictBatchImage", ("GET", "POST"), upload="images"),
    Route("main", "/findSimilarKOLPage", ("GET",)),
    Route("main", "/findSimilarKOLResult", ("GET", "POST"), upload="image"),
    Route("process", "/healthz", ("GET",)),
    Route("process", "/", ("GET",), ids=("job",)),
    Route("process", "/processingProgress", ("GET", "POST"), ids=("job",)),
    Route("process", "/align", ("GET", "POST"), ids=("job",)),
    Route("process", "/clean", ("GET", "POST"), ids=("job",)),
    Route("process", "/import_clean", ("GET", "POST"), ids=("job",)),
    Route("process", "/import_result", ("GET", "POST"), ids=("job",)),
    Route("process", "/train_model", ("GET", "POST"), ids=("job",)),
    Route("process", "/chip", ("GET",), ids=("job", "kol", "crop")),
    Route("process", "/pool_chip", ("GET",), ids=("kol", "crop")),
    Route("video", "/healthz", ("GET",)),
    Route("video", "/", ("GET",), ids=("video",)),
    Route("video", "/video_feed", ("GET", "POST"), ids=("video",)),
    Route("video", "/appearances.csv", ("GET",), ids=("video",)),
    Route("video", "/video_tracks.json", ("GET",), ids=("video",)),
    Route("video", "/video_tracks.vtt", ("GET",), ids=("video",)),
    Route("video", "/video_tracks.csv", ("GET",), ids=("video",)),
]
#: Routes with the id in the path rather than a query field: (server, url template).
PATH_ID_ROUTES = [
    ("main", "/predictions/{a}/{b}"),
    ("main", "/similar/photo/{a}/{b}.png"),
    ("main", "/static/{a}"),
    ("process", "/static/{a}"),
    ("video", "/static/{a}"),
]

BAD_IDS = ["0123456789abcdef", "../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "/etc/passwd", "x" * 5000,
           "0123456789ABCDEF", " 0123456789abcdef", "0123456789abcdef\n", "%00", "\x00", "周杰伦", "-1",
           "0123456789abcde", "0123456789abcdef0", "null", "[]", "{}", "1e400", "\u202e\u0041"]
BAD_K = ["0", "-1", "51", "abc", "1.5", "1e3", "99999999999999999999999", "５", " 3 3", "0x10", "NaN", "inf",
         "\x00", "3; DROP TABLE", "-0", "+3"]


def check(r, json_mode, allowed=range(400, 500)):
    """A readable refusal: status in ``allowed``, a sentence, no stack trace."""
    body = r.get_data(as_text=True) if hasattr(r, "get_data") else r.text
    status = r.status_code
    assert status in allowed, (status, body[:400])
    assert not TRACE.search(body), body[:2000]
    if json_mode:
        data = r.get_json() if hasattr(r, "get_json") else r.json()
        assert set(data) == {"error"} and isinstance(data["error"], str), data
        assert 10 <= len(data["error"]) <= 600 and "Traceback" not in data["error"], data
    else:
        assert "<html" in body.lower() and "</html>" in body.lower(), body[:400]
    return body


def headers(json_mode):
    return JSON if json_mode else {"Accept": "text/html"}


@pytest.fixture
def clients(data_dir, redis_url, queue_workers):
    """Test clients of the three apps on one data folder, with a trained (synthetic) model and a
    cleaned job, so the routes get past "no model"/"no job" and reach their input checks."""
    from main_server import create_app as main_app
    from process_server import create_app as process_app
    from video_server import create_app as video_app

    cfg = {"TESTING": False, "DATA_DIR": str(data_dir), "SECRET_KEY": "test", "PROPAGATE_EXCEPTIONS": False,
           "REDIS_URL": redis_url}
    apps = {"main": main_app(cfg), "process": process_app(cfg), "video": video_app(cfg)}
    out = {name: signed_in(app.test_client(), "admin") for name, app in apps.items()}
    out["data_dir"] = Path(data_dir)
    out["model"] = _synth.synthetic_model(data_dir)
    out["job"] = _synth.aligned_job(data_dir, per_kol=3)
    return out


def alive(clients):
    for name in ("main", "process", "video"):
        r = clients[name].get("/healthz")
        assert r.status_code == 200 and r.get_json()["status"] == "ok"


def outside_writes(data_dir):
    """Files written anywhere near the data folder but outside it (path traversal landing spots)."""
    base = Path(data_dir).parent
    return sorted(str(p) for p in base.rglob("*") if p.is_file() and Path(data_dir) not in p.parents)


# -- 1. wrong methods ------------------------------------------------------------------
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.server}{r.path}")
@pytest.mark.parametrize("json_mode", [True, False], ids=["json", "html"])
def test_wrong_method_is_405(clients, route, json_mode):
    for method in ("PUT", "DELETE", "PATCH", "POST"):
        if method in route.methods:
            continue
        r = clients[route.server].open(route.path, method=method, headers=headers(json_mode), data=b"x")
        body = check(r, json_mode, allowed=(405,))
        assert method in body
    alive(clients)


# -- 2. ids: unknown and malformed ---------------------------------------------------------
@pytest.mark.parametrize("route", [r for r in ROUTES if r.ids], ids=lambda r: f"{r.server}{r.path}")
def test_unknown_and_malformed_ids(clients, route):
    client = clients[route.server]
    for bad in BAD_IDS:
        for key in route.ids:
            values = {k: (bad if k == key else _good_id(clients, k)) for k in route.ids}
            for method in route.methods:
                for json_mode in (True, False):
                    if method == "GET":
                        r = client.get(route.path, query_string=values, headers=headers(json_mode))
                    else:
                        r = client.post(route.path, data=values, headers=headers(json_mode))
                    if route.path == "/" and key in ("job", "video") and bad in ("", ):
                        continue
                    check(r, json_mode)
    alive(clients)


def _good_id(clients, key):
    return {"job": clients["job"], "kol": "0", "crop": "0" * 16, "video": "0" * 16}.get(key, "")


@pytest.mark.parametrize("server,template", PATH_ID_ROUTES)
def test_path_ids(clients, server, template):
    for a in ["0" * 32, "..", "%2e%2e", "..%2f..%2fetc", "x" * 3000, "周杰伦", "%00"]:
        for b in ["annotated.jpg", "..%2Fmanifest.json", "results.csv", "0" * 16, "passwd", "%2e%2e%2f"]:
            for json_mode in (True, False):
                r = clients[server].get(template.format(a=a, b=b), headers=headers(json_mode))
                check(r, json_mode, allowed=(404, 400))
    # a real traversal attempt through the static folder
    for path in ("/static/../shared/web/factory.py", "/static/%2e%2e/shared/web/factory.py", "/static/..%2fshared%2fweb.py",
                 "/static//etc/passwd", "/static/%2Fetc%2Fpasswd"):
        r = clients[server].get(path, headers=JSON, follow_redirects=True)
        assert r.status_code in (400, 404), (path, r.status_code)
        assert b"def make_app" not in r.data and b"root:" not in r.data
        # Werkzeug merges doubled slashes with a 308 to the same server, never elsewhere
        r = clients[server].get(path)
        if r.status_code == 308:
            assert r.headers["Location"].startswith(("/static/", "http://localhost/static/")), r.headers
    alive(clients)


# -- 3. uploads: missing fields, empty parts, bad files -----------------------------------
UPLOADS = [r for r in ROUTES if r.upload]


@pytest.mark.parametrize("route", UPLOADS, ids=lambda r: r.path)
@pytest.mark.parametrize("json_mode", [True, False], ids=["json", "html"])
def test_missing_and_empty_upload_fields(clients, route, json_mode):
    client = clients[route.server]
    h = headers(json_mode)
    cases = [
        dict(),                                                          # no body at all
        dict(data={}),                                                   # empty form
        dict(data={"other": "x"}),                                       # wrong field
        dict(data={route.field: (io.BytesIO(b""), "")}, content_type="multipart/form-data"),  # nothing chosen
        dict(data=b"--xx\r\nnot multipart at all", content_type="multipart/form-data; boundary=xx"),
        dict(data=b"garbage", content_type="multipart/form-data"),       # no boundary
        dict(data="zip=abc&file=abc", content_type="application/x-www-form-urlencoded"),
        dict(data=b'{"file": "x"}', content_type="application/json"),
    ]
    for case in cases:
        r = client.post(route.path, headers=h, **case)
        check(r, json_mode)
    alive(clients)


def _bad_cases(route):
    if route.upload == "zip":
        return _synth.bad_zips()
    if route.upload == "video":
        return _synth.bad_videos()
    return _synth.bad_files()


HEAVY = {"100k members", "zip bomb", "wide bomb"}


@pytest.mark.parametrize("route", UPLOADS, ids=lambda r: r.path)
def test_bad_files_are_refused(clients, route):
    client = clients[route.server]
    for case, (name, data) in _bad_cases(route).items():
        modes = (True,) if case in HEAVY else (True, False)
        for json_mode in modes:
            r = client.post(route.path, data={route.field: (io.BytesIO(data), name)},
                            content_type="multipart/form-data", headers=headers(json_mode))
            if route.upload == "images":
                _check_batch(r, json_mode, case)
            elif route.upload == "video" and case == "truncated mp4" and r.status_code == 303:
                pass  # the first frames decode: a shorter video is a fair answer, checked in test_truncated_video
            else:
                body = check(r, json_mode)
                if case == "encrypted" and json_mode:
                    assert "password" in body, body
                if case == "bomb header" and json_mode:
                    assert "pixels" in body, body
    assert not list((clients["data_dir"] / "jobs").glob("*/upload.zip"))
    assert outside_writes(clients["data_dir"]) == []
    alive(clients)


def _check_batch(r, json_mode, case):
    """A batch with one bad photo answers 200 with that photo's own error (docs/api.md: /predictBatchImage),
    or a 4xx."""
    if r.status_code == 200:
        if json_mode:
            data = r.get_json()
            assert len(data["results"]) == 1 and data["results"][0]["error"], (case, data)
            assert "Traceback" not in data["results"][0]["error"]
        else:
            assert not TRACE.search(r.get_data(as_text=True))
    else:
        check(r, json_mode)


def test_batch_mixes_good_and_bad(clients):
    files = [(io.BytesIO(data), name) for name, data in _synth.bad_files().values()]
    files.append((io.BytesIO(_synth.jpeg()), "noise.jpg"))
    r = clients["main"].post("/predictBatchImage", data={"file": files}, content_type="multipart/form-data",
                             headers=JSON)
    assert r.status_code == 200, r.get_data(as_text=True)[:500]
    results = r.get_json()["results"]
    assert len(results) == len(files)
    assert all(row["error"] for row in results[:-1]), results
    # the names shown are the file's own name, never a path
    assert all("/" not in row["filename"] and "\x00" not in row["filename"] for row in results)
    alive(clients)


@pytest.mark.parametrize("k", BAD_K)
def test_malformed_k(clients, k):
    for json_mode in (True, False):
        r = clients["main"].post("/findSimilarKOLResult", headers=headers(json_mode),
                                 data={"k": k, "file": (io.BytesIO(_synth.jpeg()), "a.jpg")},
                                 content_type="multipart/form-data")
        if k in ("-0", "+3"):  # a lenient parser may read these; it must not crash
            check(r, json_mode, allowed=range(400, 500))
            continue
        body = check(r, json_mode, allowed=(400,))
        assert "k must be" in body


def test_process_form_fields(clients):
    """Crop ids, KOL choices, modes and deletions that are not what the pages send."""
    client, job = clients["process"], clients["job"]
    r = client.post("/clean", data={"job": job}, headers=JSON)
    assert r.status_code == 200, r.get_json()
    junk = ["../../etc/passwd", "0" * 15, "g" * 16, "周" * 16, "x" * 10000, "\x00" * 16]
    for value in junk + ["f" * 16]:  # a well-formed id that is not part of the job
        for field_name in ("remove", "keep"):
            check(client.post("/clean", data={"job": job, field_name: value}, headers=JSON), True, allowed=(400,))
    for value in junk + ["Nobody", "ann", " Ann"]:
        check(client.post("/import_result", data={"job": job, "kol": value}, headers=JSON), True, allowed=(400,))
    for value in junk + ["nobody-12345678", "A" * 64]:
        check(client.post("/import_result", data={"delete": value}, headers=JSON), True, allowed=(404,))
        check(client.post("/import_result", data={"delete": value}), False, allowed=(404,))
    # odd modes are read as "merge", never as a crash
    r = client.post("/import_result", data={"job": job, "mode": "../x", "mode-0": "\x00", "replace": "x" * 999},
                    headers=JSON)
    assert r.status_code == 200 and sorted(r.get_json()["imported"]) == ["Ann", "Bob"], r.get_json()
    # a thousand repeated fields: bounded by MAX_FORM_PARTS, refused or handled, never a 500
    r = client.post("/clean", data={"job": job, "remove": ["f" * 16] * 3000}, headers=JSON)
    check(r, True)
    alive(clients)


def test_oversized_bodies_are_413(data_dir, redis_url):
    from main_server import create_app as main_app
    from process_server import create_app as process_app
    from video_server import create_app as video_app

    # (the process server's /healthz needs its Redis)
    cfg = {"DATA_DIR": str(data_dir), "SECRET_KEY": "t", "MAX_CONTENT_LENGTH": 50_000, "REDIS_URL": redis_url}
    apps = {"main": main_app(cfg), "process": process_app(cfg), "video": video_app(cfg)}
    big = b"\xff\xd8" + bytes(100_000)
    for route in ROUTES:
        if "POST" not in route.methods:
            continue
        client = signed_in(apps[route.server].test_client(), "admin")
        for json_mode in (True, False):
            r = client.post(route.path, data={route.field: (io.BytesIO(big), "big.jpg"), "job": "0" * 16},
                            content_type="multipart/form-data", headers=headers(json_mode))
            body = check(r, json_mode, allowed=(413,))
            assert "larger than this server accepts" in body
            # a plain form body that is too large
            r = client.post(route.path, data={"job": "x" * 2_000_000}, headers=headers(json_mode))
            check(r, json_mode, allowed=(413,))
        assert client.get("/healthz").status_code == 200
    assert not (Path(data_dir) / "jobs").exists() or not list((Path(data_dir) / "jobs").iterdir())


@pytest.mark.skipif(_synth.real_mp4() is None, reason="real clips not found (set KOL_SHARED_DATA)")
def test_truncated_video(clients):
    """A video cut short is refused, or accepted and then streamed as far as it goes (no 500, no hang)."""
    name, data = _synth.bad_videos()["truncated mp4"]
    r = clients["main"].post("/predictVideoResult", data={"file": (io.BytesIO(data), name)},
                             content_type="multipart/form-data", headers=JSON)
    if r.status_code != 303:
        check(r, True)
        return
    video = r.headers["Location"].rsplit("=", 1)[1]
    feed = clients["video"].get("/video_feed", query_string={"video": video, "pace": "0"})
    assert feed.status_code == 200
    assert b"--frame" in feed.get_data()
    alive(clients)


def _tiny_video(tmp_path):
    """A real 64x48, 5-frame MP4 written with OpenCV, posted to the main server: its video id."""
    import cv2
    import numpy as np

    path = tmp_path / "tiny.mp4"
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    for i in range(5):
        out.write(np.full((48, 64, 3), 40 * i, np.uint8))
    out.release()
    return path


def test_pace_and_unknown_query_values(clients, tmp_path):
    r = clients["main"].post("/predictVideoResult", data={"file": (io.BytesIO(_tiny_video(tmp_path).read_bytes()),
                                                                   "tiny.mp4")}, content_type="multipart/form-data")
    assert r.status_code == 303, r.get_data(as_text=True)[:300]
    video = r.headers["Location"].rsplit("=", 1)[1]  # a real video: pace is checked, not the id
    for pace in ("2", "abc", "\x00", "x" * 1000):
        r = clients["video"].get("/video_feed", query_string={"video": video, "pace": pace}, headers=JSON)
        assert r.status_code == 400, (pace, r.status_code)
        assert "pace must be" in check(r, True), pace
    assert clients["video"].get("/video_feed", query_string={"video": video, "pace": "0"}).status_code == 200
    for route in ROUTES:
        if "GET" in route.methods and not route.ids:
            r = clients[route.server].get(route.path, query_string={"next": "http://evil.example/",
                                                                    "job": "../x", "x" * 100: "\x00"})
            assert r.status_code < 500 and not TRACE.search(r.get_data(as_text=True))
            assert "evil.example" not in r.headers.get("Location", "")
    alive(clients)


# -- 4. over real HTTP (gunicorn) ----------------------------------------------------------
@pytest.mark.live
def test_hostile_requests_over_http(live_servers):
    s = live_servers
    bad_zip_name, bad_zip = _synth.bad_zips()["nested zip"]
    cases = [
        ("main", "POST", "/trainByImage", dict(files={"zip": (bad_zip_name, bad_zip)})),
        ("main", "POST", "/trainByImage", dict(files={"zip": ("kols.zip", _synth.zip_bomb())})),
        ("main", "POST", "/trainByVideo", dict(data=b"\x00" * 1000,
                                               headers={"Content-Type": "multipart/form-data; boundary=a"})),
        ("main", "POST", "/predictSingleImage", dict(files={"file": ("huge.png", _synth.png_declaring(20000, 20000))})),
        ("main", "POST", "/findSimilarKOLResult", dict(data={"k": "NaN"})),
        ("main", "POST", "/predictVideoResult", dict(files={"file": ("clip.mp4", b"junk" * 100)})),
        ("main", "DELETE", "/", {}),
        ("process", "GET", "/align", dict(params={"job": "../../../etc/passwd"})),
        ("process", "POST", "/clean", dict(data={"job": "0" * 16, "remove": "../x"})),
        ("process", "GET", "/chip", dict(params={"job": "0" * 16, "kol": "../..", "crop": "x"})),
        ("process", "GET", "/pool_chip", dict(params={"kol": "../../etc", "crop": "passwd"})),
        ("video", "GET", "/video_feed", dict(params={"video": "..%2F..%2Fetc"})),
        ("video", "GET", "/", dict(params={"video": "0" * 16})),
        ("video", "PUT", "/video_feed", {}),
    ]
    for server, method, path, kwargs in cases:
        for json_mode in (True, False):
            h = dict(kwargs.pop("headers", {}), **headers(json_mode))
            kwargs["headers"] = h
            r = s.http.request(method, s.urls[server] + path, timeout=60, allow_redirects=False, **kwargs)
            assert 400 <= r.status_code < 500, (server, method, path, r.status_code, r.text[:300])
            assert not TRACE.search(r.text)
            if json_mode:
                assert set(r.json()) == {"error"}
            else:
                assert "<html" in r.text.lower()
        for name, url in s.urls.items():
            assert s.http.get(url + "/healthz", timeout=5).status_code == 200, name
    # a client that hangs up halfway through an upload does not hurt the server
    import socket

    host, port = s.urls["main"].rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /trainByImage HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 100000\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"zip\"; "
                     b"filename=\"a.zip\"\r\n\r\nPK")
    for name, url in s.urls.items():
        assert s.http.get(url + "/healthz", timeout=5).status_code == 200, name
    jobs = s.data_dir / "jobs"
    assert not jobs.is_dir() or not [p for p in jobs.iterdir() if not (p / "state.json").exists()]


def test_unicode_and_traversal_upload_names_are_only_text(clients):
    """A zip named with unicode and a path: accepted for what it holds; the name is kept as text only."""
    data = _synth.build_zip({"Zoë/1.jpg": _synth.jpeg(64, 64), "周杰伦/2.jpg": _synth.jpeg(64, 64, seed=2)})
    for name, shown in (("../../../tmp/周杰伦 set.zip", "周杰伦 set.zip"), ("C:/Users/x/\u202ekols.zip", "kols.zip"),
                        ("..\x00.zip", "...zip")):
        r = clients["main"].post("/trainByImage", data={"zip": (io.BytesIO(data), name)},
                                 content_type="multipart/form-data")
        assert r.status_code == 303, r.get_data(as_text=True)[:300]
        job = r.headers["Location"].rsplit("=", 1)[1]
        state = clients["process"].get("/", query_string={"job": job}, headers=JSON).get_json()
        assert state["upload"] == shown and sorted(k["name"] for k in state["kols"]) == ["Zoë", "周杰伦"]
        files = [p.relative_to(clients["data_dir"]).as_posix() for p in (clients["data_dir"] / "jobs" / job).rglob("*")]
        assert all(f.isascii() for f in files), files
    assert outside_writes(clients["data_dir"]) == []


@pytest.mark.live
def test_oversized_uploads_over_http(tmp_path, monkeypatch):
    """Under gunicorn, with MAX_CONTENT_LENGTH from the environment: a clean 413 (not a reset
    connection), for bodies just over the limit and far over it, and the server stays up."""
    from .conftest import LiveServers

    monkeypatch.setenv("MAX_CONTENT_LENGTH", "100000")
    servers = LiveServers(tmp_path / "data", tmp_path, names=())
    try:
        servers.start("main")
        servers.start("process")
        for server, path, field_name in (("main", "/trainByImage", "zip"), ("main", "/predictSingleImage", "file"),
                                         ("process", "/clean", "job")):
            for size in (100_001, 5_000_000):
                for json_mode in (True, False):
                    # Connection: close: the server drops a connection whose body it refused unread, so
                    # the session must not reuse it for the next request
                    r = servers.http.post(servers.urls[server] + path, files={field_name: ("a.zip", b"\0" * size)},
                                          headers={**headers(json_mode), "Connection": "close"}, timeout=60)
                    assert r.status_code == 413 and not TRACE.search(r.text), (path, size, r.status_code)
                    assert "98 KiB at most" in (r.json()["error"] if json_mode else r.text)
            assert servers.http.get(servers.urls[server] + "/healthz", timeout=10).status_code == 200
        assert not (tmp_path / "data" / "jobs").exists() or not list((tmp_path / "data" / "jobs").iterdir())
    finally:
        servers.stop()


def test_batch_zips_share_the_upload_limits(clients):
    """Issue 20: UPLOAD_MAX_FILES counts the zips of one batch together; the zip that goes over
    gets the 413 sentence in its own row, the photos before it are still predicted."""
    clients["main"].application.config["UPLOAD_MAX_FILES"] = 3
    data = _synth.build_zip({f"set/{i}.jpg": _synth.jpeg() for i in range(2)})
    files = [(io.BytesIO(data), "first.zip"), (io.BytesIO(data), "second.zip")]
    r = clients["main"].post("/predictBatchImage", data={"file": files}, content_type="multipart/form-data",
                             headers=JSON)
    assert r.status_code == 200, r.get_data(as_text=True)[:500]
    rows = r.get_json()["results"]
    assert [row["path"] for row in rows] == ["first.zip/set/0.jpg", "first.zip/set/1.jpg", "second.zip"], rows
    assert all("UPLOAD_MAX_FILES" not in (row["error"] or "") for row in rows[:2]), rows  # predicted (noise: no face)
    assert "at most 3 are accepted in one upload (setting UPLOAD_MAX_FILES)" in rows[2]["error"], rows
    assert not list(clients["data_dir"].glob("predictions/*/uploads"))
    alive(clients)
