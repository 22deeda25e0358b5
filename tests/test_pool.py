import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.faces import engine
from shared.core import names
from shared.training import pool as pool_mod
from shared.core.errors import UserError
from shared.core.names import display_name
from shared.training.pool import Pool, kol_slug, save_chip

from .conftest import ROOT


def _chip(seed):
    return np.random.default_rng(seed).integers(0, 255, (150, 150, 3), dtype=np.uint8)


def _staged(tmp_path, n, seed=0):
    """Chips with embeddings, as a job folder would hold them."""
    folder = tmp_path / f"job{seed}"
    ids = [save_chip(folder, _chip(seed * 100 + i), np.full(128, seed + i / 100.0)) for i in range(n)]
    return [folder / f"{cid}.png" for cid in ids]


def test_add_merge_replace_remove(tmp_path):
    pool = Pool(tmp_path / "pool")
    slug = pool.add("Ben Afflek", _staged(tmp_path, 3))
    assert pool.names() == {slug: "Ben Afflek"} and pool.stats() == {"kols": 1, "chips": 3}
    pool.add("Ben Afflek", _staged(tmp_path, 2, seed=1))  # merge
    assert pool.stats()["chips"] == 5
    pool.add("Ben Afflek", _staged(tmp_path, 3))  # merge again: duplicates skipped
    assert pool.stats()["chips"] == 5
    pool.add("Ben Afflek", _staged(tmp_path, 2, seed=2), replace=True)
    assert pool.stats()["chips"] == 2
    assert len(list((tmp_path / "pool" / slug).glob("*.png"))) == 2  # replaced files are gone
    X, slugs, ids = pool.embeddings()
    assert X.shape == (2, 128) and slugs == [slug, slug]
    assert pool.remove(slug) == "Ben Afflek"
    assert pool.stats() == {"kols": 0, "chips": 0}
    assert not (tmp_path / "pool" / slug).exists()  # deleted for good
    with pytest.raises(UserError):
        pool.remove(slug)


def test_embeddings_are_never_recomputed(tmp_path, monkeypatch):
    pool = Pool(tmp_path / "pool")
    pool.add("A", _staged(tmp_path, 4))
    calls = []
    real = engine.embed
    monkeypatch.setattr(engine, "embed", lambda chips: calls.append(len(chips)) or real(chips))
    X, _, _ = pool.embeddings()
    pool.add("A", _staged(tmp_path, 4))
    assert X.shape == (4, 128) and calls == []


def test_chip_path_refuses_foreign_ids(tmp_path):
    pool = Pool(tmp_path / "pool")
    slug = pool.add("A", _staged(tmp_path, 1))
    cid = pool.kols()[slug]["chips"][0]
    assert pool.chip_path(slug, cid).is_file()
    for bad in [("../x", cid), (slug, "../../manifest"), (slug, "0" * 16), ("nobody-00000000", cid)]:
        with pytest.raises(UserError):
            pool.chip_path(*bad)


CRASH = textwrap.dedent("""
    import os, sys
    import numpy as np
    sys.path.insert(0, {root!r})
    from shared.training import pool as P
    pool = P.Pool({pool!r})
    chips = [P.save_chip({staging!r}, np.full((150, 150, 3), i, np.uint8), np.full(128, i / 10)) for i in range(5)]
    if sys.argv[1] == "manifest":
        P.atomic_write_json = lambda *a, **k: os._exit(9)   # die just before the manifest commit
    else:
        real, calls = P.atomic_write_bytes, []
        def dying(path, data):
            calls.append(path)
            if len(calls) == 3:
                os._exit(9)   # die in the middle of copying chips into the pool
            real(path, data)
        P.atomic_write_bytes = dying
    pool.add("Crash Test", [os.path.join({staging!r}, c + ".png") for c in chips], replace=True)
""")


@pytest.mark.parametrize("where", ["manifest", "copy"])
def test_pool_survives_a_crash_mid_write(tmp_path, where):
    pool = Pool(tmp_path / "pool")
    pool.add("Crash Test", _staged(tmp_path, 2))
    pool.add("Other", _staged(tmp_path, 1, seed=5))
    before = json.loads(pool.manifest_path.read_text())
    script = CRASH.format(root=str(ROOT), pool=str(pool.root), staging=str(tmp_path / "staging"))
    proc = subprocess.run([sys.executable, "-c", script, where], capture_output=True)
    assert proc.returncode == 9, proc.stderr.decode()
    assert json.loads(pool.manifest_path.read_text()) == before  # exactly as before
    X, slugs, _ = pool.embeddings()
    assert X.shape == (3, 128)
    pool.add("Other", [])  # the next change sweeps the orphans away
    for slug, info in pool.kols().items():
        assert sorted(p.stem for p in (pool.root / slug).glob("*.png")) == sorted(info["chips"])
    assert not list(pool.root.rglob(".tmp-*"))


@pytest.mark.parametrize("raw, shown", [
    ("  Ben   Afflek ", "Ben Afflek"), ("周杰伦", "周杰伦"), ("Beyoncé", "Beyoncé"),
    ("AC/DC", "AC/DC"), ("a\x00b\x1fc\u202e", "abc"),
])
def test_display_names(raw, shown):
    assert display_name(raw) == shown


@pytest.mark.parametrize("raw", ["", "   ", "..", "/", "\x00\x01", "../.."])
def test_unusable_names_are_refused(raw):
    with pytest.raises(UserError):
        display_name(raw)


def test_slugs_are_distinct_and_safe():
    names = ["Ben Afflek", "ben afflek", "ben-afflek", "周杰伦", "周杰倫", "../../etc/passwd", "a/b"]
    slugs = [kol_slug(n) for n in names]
    assert len(set(slugs)) == len(names)
    assert all(pool_mod.SLUG_RE.match(s) for s in slugs)
    assert kol_slug("Ben Afflek") == kol_slug("  Ben  Afflek")


@given(st.text(min_size=1, max_size=200))
def test_any_name_gives_a_safe_slug_or_a_clear_refusal(raw):
    try:
        name = display_name(raw)
    except UserError:
        return
    assert name and name == name.strip() and len(name) <= names.MAX_NAME_LENGTH
    assert not any(ord(c) < 32 or ord(c) == 127 for c in name)
    slug = kol_slug(raw)
    assert pool_mod.SLUG_RE.match(slug) and "/" not in slug and not slug.startswith(".")
