"""Issue 25 in a real headless Chromium, at phone (390x844) and laptop (1280x800) widths: no page is
wider than the screen, the menu stays on one line, batch tables keep names whole, a single result
offers its download, find similar uses the face clicked, the jobs page speaks plain words first.

Full-page screenshots go to tests/artifacts/phone-*.png (and to ``KOL_SHOTS``, a folder, when set).
"""
import os
import shutil
from pathlib import Path

import pytest

from .builders import build_pool, one_face_each, save_model
from .conftest import FIVE, KNN, needs_data, screenshot
from .servers import wait_for

#: Live servers under gunicorn driven by a real Chromium: left out by ``pytest -m "not live and not browser"``.
pytestmark = [pytest.mark.live, pytest.mark.browser, needs_data]

PHONE = {"width": 390, "height": 844}
LAPTOP = {"width": 1280, "height": 800}
#: A long KOL name with no spaces: it must wrap, never be cut, at phone width.
LONG = "Mindy_Kaling_Official_Presenter_Channel"
TWO = KNN / "test" / "obama_and_biden.jpg"


def shot(pg, name):
    path = screenshot(pg, f"phone-{name}")
    if os.environ.get("KOL_SHOTS"):
        Path(os.environ["KOL_SHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(os.environ["KOL_SHOTS"]) / path.name)


@pytest.fixture(scope="module")
def served(live_servers, tmp_path_factory):
    """The live servers with a model of Obama, Biden and the five_celebs KOLs (one with :data:`LONG` as name)."""
    kols = {name: one_face_each(sorted((KNN / "train" / name).iterdir())) for name in ("obama", "biden")}
    for person in sorted(p.name for p in FIVE.iterdir() if p.is_dir()):
        kols[LONG if person == "mindy_kaling" else person] = one_face_each(sorted((FIVE / person).glob("train_*.jpg"))[:3])
    pool, _ = build_pool(live_servers.data_dir / "pool", kols, tmp_path_factory.mktemp("chips"))
    save_model(live_servers.data_dir, pool)
    live_servers.pool = pool
    return live_servers


def fits(pg):
    """Nothing on the page is wider than the window (1 px of rounding)."""
    return pg.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def menu_lines(pg):
    """How many lines the menu's links take (their distinct tops)."""
    return pg.evaluate("new Set(Array.from(document.querySelectorAll('header.topbar nav a'))"
                       ".map(a => Math.round(a.getBoundingClientRect().top))).size")


@pytest.mark.parametrize("size", [PHONE, LAPTOP], ids=["phone", "laptop"])
def test_every_main_page_fits_the_screen_with_a_one_line_menu(served, page, size):
    page.set_viewport_size(size)
    slug = served.pool.slug_for(LONG)
    pages = {"main": ["/", "/predictSinglePage", "/predictBatchPage", "/findSimilarKOLPage", "/uploadVideoPage",
                      "/kols", f"/kols/{slug}", "/review", "/unknowns", "/library", "/analysis", "/screentime",
                      "/trainModel", "/trainExplain", "/account", "/admin/users",
                      "/admin/audit"],
             "process": ["/", "/import_result", "/models"], "video": ["/"]}
    too_wide, menus = [], {}
    for server, paths in pages.items():
        for path in paths:
            response = page.goto(served.urls[server] + path)
            assert response.status == 200, (server, path)
            if not fits(page):
                too_wide.append((server, path, page.evaluate("document.documentElement.scrollWidth")))
            menus[(server, path)] = menu_lines(page)
            shot(page, f"{server}{path.replace('/', '_') or '_home'}-{size['width']}")
    on_two_lines = {page: lines for page, lines in menus.items() if lines != 1}
    assert (too_wide, on_two_lines) == ([], {})
    assert page.errors == []


def test_the_pages_a_member_may_see_fit_with_a_one_line_menu(served, browser):
    """The same pages signed in as a member (whose menu is shorter): each opens (200), fits and has one menu line."""
    context = browser.new_context(viewport=PHONE)
    pg = context.new_page()
    served.sign_in(pg, role="member")
    problems = []
    for path in ("/", "/kols", "/review", "/unknowns", "/library", "/analysis", "/screentime", "/account"):
        response = pg.goto(served.urls["main"] + path)
        if response.status != 200 or not fits(pg) or menu_lines(pg) != 1:
            problems.append((path, response.status, fits(pg), menu_lines(pg)))
        shot(pg, f"member{path.replace('/', '_') or '_home'}-{PHONE['width']}")
    context.close()
    assert problems == []


@pytest.mark.parametrize("size", [PHONE, LAPTOP], ids=["phone", "laptop"])
def test_batch_table_keeps_names_whole(served, page, size):
    page.set_viewport_size(size)
    page.goto(served.urls["main"] + "/predictBatchPage")
    photos = [FIVE / "mindy_kaling" / "val_1.jpg", TWO, FIVE / "madonna" / "val_1.jpg"]
    page.locator("input[type=file][name=file]").set_input_files([str(p) for p in photos])
    page.locator("main form button[type=submit]").click()
    page.wait_for_selector("table.batch")
    assert fits(page)
    assert LONG in page.inner_text("table.batch")
    # every name and file name shows whole: nothing overflows its box, and every box is on the screen
    cut = page.evaluate("""Array.from(document.querySelectorAll('table.batch .fname, table.batch ul.faces li'))
        .filter(e => e.scrollWidth > e.clientWidth + 1 || e.getBoundingClientRect().right > window.innerWidth + 1)
        .map(e => e.textContent.trim())""")
    assert cut == []
    shot(page, f"batch-result-{size['width']}")


@pytest.mark.parametrize("size", [PHONE, LAPTOP], ids=["phone", "laptop"])
def test_single_result_has_a_download(served, browser, size):
    context = browser.new_context(viewport=size, accept_downloads=True)
    pg = context.new_page()
    served.sign_in(pg)
    pg.goto(served.urls["main"] + "/predictSinglePage")
    pg.locator("input[type=file][name=file]").set_input_files(str(TWO))
    pg.locator("main form button[type=submit]").click()
    pg.wait_for_selector("img.result")
    assert fits(pg)
    with pg.expect_download() as download:
        pg.get_by_role("link", name="Download the named photo").click()
    assert download.value.suggested_filename == "obama_and_biden-faces.jpg"
    assert Path(download.value.path()).read_bytes()[:2] == b"\xff\xd8"
    shot(pg, f"single-result-{size['width']}")
    context.close()


@pytest.mark.parametrize("size", [PHONE, LAPTOP], ids=["phone", "laptop"])
def test_find_similar_uses_the_face_clicked(served, page, size):
    page.set_viewport_size(size)
    page.goto(served.urls["main"] + "/findSimilarKOLPage")
    page.locator("input[type=file][name=file]").set_input_files(str(TWO))
    page.locator("main form button[type=submit]").click()
    page.wait_for_selector(".photo-faces")
    assert "the largest one" in page.inner_text("main") and fits(page)
    first = page.inner_text("ol.similar strong >> nth=0")
    shot(page, f"similar-face1-{size['width']}")
    spot = page.locator("button.face-spot[value='2']")
    box = spot.bounding_box()
    assert box["width"] > 10 and box["x"] + box["width"] <= size["width"]  # on the photo, on the screen
    spot.click()
    page.wait_for_selector("button.face-spot.chosen[value='2']")
    assert "Face 2: the model says" in page.inner_text("main")
    second = page.inner_text("ol.similar strong >> nth=0")
    assert {first, second} == {"obama", "biden"}
    assert page.errors == []
    shot(page, f"similar-face2-{size['width']}")


@pytest.mark.parametrize("size", [PHONE, LAPTOP], ids=["phone", "laptop"])
def test_jobs_page_says_the_state_first(served, page, size):
    page.set_viewport_size(size)
    page.goto(served.urls["process"] + "/")
    assert page.locator("#now").inner_text().strip() == "No training work is running."
    details = page.locator("details#queue")
    assert not details.locator("table").first.is_visible()  # the internals wait behind the toggle
    details.locator("summary").click()
    assert details.locator("table").first.is_visible()
    assert fits(page)
    shot(page, f"jobs-{size['width']}")


def test_a_batch_made_before_a_delete_shows_deleted_kol(served, page):
    """Last in this file: it deletes madonna from the pool the tests above use."""
    page.goto(served.urls["main"] + "/predictBatchPage")
    page.locator("input[type=file][name=file]").set_input_files([str(FIVE / "madonna" / "val_1.jpg"), str(TWO)])
    page.locator("main form button[type=submit]").click()
    page.wait_for_selector("table.batch")
    run = page.get_attribute("a[download]", "href").split("/")[2]  # /predictions/<run>/results.csv
    result = served.urls["main"] + f"/predictBatch/{run}"  # where a kept batch result is read again
    assert "madonna" in page.inner_text("table.batch")
    page.goto(served.urls["main"] + f"/kols/{served.pool.slug_for('madonna')}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete madonna for good").click()
    page.wait_for_url("**/kols?*")
    for size in (PHONE, LAPTOP):
        page.set_viewport_size(size)
        page.goto(result)
        table = page.inner_text("table.batch")
        assert "deleted KOL" in table and "madonna" not in table and "obama" in table
        assert "1 of a KOL deleted since" in page.inner_text("main")
        page.evaluate("document.querySelectorAll('img[loading=lazy]').forEach(i => { i.loading = 'eager'; })")
        wait_for("the thumbnails", lambda: page.evaluate("Array.from(document.images).every(i => i.complete)"), 60)
        assert page.evaluate("Array.from(document.images).every(i => i.naturalWidth > 0)")  # redrawn ones too
        assert fits(page)
        shot(page, f"batch-deleted-{size['width']}")
