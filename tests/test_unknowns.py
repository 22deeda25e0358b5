"""The inbox of recurring unknown people (issue 24, item 5): shared/library/unknowns.py.

Real faces: the first five lfw_dev photos of three people (real dlib: detect, align, embed), their
aligned chips as JPEG. Real files in a temporary data folder; other processes are real
``python`` processes. The bars are given explicitly (:data:`BARS`): these tests are about what the
inbox does with a rule, the rule's default is measured by bench/bench_unknowns.py.
"""
import functools
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from shared.core.errors import UserError
from shared.core.storage import file_identity
from shared.library import unknowns
from shared.library.unknowns import Inbox

from .conftest import FACES, ROOT

LFW = FACES / "lfw_dev"
#: Three people whose five photos sit within 0.45 of each other and 0.8 or more from the others'.
PEOPLE = ("Bulent_Ecevit", "Diana_Krall", "Carlos_Moya")
PHOTOS = 5
BARS = {"join": 0.55, "single": 0.55}

needs_lfw = pytest.mark.skipif(not LFW.is_dir(), reason=f"the lfw_dev photos are not at {LFW} (set KOL_SHARED_DATA)")


@functools.lru_cache(maxsize=1)
def real_faces():
    """``{person: [(embedding (128,), chip JPEG bytes)]}`` of :data:`PEOPLE`' first :data:`PHOTOS` photos (one face each)."""
    from shared.faces import engine, images

    out = {}
    for person in PEOPLE:
        for path in sorted((LFW / person).glob("*.jpg"))[:PHOTOS]:
            found = engine.analyze(images.load_image(path), upsample=1)
            centre = min(found, key=lambda f: abs((f.box[1] + f.box[3]) / 2 - 125) + abs((f.box[0] + f.box[2]) / 2 - 125))
            out.setdefault(person, []).append((centre.embedding, images.encode_jpeg(centre.chip)))
    return out


def faces_of(person, media, photos=range(PHOTOS), prefix=None):
    """Input rows for :meth:`Inbox.add_faces`: the person's photos ``photos`` as seen in ``media``."""
    prefix = prefix or f"{media}-{person[:6]}"
    return [(f"{prefix}-{i}", real_faces()[person][i][0], real_faces()[person][i][1],
             {"media": media, "name": f"{media}.mp4", "t": 1.5 * i}) for i in photos]


def group_of(inbox, face_id):
    ids, groups = inbox.labels()
    return groups[ids.index(face_id)]


@pytest.fixture
def inbox(tmp_path):
    return Inbox(tmp_path, **BARS)


pytestmark = needs_lfw


def test_each_person_is_one_group_and_new_media_never_renumbers_old_groups(inbox):
    bulent, diana, carlos = PEOPLE
    first = inbox.add_faces(faces_of(bulent, "m1", range(3)) + faces_of(diana, "m1", range(3)))
    assert first["added"] == 6 and first["new_groups"] == [1, 2]
    before = {g["number"]: [f["id"] for f in g["faces"]] for g in inbox.groups()}
    assert sorted(map(len, before.values())) == [3, 3]
    # a second media: the other photos of both, and a new person
    second = inbox.add_faces(faces_of(carlos, "m2") + faces_of(diana, "m2", range(3, 5))
                             + faces_of(bulent, "m2", range(3, 5)))
    assert second["new_groups"] == [3]
    after = {g["number"]: [f["id"] for f in g["faces"]] for g in inbox.groups()}
    for number, ids in before.items():  # old groups keep their number and their faces, in order
        assert after[number][:len(ids)] == ids and len(after[number]) == 5
    assert len(after[3]) == PHOTOS
    assert group_of(inbox, "m2-Diana_-3") == group_of(inbox, "m1-Diana_-0")
    # the same face added again is left as it is
    assert inbox.add_faces(faces_of(bulent, "m1", range(1)))["added"] == 0
    assert inbox.group(1)["media"][0]["times"] == [0.0, 1.5, 3.0]


def test_a_singleton_needs_the_stricter_bar(tmp_path):
    (e0, _), (e1, _) = real_faces()[PEOPLE[0]][:2]
    distance = float(np.linalg.norm(e0 - e1))
    rows = faces_of(PEOPLE[0], "m", range(2))
    strict = Inbox(tmp_path / "a", join=distance + 0.01, single=distance - 0.01)
    assert strict.add_faces(rows)["new_groups"] == [1, 2]
    loose = Inbox(tmp_path / "b", join=distance + 0.01, single=distance + 0.01)
    assert loose.add_faces(rows)["new_groups"] == [1]


def test_a_face_between_two_people_merges_nothing_and_proposes_the_pair(tmp_path):
    bulent, diana, _ = PEOPLE
    a = np.mean([e for e, _ in real_faces()[bulent]], axis=0)
    b = np.mean([e for e, _ in real_faces()[diana]], axis=0)
    boxes = []
    for name in ("middle", "nearer"):
        Inbox(tmp_path / name, **BARS).add_faces(faces_of(bulent, "m1") + faces_of(diana, "m1"))
        boxes.append(Inbox(tmp_path / name, join=1.0, single=1.0))  # a bar both groups meet for the faces between
    middle, nearer = boxes
    done = middle.add_faces([("bridge", (a + b) / 2, None, {"media": "m2", "photo": 0})])
    assert done["new_groups"] == [3] and done["proposals"] == 1, "as near one as the other: it joins neither"
    assert sorted(g["appearances"] for g in middle.groups()) == [1, 5, 5], "the two people stay two groups"
    assert middle.proposals() == [{"a": 1, "b": 2, "faces": 1}]
    done = nearer.add_faces([("near-a", (2 * a + b) / 3, None, {"media": "m2", "photo": 0})])
    assert done["groups"] == {"near-a": 1} and done["proposals"] == 1, "clearly nearer Bulent: joins him only"
    assert nearer.group(2)["appearances"] == 5 and nearer.proposals() == [{"a": 1, "b": 2, "faces": 1}]
    # said apart: the proposal goes and is not made again
    middle.apart(1, 2)
    middle.add_faces([("bridge2", (a + b) / 2 + 1e-4, None, {"media": "m3", "photo": 0})])
    assert [(p["a"], p["b"]) for p in middle.proposals()] == [(1, 3)], "1 and 2 are two people now"


def test_merge_split_and_bad_requests_change_nothing(inbox):
    bulent, diana, _ = PEOPLE
    inbox.add_faces(faces_of(bulent, "m1") + faces_of(diana, "m1"))
    stored = file_identity(inbox.path)
    for call, status in ((lambda: inbox.merge(1, 1), 400), (lambda: inbox.merge(1, 99), 404),
                         (lambda: inbox.merge("1/../2", 1), 404), (lambda: inbox.split(1, ["m1-Diana_-0"]), 400),
                         (lambda: inbox.split(1, ["forged"]), 400), (lambda: inbox.split(1, []), 400),
                         (lambda: inbox.split(1, [f"m1-Bulent-{i}" for i in range(PHOTOS)]), 400),
                         (lambda: inbox.dismiss(7), 404)):
        with pytest.raises(UserError) as err:
            call()
        assert err.value.status == status
    assert file_identity(inbox.path) == stored
    merged = inbox.merge(2, 1)
    assert merged["number"] == 1 and merged["appearances"] == 10
    assert [g["number"] for g in inbox.groups()] == [1]
    out = inbox.split(1, [f"m1-Diana_-{i}" for i in range(PHOTOS)])
    assert out["number"] == 3 and out["appearances"] == 5, "a split gets a new number; 2 is never reused"
    assert inbox.group(1)["appearances"] == 5
    assert {f["id"] for f in inbox.group(1)["faces"]} == {f"m1-Bulent-{i}" for i in range(PHOTOS)}


def test_a_dismissed_person_never_comes_back_as_a_new_unknown(inbox):
    bulent, diana, _ = PEOPLE
    inbox.add_faces(faces_of(bulent, "m1", range(3)) + faces_of(diana, "m1", range(3)))
    inbox.dismiss(1)
    assert [g["number"] for g in inbox.groups()] == [2] and inbox.count() == 1
    done = inbox.add_faces(faces_of(bulent, "m2", range(3, 5)))
    assert done["new_groups"] == [] and inbox.count() == 1
    assert group_of(inbox, "m2-Bulent-3") == 1 and inbox.group(1)["state"] == "dismissed"


def test_forget_a_face_and_a_media(inbox):
    bulent, diana, carlos = PEOPLE
    inbox.add_faces(faces_of(bulent, "m1") + faces_of(diana, "m2") + faces_of(carlos, "m1", range(2)))
    chip = inbox.chip_path(1, "m1-Bulent-0")
    assert chip.read_bytes()[:3] == b"\xff\xd8\xff"
    assert inbox.forget_faces(["m1-Bulent-0", "nobody"]) == 1
    assert not chip.exists() and inbox.group(1)["appearances"] == 4
    assert inbox.forget_media("m1") == 6
    assert [g["number"] for g in inbox.groups()] == [2], "the emptied groups disappear"
    assert inbox.add_faces(faces_of(carlos, "m3", range(1)))["new_groups"] == [4], "numbers are never reused"
    with pytest.raises(UserError):
        inbox.group(1)


def test_naming_leaves_the_inbox_when_the_import_lands(inbox):
    bulent, diana, _ = PEOPLE
    inbox.add_faces(faces_of(bulent, "m1") + faces_of(diana, "m1"))
    faces = inbox.name(1)
    assert [f[0] for f in faces] == [f"m1-Bulent-{i}" for i in range(PHOTOS)]
    assert faces[0][1].shape == (128,) and faces[0][2].is_file()
    inbox.start_naming(1, "Bulent Ecevit", "0123456789abcdef")
    assert inbox.count() == 2 and inbox.group(1)["state"] == "naming"
    assert inbox.settle_naming(lambda job: None) == []  # the import has not run
    assert inbox.settle_naming(lambda job: ["Bulent Ecevit"]) == [1]
    assert inbox.count() == 1 and inbox.group(1)["state"] == "named"


def test_malformed_faces_are_refused_before_anything_is_stored(inbox):
    good = faces_of(PEOPLE[0], "m1", range(1))[0]
    for bad in (("../x", *good[1:]), (good[0], np.zeros(12), *good[2:]), (*good[:2], b"GIF89a", good[3]),
                (*good[:3], {"name": "no media id"})):
        with pytest.raises(ValueError):
            inbox.add_faces([good, bad])
    assert inbox.face_ids() == [] and not inbox.path.exists()


ADD = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, {root!r})
    from shared.library.unknowns import Inbox
    rng = np.random.default_rng(int(sys.argv[1]))
    inbox = Inbox({data!r})
    for i in range(10):
        inbox.add_faces([(f"p{{sys.argv[1]}}-{{i}}", rng.normal(size=128), None, {{"media": "m"}})])
""")


def test_other_processes_adding_at_once_lose_nothing_and_are_seen_here(tmp_path):
    inbox = Inbox(tmp_path)
    assert inbox.face_ids() == []  # read (and kept) by this process before the others write
    script = ADD.format(root=str(ROOT), data=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", script, str(n)]) for n in (1, 2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert sorted(inbox.face_ids()) == sorted(f"p{n}-{i}" for n in (1, 2) for i in range(10))
    numbers = [g["number"] for g in inbox.groups()]
    assert sorted(numbers) == list(range(1, 21)), "random faces are 20 people, each number given once"


def test_the_rule_alone_joins_by_average_link_to_a_clearly_nearest_group():
    one = np.zeros((2, 128))
    one[1, 0] = 0.1               # group 1: faces at 0 and 0.1
    e = np.zeros(128)
    e[0] = 0.5                    # 0.45 from group 1 on average
    assert unknowns.assign(one, [1, 1], [e], join=0.5, single=0.5)[0] == [1]
    assert unknowns.assign(one, [1, 1], [e], join=0.44, single=0.5)[0] == [2]
    X = np.vstack([one, np.zeros((1, 128))])
    X[2, 0] = 0.9                 # group 2: one face at 0.9, 0.4 from e
    labels, bridges = unknowns.assign(X, [1, 1, 2], [e], join=0.5, single=0.45, ratio=1.0)
    assert labels == [2] and bridges == [(0, 2, 1)], "the nearest group, both within the bar: proposed"
    labels, bridges = unknowns.assign(X, [1, 1, 2], [e], join=0.5, single=0.35, ratio=1.0)
    assert labels == [3] and bridges == [], "group 2 is a singleton over its bar, and nearer than group 1"
    labels, bridges = unknowns.assign(X, [1, 1, 2], [e], join=0.5, single=0.45, ratio=0.85)
    assert labels == [3] and bridges == [(0, 2, 1)], "0.40 is not clearly nearer than 0.45: a new group"
    e[0] = 0.7                    # 0.2 from group 2, 0.65 from group 1 (over the bar, still the runner-up)
    labels, _ = unknowns.assign(X, [1, 1, 2], [e], join=0.5, single=0.45, ratio=0.3)
    assert labels == [3], "0.2 is more than 0.3 x 0.65: the runner-up counts even outside the bar"
    labels, _ = unknowns.assign(X, [1, 1, 2], [e], join=0.5, single=0.45, ratio=0.35)
    assert labels == [2]
