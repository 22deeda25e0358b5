"""Prediction over HTTP against the real main server (R1, R8-R13).

The model is trained in the test through ``shared/`` from the five_celebs
``train_`` photos (the pool gets their chips, so similar-KOL has photos to show);
the ``val_`` photos are held back; the knn_examples people are not in the pool.
"""
import csv
import io
import re
import shutil
from pathlib import Path

import pytest

from shared.recognition import batch
from shared.faces import parallel
from shared.training import pool as pool_mod
from shared.recognition.model import train
from shared.recognition.store import ModelStore

from .builders import build_pool, save_model
from .conftest import FIVE, KNN, five_celebs_photos, needs_data

JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html"}
FACE_KEYS = {"box", "identity", "confidence", "known", "number"}  # number: issue 12 (drawn on the photo)


def display(person):
    return person.replace("_", " ").title()


def files(paths):
    return [("file", (Path(p).name, Path(p).read_bytes(), "image/jpeg")) for p in paths]


def check_face(face):
    """A face object exactly as docs/api.md ("Objects used below": face) describes it, plus ``number``."""
    assert set(face) == FACE_KEYS
    assert set(face["box"]) == {"top", "right", "bottom", "left"}
    assert all(type(v) is int for v in face["box"].values())
    assert face["box"]["bottom"] > face["box"]["top"] and face["box"]["right"] > face["box"]["left"]
    # the probability that the answer shown (the name, or "unknown") is right: the more likely answer is shown
    assert type(face["confidence"]) is float and 0.5 <= face["confidence"] <= 1.0
    assert type(face["known"]) is bool
    if face["known"]:
        assert isinstance(face["identity"], str) and face["identity"]
    else:
        assert face["identity"] is None


def check_error(response, status):
    assert response.status_code == status, response.text[:300]
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and len(body["error"]) > 10
    return body["error"]


@pytest.fixture(scope="module")
def trained(live_servers, celeb_faces, tmp_path_factory):
    """Pool the chips of the five_celebs train_ photos (one face each) and save a model."""
    data = live_servers.data_dir
    kols = {display(person): [face for _, face in items] for person, items in celeb_faces.items()}
    pool, _ = build_pool(data / "pool", kols, tmp_path_factory.mktemp("chips"))
    store, version = save_model(data, pool)
    return {"url": live_servers.urls["main"], "http": live_servers.http, "store": store, "version": version, "pool": pool}


# -- no model yet (runs first: before the `trained` fixture saves one) ----------------

@needs_data
@pytest.mark.live
def test_no_model_yet_is_a_clear_409(live_servers):
    url = live_servers.urls["main"]
    current = live_servers.data_dir / "models" / "current"
    moved = current.with_name("current.away")
    if current.exists():
        current.rename(moved)
    try:
        photo = FIVE / "madonna" / "val_1.jpg"
        for route in ("/predictSingleImage", "/predictBatchImage", "/findSimilarKOLResult"):
            message = check_error(live_servers.http.post(url + route, files=files([photo]), headers=JSON), 409)
            assert "model" in message.lower()
            page = live_servers.http.post(url + route, files=files([photo]), headers=HTML)
            assert page.status_code == 409 and "No model is trained yet" in page.text
        home = live_servers.http.get(url + "/", headers=HTML)
        assert home.status_code == 200 and "No model is trained yet" in home.text
        assert live_servers.http.get(url + "/", headers=JSON).json()["model"] is None
    finally:
        if moved.exists():
            moved.rename(current)


# -- R1 and the forms -----------------------------------------------------------------

@needs_data
@pytest.mark.live
def test_home_and_forms(trained):
    url = trained["url"]
    home = trained["http"].get(url + "/", headers=JSON).json()
    people = len(five_celebs_photos())  # one KOL per five_celebs folder
    assert home["model"]["version"] == trained["version"] and home["model"]["identities"] == people
    assert home["pool"]["kols"] == people
    page = trained["http"].get(url + "/", headers=HTML).text
    assert trained["version"] in page and "Mindy Kaling" in page
    for route, target in (("/predictSinglePage", "/predictSingleImage"),
                          ("/predictBatchPage", "/predictBatchImage"),
                          ("/findSimilarKOLPage", "/findSimilarKOLResult")):
        form = trained["http"].get(url + route)
        assert form.status_code == 200
        assert f'action="{target}"' in form.text and 'name="file"' in form.text
        assert 'enctype="multipart/form-data"' in form.text
    assert 'multiple' in trained["http"].get(url + "/predictBatchPage").text
    assert 'name="k"' in trained["http"].get(url + "/findSimilarKOLPage").text


# -- R9: single photo -------------------------------------------------------------------

@needs_data
@pytest.mark.live
def test_every_held_back_photo_with_a_face_is_named(trained):
    url = trained["url"]
    named = no_face = 0
    confidences = []
    for person, paths in five_celebs_photos("val_").items():
        for path in paths:
            r = trained["http"].post(url + "/predictSingleImage", files=files([path]), headers=JSON)
            if r.status_code == 422:  # says so instead of guessing
                assert "No face" in r.json()["error"], r.text
                no_face += 1
                continue
            assert r.status_code == 200, r.text
            body = r.json()
            assert set(body) == {"faces", "model_version", "elapsed_ms", "width", "height",  # size: issue 12
                                 "image_url", "download_url",  # the annotated photo: issue 25
                                 "run"}  # the result's id, to keep it in the library: issue 24
            assert body["model_version"] == trained["version"]
            assert type(body["elapsed_ms"]) is float and body["elapsed_ms"] > 0
            for face in body["faces"]:
                check_face(face)
            largest = body["faces"][0]
            assert largest["known"] and largest["identity"] == display(person), (path, largest)
            confidences.append(largest["confidence"])
            named += 1
    total = sum(len(paths) for paths in five_celebs_photos("val_").values())
    assert named + no_face == total and no_face <= total // 10  # a face is found in at least 90 % of them
    # every answer was right, so a confidence that means "probability the answer is right" is high on average
    assert sum(confidences) / len(confidences) >= 0.8, confidences


@needs_data
@pytest.mark.live
def test_single_result_page_shows_the_annotated_photo(trained):
    url = trained["url"]
    r = trained["http"].post(url + "/predictSingleImage", files=files([FIVE / "mindy_kaling" / "val_1.jpg"]), headers=HTML)
    assert r.status_code == 200 and "Mindy Kaling" in r.text and " ms" in r.text
    src = re.search(r'<img class="result" src="([^"]+)"', r.text).group(1)
    image = trained["http"].get(url + src)
    assert image.status_code == 200 and image.headers["Content-Type"] == "image/jpeg"
    assert image.content[:2] == b"\xff\xd8"
    run = src.split("/")[2]
    for bad in (f"/predictions/{run}/../../pool/manifest.json", f"/predictions/{run}/manifest.json",
                "/predictions/ABC/annotated.jpg", f"/predictions/{'0' * 32}/annotated.jpg"):
        assert trained["http"].get(url + bad, headers=JSON).status_code == 404


@needs_data
@pytest.mark.live
def test_strangers_are_unknown_and_two_people_give_two_faces(trained):
    url = trained["url"]
    strangers = sorted((KNN / "train").rglob("*.jp*g")) + sorted((KNN / "test").glob("*.jpg"))
    faces_seen = 0
    for path in strangers:
        r = trained["http"].post(url + "/predictSingleImage", files=files([path]), headers=JSON)
        assert r.status_code == 200, (path, r.text)
        for face in r.json()["faces"]:
            check_face(face)
            assert not face["known"] and face["identity"] is None, (path, face)
            faces_seen += 1
    assert faces_seen >= 16
    both = trained["http"].post(url + "/predictSingleImage", files=files([KNN / "test" / "obama_and_biden.jpg"]),
                         headers=JSON).json()["faces"]
    assert len(both) >= 2
    areas = [(f["box"]["bottom"] - f["box"]["top"]) * (f["box"]["right"] - f["box"]["left"]) for f in both]
    assert areas == sorted(areas, reverse=True)  # largest first


# -- R11: batch -------------------------------------------------------------------------

@needs_data
@pytest.mark.live
def test_batch_results_with_per_photo_errors_and_csv(trained):
    url = trained["url"]
    good = [FIVE / "elton_john" / "val_1.jpg", FIVE / "madonna" / "val_3.jpg", KNN / "train" / "biden" / "biden.jpg"]
    jpeg = good[0].read_bytes()
    upload = files(good) + [
        ("file", ("broken.jpg", jpeg[: len(jpeg) // 3], "image/jpeg")),
        ("file", ("notes.txt", b"not a photo", "text/plain")),
        ("file", ("empty.png", b"", "image/png")),
        ("file", ("text.jpg", b"hello, I am not a JPEG", "image/jpeg")),
        ("file", ("val_4.jpg", (FIVE / "ben_afflek" / "val_4.jpg").read_bytes(), "image/jpeg")),
    ]
    r = trained["http"].post(url + "/predictBatchImage", files=upload, headers=JSON)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"results", "model_version", "run"} and body["model_version"] == trained["version"]
    results = body["results"]
    assert [x["filename"] for x in results] == [
        "val_1.jpg", "val_3.jpg", "biden.jpg", "broken.jpg", "notes.txt", "empty.png", "text.jpg", "val_4.jpg"]
    for i, x in enumerate(results, 1):
        assert set(x) == {"filename", "faces", "error", "index", "path", "width", "height"}
        assert x["index"] == i and x["path"] == x["filename"]
        for face in x["faces"]:
            check_face(face)
    assert [x["error"] for x in results[:3]] == [None, None, None]
    assert results[0]["faces"][0]["identity"] == "Elton John"
    assert results[1]["faces"][0]["identity"] == "Madonna"
    assert not results[2]["faces"][0]["known"]
    for x in results[3:]:
        assert isinstance(x["error"], str) and x["error"] and x["faces"] == []
    assert "No face" in results[-1]["error"]

    page = trained["http"].post(url + "/predictBatchImage", files=upload, headers=HTML)
    assert page.status_code == 200 and "Download CSV" in page.text
    thumbs = re.findall(r'<img class="batch-thumb" src="([^"]+)"', page.text)
    assert len(thumbs) == 4  # the three good photos and the one without a face
    assert trained["http"].get(url + thumbs[0]).headers["Content-Type"] == "image/jpeg"
    csv_url = re.search(r'href="([^"]+results\.csv)"', page.text).group(1)
    download = trained["http"].get(url + csv_url)
    assert download.status_code == 200 and "attachment" in download.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(download.content.decode("utf-8-sig"))))
    assert [r["filename"] for r in rows][:3] == ["val_1.jpg", "val_3.jpg", "biden.jpg"]
    assert rows[0]["identity"] == "Elton John" and rows[2]["identity"] == "unknown"
    assert {r["filename"] for r in rows if r["error"]} == {"broken.jpg", "notes.txt", "empty.png", "text.jpg",
                                                           "val_4.jpg"}


@needs_data
@pytest.mark.live
def test_batch_keeps_unicode_names_and_its_csv_is_spreadsheet_safe(trained):
    url = trained["url"]
    jpeg = (FIVE / "mindy_kaling" / "val_2.jpg").read_bytes()
    upload = [("file", ("Ảnh 照片 1.jpg", jpeg, "image/jpeg")), ("file", ("=HYPERLINK(1).jpg", jpeg, "image/jpeg")),
              ("file", ("../../etc/passwd.jpg", jpeg, "image/jpeg"))]
    body = trained["http"].post(url + "/predictBatchImage", files=upload, headers=JSON).json()
    assert [x["filename"] for x in body["results"]] == ["Ảnh 照片 1.jpg", "=HYPERLINK(1).jpg", "passwd.jpg"]
    assert all(x["faces"][0]["identity"] == "Mindy Kaling" for x in body["results"])
    page = trained["http"].post(url + "/predictBatchImage", files=upload, headers=HTML).text
    assert "Ảnh 照片 1.jpg" in page
    rows = list(csv.reader(io.StringIO(trained["http"].get(
        url + re.search(r'href="([^"]+results\.csv)"', page).group(1)).content.decode("utf-8-sig"))))
    assert [r[0] for r in rows[1:]] == ["Ảnh 照片 1.jpg", "'=HYPERLINK(1).jpg", "passwd.jpg"]


@needs_data
@pytest.mark.live
def test_batch_of_200_photos_in_one_upload(trained):
    url = trained["url"]
    photos = sorted(FIVE.rglob("*.jpg"))
    upload = [("file", (f"{i:03d}-{p.name}", p.read_bytes(), "image/jpeg"))
              for i, p in zip(range(200), photos * 2)]
    r = trained["http"].post(url + "/predictBatchImage", files=upload, headers=JSON, timeout=600)
    assert r.status_code == 200, r.text[:300]
    results = r.json()["results"]
    assert len(results) == 200
    assert [x["filename"] for x in results] == [name for _, (name, _, _) in upload]
    with_faces = [x for x in results if x["faces"]]
    assert len(with_faces) >= 0.9 * len(results)
    assert all(x["error"] is None or "No face" in x["error"] for x in results)


@pytest.mark.live
def test_batch_without_files_is_a_400(live_servers):
    url = live_servers.urls["main"]
    check_error(live_servers.http.post(url + "/predictBatchImage", files={"other": ("a.jpg", b"x")}, headers=JSON), 400)
    check_error(live_servers.http.post(url + "/predictBatchImage", files=[("file", ("", b"", "image/jpeg"))],
                              headers=JSON), 400)


# -- R13: similar KOLs --------------------------------------------------------------------

@needs_data
@pytest.mark.live
def test_similar_kols(trained, live_servers):
    url = trained["url"]
    kols = len(trained["pool"].kols())
    photo = FIVE / "madonna" / "val_2.jpg"
    r = trained["http"].post(url + "/findSimilarKOLResult", files=files([photo]), data={"k": "3"}, headers=JSON)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"face", "faces", "matches"}  # faces: every face of the photo (issue 25)
    check_face(body["face"])
    assert body["face"]["identity"] == "Madonna"
    matches = body["matches"]
    assert len(matches) == 3 and matches[0]["identity"] == "Madonna"
    for m in matches:
        assert set(m) == {"identity", "similarity"}
        assert type(m["similarity"]) is float
    sims = [m["similarity"] for m in matches]
    assert sims == sorted(sims, reverse=True) and sims[0] > 0.5 > sims[1]
    # Madonna is less similar to another KOL's photo than to her own
    other = live_servers.http.post(url + "/findSimilarKOLResult", files=files([FIVE / "mindy_kaling" / "val_1.jpg"]),
                                   data={"k": "50"}, headers=JSON).json()["matches"]
    assert next(m["similarity"] for m in other if m["identity"] == "Madonna") < sims[0]

    default = trained["http"].post(url + "/findSimilarKOLResult", files=files([photo]), headers=JSON).json()
    assert len(default["matches"]) == 5
    assert len({m["identity"] for m in default["matches"]}) == 5
    many = trained["http"].post(url + "/findSimilarKOLResult", files=files([photo]), data={"k": "50"}, headers=JSON)
    assert len(many.json()["matches"]) == kols  # k is capped by the KOLs that exist

    page = trained["http"].post(url + "/findSimilarKOLResult", files=files([photo]), headers=HTML)
    assert page.status_code == 200 and "Madonna" in page.text
    chips = re.findall(r'<img src="(/similar/photo/[^"]+)"', page.text)
    assert len(chips) == len(default["matches"])
    chip = trained["http"].get(url + chips[0])
    assert chip.status_code == 200 and chip.headers["Content-Type"] == "image/png"
    assert trained["http"].get(url + "/similar/photo/..%2f..%2fmodels/current.png").status_code == 404


@needs_data
@pytest.mark.live
def test_similar_uses_the_largest_face_and_says_so(trained):
    url = trained["url"]
    photo = KNN / "test" / "obama_and_biden.jpg"
    single = trained["http"].post(url + "/predictSingleImage", files=files([photo]), headers=JSON).json()
    body = trained["http"].post(url + "/findSimilarKOLResult", files=files([photo]), headers=JSON).json()
    assert body["face"]["box"] == single["faces"][0]["box"]
    assert not body["face"]["known"]
    assert all(m["similarity"] < 0.5 for m in body["matches"])  # a stranger: nobody is close
    page = trained["http"].post(url + "/findSimilarKOLResult", files=files([photo]), headers=HTML).text
    assert "the largest one" in page and f"{len(single['faces'])} faces were found" in page


# -- bad input -------------------------------------------------------------------------

@needs_data
@pytest.mark.parametrize("route", ["/predictSingleImage", "/findSimilarKOLResult"])
@pytest.mark.live
def test_bad_uploads_are_clear_4xx(trained, route):
    url = trained["url"] + route
    jpeg = (FIVE / "madonna" / "val_1.jpg").read_bytes()
    cases = [
        ({"other": ("a.jpg", jpeg, "image/jpeg")}, 400),          # no `file` part
        ({"file": ("", b"", "application/octet-stream")}, 400),  # nothing chosen in the form
        ({"file": ("a.jpg", b"", "image/jpeg")}, 400),           # empty upload
        ({"file": ("a.txt", b"hello", "text/plain")}, 415),      # wrong extension
        ({"file": ("a.jpg", b"hello, not a jpeg", "image/jpeg")}, 415),  # not an image
        ({"file": ("a.jpg", jpeg[: len(jpeg) // 2], "image/jpeg")}, 422),  # truncated
        ({"file": ("v.jpg", (FIVE / "ben_afflek" / "val_4.jpg").read_bytes(), "image/jpeg")}, 422),  # no face
    ]
    for upload, status in cases:
        check_error(trained["http"].post(url, files=upload, headers=JSON), status)
        page = trained["http"].post(url, files=upload, headers=HTML)
        assert page.status_code == status and "<h1>" in page.text and "Traceback" not in page.text
    # GET without a POST: scripts are told what to send, browsers go to the form
    check_error(trained["http"].get(url, headers=JSON), 405)
    r = trained["http"].get(url, headers=HTML, allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"].endswith("Page")


@needs_data
@pytest.mark.parametrize("k", ["0", "-1", "abc", "2.5", "51", "99999999"])
@pytest.mark.live
def test_malformed_k_is_a_400(trained, k):
    r = trained["http"].post(trained["url"] + "/findSimilarKOLResult", files=files([FIVE / "madonna" / "val_1.jpg"]),
                      data={"k": k}, headers=JSON)
    assert "k must be" in check_error(r, 400)


@needs_data
@pytest.mark.live
def test_enrolled_obama_and_biden_are_named_in_one_photo(trained, tmp_path):
    """With the knn_examples people enrolled too (1-2 photos each), the group photos name them."""
    from shared.faces import engine, images

    url, store, pool = trained["url"], trained["store"], trained["pool"]
    added = []
    try:
        for folder in sorted((KNN / "train").iterdir()):
            chips = []
            for path in sorted(folder.iterdir()):
                found = engine.analyze(images.load_image(path))
                assert len(found) == 1
                chips.append(tmp_path / f"{pool_mod.save_chip(tmp_path, found[0].chip, found[0].embedding)}.png")
            added.append(pool.add(display(folder.name), chips))
        X, slugs, _ = pool.embeddings()
        store.save(train(X, slugs, pool.names()))
        both = trained["http"].post(url + "/predictSingleImage", files=files([KNN / "test" / "obama_and_biden.jpg"]),
                             headers=JSON).json()["faces"]
        assert {f["identity"] for f in both[:2]} == {"Obama", "Biden"} and all(f["known"] for f in both[:2])
        pair = trained["http"].post(url + "/predictSingleImage", files=files([KNN / "test" / "kit_with_rose.jpg"]),
                             headers=JSON).json()["faces"]
        assert {f["identity"] for f in pair} == {"Kit Harington", "Rose Leslie"}
        # the five KOLs are still named right next to the new ones
        r = trained["http"].post(url + "/predictSingleImage", files=files([FIVE / "jerry_seinfeld" / "val_1.jpg"]),
                          headers=JSON).json()
        assert r["faces"][0]["identity"] == "Jerry Seinfeld"
    finally:
        for slug in added:
            pool.remove(slug)
        X, slugs, _ = pool.embeddings()
        store.save(train(X, slugs, pool.names()))


# -- issue 20: a delete reaches the model a batch worker holds in memory ------------------------

@pytest.fixture
def one_worker():
    """This process's face-work pool (:mod:`shared.faces.parallel`, what batches run on) with ONE worker,
    so every photo of every batch goes to the worker that already holds the model in memory."""
    parallel.shutdown()
    parallel.limit(1)
    yield
    parallel.shutdown()
    parallel.limit(0)


def _pooled_model(celeb_faces, root):
    """A saved model of the five_celebs train_ faces (chip ids ``<person>-<n>``): ``(store, version, chips)``."""
    slugs = [person for person, items in celeb_faces.items() for _ in items]
    chips = [f"{person}-{n}" for person, items in celeb_faces.items() for n in range(len(items))]
    X = [face.embedding for items in celeb_faces.values() for _, face in items]
    store = ModelStore(root)
    return store, store.save(train(X, slugs, {}, chips=chips)), chips


def _batch(store, version, photos, out):
    """The face lists of ``photos`` (in order) as :func:`shared.recognition.batch.predict_files` answers them,
    the path of ``/predictBatchImage``, with the pool's worker process ids."""
    tasks = [(i, str(p), p.name, str(store.root), version, str(out / f"thumb-{i}.jpg"), None)
             for i, p in enumerate(photos)]
    outcomes = sorted(batch.predict_files(tasks), key=lambda o: o["index"])
    return [o["faces"] for o in outcomes], {o["worker"] for o in outcomes}


@needs_data
def test_batch_workers_never_name_a_kol_deleted_after_they_loaded_the_model(celeb_faces, one_worker, tmp_path):
    store, version, _ = _pooled_model(celeb_faces, tmp_path / "models")
    photos = five_celebs_photos("val_")["ben_afflek"]
    before, workers = _batch(store, version, photos, tmp_path)
    named = sum(1 for found in before if found and found[0]["identity"] == "ben_afflek")
    assert named >= 3, before  # the worker holds a model that names him
    assert store.forget("ben_afflek") == [version]  # the same version, rewritten in place
    after, again = _batch(store, version, photos, tmp_path)
    assert again == workers  # the same worker process, which had the model in memory
    assert [f["identity"] for found in after for f in found if f["known"]].count("ben_afflek") == 0, after


@needs_data
def test_batch_workers_use_a_kol_without_the_photos_removed_after_they_loaded_the_model(
        celeb_faces, one_worker, tmp_path):
    store, version, chips = _pooled_model(celeb_faces, tmp_path / "models")
    photos = five_celebs_photos("val_")["ben_afflek"]
    before, workers = _batch(store, version, photos, tmp_path)
    his = [c for c in chips if c.startswith("ben_afflek-")]
    assert store.forget("ben_afflek", his[2:]) == [version]  # two of his photos are left
    assert store.load(version).counts[store.load(version).classes.index("ben_afflek")] == 2
    after, again = _batch(store, version, photos, tmp_path)
    assert again == workers
    parallel.shutdown()  # a new worker, which can only read the model as it is on disk now
    fresh, new = _batch(store, version, photos, tmp_path)
    assert new.isdisjoint(workers)
    assert after == fresh != before


# -- a new model is used without a restart (last: it changes the current model) ---------

@needs_data
@pytest.mark.live
def test_new_model_is_picked_up_without_restart(trained):
    url, store, pool = trained["url"], trained["store"], trained["pool"]
    photo = FIVE / "madonna" / "val_1.jpg"
    before = trained["http"].post(url + "/predictSingleImage", files=files([photo]), headers=JSON).json()
    assert before["faces"][0]["identity"] == "Madonna"
    X, slugs, _ = pool.embeddings()
    keep = [i for i, s in enumerate(slugs) if s != pool.slug_for("Madonna")]
    version = store.save(train(X[keep], [slugs[i] for i in keep], pool.names()))
    try:
        after = trained["http"].post(url + "/predictSingleImage", files=files([photo]), headers=JSON).json()
        assert after["model_version"] == version != before["model_version"]
        assert not after["faces"][0]["known"]  # Madonna is a stranger to the new model
    finally:
        X, slugs, _ = pool.embeddings()
        store.save(train(X, slugs, pool.names()))
        shutil.rmtree(store.root / version, ignore_errors=True)
