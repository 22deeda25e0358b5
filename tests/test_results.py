"""Results that can be kept and found again (issue 25), on the main app with real dlib and real photos:

- a single result offers a download of its annotated photo (JSON: ``image_url``, ``download_url``);
- a result made before a KOL was deleted shows "deleted KOL" (pages, JSON, CSV and the annotated
  photos, drawn again from their unlabelled copies) until it expires; what is stored is not rewritten,
  and reading a result does not make it live longer;
- find similar uses the face the user picks (``face=<number>``, default 1: the largest), also by
  clicking a face of an earlier answer (``run``), without uploading again.

The pool: Obama and Biden (knn_examples, 1-2 photos each) and three photos of each five_celebs KOL;
the photo with two faces is ``knn_examples/test/obama_and_biden.jpg``.
"""
import csv
import io
import os
import re

import numpy as np
import pytest
from PIL import Image

from .builders import build_pool, one_face_each, save_model
from .conftest import FIVE, KNN, needs_data, signed_in

JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html"}
TWO = KNN / "test" / "obama_and_biden.jpg"

pytestmark = needs_data


def upload(path, **fields):
    return {"file": (io.BytesIO(path.read_bytes()), path.name), **fields}


@pytest.fixture
def named(main_app, data_dir):
    """The main app with a model of Obama, Biden and the five_celebs KOLs; ``(client, pool, store)``."""
    kols = {name: one_face_each(sorted((KNN / "train" / name).iterdir())) for name in ("obama", "biden")}
    for person in sorted(p.name for p in FIVE.iterdir() if p.is_dir()):
        kols[person] = one_face_each(sorted((FIVE / person).glob("train_*.jpg"))[:3])
    pool, _ = build_pool(data_dir / "pool", kols, data_dir.parent / "staging")
    store, _ = save_model(data_dir, pool)
    return signed_in(main_app.test_client(), "admin"), pool, store


def two_faces(client):
    """The single-photo answer for the photo of Obama and Biden (and a third, smaller face): ``(body, {identity: face})``."""
    r = client.post("/predictSingleImage", data=upload(TWO), headers=JSON)
    assert r.status_code == 200, r.text
    body = r.get_json()
    return body, {f["identity"]: f for f in body["faces"]}


def decoded(data):
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def test_a_single_result_can_be_downloaded(named):
    client, _, _ = named
    body, faces = two_faces(client)
    assert set(faces) >= {"obama", "biden"}
    shown = client.get(body["image_url"])
    assert shown.status_code == 200 and shown.mimetype == "image/jpeg"
    assert "attachment" not in shown.headers.get("Content-Disposition", "")
    download = client.get(body["download_url"])
    assert download.status_code == 200 and download.mimetype == "image/jpeg"
    assert download.data == shown.data
    assert download.headers["Content-Disposition"] == "attachment; filename=obama_and_biden-faces.jpg"
    # the result page offers it
    page = client.post("/predictSingleImage", data=upload(TWO), headers=HTML).get_data(as_text=True)
    link = re.search(r'<a class="button" href="([^"]+)" download>Download the named photo</a>', page)
    assert link and client.get(link.group(1).replace("&amp;", "&")).headers["Content-Disposition"].startswith(
        "attachment")


def test_results_made_before_a_delete_show_deleted_kol(named, data_dir):
    client, pool, _ = named
    single, before = two_faces(client)
    batch = client.post("/predictBatchImage", data={"file": [(io.BytesIO(TWO.read_bytes()), "pair.jpg"),
                                                             (io.BytesIO((FIVE / "madonna" / "val_1.jpg").read_bytes()),
                                                              "madonna.jpg")]}, headers=JSON)
    assert batch.status_code == 200, batch.text
    run = single["image_url"].split("/")[2]
    batch_runs = [p.name for p in (data_dir / "predictions").iterdir() if (p / "results.json").is_file()]
    assert len(batch_runs) == 1
    batch_url = f"/predictBatch/{batch_runs[0]}"
    folder = data_dir / "predictions" / batch_runs[0]
    stored_thumb = (folder / "thumb-0.jpg").read_bytes()
    stored_json = (folder / "results.json").read_bytes()
    old_photo = client.get(single["image_url"]).data

    biden = pool.slug_for("biden")
    assert client.post(f"/kols/{biden}/delete", headers=JSON).status_code == 200
    os.utime(folder, (1e9, 1e9))  # an old result: reading it must not make it younger
    os.utime(data_dir / "predictions" / run, (1e9, 1e9))

    # JSON: the contract's keys stay; the deleted KOL's name is gone
    rows = client.get(batch_url, headers=JSON).get_json()["results"]
    faces = {f["number"]: f for f in rows[0]["faces"]}
    gone = faces[before["biden"]["number"]]
    assert gone["identity"] is None and gone["known"] is False and gone["deleted"] is True
    assert gone["confidence"] == before["biden"]["confidence"] and gone["box"] == before["biden"]["box"]
    kept = faces[before["obama"]["number"]]
    assert kept["identity"] == "obama" and kept["known"] and "deleted" not in kept
    assert rows[1]["faces"][0]["identity"] == "madonna"
    # the page and the CSV say "deleted KOL", never the name
    html = client.get(batch_url, headers=HTML).get_data(as_text=True)
    assert "deleted KOL" in html and "biden" not in html and "obama" in html
    assert "1 of a KOL deleted since" in html
    table = list(csv.DictReader(io.StringIO(client.get(f"/predictions/{batch_runs[0]}/results.csv")
                                            .data.decode("utf-8-sig"))))
    assert [r["identity"] for r in table if r["filename"] == "pair.jpg"] == [
        "deleted KOL" if f.get("deleted") else f["identity"] or "unknown" for f in rows[0]["faces"]]
    assert "biden" not in {r["identity"] for r in table}
    # the annotated photos are drawn again: only the deleted KOL's label changed
    new_photo = client.get(single["image_url"]).data
    changed = np.abs(decoded(new_photo) - decoded(old_photo)).sum(axis=2) > 60
    ys, xs = np.nonzero(changed)
    box = before["biden"]["box"]
    assert len(ys) > 50, "the deleted KOL's label was not redrawn"
    near = (xs >= box["left"] - 20) & (ys >= box["top"] - 60) & (ys <= box["bottom"] + 80)
    assert near.mean() > 0.99, "pixels changed away from the deleted KOL's label"
    assert client.get(f"/predictions/{batch_runs[0]}/thumb-0.jpg").data != stored_thumb
    # nothing stored was rewritten, and the results did not get younger
    assert (folder / "thumb-0.jpg").read_bytes() == stored_thumb
    assert (folder / "results.json").read_bytes() == stored_json and b"biden" in stored_json
    assert folder.stat().st_mtime == 1e9 and (data_dir / "predictions" / run).stat().st_mtime == 1e9
    # the single result's download is the redrawn photo too
    assert client.get(single["download_url"]).data == new_photo

    # a rename shows at once in a kept result (no retraining)
    obama = pool.slug_for("obama")
    assert client.post(f"/kols/{obama}/rename", data={"name": "Barack Obama"}, headers=JSON).status_code == 200
    rows = client.get(batch_url, headers=JSON).get_json()["results"]
    assert {f["identity"] for f in rows[0]["faces"]} >= {"Barack Obama", None}


def test_find_similar_uses_the_face_picked(named):
    client, _, _ = named
    single, faces = two_faces(client)
    count = len(single["faces"])  # Obama, Biden and a smaller face behind them
    numbers = [str(n) for n in range(1, count + 1)]
    for name in ("obama", "biden"):
        r = client.post("/findSimilarKOLResult", data=upload(TWO, face=str(faces[name]["number"]), k="3"),
                        headers=JSON)
        assert r.status_code == 200, r.text
        body = r.get_json()
        assert body["face"] == faces[name]
        assert body["matches"][0]["identity"] == name and len(body["matches"]) == 3
        assert body["faces"] == single["faces"]
    default = client.post("/findSimilarKOLResult", data=upload(TWO), headers=JSON).get_json()
    assert default["face"]["number"] == 1  # the largest
    for bad in (str(count + 1), "0", "x", "-1"):
        r = client.post("/findSimilarKOLResult", data=upload(TWO, face=bad), headers=JSON)
        assert r.status_code == 400 and f"face must be the number of a face on the photo, from 1 to {count}" in \
            r.get_json()["error"]

    # the page: every face is a button on the photo; clicking the other one uses it, without a new upload
    page = client.post("/findSimilarKOLResult", data=upload(TWO), headers=HTML).get_data(as_text=True)
    spots = re.findall(r'<button type="submit" name="face" value="(\d)" class="face-spot', page)
    assert spots == numbers and "the largest one" in page
    run = re.search(r'name="run" value="([0-9a-f]{32})"', page).group(1)
    other = 2 if faces["obama"]["number"] == 1 else 1
    other_name = "obama" if other == faces["obama"]["number"] else "biden"
    again = client.post("/findSimilarKOLResult", data={"run": run, "face": str(other), "k": "5"}, headers=HTML)
    text = again.get_data(as_text=True)
    assert again.status_code == 200 and f"Face {other}: the model says" in text
    assert re.search(r"<strong>([^<]+)</strong>", text).group(1) == other_name
    # an unknown or malformed run is "no such result"
    for bad_run in ("0" * 32, "../x"):
        assert client.post("/findSimilarKOLResult", data={"run": bad_run}, headers=JSON).status_code == 404
