"""Configuration (shared/core/config.py): every setting can be set from the environment as KOL_<NAME>, the
documented plain names still work, values get their setting's type, and the README lists them all."""
import re

import pytest

from shared.faces import parallel
from shared.core.config import DEFAULTS, PLAIN_ENV

from .conftest import ROOT


def _clear(monkeypatch):
    for key in DEFAULTS:
        monkeypatch.delenv(f"KOL_{key}", raising=False)
        monkeypatch.delenv(key, raising=False)


def _value_for(key, tmp_path):
    """A value different from the default, as the environment would spell it."""
    default = DEFAULTS[key]
    if key == "DATA_DIR":
        return str(tmp_path / "from-env"), str((tmp_path / "from-env").resolve())
    if key.endswith("_URL"):
        return f"http://{key.lower()}.example:9", f"http://{key.lower()}.example:9"
    if key == "RATELIMIT_STORAGE_URI":  # a storage the limiter knows, connected to on first use only
        return "redis://127.0.0.1:9/0", "redis://127.0.0.1:9/0"
    if key in ("LOGIN_LIMIT", "LOGIN_ACCOUNT_LIMIT", "LOGIN_ADDRESS_LIMIT"):  # a limit the limiter can read
        return "3 per hour", "3 per hour"
    if isinstance(default, bool):
        return "true", True
    if isinstance(default, str):
        return "1234", "1234"  # looks like JSON, stays text
    return str(default + 3), default + 3


def test_every_setting_from_the_prefixed_environment(tmp_path, monkeypatch):
    from main_server import create_app

    _clear(monkeypatch)
    expected = {}
    for key in DEFAULTS:
        raw, value = _value_for(key, tmp_path)
        monkeypatch.setenv(f"KOL_{key}", raw)
        expected[key] = value
    try:
        config = create_app({"TESTING": True}).config
        assert {key: config[key] for key in DEFAULTS} == expected
        assert parallel.workers() == expected["FACE_WORKERS"]  # the process pool's size follows it
    finally:
        parallel.limit(0)


def test_plain_documented_names_still_work_and_the_prefix_wins(tmp_path, monkeypatch):
    from video_server import create_app

    _clear(monkeypatch)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "plain"))
    monkeypatch.setenv("MAIN_URL", "http://plain.example:1/")
    monkeypatch.setenv("MAX_CONTENT_LENGTH", "1000")
    monkeypatch.setenv("SECRET_KEY", "plain-secret")
    monkeypatch.setenv("KOL_MAX_CONTENT_LENGTH", "2000")
    config = create_app({"TESTING": True}).config
    assert config["DATA_DIR"] == str((tmp_path / "plain").resolve())
    assert config["MAIN_URL"] == "http://plain.example:1"
    assert config["MAX_CONTENT_LENGTH"] == 2000 and config["SECRET_KEY"] == "plain-secret"
    assert set(PLAIN_ENV) <= set(DEFAULTS)
    # a test's own config beats the environment
    assert create_app({"TESTING": True, "MAX_CONTENT_LENGTH": 5}).config["MAX_CONTENT_LENGTH"] == 5


@pytest.mark.parametrize("raw", ["abc", "-1", "1.5", "true", "[1]"])
def test_a_number_setting_that_is_not_a_whole_number_stops_the_start(tmp_path, monkeypatch, raw):
    from process_server import create_app

    _clear(monkeypatch)
    monkeypatch.setenv("KOL_VIDEO_KEEP", raw)
    with pytest.raises(ValueError, match="VIDEO_KEEP must be a whole number"):
        create_app({"TESTING": True, "DATA_DIR": str(tmp_path / "d")})


def test_the_readme_table_lists_every_setting():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `KOL_([A-Z_]+)`", section, re.M)
    assert sorted(rows) == sorted(DEFAULTS), set(rows) ^ set(DEFAULTS)
    for key in PLAIN_ENV:
        assert re.search(rf"^\| `KOL_{key}` \(or `{key}`\)", section, re.M), key
