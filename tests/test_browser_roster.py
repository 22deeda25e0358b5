"""Issue 12 in a real headless Chromium: the KOLs page, a KOL's page, rename (the new name
shows in predictions without retraining), merge, "Retrain now", a HEIC upload and the
boxes of an 8000x6000 photo. Screenshots: ``tests/artifacts/roster-*.png``."""
import io

import pytest
from PIL import Image

from shared.faces import engine, images

from .builders import build_pool, one_face_each, save_model
from .conftest import FIVE, LiveServers, needs_data, screenshot
from .test_browser_flows import images_load, no_sideways_scroll

#: Live servers under gunicorn driven by a real Chromium: left out by ``pytest -m "not live and not browser"``.
pytestmark = [pytest.mark.live, pytest.mark.browser]

PEOPLE = {"ben_afflek": "ben_afflek", "elton_john": "Elton John", "mindy_kaling": "mindy_kaling"}


@pytest.fixture(scope="module")
def roster_servers(tmp_path_factory):
    """Live servers on a pool of three KOLs (raw folder names) plus a duplicate "Mindy K." and a model."""
    if not FIVE.is_dir():
        pytest.skip("real photos not found")
    base = tmp_path_factory.mktemp("roster")
    kols = {}
    for person, name in PEOPLE.items():
        faces = one_face_each(sorted((FIVE / person).glob("train_*.jpg"))[:6])
        if person == "mindy_kaling":
            kols["Mindy K."] = faces[4:]
            faces = faces[:4]
        kols[name] = faces
    pool, _ = build_pool(base / "data" / "pool", kols, base / "chips")
    save_model(base / "data", pool)
    servers = LiveServers(base / "data", base, names=("main", "process"))
    yield servers, pool
    servers.stop()


def shoot(pg, name, phone=False):
    """Full-page screenshot (and one at phone width, 390 px); nothing may scroll sideways."""
    images_load(pg)
    assert no_sideways_scroll(pg), pg.url
    path = screenshot(pg, name)
    if phone:
        size = pg.viewport_size
        pg.set_viewport_size({"width": 390, "height": 844})
        try:
            assert no_sideways_scroll(pg), f"{pg.url} scrolls sideways at phone width"
            screenshot(pg, name + "-390")
        finally:
            pg.set_viewport_size(size)
    return path


@pytest.fixture
def bangkok_page(browser, roster_servers):
    """A page whose browser lives in Asia/Bangkok (UTC+7, no daylight saving), signed in as an admin."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, timezone_id="Asia/Bangkok",
                                  locale="en-GB")
    pg = context.new_page()
    pg.errors = []
    pg.on("console", lambda msg: msg.type == "error" and pg.errors.append(msg.text))
    pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))
    roster_servers[0].sign_in(pg)
    yield pg
    context.close()


@needs_data
def test_roster_pages_rename_merge_retrain(roster_servers, bangkok_page):
    from datetime import datetime, timedelta

    page = bangkok_page
    servers, pool = roster_servers
    main = servers.urls["main"]
    page.on("dialog", lambda d: d.accept())
    page.goto(main + "/")
    page.locator("nav a", has_text="KOLs").click()
    page.wait_for_url(main + "/kols")
    cards = page.locator(".kol-card")
    assert cards.count() == 4
    assert page.locator(".kol-card .name").all_inner_texts() == ["ben_afflek", "Elton John", "Mindy K.",
                                                                 "mindy_kaling"]
    assert page.locator("button.retrain-now").count() == 0  # the model matches the pool
    # dates in the viewer's time zone (UTC stays in the attribute and in JSON)
    first = page.locator("time").first
    assert first.get_attribute("data-local") == "1" and "UTC" in first.get_attribute("title")
    utc = datetime.fromisoformat(first.get_attribute("datetime"))
    assert (utc + timedelta(hours=7)).strftime("%H:%M") in first.inner_text()
    shoot(page, "roster-01-kols", phone=True)
    page.fill("#q", "MINDY")
    page.locator("form.search button").click()
    assert page.locator(".kol-card .name").all_inner_texts() == ["Mindy K.", "mindy_kaling"]

    # a KOL's page: every face crop, rename
    page.goto(main + "/kols")
    page.locator(".kol-card", has_text="ben_afflek").click()
    assert page.locator("h1").inner_text() == "ben_afflek"
    n = page.locator("ul.chip-grid li").count()
    assert n == len(pool.kols()[pool.same_name("ben_afflek")]["chips"]) and n >= 4
    shoot(page, "roster-02-kol", phone=True)
    page.fill("#new-name", "Ben Affleck")
    page.locator("#rename button").click()
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "Ben Affleck"
    assert page.locator("button.retrain-now").count() == 0  # a rename needs no retraining
    shoot(page, "roster-03-renamed")

    # predictions show the new name at once
    page.goto(main + "/predictSinglePage")
    page.set_input_files("#file", str(FIVE / "ben_afflek" / "val_1.jpg"))
    page.locator("form.upload button[type=submit]").click()
    page.wait_for_url(main + "/predictSingleImage")
    assert "Ben Affleck" in page.locator("table").inner_text()

    # merge the duplicate into mindy_kaling; the pool changed: "Retrain now" appears
    page.goto(main + "/kols")
    page.locator(".kol-card", has_text="Mindy K.").click()
    target = pool.same_name("mindy_kaling")
    assert page.locator("#into").input_value() == ""  # nobody preselected (issue 25)
    page.select_option("#into", target)
    page.locator("#merge button").click()
    page.wait_for_url(f"{main}/kols/*/merge?into={target}")  # both KOLs side by side first
    assert page.locator("h1").inner_text() == "Merge Mindy K. into mindy_kaling?"
    for side in ("#merge-source", "#merge-target"):
        assert page.locator(f"{side} img").count() >= 1
    assert page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    shoot(page, "roster-04a-merge-confirm", phone=True)
    page.locator("button", has_text="Merge Mindy K. into mindy_kaling").click()
    page.wait_for_url(f"{main}/kols/{target}")
    assert page.locator("h1").inner_text() == "mindy_kaling"
    assert "Mindy K. was merged into mindy_kaling" in page.locator(".flash").inner_text()
    assert len(pool.kols()) == 3 and page.locator("ul.chip-grid li").count() == len(pool.kols()[target]["chips"])
    retrain = page.locator("button.retrain-now")
    assert retrain.count() == 1
    assert page.locator(".retrain form").get_attribute("action") == servers.urls["process"] + "/train_model"
    shoot(page, "roster-04-merged")
    page.goto(main + "/")
    assert page.locator("button.retrain-now").count() == 1
    page.locator("details summary").click()
    page.locator(".thumbs a.thumb", has_text="Elton John").click()
    page.wait_for_url(f"{main}/kols/*")
    assert page.locator("h1").inner_text() == "Elton John"
    # the merge is undone from the KOL it went into
    page.goto(f"{main}/kols/{target}")
    page.locator("#merges button", has_text="Undo merge").click()
    page.wait_for_url(f"{main}/kols/*")
    assert page.locator("h1").inner_text() == "Mindy K." and len(pool.kols()) == 4
    assert "Mindy K. is back with 2 photos" in page.locator(".flash").inner_text()
    shoot(page, "roster-05-unmerged")
    assert page.errors == []


@needs_data
def test_heic_upload_and_8000x6000_boxes(roster_servers, page, tmp_path):
    import pillow_heif

    servers, _ = roster_servers
    servers.sign_in(page)
    main = servers.urls["main"]
    heic = tmp_path / "IMG_4711.HEIC"
    pillow_heif.from_pillow(Image.open(FIVE / "elton_john" / "val_1.jpg").convert("RGB")).save(str(heic))
    page.goto(main + "/predictSinglePage")
    page.set_input_files("#file", str(heic))
    page.locator("form.upload button[type=submit]").click()
    page.wait_for_url(main + "/predictSingleImage")
    assert "IMG_4711.HEIC" in page.locator("h1").inner_text()
    assert "Elton John" in page.locator("table").inner_text()
    shoot(page, "roster-05-heic")

    # 8000x6000: the real photo enlarged and placed off-centre on a plain background
    photo = Image.open(FIVE / "elton_john" / "val_1.jpg").convert("RGB")
    photo = photo.resize((round(photo.width * 2400 / photo.height), 2400))
    big = Image.new("RGB", (8000, 6000), (128, 128, 128))
    big.paste(photo, (4200, 3100))
    path = tmp_path / "big.jpg"
    big.save(path, quality=90)
    page.goto(main + "/predictSinglePage")
    page.set_input_files("#file", str(path))
    page.locator("form.upload button[type=submit]").click()
    page.wait_for_url(main + "/predictSingleImage", timeout=120_000)
    assert page.locator("#photo-size").inner_text() == "8000×6000"
    row = page.locator("table tbody tr").first
    assert row.locator(".facenum").inner_text() == "1"
    top, right, bottom, left = (int(v) for v in row.locator("td").nth(3).inner_text().split(","))
    # the box, in the photo's own pixels, holds the face: around it (half a box of margin) a
    # face is found whose centre is the box's centre
    w, h = right - left, bottom - top
    assert left > 4200 and top > 3100 and w > 400  # in the big photo's pixels, not the 2000 px copy's
    crop = big.crop((left - w // 2, top - h // 2, right + w // 2, bottom + h // 2))
    scale = 400 / crop.width
    found = engine.detect(images.load_image(_jpeg(crop.resize((400, round(crop.height * scale))))), upsample=1)
    assert found, (top, right, bottom, left)
    t, r, b, lft = (v / scale for v in found[0])
    assert abs((t + b) / 2 - h) < 0.15 * h and abs((lft + r) / 2 - w) < 0.15 * w
    shoot(page, "roster-06-8000x6000")
    assert page.errors == []


def _jpeg(im):
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG")
    return buf.getvalue()
