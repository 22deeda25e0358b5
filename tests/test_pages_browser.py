"""The home page of each server in a real headless Chromium, at laptop and phone widths."""
import pytest

from .conftest import screenshot

#: Live servers under gunicorn driven by a real Chromium: left out by ``pytest -m "not live and not browser"``.
pytestmark = [pytest.mark.live, pytest.mark.browser]


@pytest.mark.parametrize("server", ["main", "process", "video"])
@pytest.mark.parametrize("width", [1280, 390])
def test_home_pages_render(live_servers, page, server, width):
    page.set_viewport_size({"width": width, "height": 800})
    response = page.goto(live_servers.urls[server] + "/")
    assert response.status == 200
    assert page.locator("header.topbar a.brand").is_visible()
    assert page.locator("h1").first.is_visible()
    # the shared stylesheet loaded (the header is dark, not the browser default)
    assert page.evaluate("getComputedStyle(document.querySelector('header')).backgroundColor") != "rgba(0, 0, 0, 0)"
    # nothing overflows sideways on a phone
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    assert page.errors == []
    screenshot(page, f"home-{server}-{width}")


def test_error_page_has_a_way_back(live_servers, page):
    response = page.goto(live_servers.urls["main"] + "/no/such/page")
    assert response.status == 404
    assert "There is no page at this address" in page.inner_text("main")
    assert page.locator("a", has_text="Home").count() == 1
    screenshot(page, "error-404")
