"""Whose results (issue 20): predictions and videos are for the one who made them, and admins;
and a KOL name that a spreadsheet would run as a formula is escaped in ``/appearances.csv``.

Everything is real: the main and video apps on one data folder (so one accounts database),
members as real API tokens and a real user signed in with a password (the session cookie
shared by both apps, as a browser's is), a real model, real photos through dlib, a real clip
streamed through the video server.
"""
import csv
import io
import re

import cv2
import numpy as np
import pytest

from . import _synth
from ._synth import JSON, write_clip
from .builders import build_pool, one_face_each
from .conftest import FIVE, _config, app_token, needs_data

HTML = {"Accept": "text/html"}
PASSWORD = "correct horse battery"
#: A well-formed id of nothing: what someone else's result must look like.
NO_RUN = "0" * 32
NO_VIDEO = "0123456789abcdef"


def _csrf(html):
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


@pytest.fixture
def people(data_dir, redis_url):
    """Clients of the main and video apps (one data folder) for each of:

    ``ann``: a member API token (used on both servers, as a script would);
    ``twin``: another member token with the SAME name as ann's (so the same audit actor);
    ``mia``: a member signed in with her password (one session cookie for both servers);
    ``boss``: an admin token.
    """
    from main_server import create_app as main_app
    from video_server import create_app as video_app
    from shared.faces import parallel

    config = _config(data_dir, redis_url)
    apps = {"main": main_app(config), "video": video_app(config)}
    accounts = apps["main"].extensions["accounts"]
    ann = app_token(apps["main"], "member")
    twin, _ = accounts.create_token("tests-member", "member", created_by="tests")
    boss = app_token(apps["main"], "admin")
    accounts.create_user("mia", PASSWORD, "member")

    def with_token(token):
        out = {}
        for section, app in apps.items():
            out[section] = app.test_client()
            out[section].environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        return out

    mia = {s: app.test_client() for s, app in apps.items()}
    r = mia["main"].post("/login", data={"name": "mia", "password": PASSWORD,
                                         "csrf_token": _csrf(mia["main"].get("/login").get_data(as_text=True))})
    assert r.status_code == 303, r.get_data(as_text=True)[:300]
    mia["video"].set_cookie("session", mia["main"].get_cookie("session").value)
    yield {"ann": with_token(ann), "twin": with_token(twin), "mia": mia, "boss": with_token(boss),
           "data_dir": data_dir}
    parallel.shutdown()  # the video server's workers, if a page started them


def _post_photo(client, route, photo, form=None):
    """POST one photo as a browser would; returns the result page's HTML."""
    data = {"file": (io.BytesIO(photo), "ben.jpg"), **(form or {})}
    r = client.post(route, data=data, headers=HTML, content_type="multipart/form-data")
    assert r.status_code == 200, r.get_data(as_text=True)[:300]
    return r.get_data(as_text=True)


def _no_such(client, url, same_as, headers):
    """``client`` gets for ``url`` exactly the 404 it gets for ``same_as`` (an id that does not exist)."""
    r, unknown = client.get(url, headers=headers), client.get(same_as, headers=headers)
    assert unknown.status_code == 404
    assert r.status_code == 404, (url, r.status_code)
    if headers is JSON:
        assert r.get_json() == unknown.get_json(), (url, r.get_json())
    else:
        assert "<html" in r.get_data(as_text=True) and "Traceback" not in r.get_data(as_text=True)
    return r


@needs_data
def test_prediction_results_are_for_their_maker_and_admins(people):
    data_dir = people["data_dir"]
    _synth.synthetic_model(data_dir)
    photo = (FIVE / "ben_afflek" / "train_1.jpg").read_bytes()
    ann = people["ann"]["main"]
    single = re.search(r'"/predictions/([0-9a-f]{32})/annotated\.jpg"',
                       _post_photo(ann, "/predictSingleImage", photo)).group(1)
    similar = re.search(r'"/predictions/([0-9a-f]{32})/annotated\.jpg"',
                        _post_photo(ann, "/findSimilarKOLResult", photo)).group(1)
    page = _post_photo(ann, "/predictBatchImage", photo)
    batch = re.search(r'"/predictions/([0-9a-f]{32})/results\.csv"', page).group(1)
    thumb = re.search(rf'"(/predictions/{batch}/thumb-[0-9]+\.jpg)"', page).group(1)
    urls = [f"/predictions/{single}/annotated.jpg", f"/predictions/{similar}/annotated.jpg",
            f"/predictions/{batch}/results.csv", thumb, f"/predictBatch/{batch}", f"/predictBatch/{batch}/progress"]

    for url in urls:
        for who in ("ann", "boss"):  # the maker and an admin
            r = people[who]["main"].get(url)
            assert r.status_code == 200, (who, url, r.get_data(as_text=True)[:200])
        for who in ("twin", "mia"):  # another token of the same name, another member: as if it did not exist
            for headers in (JSON, HTML):
                _no_such(people[who]["main"], url, url.replace(re.search("[0-9a-f]{32}", url).group(0), NO_RUN),
                         headers)
    assert "There is no such result" in people["mia"]["main"].get(urls[0], headers=JSON).get_json()["error"]
    assert people["ann"]["main"].get(f"/predictBatch/{batch}", headers=JSON).get_json()["results"]

    # a signed-in member's own result: hers, not the token's
    mia = people["mia"]["main"]
    form = _post_photo(mia, "/predictSingleImage", photo,
                       {"csrf_token": _csrf(mia.get("/predictSinglePage").get_data(as_text=True))})
    hers = re.search(r'"(/predictions/[0-9a-f]{32}/annotated\.jpg)"', form).group(1)
    assert mia.get(hers).status_code == 200 and people["boss"]["main"].get(hers).status_code == 200
    assert ann.get(hers, headers=JSON).status_code == 404

    # a result made before owners were recorded has no owner.json: for admins only
    (data_dir / "predictions" / single / "owner.json").unlink()
    assert ann.get(urls[0], headers=JSON).status_code == 404
    assert people["boss"]["main"].get(urls[0]).status_code == 200


def _upload(main, path, form=None):
    with open(path, "rb") as fh:
        r = main.post("/predictVideoResult", data={"file": (fh, path.name), **(form or {})})
    assert r.status_code == 303, r.get_data(as_text=True)[:300]
    return r.headers["Location"].split("video=", 1)[1]


def test_videos_are_for_their_uploader_and_admins(people, tmp_path):
    sky = [np.full((120, 160, 3), (90, 150 + i, 200), np.uint8) for i in range(4)]
    clip = write_clip(tmp_path / "sky.avi", sky, 10.0, "MJPG")
    ann_vid = _upload(people["ann"]["main"], clip)
    mia = people["mia"]
    mia_vid = _upload(mia["main"], clip, {"csrf_token": _csrf(mia["main"].get("/uploadVideoPage").get_data(as_text=True))})
    routes = ["/", "/appearances.csv", "/video_feed", "/video_tracks.json", "/video_tracks.vtt", "/video_tracks.csv"]

    def url(route, vid):
        return f"{route}?video={vid}&pace=0" if route == "/video_feed" else f"{route}?video={vid}"

    for vid, owner, others in ((ann_vid, "ann", ("twin", "mia")), (mia_vid, "mia", ("ann", "twin"))):
        for route in routes:
            for headers in (JSON, HTML):
                for who in others:
                    _no_such(people[who]["video"], url(route, vid), url(route, NO_VIDEO), headers)
        twin = people["twin"]["video"]  # a token: its POSTs need no CSRF token
        post, unknown = twin.post(url("/video_feed", vid), headers=JSON), twin.post(url("/video_feed", NO_VIDEO),
                                                                                    headers=JSON)
        assert post.status_code == unknown.status_code == 404 and post.get_json() == unknown.get_json()
        for who in (owner, "boss"):
            status = people[who]["video"].get(url("/", vid), headers=JSON)
            assert status.status_code == 200 and status.get_json()["video"] == vid
            assert people[who]["video"].get(url("/", vid)).status_code == 200  # the player page
            assert people[who]["video"].get(url("/appearances.csv", vid)).status_code == 200
    feed = people["ann"]["video"].get(url("/video_feed", ann_vid))
    assert feed.status_code == 200 and feed.get_data().count(b"--frame\r\nContent-Type: image/jpeg") == len(sky)
    assert people["ann"]["video"].get(url("/video_tracks.json", ann_vid)).get_json()["frame_count"] == len(sky)
    assert people["boss"]["video"].get(url("/", ann_vid), headers=JSON).get_json()["state"] == "done"

    # a video uploaded before owners were recorded has no owner.json: for admins only
    (people["data_dir"] / "videos" / ann_vid / "owner.json").unlink()
    _no_such(people["ann"]["video"], url("/", ann_vid), url("/", NO_VIDEO), JSON)
    assert people["boss"]["video"].get(url("/", ann_vid), headers=JSON).status_code == 200


#: KOLs whose display names a spreadsheet would run as formulas, by five_celebs folder.
FORMULA_NAMES = {"ben_afflek": "=1+1 Ben", "elton_john": "+Elton", "jerry_seinfeld": "@Jerry",
                 "madonna": "-Madonna"}


def _on_canvas(rgb, size=(360, 480)):
    """``rgb`` scaled to fit a ``size`` (h, w) grey canvas, centred."""
    h, w = size
    scale = min(h / rgb.shape[0], w / rgb.shape[1])
    small = cv2.resize(rgb, (int(rgb.shape[1] * scale), int(rgb.shape[0] * scale)), interpolation=cv2.INTER_CUBIC)
    canvas = np.full((h, w, 3), 128, np.uint8)
    top, left = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
    canvas[top:top + small.shape[0], left:left + small.shape[1]] = small
    return canvas


@needs_data
def test_appearances_csv_escapes_kol_names_a_spreadsheet_would_run(people, tmp_path):
    """Four KOLs named "=...", "+...", "@...", "-..." in the pool and the model; a clip of their
    photos streamed by the video server; the CSV shows each name starting with ', the page as it is."""
    from shared.recognition.store import ModelStore
    from shared.training.train import retrain
    from shared.faces import images

    data_dir = people["data_dir"]
    kols = {name: one_face_each(sorted((FIVE / person).glob("train_*.jpg"))[:3])
            for person, name in FORMULA_NAMES.items()}
    assert all(kols.values()), kols
    pool, _ = build_pool(data_dir / "pool", kols, tmp_path / "chips")
    frames = []
    for person in FORMULA_NAMES:
        frames += [_on_canvas(images.load_image(FIVE / person / "train_1.jpg"))] * 8
    retrain(pool, ModelStore(data_dir / "models"))
    boss = people["boss"]
    vid = _upload(boss["main"], write_clip(tmp_path / "four.avi", frames, 8.0, "MJPG"))
    body = boss["video"].get("/video_feed", query_string={"video": vid, "pace": "0"}).get_data()
    assert body.count(b"--frame\r\nContent-Type: image/jpeg") == len(frames)
    status = boss["video"].get("/", query_string={"video": vid}, headers=JSON).get_json()
    assert status["state"] == "done"
    assert {a["identity"] for a in status["appearances"]} >= set(FORMULA_NAMES.values())  # the JSON as it was

    r = boss["video"].get("/appearances.csv", query_string={"video": vid})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.get_data(as_text=True))))
    assert rows[0] == ["who", "kol", "start_s", "end_s", "seconds"]
    who = {row[0] for row in rows[1:]}
    assert who >= {"'" + name for name in FORMULA_NAMES.values()}, who
    assert not [w for w in who if w[:1] in "=+-@"], who  # nothing a spreadsheet would run
    assert all(float(row[2]) <= float(row[3]) for row in rows[1:])  # the numbers are numbers still
