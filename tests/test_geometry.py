"""Issue 12: boxes in the pixels of the photo as uploaded, numbered faces, HEIC photos,
batch index/path and zips of photos, size messages with the limit and the actual value.

A small real model (three five_celebs KOLs, dlib embeddings) is trained in the test;
big and HEIC photos are made at test time from real photos.
"""
import csv
import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from shared.faces import engine, images
from shared.recognition import predict
from shared.faces.boxes import iou

from .builders import build_pool, save_model
from .conftest import FIVE, VIDEO, needs_data, needs_video, signed_in

JSON = {"Accept": "application/json"}


@pytest.fixture(scope="module")
def small_model(tmp_path_factory, celeb_faces):
    """Pool + model of the five_celebs KOLs (train_ photos), in a data folder for the apps."""
    data = tmp_path_factory.mktemp("geo") / "data"
    kols = {person.replace("_", " ").title(): [f for _, f in found] for person, found in celeb_faces.items()}
    pool, _ = build_pool(data / "pool", kols, data.parent / "chips")
    save_model(data, pool)
    return data


@pytest.fixture
def app_client(small_model):
    from main_server import create_app

    app = create_app({"TESTING": True, "DATA_DIR": str(small_model), "SECRET_KEY": "test"})
    return signed_in(app.test_client(), "admin")


def _jpeg(im, **kw):
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def _face_box_at_full_size(rgb):
    """The face box found on a full-size array with no shrinking at all (the reference)."""
    boxes = engine.detect(rgb, upsample=0)
    assert boxes, "no face at full size"
    return boxes[0]


def _box(face):
    b = face["box"]
    return b["top"], b["right"], b["bottom"], b["left"]


def test_to_original_maps_boxes_back_exactly():
    assert images.to_original((10, 50, 40, 20), (100, 200, 3), (200, 100)) == (10, 50, 40, 20)
    assert images.to_original((10, 49, 39, 20), (100, 200, 3), (800, 400)) == (40, 199, 159, 80)
    top, right, bottom, left = images.to_original((0, 199, 99, 0), (100, 200, 3), (8000, 4000))
    assert (top, left) == (0, 0) and (right, bottom) == (7999, 3999)


@needs_data
def test_an_8000x6000_photo_gets_boxes_in_its_own_pixels(app_client, tmp_path):
    """The photo is analysed at 2000x1500; the JSON box must land on the face in the 8000x6000 pixels."""
    small = Image.open(FIVE / "elton_john" / "val_1.jpg").convert("RGB")
    big = small.resize((8000, 6000), Image.Resampling.LANCZOS)
    data = _jpeg(big)
    r = app_client.post("/predictSingleImage", data={"file": (io.BytesIO(data), "big.jpg")}, headers=JSON)
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert (body["width"], body["height"]) == (8000, 6000)
    face = body["faces"][0]
    assert face["number"] == 1 and face["identity"] == "Elton John"
    # Reference: the same face detected on the photo's own pixels, around the reported box.
    top, right, bottom, left = _box(face)
    assert right > 2000 or bottom > 1500  # not in the pixels of the shrunk copy
    pad = (bottom - top) // 2
    y0, x0 = max(0, top - pad), max(0, left - pad)
    window = np.asarray(big.crop((x0, y0, min(8000, right + pad), min(6000, bottom + pad))))
    # detect on the window scaled to ~4x the face size, map back to full-size pixels
    scale = 400 / window.shape[0]
    ref = engine.detect(window, upsample=0, scale=scale)[0]
    ref = (ref[0] + y0, ref[1] + x0, ref[2] + y0, ref[3] + x0)
    assert iou(ref, (top, right, bottom, left)) > 0.8, (ref, (top, right, bottom, left))
    # the page says the original size and that the photo was analysed smaller
    page = app_client.post("/predictSingleImage", data={"file": (io.BytesIO(data), "big.jpg")}).get_data(True)
    assert "8000×6000" in page and "analysed at 2000×1500" in page
    assert '<span class="facenum">1</span>' in page


@needs_data
def test_exif_rotated_photo_boxes_are_upright(app_client):
    """A phone photo stored sideways with EXIF orientation 6: boxes are in the upright pixels."""
    upright = Image.open(FIVE / "mindy_kaling" / "val_2.jpg").convert("RGB")
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what the camera wrote
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    k = 4000 / max(stored.size)  # larger than images.MAX_SIDE: analysed at half size
    big = stored.resize((round(stored.width * k), round(stored.height * k)))
    r = app_client.post("/predictSingleImage", data={"file": (io.BytesIO(_jpeg(big, exif=exif)), "phone.jpg")},
                        headers=JSON)
    body = r.get_json()
    assert (body["width"], body["height"]) == (big.height, big.width)  # upright: width and height swap
    ref = _face_box_at_full_size(np.asarray(upright))
    ref = tuple(v * k for v in ref)
    assert iou(ref, _box(body["faces"][0])) > 0.7


@needs_data
def test_heic_photo_is_read(app_client, tmp_path):
    import pillow_heif

    im = Image.open(FIVE / "ben_afflek" / "val_1.jpg").convert("RGB")
    heif = pillow_heif.from_pillow(im)
    path = tmp_path / "IMG_0001.HEIC"
    heif.save(str(path), quality=90)
    assert path.read_bytes()[4:12] in (b"ftypheic", b"ftypmif1", b"ftypheix")
    rgb, size = images.load_photo(path)
    assert size == im.size and rgb.shape == (im.height, im.width, 3)
    r = app_client.post("/predictSingleImage", data={"file": (io.BytesIO(path.read_bytes()), "IMG_0001.HEIC")},
                        headers=JSON)
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["faces"][0]["identity"] == "Ben Afflek"


@needs_data
def test_batch_index_path_and_a_zip_of_photos(app_client):
    a = (FIVE / "elton_john" / "val_1.jpg").read_bytes()
    b = (FIVE / "mindy_kaling" / "val_2.jpg").read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("day1/val_1.jpg", a)
        zf.writestr("day2/val_1.jpg", b)
        zf.writestr("notes.txt", b"hello")
    upload = {"file": [(io.BytesIO(a), "val_1.jpg"), (io.BytesIO(buf.getvalue()), "shoot.zip")]}
    r = app_client.post("/predictBatchImage", data=upload, headers=JSON, content_type="multipart/form-data")
    assert r.status_code == 200, r.get_json()
    rows = r.get_json()["results"]
    assert [(x["index"], x["path"], x["filename"]) for x in rows] == [
        (1, "val_1.jpg", "val_1.jpg"), (2, "shoot.zip/day1/val_1.jpg", "val_1.jpg"),
        (3, "shoot.zip/day2/val_1.jpg", "val_1.jpg"), (4, "shoot.zip/notes.txt", "notes.txt")]
    assert [x["faces"][0]["identity"] for x in rows[:3]] == ["Elton John", "Elton John", "Mindy Kaling"]
    assert rows[3]["error"] and not rows[3]["faces"]
    assert [f["number"] for f in rows[0]["faces"]] == list(range(1, len(rows[0]["faces"]) + 1))


def test_batch_csv_has_index_path_and_face_numbers():
    face = {"number": 2, "box": {"top": 1, "right": 9, "bottom": 8, "left": 2}, "identity": None,
            "confidence": 0.9, "known": False}
    rows = [{"index": 1, "path": "a.zip/x/p.jpg", "filename": "p.jpg", "width": 8000, "height": 6000,
             "faces": [face], "error": None},
            {"index": 2, "path": "b.jpg", "filename": "b.jpg", "width": None, "height": None, "faces": [],
             "error": "No face"}]
    out = list(csv.DictReader(io.StringIO(predict.batch_csv(rows).decode("utf-8-sig"))))
    assert out[0]["index"] == "1" and out[0]["path"] == "a.zip/x/p.jpg" and out[0]["face"] == "2"
    assert (out[0]["width"], out[0]["height"], out[0]["identity"]) == ("8000", "6000", "unknown")
    assert out[1]["index"] == "2" and out[1]["error"] == "No face"


def test_a_photo_over_the_pixel_limit_says_the_limit_and_its_size(tmp_path):
    img = Image.new("1", (10000, 8000))
    path = tmp_path / "huge.png"
    img.save(path)
    with pytest.raises(images.ImageError) as err:
        images.load_image(path, name="huge.png")
    msg = err.value.message
    assert f"at most {images.MAX_PIXELS // 1_000_000} megapixels" in msg and "10000x8000 = 80 megapixels" in msg


def test_a_zip_of_videos_sent_to_the_photo_form_points_to_the_video_form(tmp_path):
    from shared.faces import archive, layout

    zpath = tmp_path / "v.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("Jane/clip.mp4", b"\0" * 100)
        zf.writestr("Jane/clip2.m4v", b"\0" * 100)
    with pytest.raises(archive.ArchiveError) as err:
        layout.extract_training_zip(zpath, tmp_path / "out", "image")
    assert "video form" in err.value.message and "/trainByVideo" in err.value.message
    with pytest.raises(archive.ArchiveError) as err:
        archive.extract_media_zip(zpath, tmp_path / "out2", "image")
    assert "video form" in err.value.message
    zpath2 = tmp_path / "p.zip"
    with zipfile.ZipFile(zpath2, "w") as zf:
        zf.writestr("Jane/a.jpg", b"\xff\xd8 not really")
    with pytest.raises(archive.ArchiveError) as err:
        layout.extract_training_zip(zpath2, tmp_path / "out3", "video")
    assert "photo form" in err.value.message


@needs_video
def test_m4v_video_is_accepted(admin_client, tmp_path):
    """An .m4v (Apple's name for MP4) is a video for the upload form, the zip check and the decoder."""
    import shutil

    from shared.faces import archive
    from shared.faces import frames

    path = tmp_path / "holiday.M4V"
    shutil.copy(VIDEO / "short_hamilton_clip.mp4", path)
    assert frames.is_video_name(path.name) and frames.probe(path).width > 0
    assert archive.check_file(path, "video", path.name) is None
    r = admin_client.post("/predictVideoResult", data={"file": (io.BytesIO(path.read_bytes()), "holiday.m4v")})
    assert r.status_code in (200, 303), r.get_data(True)[:300]


@needs_data
def test_a_big_batch_from_a_browser_runs_behind_a_progress_bar(app_client):
    import time

    from main_server.predict import BACKGROUND_FROM

    photos = sorted(FIVE.rglob("val_*.jpg"))[:BACKGROUND_FROM]
    upload = {"file": [(io.BytesIO(p.read_bytes()), p.name) for p in photos]}
    r = app_client.post("/predictBatchImage", data=upload, content_type="multipart/form-data")
    assert r.status_code == 303 and "/predictBatch/" in r.headers["Location"]
    result_url = r.headers["Location"]
    seen = []
    deadline = time.monotonic() + 300
    while True:
        state = app_client.get(result_url + "/progress").get_json()
        seen.append((state["done"], state["total"]))
        assert state["state"] != "failed", state
        if state["state"] == "done":
            break
        assert time.monotonic() < deadline, seen[-3:]
        time.sleep(0.3)
    assert seen[-1] == (len(photos), len(photos))
    assert all(b == len(photos) for _, b in seen) and [a for a, _ in seen] == sorted(a for a, _ in seen)
    page = app_client.get(result_url).get_data(True)
    assert "Download CSV" in page and page.count('class="index"') == len(photos)
    body = app_client.get(result_url, headers=JSON).get_json()
    assert [x["index"] for x in body["results"]] == list(range(1, len(photos) + 1))
    assert sum(bool(x["faces"]) for x in body["results"]) >= len(photos) - 2
    assert app_client.get("/predictBatch/" + "0" * 32).status_code == 404


def test_an_oversized_upload_says_the_limit_and_its_size(tmp_path):
    from main_server import create_app

    app = create_app({"TESTING": True, "DATA_DIR": str(tmp_path), "SECRET_KEY": "t", "MAX_CONTENT_LENGTH": 100_000})
    client = signed_in(app.test_client(), "admin")
    for size, shown in ((2 * 1024 * 1024, "yours is 2"), (100_500, "bytes too many")):
        r = client.post("/predictSingleImage", data={"file": (io.BytesIO(b"x" * size), "big.jpg")}, headers=JSON)
        msg = r.get_json()["error"]
        assert r.status_code == 413 and "98 KiB at most" in msg and shown in msg, msg
