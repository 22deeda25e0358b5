"""docs/api.md describes every route of the three servers, and only routes that exist.

Each route has a heading ``### `METHODS /rule` `` (methods sorted, comma-separated, without HEAD
and OPTIONS; the rule exactly as Flask's ``url_map`` spells it) in its server's section.
"""
import re

import pytest

from .conftest import ROOT

API = ROOT / "docs" / "api.md"
SECTIONS = {"main": "## Main server", "process": "## Process server", "video": "## Video server"}


def documented(server):
    """The route headings in ``server``'s section of docs/api.md: ``{"GET, POST /align", ...}``."""
    text = API.read_text()
    start = text.index(SECTIONS[server])
    ends = [i for i in (text.find("\n## ", start + 1),) if i != -1]
    section = text[start: ends[0] if ends else len(text)]
    return set(re.findall(r"^### `([A-Z, ]+ /[^`]*)`", section, re.M))


def routes(app):
    out = set()
    for rule in app.url_map.iter_rules():
        methods = ", ".join(sorted(rule.methods - {"HEAD", "OPTIONS"}))
        out.add(f"{methods} {rule.rule}")
    return out


@pytest.mark.parametrize("server", sorted(SECTIONS))
def test_every_route_is_described_and_every_description_is_a_route(server, request):
    # only this server's app, and the process app without a queue worker: the routes need none
    names = {"main": "main_app", "process": "process_app_no_worker", "video": "video_app"}
    app = request.getfixturevalue(names[server])
    have, described = routes(app), documented(server)
    assert have, "the app has no routes?"
    missing, stale = sorted(have - described), sorted(described - have)
    assert not missing, f"routes of the {server} server not described in docs/api.md: {missing}"
    assert not stale, f"docs/api.md describes {server} routes that do not exist: {stale}"


def test_the_readme_points_to_the_api_document():
    readme = (ROOT / "README.md").read_text()
    assert "docs/api.md" in readme and "../shared/CONTRACT.md" not in readme
