"""The media library (issue 24): kept media, the face index, search, deletes, retention, a full disk.

Real SQLite, real faiss index files, real dlib on the shared photos (the pool: Obama and Biden of
knn_examples, two five_celebs KOLs; the photo with two faces is ``knn_examples/test/obama_and_biden.jpg``).
Every delete is followed at once by a search that must no longer find what was deleted.
"""
import io
import time

import numpy as np
import pytest

from shared.core.errors import UserError
from shared.core.storage import DISK_FULL

from . import _synth, test_faults
from .builders import build_pool, one_face_each, save_model
from .conftest import FIVE, KNN, needs_data, signed_in

small_disk = test_faults.small_disk  # the 6 MiB tmpfs fixture of the full-disk tests

JSON = {"Accept": "application/json"}
TWO = KNN / "test" / "obama_and_biden.jpg"


class Keeper:
    """Who keeps media in the unit tests: what :func:`shared.core.owners.record` reads of a Principal."""

    def __init__(self, name="ann", role="member", uid=1):
        self.actor, self.role, self.via, self.row, self.is_admin = name, role, "session", {"id": uid}, role == "admin"


def upload(path, name=None, **fields):
    return {"file": (io.BytesIO(path.read_bytes()), name or path.name), **fields}


def _faces(rng, centre, n, photo=1, kol=None):
    return [{"photo": photo, "box": (10, 60, 60, 10), "identity": kol and kol.title(), "kol": kol,
             "confidence": 0.9, "known": kol is not None, "embedding": centre + rng.normal(0, 0.02, 128),
             "chip": np.zeros((150, 150, 3), np.uint8)} for _ in range(n)]


# -- the store and the index, on synthetic embeddings ------------------------------------------------
def test_store_keeps_searches_and_every_delete_is_gone_from_the_next_search(tmp_path):
    from shared.library.store import Library

    lib = Library(tmp_path)
    rng = np.random.default_rng(1)
    ann, bob = rng.normal(0, 0.06, 128), rng.normal(0, 0.06, 128)
    first = lib.add("photo", "a.jpg", Keeper(), [("photo-1.jpg", b"jpeg bytes", {"name": "a.jpg"})],
                    _faces(rng, ann, 2, kol="ann") + _faces(rng, bob, 1))
    second = lib.add("batch", "b.jpg and 1 more", Keeper(), [("photo-1.jpg", b"1", {}), ("photo-2.jpg", b"2", {})],
                     _faces(rng, ann, 1, photo=2, kol="ann"), now=time.time() + 5)
    assert [m["media"] for m in lib.list_media()] == [second, first]  # newest first
    assert [m["media"] for m in lib.list_media(kind="photo")] == [first]
    by_kol = lib.by_kol(["ann"])
    assert [(f["media"], f["photo"]) for f in by_kol] == [(second, 2), (first, 1), (first, 1)]
    hits = lib.by_face(ann, 10, max_distance=0.6)
    assert len(hits) == 3 and all(h["kol"] == "ann" for h in hits)
    assert [h["distance"] for h in hits] == sorted(h["distance"] for h in hits) and hits[0]["distance"] < 0.35
    assert len(lib.index) == 4

    face = hits[0]["face"]  # one face: gone from the table, the index and its crop at once
    assert lib.chip_path(face) is not None
    lib.delete_face(face)
    assert face not in [h["face"] for h in lib.by_face(ann, 10)]
    assert face not in [i for i, _ in lib.index.search(ann, 10)] and len(lib.index) == 3
    with pytest.raises(UserError) as err:
        lib.face(face)
    assert err.value.status == 404

    assert len(lib.forget_kol("ann")) == 2  # a KOL deleted: none of their faces is named as them any more
    assert lib.by_kol(["ann"]) == [] and not any(h["known"] for h in lib.by_face(ann, 10))

    lib.delete_media(first)  # media: its rows, its index entries, its folder
    assert [h["media"] for h in lib.by_face(bob, 10, max_distance=0.6)] == [] and len(lib.index) == 1
    assert not (lib.media_root / first).exists() and [m["media"] for m in lib.list_media()] == [second]
    with pytest.raises(UserError) as err:
        lib.media(first)
    assert err.value.status == 404 and "no such media" in err.value.message


def test_an_index_written_by_another_process_is_read_again(tmp_path):
    """Two FaceIndex objects on one folder stand for two processes: each sees the other's writes."""
    from shared.library.index import FaceIndex

    one, two = FaceIndex(tmp_path), FaceIndex(tmp_path)
    vectors = np.random.default_rng(2).normal(0, 0.06, (3, 128))
    assert one.search(vectors[0], 5) == []
    one.add([7, 8], vectors[:2])
    assert [i for i, _ in two.search(vectors[1], 1)] == [8]
    two.add([9], vectors[2:])
    two.remove([7])
    assert sorted(i for i, _ in one.search(vectors[0], 5)) == [8, 9]
    distance = one.search(vectors[2], 1)[0][1]
    assert distance == pytest.approx(0.0, abs=1e-3)  # Euclidean, not squared
    far = one.search(vectors[2] + 0.1, 1)[0][1]
    assert far == pytest.approx(np.sqrt(128) * 0.1, rel=1e-3)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_the_index_grows_into_more_lists_and_still_finds_and_forgets_every_face(tmp_path, monkeypatch):
    """Kept one person at a time, the index is rebuilt into more lists as it grows (made small
    here: 8 faces a list, 4 lists searched); every face is found by its own embedding, and a
    person's 20 faces are their centre's top 20 (all but a few, which fell in other lists)."""
    from shared.library import index as face_index

    monkeypatch.setattr(face_index, "FACES_PER_LIST", 8)
    monkeypatch.setattr(face_index, "NPROBE", 4)
    rng = np.random.default_rng(5)
    centres = rng.normal(0, 0.06, (30, 128))
    one, two = face_index.FaceIndex(tmp_path), face_index.FaceIndex(tmp_path)
    faces = centres.repeat(20, axis=0) + rng.normal(0, 0.025, (600, 128))
    for person in range(30):
        one.add(range(person * 20 + 1, person * 20 + 21), faces[person * 20:person * 20 + 20])
    assert len(two) == 600 and two.lists == face_index.lists_for(600) == 64
    for face_id, face in enumerate(faces, 1):  # in the list of its nearest centroid, the first one searched
        (found, distance), = two.search(face, 1)
        assert found == face_id and distance < 1e-3
    found = [{i for i, _ in two.search(centre, 20)} for centre in centres]
    recall = np.mean([len(f & set(range(p * 20 + 1, p * 20 + 21))) / 20 for p, f in enumerate(found)])
    assert recall >= 0.95
    two.remove([1, 599])
    assert len(one) == 598
    for gone in (1, 599):
        assert gone not in [i for i, _ in one.search(faces[gone - 1], 20)]


def test_a_saved_index_is_searched_as_a_memory_map(tmp_path):
    """A process that only searches maps the file (the page cache's one copy) rather than reading it."""
    from shared.library.index import FaceIndex

    FaceIndex(tmp_path).add([1, 2], np.random.default_rng(6).normal(0, 0.06, (2, 128)))
    reader = FaceIndex(tmp_path)
    assert len(reader.search(np.zeros(128), 5)) == 2
    with open("/proc/self/maps") as maps:
        assert str(reader.path) in maps.read()


def test_retention_rule_of_housekeeping(tmp_path):
    from shared.core.config import DEFAULTS
    from shared.library.store import Library
    from shared.web import housekeeping

    lib = Library(tmp_path)
    rng = np.random.default_rng(3)
    now = time.time()
    old = lib.add("photo", "old.jpg", Keeper(), [("photo-1.jpg", b"x", {})], _faces(rng, rng.normal(0, .06, 128), 1),
                  now=now - 3 * 86400)
    new = lib.add("photo", "new.jpg", Keeper(), [("photo-1.jpg", b"x", {})], _faces(rng, rng.normal(0, .06, 128), 1),
                  now=now - 86400)
    config = {key: DEFAULTS[key] for key in housekeeping.SETTINGS}
    assert housekeeping.run(tmp_path, config)["library"] == []  # 0: forever
    out = housekeeping.run(tmp_path, dict(config, LIBRARY_RETENTION_DAYS=2))
    assert out["library"] == [old]
    assert [m["media"] for m in lib.list_media()] == [new] and len(lib.index) == 1


def test_a_full_disk_gives_507_and_loses_nothing_already_kept(small_disk):
    from shared.core import db
    from shared.library.store import Library

    data_dir = small_disk / "data"
    lib = Library(data_dir)
    rng = np.random.default_rng(4)
    ann = rng.normal(0, 0.06, 128)
    first = lib.add("photo", "a.jpg", Keeper(), [("photo-1.jpg", b"x" * 1000, {})], _faces(rng, ann, 2, kol="ann"))
    before = (lib.list_media(), sorted(p.relative_to(data_dir) for p in (data_dir / "library").rglob("*")))
    filler = test_faults._fill(small_disk, leave=200 * 1024)
    try:
        for size in (400 * 1024, 10 * 1024):  # the photo does not fit; it fits but the rest does not
            with pytest.raises(UserError) as err:
                lib.add("photo", "b.jpg", Keeper(), [("photo-1.jpg", b"y" * size, {})],
                        _faces(rng, ann, 40, kol="ann"))
            assert err.value.status == 507 and err.value.message == DISK_FULL
            assert (lib.list_media(), sorted(p.relative_to(data_dir) for p in (data_dir / "library").rglob("*")
                                             if not p.name.startswith(".tmp-"))) == before
            assert [h["media"] for h in lib.by_face(ann, 10)] == [first, first]
    finally:
        filler.unlink()
    second = lib.add("photo", "b.jpg", Keeper(), [("photo-1.jpg", b"y", {})], _faces(rng, ann, 1, kol="ann"))
    assert {h["media"] for h in lib.by_face(ann, 10)} == {first, second}
    db.forget()


# -- the main server: keep, search, delete over its routes -----------------------------------------
@pytest.fixture
def named(main_app, data_dir):
    """The main app with a model of Obama, Biden and two five_celebs KOLs; ``(admin client, member client, pool)``."""
    kols = {name: one_face_each(sorted((KNN / "train" / name).iterdir())) for name in ("obama", "biden")}
    for person in ("elton_john", "madonna"):
        kols[person] = one_face_each(sorted((FIVE / person).glob("train_*.jpg"))[:3])
    pool, _ = build_pool(data_dir / "pool", kols, data_dir.parent / "staging")
    save_model(data_dir, pool)
    return (signed_in(main_app.test_client(), "admin"), signed_in(main_app.test_client(), "member"), pool)


def _slug(pool, name):
    return next(slug for slug, shown in pool.names().items() if shown == name)


@needs_data
def test_keep_a_photo_find_it_by_kol_and_by_face_and_delete_it(named, main_app, data_dir):
    admin, member, pool = named
    r = admin.post("/predictSingleImage", data=upload(TWO), headers=JSON)
    assert r.status_code == 200, r.text
    run, answers = r.get_json()["run"], r.get_json()["faces"]
    r = admin.post("/library/keep/single", data={"run": run}, headers=JSON)
    assert r.status_code == 201, r.text
    media = r.get_json()["media"]
    assert r.get_json()["faces"] == len(answers) >= 2
    again = admin.post("/library/keep/single", data={"run": run}, headers=JSON)
    assert again.status_code == 200 and again.get_json()["media"] == media  # kept once
    listed = member.get("/library", headers=JSON).get_json()["media"]
    assert [(m["media"], m["kind"], m["faces"]) for m in listed] == [(media, "photo", len(answers))]
    item = member.get(f"/library/media/{media}", headers=JSON).get_json()
    assert [(f["identity"], f["known"], f["box"]) for f in item["face_list"]] == \
        [(a["identity"], a["known"], a["box"]) for a in answers]  # the answers given, boxes in photo pixels
    photo = member.get(item["files"][0]["url"])
    assert photo.status_code == 200 and photo.data == TWO.read_bytes()

    obama, biden = _slug(pool, "obama"), _slug(pool, "biden")
    found = member.get("/library/kol", query_string={"kol": obama}, headers=JSON).get_json()["results"]
    assert [f["media"] for f in found] == [media] and found[0]["identity"] == "obama"
    chip = member.get(found[0]["chip_url"])
    assert chip.status_code == 200 and chip.mimetype == "image/jpeg"

    other_obama = KNN / "test" / "obama1.jpg"
    hits = member.post("/library/search", data=upload(other_obama), headers=JSON).get_json()
    assert hits["results"] and hits["results"][0]["face"] == found[0]["face"]
    assert hits["results"][0]["distance"] < 0.6 and hits["face"]["identity"] == "obama"

    # a face deleted: the next search does not find it
    assert member.post(f"/library/faces/{found[0]['face']}/delete", headers=JSON).status_code == 403
    assert admin.post(f"/library/faces/{found[0]['face']}/delete", headers=JSON).status_code == 200
    hits = member.post("/library/search", data=upload(other_obama), headers=JSON).get_json()["results"]
    assert found[0]["face"] not in [h["face"] for h in hits]
    assert member.get("/library/kol", query_string={"kol": obama}, headers=JSON).get_json()["results"] == []

    # a KOL deleted: no library face is named as them any more
    biden_faces = member.get("/library/kol", query_string={"kol": biden}, headers=JSON).get_json()["results"]
    assert len(biden_faces) == 1
    assert admin.post(f"/kols/{biden}/delete", headers=JSON).status_code == 200
    assert member.get("/library/kol", query_string={"kol": biden}, headers=JSON).status_code == 404
    biden_photo = KNN / "train" / "biden" / "biden.jpg"
    hits = member.post("/library/search", data=upload(biden_photo), headers=JSON).get_json()["results"]
    assert [h["face"] for h in hits][:1] == [biden_faces[0]["face"]]
    assert hits[0]["identity"] is None and hits[0]["known"] is False
    unknown = [f["face"] for f, _ in main_app.extensions["library"].unknown_faces()]
    assert biden_faces[0]["face"] in unknown  # recorded as not known (the inbox of unknowns reads these)

    # the media deleted: nothing of it is found, its files are gone
    assert member.post(f"/library/media/{media}/delete", headers=JSON).status_code == 403
    assert admin.post(f"/library/media/{media}/delete", headers=JSON).get_json() == {"deleted": media}
    assert member.post("/library/search", data=upload(biden_photo), headers=JSON).get_json()["results"] == []
    assert member.get(f"/library/media/{media}", headers=JSON).status_code == 404
    assert not (data_dir / "library" / "media" / media).exists()
    assert len(main_app.extensions["library"].index) == 0


@needs_data
def test_keep_a_batch_with_the_answers_it_gave(named, main_app):
    admin, member, pool = named
    bob = main_app.test_client()
    token, _ = main_app.extensions["accounts"].create_token("bob", "member", created_by="tests")
    bob.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    photos = [FIVE / "elton_john" / "val_1.jpg", TWO, FIVE / "madonna" / "val_3.jpg"]
    r = member.post("/predictBatchImage", data={"file": [(io.BytesIO(p.read_bytes()), p.name) for p in photos]},
                    headers=JSON)
    assert r.status_code == 200, r.text
    body = r.get_json()
    assert bob.post("/library/keep/batch", data={"run": body["run"]}, headers=JSON).status_code == 404  # not his
    r = member.post("/library/keep/batch", data={"run": body["run"]}, headers=JSON)
    assert r.status_code == 201, r.text
    item = member.get(f"/library/media/{r.get_json()['media']}", headers=JSON).get_json()
    assert item["kind"] == "batch" and [f["name"] for f in item["files"]] == [p.name for p in photos]
    given = [(n, f["identity"], f["box"]) for n, row in enumerate(body["results"], 1) for f in row["faces"]]
    assert [(f["photo"], f["identity"], f["box"]) for f in item["face_list"]] == given
    page = member.get(f"/predictBatch/{body['run']}").get_data(as_text=True)
    assert "Kept in the library" in page and "keep-button" not in page
    # the result goes after a day as before; what was kept stays (the photos are the library's own links)
    from shared.web import housekeeping

    out = housekeeping.run(main_app.config["DATA_DIR"], main_app.config, now=time.time() + 2 * 86400)
    assert body["run"] in out["predictions"] and out["library"] == []
    assert member.get(f"/predictBatch/{body['run']}", headers=JSON).status_code == 404
    kept = member.get(item["files"][0]["url"])
    assert kept.status_code == 200 and kept.data == photos[0].read_bytes()


@needs_data
def test_bad_library_input_gets_a_sentence_and_changes_nothing(named, data_dir):
    admin, member, _ = named
    cases = [
        (member.post("/library/search", data={"file": (io.BytesIO(_synth.jpeg(300, 200)), "noise.jpg")},
                     headers=JSON), 422, "No face was found in 'noise.jpg'"),
        (member.post("/library/search", data={"file": (io.BytesIO(b"hello"), "notes.txt")}, headers=JSON),
         415, "not a photo"),
        (member.post("/library/search", data={"file": (io.BytesIO(b"hello"), "fake.jpg")}, headers=JSON),
         None, "fake.jpg"),
        (member.post("/library/search", data={}, headers=JSON), 400, "Choose a photo"),
        (member.get("/library/media/0123456789abcdef", headers=JSON), 404, "no such media"),
        (member.get("/library/media/..%2Fetc", headers=JSON), 404, None),
        (member.get("/library", query_string={"kind": "film"}, headers=JSON), 400, "kind must be one of"),
        (member.get("/library", query_string={"since": "yesterday"}, headers=JSON), 400, "YYYY-MM-DD"),
        (member.get("/library/kol", query_string={"kol": "nobody"}, headers=JSON), 404, "no such KOL"),
        (member.post("/library/keep/single", data={"run": "f" * 32}, headers=JSON), 404, "no such result"),
        (member.post("/library/keep/video", data={"video": "0123456789abcdef"}, headers=JSON), 404, "No such video"),
    ]
    for r, status, words in cases:
        assert 400 <= r.status_code < 500 and (status is None or r.status_code == status), (words, r.status_code, r.text)
        body = r.get_json() or {}
        if words:
            assert words.lower() in body.get("error", "").lower(), (words, body)
    assert member.get("/library", headers=JSON).get_json() == {"media": []}
    assert not (data_dir / "library" / "media").exists() or not list((data_dir / "library" / "media").iterdir())


# -- keeping a video from its per-frame data ---------------------------------------------------------
@needs_data
def test_keep_video_keeps_one_face_per_track_per_second(tmp_path):
    from shared.faces import engine, images
    from shared.library.keep import keep_video
    from shared.library.store import Library

    rgb = images.load_image(FIVE / "madonna" / "val_3.jpg")
    rgb = np.ascontiguousarray(rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2])
    found = engine.analyze(rgb)
    assert len(found) == 1
    clip = tmp_path / "clip.mp4"
    fps = 5
    _synth.write_clip(clip, [rgb] * (fps * 3), fps)
    box = [int(v) for v in found[0].box]
    tracks = {"video": "0" * 16, "fps": float(fps), "frame_count": fps * 3, "frames": [
        {"frame": i, "t": round(i / fps, 3), "faces": [{"box": box, "track": 4, "identity": "Madonna",
                                                         "confidence": 0.93, "known": True, "label": "Madonna 93%"}]}
        for i in range(fps * 3)]}
    lib = Library(tmp_path / "data")
    media = keep_video(lib, clip, tracks, Keeper(), name="launch.mp4", names={"madonna": "Madonna"})
    item = lib.media(media)
    assert item["kind"] == "video" and item["duration_s"] == pytest.approx(3.0, abs=0.21) and item["fps"] == fps
    assert [(f["t"], f["frame"], f["track"], f["kol"], f["identity"]) for f in item["face_list"]] == \
        [(0.0, 0, 4, "madonna", "Madonna"), (1.0, 5, 4, "madonna", "Madonna"), (2.0, 10, 4, "madonna", "Madonna")]
    for f in item["face_list"]:  # each moment embedded from its own decoded frame
        assert np.linalg.norm(lib.embedding(f["face"]) - found[0].embedding) < 0.3  # mp4v re-encoding moves it ~0.15
        assert lib.chip_path(f["face"]) is not None
    assert [f["t"] for f in lib.by_kol(["madonna"])] == [0.0, 1.0, 2.0]
    assert (lib.media_root / media / "video.mp4").read_bytes() == clip.read_bytes()


@needs_data
def test_a_finished_video_run_is_kept_from_the_video_page(main_app, tmp_path):
    """The video page's "Keep in library" (``POST /library/keep/video``): a video uploaded through the main
    server, its run's per-frame data written by the stream's own writer (framelog.write)."""
    from shared.faces import engine, images
    from shared.video import framelog

    rgb = images.load_image(FIVE / "madonna" / "val_3.jpg")
    rgb = np.ascontiguousarray(rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2])
    box = [int(v) for v in engine.analyze(rgb)[0].box]
    clip = _synth.write_clip(tmp_path / "clip.mp4", [rgb] * 10, 5)
    member = signed_in(main_app.test_client(), "member")
    r = member.post("/predictVideoResult", data={"file": (io.BytesIO(clip.read_bytes()), "launch.mp4")})
    assert r.status_code == 303, r.text
    video = r.headers["Location"].rsplit("video=", 1)[1]
    folder = main_app.config["DATA_DIR"] + f"/videos/{video}"
    assert member.post("/library/keep/video", data={"video": video}, headers=JSON).status_code == 404  # not played yet
    rows = [{"frame": i, "t": round(i / 5, 3), "faces": [{"box": box, "track": 1, "identity": None,
                                                          "confidence": 0.8, "known": False, "label": "unknown 80%"}]}
            for i in range(10)]
    framelog.write(folder, video, 5.0, rows)
    r = member.post("/library/keep/video", data={"video": video}, headers=JSON)
    assert r.status_code == 201, r.text
    item = member.get(f"/library/media/{r.get_json()['media']}", headers=JSON).get_json()
    assert item["kind"] == "video" and item["name"] == "launch.mp4"
    assert [(f["t"], f["known"]) for f in item["face_list"]] == [(0.0, False), (1.0, False)]
    assert item["face_list"][1]["file_url"].endswith("/video.mp4#t=1.0")
    assert member.post("/library/keep/video", data={"video": video}, headers=JSON).status_code == 200  # kept once


@needs_data
def test_a_png_photo_is_kept_as_it_was_uploaded(named):
    from PIL import Image

    admin, _, _ = named
    buf = io.BytesIO()
    Image.open(FIVE / "elton_john" / "val_1.jpg").save(buf, "PNG")
    r = admin.post("/predictSingleImage", data={"file": (io.BytesIO(buf.getvalue()), "elton.png")}, headers=JSON)
    assert r.status_code == 200, r.text
    r = admin.post("/library/keep/single", data={"run": r.get_json()["run"]}, headers=JSON)
    assert r.status_code == 201, r.text
    item = admin.get(f"/library/media/{r.get_json()['media']}", headers=JSON).get_json()
    assert item["files"][0]["url"].endswith("/photo-1.png") and item["files"][0]["name"] == "elton.png"
    assert admin.get(item["files"][0]["url"]).data == buf.getvalue()


def test_a_kol_deleted_from_the_pool_summary_is_no_longer_named_in_the_library(process_app_no_worker, data_dir,
                                                                                tmp_path):
    """The process server's ``POST /delete_kol`` (the pool summary's delete) un-names the KOL's library faces too,
    and they join the inbox of unknown people (shared.library.feed.forget_kol)."""
    from types import SimpleNamespace

    from shared.library.store import Library

    rng = np.random.default_rng(5)
    centre = rng.normal(0, 0.06, 128)
    faces = [SimpleNamespace(chip=np.full((150, 150, 3), 90 + i, np.uint8), embedding=centre + rng.normal(0, .02, 128))
             for i in range(3)]
    pool, (slug,) = build_pool(data_dir / "pool", {"Ann Lee": faces}, tmp_path / "staging")
    lib = Library(data_dir)
    lib.add("photo", "a.jpg", Keeper(), [("photo-1.jpg", b"x", {})], _faces(rng, centre, 2, kol=slug))
    admin = signed_in(process_app_no_worker.test_client(), "admin")
    r = admin.post("/delete_kol", data={"delete": "Ann Lee"}, headers=JSON)
    assert r.status_code == 200, r.text
    assert lib.by_kol([slug]) == [] and len(lib.unknown_faces()) == 2
    from shared.library.unknowns import Inbox

    assert sorted(Inbox(data_dir).face_ids()) == sorted(str(f["face"]) for f, _ in lib.unknown_faces())


@needs_data
def test_a_kept_unknown_face_joins_the_inbox_and_leaves_it_with_its_media(named, main_app):
    """Keeping feeds the inbox of unknown people (shared.library.feed): the kept photo's unknown face is in a
    group with its chip; a second keep adds nothing twice; deleting the media takes the face out again."""
    admin, member, _ = named
    stranger = sorted((FIVE / "jerry_seinfeld").glob("train_*.jpg"))[0]
    r = admin.post("/predictSingleImage", data=upload(stranger), headers=JSON)
    assert r.status_code == 200, r.text
    assert [f["known"] for f in r.get_json()["faces"]] == [False]
    run = r.get_json()["run"]
    media = admin.post("/library/keep/single", data={"run": run}, headers=JSON).get_json()["media"]
    face = member.get(f"/library/media/{media}", headers=JSON).get_json()["face_list"][0]["face"]
    groups = member.get("/unknowns", headers=JSON).get_json()["groups"]
    assert [[f["id"] for f in g["faces"]] for g in groups] == [[str(face)]], groups
    assert member.get(f"/unknowns/{groups[0]['number']}/faces/{face}").status_code == 200  # its chip
    admin.post("/library/keep/single", data={"run": run}, headers=JSON)
    assert len(member.get("/unknowns", headers=JSON).get_json()["groups"]) == 1
    assert admin.post(f"/library/media/{media}/delete", headers=JSON).status_code == 200
    assert member.get("/unknowns", headers=JSON).get_json()["groups"] == []
