"""Safe extraction of uploaded zips (shared.faces.archive) and training zips' layouts (shared.faces.layout):
layouts, names, and every hostile case."""
import io
import zipfile
from pathlib import Path

import pytest

from shared.faces import archive, layout
from shared.faces.archive import ArchiveError
from shared.faces.layout import extract_training_zip

from ._synth import JSON
from .conftest import FACES, FIVE, VIDEO, needs_data, needs_video, signed_in

LFW = FACES / "lfw_dev"
needs_lfw = pytest.mark.skipif(not LFW.is_dir(), reason=f"real LFW photos not found at {LFW}")


def make_zip(path, members, compression=zipfile.ZIP_DEFLATED):
    """Write a zip at ``path`` from ``{name or ZipInfo: bytes}``."""
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def photo():
    if not FIVE.is_dir():
        pytest.skip("real photos not found")
    return (FIVE / "ben_afflek" / "train_1.jpg").read_bytes()


def extract(tmp_path, members, kind="image", **kw):
    zp = make_zip(tmp_path / "in.zip", members)
    return extract_training_zip(zp, tmp_path / "out", kind=kind, **kw)


def refused(tmp_path, members, words, status=400, **kw):
    with pytest.raises(ArchiveError) as err:
        extract(tmp_path, members, **kw)
    assert words in err.value.message and err.value.status == status, err.value.message
    assert not (tmp_path / "out").exists()  # nothing left behind
    return err.value


def test_normal_layout_with_junk_and_non_images(tmp_path, photo):
    out = extract(tmp_path, {"Jane Doe/a.jpg": photo, "Jane Doe/sub/b.JPG": photo, "Jane Doe/notes.txt": b"x",
                             "周杰伦/c.jpg": photo, "__MACOSX/Jane Doe/._a.jpg": b"junk", "Jane Doe/.DS_Store": b"j",
                             "Thumbs.db": b"j"})
    assert [k["name"] for k in out.kols] == ["Jane Doe", "周杰伦"]
    assert [f["name"] for f in out.kols[0]["files"]] == ["a.jpg", "sub/b.JPG"]
    assert out.skipped == [{"name": "Jane Doe/notes.txt", "reason": "not a photo (.jpg, .jpeg, .png, .bmp, .webp, .heic, .heif)"}]
    for kol in out.kols:
        for f in kol["files"]:
            p = Path(f["path"])
            assert p.read_bytes() == photo and (tmp_path / "out") in p.parents
            assert p.name.isascii() and p.parent.name.isdigit()


def test_wrapper_folder_is_looked_through(tmp_path, photo):
    out = extract(tmp_path, {"export/A/1.jpg": photo, "export/B/2.png": photo, "export/loose.jpg": photo})
    assert [k["name"] for k in out.kols] == ["A", "B"]
    assert out.skipped == [{"name": "loose.jpg", "reason": "not inside a KOL folder"}]


def test_single_folder_of_photos_is_one_kol(tmp_path, photo):
    out = extract(tmp_path, {"Jane/1.jpg": photo, "Jane/2.jpg": photo})
    assert [(k["name"], len(k["files"])) for k in out.kols] == [("Jane", 2)]


def test_loose_photos_beside_folders_are_skipped(tmp_path, photo):
    out = extract(tmp_path, {"A/1.jpg": photo, "B/1.jpg": photo, "stray.jpg": photo})
    assert [k["name"] for k in out.kols] == ["A", "B"]
    assert out.skipped == [{"name": "stray.jpg", "reason": "not inside a KOL folder"}]


def test_flat_zip_is_refused_with_how_to_fix(tmp_path, photo):
    err = refused(tmp_path, {"1.jpg": photo, "2.jpg": photo}, "top level")
    assert "folder named after the KOL" in err.message


def test_names_are_display_names_and_never_paths(tmp_path, photo):
    out = extract(tmp_path, {"  Zoë \u200b Kravitz /a.jpg": photo, "ctrl\x07name/b.jpg": photo,
                             "Jose\u0301/c.jpg": photo, "a..b/d.jpg": photo})
    names = [k["name"] for k in out.kols]
    assert sorted(names) == sorted(["Zoë Kravitz", "ctrlname", "José", "a..b"])
    assert all(Path(f["path"]).resolve().is_relative_to((tmp_path / "out").resolve())
               for k in out.kols for f in k["files"])


def test_folder_names_keep_every_character_or_say_what_they_became(tmp_path, photo):
    """Issue 25: ``AC\\DC`` and ``R&B <Star>`` are kept whole (a zip that uses '/' holds '\\' as a
    character); a '/' always separates folders, so ``Slash/Name`` says on the job what it became."""
    for sub in "bcdef":
        (tmp_path / sub).mkdir()
    out = extract(tmp_path, {"AC\\DC/1.jpg": photo, "R&B <Star>/2.jpg": photo, "Jane/3.jpg": photo})
    assert sorted(k["name"] for k in out.kols) == ["AC\\DC", "Jane", "R&B <Star>"] and out.notes == []
    out = extract(tmp_path / "b", {"Slash/Name/1.jpg": photo, "Slash/Name/2.jpg": photo})
    assert [k["name"] for k in out.kols] == ["Name"]
    assert "'Slash/' holds the folder of photos" in out.notes[0] and "the KOL is 'Name'" in out.notes[0]
    refused(tmp_path / "c", {"Slash/Name/1.jpg": photo, "Jane/1.jpg": photo}, "a '/' in a zip path always separates")
    out = extract(tmp_path / "d", {"L" * 90 + "/1.jpg": photo})
    assert out.kols[0]["name"] == "L" * 80 and "longer than a KOL name may be" in out.notes[0]
    # a zip written with '\\' between folders (no '/' anywhere): the backslash separates, as before
    out = extract(tmp_path / "e", {"Jane\\1.jpg": photo, "Bob\\2.jpg": photo})
    assert sorted(k["name"] for k in out.kols) == ["Bob", "Jane"]
    refused(tmp_path / "f", {"ok/a.jpg": photo, "AC\\..\\..\\a.jpg": photo}, "climbs out")


def test_utf8_names_without_the_utf8_flag(tmp_path, photo):
    """Some Windows tools store UTF-8 names without the zip's UTF-8 flag; they still come out right."""
    zp = make_zip(tmp_path / "in.zip", {"xxx/a.jpg": photo})
    raw = zp.read_bytes()
    assert raw.count(b"xxx/a.jpg") == 2
    zp.write_bytes(raw.replace(b"xxx/a.jpg", "王/a.jpg".encode("utf-8")))
    with zipfile.ZipFile(zp) as zf:
        assert not zf.infolist()[0].flag_bits & 0x800
    out = extract_training_zip(zp, tmp_path / "out")
    assert [k["name"] for k in out.kols] == ["王"]


@pytest.mark.parametrize("name, words", [
    ("/etc/kol/a.jpg", "absolute path"),
    ("C:/kol/a.jpg", "absolute path"),
    ("kol/../../a.jpg", "climbs out"),
    ("../kol/a.jpg", "climbs out"),
    ("kol\\..\\..\\a.jpg", "climbs out"),
])
def test_escaping_paths_are_refused(tmp_path, photo, name, words):
    refused(tmp_path, {"ok/a.jpg": photo, zipfile.ZipInfo(name): photo}, words)


def test_symlink_is_refused(tmp_path, photo):
    info = zipfile.ZipInfo("kol/link.jpg")
    info.create_system = 3
    info.external_attr = 0o120777 << 16
    refused(tmp_path, {"kol/a.jpg": photo, info: b"/etc/passwd"}, "symbolic link")


def test_compression_ratio_bomb_is_refused(tmp_path):
    refused(tmp_path, {"kol/a.jpg": b"\0" * (32 * 1024 * 1024)}, "zip bomb", status=413)


def test_total_size_cap(tmp_path, photo):
    refused(tmp_path, {f"kol/{i}.jpg": photo for i in range(5)}, "at most", status=413,
            max_total=3 * len(photo))


def test_member_count_cap(tmp_path, photo):
    refused(tmp_path, {f"kol/{i}.jpg": b"x" for i in range(30)}, "too many files", status=413, max_members=20)
    # a Mac's zip holds a junk twin of every file: only the files count
    out = extract(tmp_path, {**{f"kol/{i}.jpg": photo for i in range(3)},
                             **{f"__MACOSX/kol/._{i}.jpg": b"junk" for i in range(3)}}, max_members=3)
    assert len(out.kols[0]["files"]) == 3


def test_member_count_cap_default(tmp_path):
    from shared.core.config import DEFAULTS

    members = {f"k/{i}.txt": b"" for i in range(DEFAULTS["UPLOAD_MAX_FILES"] + 1)}
    err = refused(tmp_path, members, "at most 5000 are accepted", status=413)
    assert "UPLOAD_MAX_FILES" in err.message and "5001" in err.message
    # folders are not files: a real zip of 5000 photos in 250 KOL folders fits
    members = {f"k{i % 250}/{i}.txt": b"" for i in range(DEFAULTS["UPLOAD_MAX_FILES"])}
    members.update({f"k{i}/": b"" for i in range(250)})
    refused(tmp_path, members, "no photo")


def _bmp(width=600, height=580):
    """A real BMP of one colour: about 1 MB that deflates to about 1 KB."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 180, 160)).save(buf, "BMP")
    return buf.getvalue()


def test_small_zip_that_unpacks_to_a_lot_is_refused(tmp_path):
    """Issue 20: a few hundred KB holding BMPs of just under 1 MiB each unpacked to 200 MB
    (each member under the per-member ratio check's 1 MiB); the whole zip's ratio is checked."""
    bmp = _bmp()
    assert len(bmp) < 1024 * 1024
    for extract_fn in (extract_training_zip, archive.extract_media_zip):
        zp = make_zip(tmp_path / "in.zip", {f"kol/{i}.bmp": bmp for i in range(40)})
        assert zp.stat().st_size < 100_000
        with pytest.raises(ArchiveError) as err:
            extract_fn(zp, tmp_path / "out", "image")
        assert err.value.status == 413 and "zip bomb" in err.value.message, err.value.message
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fn", [layout.extract_training_zip, archive.extract_media_zip],
                         ids=["extract_training_zip", "extract_media_zip"])
def test_upload_limits_come_from_the_settings_and_count_every_zip_of_a_request(tmp_path, main_app, photo, fn):
    """UPLOAD_MAX_FILES / UPLOAD_MAX_UNPACKED_BYTES of the app apply to training and batch zips;
    the zips of one request (a batch) count together; a refused zip leaves nothing."""
    extract_fn = fn
    zp = make_zip(tmp_path / "in.zip", {f"kol/{i}.jpg": photo for i in range(3)})
    main_app.config.update(UPLOAD_MAX_FILES=5, UPLOAD_MAX_UNPACKED_BYTES=100 * len(photo))
    with main_app.test_request_context():
        extract_fn(zp, tmp_path / "a", "image")
        with pytest.raises(ArchiveError) as err:
            extract_fn(zp, tmp_path / "b", "image")
    assert err.value.status == 413 and not (tmp_path / "b").exists()
    assert err.value.message.startswith("The zip holds too many files: at most 5 are accepted in one upload "
                                        "(setting UPLOAD_MAX_FILES), yours has 6 with the zips before it"), err.value.message
    main_app.config.update(UPLOAD_MAX_FILES=5000, UPLOAD_MAX_UNPACKED_BYTES=2 * len(photo))
    with main_app.test_request_context():
        with pytest.raises(ArchiveError) as err:
            extract_fn(zp, tmp_path / "c", "image")
    assert err.value.status == 413 and not (tmp_path / "c").exists()
    assert "setting UPLOAD_MAX_UNPACKED_BYTES" in err.value.message and "at most" in err.value.message


# -- which folder is the KOL (issue 20: nested export folders merged two people under "2024") --------
def _lfw(person, n=6):
    return sorted((LFW / person).glob("*.jpg"))[:n]


@needs_lfw
def test_nested_export_folders_name_the_kol_holding_the_photos(tmp_path):
    members = {f"Export/2024/Campaign/{person.replace('_', ' ')}/photos/{p.name}": p.read_bytes()
               for person in ("Al_Gore", "Amelie_Mauresmo") for p in _lfw(person)}
    members["Export/2024/Campaign/brief.txt"] = b"notes"
    out = extract(tmp_path, members)
    assert [(k["name"], len(k["files"])) for k in out.kols] == [("Al Gore", 6), ("Amelie Mauresmo", 6)]
    assert out.kols[0]["files"][0]["name"] == "photos/Al_Gore_0001.jpg"
    assert [s["name"] for s in out.skipped] == ["brief.txt"]


@needs_lfw
def test_one_kol_deep_inside_wrappers(tmp_path):
    out = extract(tmp_path, {f"Export/2024/Al Gore/photos/{p.name}": p.read_bytes() for p in _lfw("Al_Gore", 3)})
    assert [(k["name"], len(k["files"])) for k in out.kols] == [("Al Gore", 3)]


def test_categories_above_the_kol_folders(tmp_path, photo):
    out = extract(tmp_path, {"Actors/Jane Doe/1.jpg": photo, "Singers/John Roe/images/2.jpg": photo})
    assert [k["name"] for k in out.kols] == ["Jane Doe", "John Roe"]


@pytest.mark.parametrize("members, words", [
    ({"Jane Doe/1.jpg": b"", "Actors/John Roe/2.jpg": b""}, "different depths of the zip ('Jane Doe/' and 'Actors/John Roe/')"),
    ({"Jane/2024/1.jpg": b"", "Bob/2024/2.jpg": b""}, "'Bob/2024/' and 'Jane/2024/' would both be the KOL '2024'"),
])
def test_ambiguous_layouts_are_refused_with_the_expected_layout(tmp_path, photo, members, words):
    err = refused(tmp_path, {name: photo for name in members}, words)
    assert "'Name of KOL/photo.jpg'" in err.message


def test_lying_header_is_caught_while_decompressing(tmp_path, photo):
    """A member whose header declares fewer bytes than it expands to is stopped while streaming."""
    zp = make_zip(tmp_path / "in.zip", {"kol/a.jpg": photo + b"\0" * 100_000})
    data = bytearray(zp.read_bytes())
    with zipfile.ZipFile(zp) as zf:
        info = zf.getinfo("kol/a.jpg")
    true_size = info.file_size
    # patch the declared uncompressed size (local header and central directory) to something small
    old = true_size.to_bytes(4, "little")
    assert data.count(old) == 2
    data = data.replace(old, (1000).to_bytes(4, "little"))
    (tmp_path / "in.zip").write_bytes(bytes(data))
    with pytest.raises(ArchiveError) as err:
        extract_training_zip(tmp_path / "in.zip", tmp_path / "out")
    assert "more data than it declares" in err.value.message or "damaged" in err.value.message
    assert not (tmp_path / "out").exists()


def test_nested_zip_is_refused(tmp_path, photo):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("kol/a.jpg", photo)
    refused(tmp_path, {"kol/a.jpg": photo, "kol/more.zip": inner.getvalue()}, "another archive")


def test_empty_and_junk_only_zips(tmp_path):
    refused(tmp_path, {}, "empty")
    refused(tmp_path, {"__MACOSX/._a.jpg": b"x", "a/.DS_Store": b"x", "dir/": b""}, "empty")


def test_no_usable_photo(tmp_path):
    refused(tmp_path, {"kol/a.txt": b"hi", "kol/b.doc": b"hi"}, "no photo")
    err = refused(tmp_path, {"kol/a.jpg": b"not really a jpeg"}, "could be read")
    assert "a.jpg" in err.message


def test_broken_photo_among_good_ones_is_skipped(tmp_path, photo):
    out = extract(tmp_path, {"kol/a.jpg": photo, "kol/b.jpg": b"garbage"})
    assert len(out.kols[0]["files"]) == 1
    assert out.skipped == [{"name": "kol/b.jpg", "reason": "not a readable photo"}]


def test_not_a_zip(tmp_path):
    (tmp_path / "in.zip").write_bytes(b"GIF89a\x01\x00 definitely not a zip")
    with pytest.raises(ArchiveError) as err:
        extract_training_zip(tmp_path / "in.zip", tmp_path / "out")
    assert "not a zip" in err.value.message and not (tmp_path / "out").exists()


def test_truncated_zip(tmp_path, photo):
    zp = make_zip(tmp_path / "in.zip", {"kol/a.jpg": photo})
    zp.write_bytes(zp.read_bytes()[: len(photo) // 2])
    with pytest.raises(ArchiveError):
        extract_training_zip(zp, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@needs_video
def test_video_zip_checks_videos(tmp_path):
    clip = (VIDEO / "short_hamilton_clip.mp4").read_bytes()
    out = extract(tmp_path, {"Lin/a.mp4": clip, "Lin/b.mp4": b"not a video", "Lin/c.jpg": b"x"}, kind="video")
    assert [f["name"] for f in out.kols[0]["files"]] == ["a.mp4"]
    reasons = {s["name"]: s["reason"] for s in out.skipped}
    assert set(reasons) == {"Lin/b.mp4", "Lin/c.jpg"} and "not a video" in reasons["Lin/c.jpg"]


@needs_data
def test_photo_zip_as_video_upload_says_so(tmp_path, photo):
    err = refused(tmp_path, {"kol/a.jpg": photo}, "no video", kind="video")
    assert ".mp4" in err.message


@needs_data
def test_the_job_page_shows_names_whole_and_escaped_and_says_what_a_name_became(main_app, process_app, photo):
    """Issue 25, through the servers: a training zip's KOL names are kept whole and shown as text (escaped)
    on the job page, and a folder that became a wrapper is explained there."""
    admin = signed_in(main_app.test_client(), "admin")
    proc = signed_in(process_app.test_client(), "admin")

    def upload(members):
        zipped = make_zip(io.BytesIO(), members).getvalue()
        r = admin.post("/trainByImage", data={"zip": (io.BytesIO(zipped), "k.zip")})
        assert r.status_code == 303, r.get_data(as_text=True)[:300]
        return r.headers["Location"].split("job=")[1]

    job = upload({"AC\\DC/1.jpg": photo, "R&B <Star>/2.jpg": photo, "Jane/3.jpg": photo})
    body = proc.get(f"/?job={job}", headers=JSON).get_json()
    assert sorted(k["name"] for k in body["kols"]) == ["AC\\DC", "Jane", "R&B <Star>"] and body["notes"] == []
    html = proc.get(f"/?job={job}").get_data(as_text=True)
    assert "<td>AC\\DC</td>" in html and "<td>R&amp;B &lt;Star&gt;</td>" in html
    job = upload({"<b>R&B</b> Star/1.jpg": photo, "<b>R&B</b> Star/2.jpg": photo})
    html = proc.get(f"/?job={job}").get_data(as_text=True)
    assert "<b>" not in html
    assert "&#39;&lt;b&gt;R&amp;B&lt;/&#39; holds the folder of photos" in html, html[html.find("note"):][:500]
    assert "the KOL is &#39;b&gt; Star&#39;" in html
