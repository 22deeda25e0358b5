"""The library in a real headless Chromium (issue 24): keep a photo's result, then search by that face.

The live servers under gunicorn with a model of Obama and Biden (knn_examples); the photo kept is
``knn_examples/test/obama_and_biden.jpg``, the search photo another photo of Obama. Screenshots:
``tests/artifacts/library-*.png``.
"""
import pytest

from .builders import build_pool, one_face_each, save_model
from .conftest import KNN, needs_data, screenshot

pytestmark = [pytest.mark.live, pytest.mark.browser, needs_data]
#: How long a page that runs dlib may take on a busy 2-core machine (the first one also loads the networks).
WAIT_MS = 180_000


@pytest.fixture(scope="module")
def served(live_servers, tmp_path_factory):
    kols = {name: one_face_each(sorted((KNN / "train" / name).iterdir())) for name in ("obama", "biden")}
    pool, _ = build_pool(live_servers.data_dir / "pool", kols, tmp_path_factory.mktemp("chips"))
    save_model(live_servers.data_dir, pool)
    return live_servers


def test_keep_a_photo_then_find_it_by_face(served, page):
    main = served.urls["main"]
    page.goto(main + "/predictSinglePage")
    page.locator("input[type=file][name=file]").set_input_files(str(KNN / "test" / "obama_and_biden.jpg"))
    page.locator("form.upload button[type=submit]").click()
    page.wait_for_selector("#keep-button", timeout=WAIT_MS)
    page.click("#keep-button")
    page.wait_for_url("**/library/media/*", timeout=WAIT_MS)
    assert "Kept in the library." in page.inner_text("main")
    assert page.locator("li.library-face").count() >= 2
    screenshot(page, "library-kept")

    page.click("#menu-library")
    page.wait_for_url("**/library")
    assert page.locator("ul.kol-grid li").count() == 1
    page.locator("#search-face input[type=file]").set_input_files(str(KNN / "test" / "obama1.jpg"))
    page.locator("#search-face button[type=submit]").click()
    page.wait_for_selector("ul.library-faces", timeout=WAIT_MS)
    results = page.locator("ul.library-faces li.library-face")
    assert results.count() >= 1
    first = results.first.inner_text()
    assert "obama" in first and "obama_and_biden.jpg" in first and "distance 0." in first
    assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    assert page.errors == []
    screenshot(page, "library-search-by-face")
