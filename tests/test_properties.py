"""Property tests (hypothesis): name and zip sanitising never escapes its folder, and form
parsing never fails with anything but a readable 4xx / :class:`shared.core.errors.UserError`."""
import io
import posixpath
import unicodedata
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from shared.core import names
from shared.training import pool as pool_mod
from shared.faces.archive import ArchiveError, member_parts
from shared.faces.layout import extract_training_zip
from shared.core.errors import UserError

from . import _synth
from ._synth import JSON
from .conftest import signed_in

#: Text that any client can send: every character except lone surrogates (not encodable as UTF-8).
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=120)
HOSTILE_PARTS = st.sampled_from(["..", ".", "", "/", "\\", "C:", "c:\\", "~", "\x00", "..\\..", "%2e%2e", "\u202e",
                                 "周杰伦", "CON", "a" * 300, " ", "\t", "__MACOSX", "._x", ".DS_Store", "Zoë"])
NAME = st.one_of(TEXT, st.lists(st.one_of(HOSTILE_PARTS, TEXT), min_size=1, max_size=6).map("/".join))
RELAXED = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                          HealthCheck.too_slow])


@given(NAME)
@example("..")
@example("a/../../b")
@example("\x00")
@example("\u200b\u200b")
def test_display_name_is_clean_or_refused(raw):
    try:
        name = names.display_name(raw)
    except UserError as exc:
        assert exc.status == 400 and exc.message
        return
    assert name and name == name.strip() and len(name) <= names.MAX_NAME_LENGTH
    assert not any(unicodedata.category(ch)[0] == "C" for ch in name)
    assert "  " not in name and unicodedata.is_normalized("NFC", name)
    assert names.display_name(name) == name  # idempotent: a cleaned name stays the same


@given(NAME)
def test_kol_slug_is_a_safe_folder_name(raw):
    try:
        name = names.display_name(raw)
    except UserError:
        with pytest.raises(UserError):
            pool_mod.kol_slug(raw)
        return
    slug = pool_mod.kol_slug(raw)
    assert pool_mod.SLUG_RE.match(slug) and slug == pool_mod.kol_slug(name)
    root = Path("/srv/data/pool")
    assert (root / slug).resolve().parent == root


@given(NAME)
@example("/etc/passwd")
@example("C:/Windows/a.jpg")
@example("a\\..\\..\\b.jpg")
def test_member_name_parts_never_climb(raw):
    try:
        parts = member_parts(raw)
    except ArchiveError as exc:
        assert exc.status == 400 and f"('{raw}')" in exc.message, exc.message  # names the member it refused
        norm = raw.replace("\\", "/")
        assert norm.startswith("/") or norm[1:2] == ":" or ".." in norm.split("/"), raw  # refused only if it climbs
        return
    assert ".." not in parts and "" not in parts and "." not in parts
    assert all("/" not in p and "\\" not in p for p in parts)
    dest = "/srv/data/jobs/x/input"
    assert not parts or posixpath.normpath(posixpath.join(dest, *parts)).startswith(dest + "/")


PHOTO = _synth.png(32, 32)


@pytest.mark.filterwarnings("ignore:Duplicate name")
@settings(RELAXED, max_examples=120)
@given(st.lists(st.tuples(NAME, st.sampled_from([".jpg", ".png", ".txt", ".zip", ""])), min_size=1, max_size=8))
def test_extraction_stays_inside_its_folder(tmp_path_factory, members):
    base = tmp_path_factory.mktemp("x")
    zpath, dest = base / "in.zip", base / "deep" / "out"
    with zipfile.ZipFile(zpath, "w") as zf:
        for name, ext in members:
            try:
                zf.writestr(name + ext, PHOTO)
            except (ValueError, UnicodeEncodeError, IndexError):  # names zipfile itself cannot write
                continue
    try:
        out = extract_training_zip(zpath, dest)
    except UserError as exc:
        assert 400 <= exc.status < 500 and exc.message
        assert not dest.exists()  # refused: nothing left behind
    else:
        for kol in out.kols:
            assert kol["name"] == names.display_name(kol["name"])
            for f in kol["files"]:
                p = Path(f["path"])
                assert dest in p.resolve().parents and p.read_bytes() == PHOTO and p.name.isascii()
    written = [p for p in base.rglob("*") if p.is_file() and p != zpath]
    assert all(dest in p.parents for p in written), written


# -- ids and form fields through the real routes -----------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory, redis_server):
    """A process server and a main server on one data folder with a cleaned job and a trained model."""
    from main_server import create_app as main_app
    from process_server import create_app as process_app

    from .servers import Workers

    base = tmp_path_factory.mktemp("props")
    data_dir = base / "data"
    redis_url = redis_server.url(4000)  # a database of its own (the per-test ones count up from 1)
    workers = Workers(data_dir, redis_url, base / "worker.log")  # the wizard's work runs in a worker process
    cfg = {"DATA_DIR": str(data_dir), "SECRET_KEY": "t", "REDIS_URL": redis_url}
    process = signed_in(process_app(cfg).test_client(), "admin")
    job = _synth.aligned_job(data_dir, kols=("Ann", "Bob"), per_kol=3)
    assert process.post("/clean", data={"job": job}, headers=JSON).status_code == 200
    _synth.synthetic_model(data_dir)
    main = signed_in(main_app(cfg).test_client(), "admin")
    yield {"process": process, "main": main, "job": job, "data_dir": data_dir}
    workers.stop()


def _readable_4xx(r, allowed):
    assert r.status_code in allowed, (r.status_code, r.get_data(as_text=True)[:300])
    if r.status_code >= 400:
        assert set(r.get_json()) == {"error"} and r.get_json()["error"]


@settings(RELAXED)
@given(TEXT)
def test_any_job_id_is_404_unless_real(world, raw):
    assume(raw != world["job"])
    for path in ("/processingProgress", "/align", "/clean", "/import_clean", "/train_model"):
        _readable_4xx(world["process"].get(path, query_string={"job": raw}, headers=JSON), (404,))
    _readable_4xx(world["process"].post("/align", data={"job": raw}, headers=JSON), (404,))


@settings(RELAXED)
@given(st.lists(st.one_of(TEXT, st.from_regex(r"\A[0-9a-f]{16}\Z")), max_size=5), st.sampled_from(["remove", "keep"]))
def test_any_crop_ids_are_refused_or_used(world, values, field):
    r = world["process"].post("/clean", data={"job": world["job"], field: values}, headers=JSON)
    _readable_4xx(r, (200, 400))
    if r.status_code == 200:
        assert all(v == "" for v in values)  # only empty values are ignored; every real id is unknown here


@settings(RELAXED)
@given(TEXT, TEXT)
def test_any_chip_address_is_404(world, kol, crop):
    _readable_4xx(world["process"].get("/chip", query_string={"job": world["job"], "kol": kol, "crop": crop},
                                       headers=JSON), (404,))
    _readable_4xx(world["process"].get("/pool_chip", query_string={"kol": kol, "crop": crop}, headers=JSON), (404,))


@settings(RELAXED, max_examples=60)
@given(st.lists(TEXT, min_size=1, max_size=4))
def test_any_kol_selection_is_refused_or_imported(world, kols):
    r = world["process"].post("/import_result", data={"job": world["job"], "kol": kols}, headers=JSON)
    chosen = [k for k in kols if k]
    if chosen and not set(chosen) <= {"Ann", "Bob"}:
        _readable_4xx(r, (400,))
    else:
        _readable_4xx(r, (200,))
        assert set(r.get_json()["imported"]) == (set(chosen) or {"Ann", "Bob"})
    _readable_4xx(world["process"].post("/import_result", data={"delete": kols[0] + "x"}, headers=JSON), (404,))


@settings(RELAXED, max_examples=80)
@given(st.one_of(TEXT, st.integers(-10 ** 6, 10 ** 6).map(str)))
@example("5")
@example("")
@example(" 50 ")
def test_any_k_is_refused_or_used(world, k):
    r = world["main"].post("/findSimilarKOLResult", headers=JSON, content_type="multipart/form-data",
                           data={"k": k, "file": (io.BytesIO(_synth.jpeg(64, 64)), "noise.jpg")})
    raw = k.strip()
    valid = raw == "" or (raw.isascii() and raw.isdigit() and len(raw) <= 4 and 1 <= int(raw) <= 50)
    # a valid k gets as far as the photo (noise: no face, 422); any other k is a 400 that names k
    _readable_4xx(r, (422,) if valid else (400,))
    if not valid:
        assert "k must be" in r.get_json()["error"]


@settings(RELAXED)
@given(TEXT, TEXT)
def test_store_lookups_never_leave_their_folder(tmp_path_factory, a, b):
    from shared.recognition.store import ModelStore
    from shared.training.jobs import JobStore
    from shared.video.videos import video_dir

    root = tmp_path_factory.getbasetemp() / "lookups"
    for call in (lambda: JobStore(root / "jobs").folder(a), lambda: video_dir(root / "videos", a),
                 lambda: pool_mod.Pool(root / "pool").chip_path(a, b), lambda: ModelStore(root / "models").load(a)):
        with pytest.raises(UserError) as err:
            call()
        assert err.value.status == 404


@given(NAME)
@example("../../etc/passwd.zip")
@example("C:\\Users\\me\\kols.zip")
def test_upload_names_are_display_text_only(raw):
    from shared.core.names import upload_name

    shown = upload_name(raw, "upload.zip")
    assert shown and len(shown) <= 120 and "/" not in shown and "\\" not in shown
    assert not any(unicodedata.category(ch)[0] == "C" for ch in shown)
