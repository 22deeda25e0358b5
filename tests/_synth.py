"""Hostile and synthetic inputs shared by the robustness tests (test_hostile, test_faults, test_properties).

Nothing here fakes the code under test: the files are real (broken) JPEG/PNG/MP4/zip
bytes, and the synthetic jobs, pools and models are written through the project's
own storage code (:class:`shared.training.jobs.JobStore`, :func:`shared.training.pool.save_chip`,
:class:`shared.recognition.store.ModelStore`) with made-up embeddings, so the wizard's
clean/import/train steps and the prediction routes run for real without dlib
having to find faces in noise. (Pools and models of real faces: ``tests/builders.py``.)
"""
import functools
import io
import struct
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .conftest import VIDEO

JSON = {"Accept": "application/json"}


# -- files ---------------------------------------------------------------------------
def jpeg(width=200, height=160, seed=0):
    rgb = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def png(width=64, height=48, seed=0):
    rgb = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def png_declaring(width, height):
    """A tiny PNG whose header claims ``width x height`` pixels (a decompression bomb's header)."""
    data = bytearray(png(4, 4))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)


def real_mp4():
    path = VIDEO / "short_hamilton_clip.mp4"
    return path.read_bytes() if path.is_file() else None


@functools.lru_cache(maxsize=None)
def bad_files():
    """``{case: (file name, bytes)}``: uploads no route may accept as a photo or video."""
    good_jpeg = jpeg()
    cases = {
        "empty": ("empty.jpg", b""),
        "text as jpg": ("notes.jpg", b"hello, I am a text file\n" * 10),
        "html as png": ("page.png", b"<html><script>alert(1)</script></html>"),
        "zip as jpg": ("photo.jpg", build_zip({"a.txt": b"x"})),
        "truncated jpeg": ("cut.jpg", good_jpeg[: len(good_jpeg) // 2]),
        "corrupt jpeg": ("corrupt.jpg", good_jpeg[:20] + bytes(range(256)) * 8),
        "truncated png": ("cut.png", png()[:60]),
        "corrupt png": ("corrupt.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 300),
        "1x1 image": ("dot.png", png(1, 1)),
        "bomb header": ("huge.png", png_declaring(20000, 20000)),
        "traversal name": ("../../../../etc/passwd.jpg", b"root:x:0:0:root:/root:/bin/bash\n"),
        "unicode name": ("фото 照片 \u202egpj.exe.jpg", b"\xff\xd8\xff\xe0 not really"),
        "nul in name": ("a\x00b.jpg", b"\xff\xd8\xff"),
    }
    return cases


@functools.lru_cache(maxsize=None)
def bad_videos():
    """``{case: (file name, bytes)}``: uploads no route may accept as a video."""
    cases = {
        "empty": ("empty.mp4", b""),
        "text as mp4": ("clip.mp4", b"not a video at all\n" * 100),
        "jpeg as mp4": ("clip.mp4", jpeg()),
        "corrupt mp4": ("clip.mp4", b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(4096)),
        "traversal name": ("../../../tmp/evil.mp4", b"\x00" * 100),
        "wrong extension": ("clip.exe", b"MZ" + bytes(100)),
    }
    clip = real_mp4()
    if clip:
        cases["truncated mp4"] = ("cut.mp4", clip[: len(clip) // 20])
    return cases


def build_zip(members, method=zipfile.ZIP_DEFLATED):
    """A zip in memory from ``{name in zip: bytes}``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@functools.lru_cache(maxsize=None)
def zip_bomb():
    """~200 KiB of zip that expands to 256 MiB (one member) - refused by its ratio."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open(zipfile.ZipInfo("kol/a.jpg"), "w", force_zip64=True) as member:
            block = b"\0" * (1024 * 1024)
            for _ in range(256):
                member.write(block)
    return buf.getvalue()


@functools.lru_cache(maxsize=None)
def wide_bomb():
    """Many members that are each small but together expand a lot (ratio ~1000 each, under 1 MiB each)."""
    block = b"\0" * (1024 * 1024 - 1)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for i in range(300):
            zf.writestr(f"kol/{i}.jpg", block)
    return buf.getvalue()


@functools.lru_cache(maxsize=None)
def many_members(count=100_000):
    """A zip with ``count`` tiny members (stored, so it is quick to build)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in range(count):
            zf.writestr(f"kol/{i}.jpg", b"x")
    return buf.getvalue()


def encrypted_zip(members):
    """A zip whose members are flagged as encrypted (as a password-protected zip's are)."""
    data = bytearray(build_zip(members, method=zipfile.ZIP_STORED))
    for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (i := data.find(sig, start)) >= 0:
            data[i + offset] |= 0x01
            start = i + 4
    return bytes(data)


def header_mismatch_zip(photo):
    """A zip whose local header names a different file than its central directory."""
    data = bytearray(build_zip({"kol/a.jpg": photo}, method=zipfile.ZIP_STORED))
    i = data.find(b"PK\x03\x04") + 30  # the local header's copy of the name
    data[i:i + 9] = b"../../x.j"
    return bytes(data)


@functools.lru_cache(maxsize=None)
def bad_zips():
    """``{case: (file name, bytes)}``: training zips that must be refused with a 4xx."""
    photo = jpeg()
    inner = build_zip({"kol/a.jpg": photo})
    return {
        "empty file": ("kols.zip", b""),
        "not a zip": ("kols.zip", b"GIF89a" + bytes(200)),
        "png as zip": ("kols.zip", png()),
        "truncated zip": ("kols.zip", build_zip({"kol/a.jpg": photo, "kol/b.jpg": photo})[:300]),
        "zip bomb": ("kols.zip", zip_bomb()),
        "wide bomb": ("kols.zip", wide_bomb()),
        "100k members": ("kols.zip", many_members()),
        "nested zip": ("kols.zip", build_zip({"kol/inner.zip": inner})),
        "nested zip as jpg": ("kols.zip", build_zip({"kol/a.jpg": inner})),
        "doubly nested": ("kols.zip", build_zip({"kol/x.zip": build_zip({"y.zip": inner})})),
        "traversal member": ("kols.zip", build_zip({"../../evil/a.jpg": photo})),
        "absolute member": ("kols.zip", build_zip({"/etc/cron.d/a.jpg": photo})),
        "broken photos only": ("kols.zip", build_zip({"kol/a.jpg": b"no", "kol/b.png": png()[:40]})),
        "1x1 photos only": ("kols.zip", build_zip({"kol/a.png": png(1, 1)})),
        "bomb header photo": ("kols.zip", build_zip({"kol/a.png": png_declaring(20000, 20000)})),
        "traversal zip name": ("../../../etc/kols.zip", b"PK\x05\x06" + bytes(18)),
        "wrong extension": ("kols.tar.gz", b"\x1f\x8b" + bytes(100)),
        "encrypted": ("kols.zip", encrypted_zip({"kol/a.jpg": photo})),
        "header mismatch": ("kols.zip", header_mismatch_zip(photo)),
    }


# -- synthetic pool, job and model ------------------------------------------------------
def _embeddings(n_kols, per_kol, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 0.1, (n_kols, 128))
    return [[c + rng.normal(0, 0.02, 128) for _ in range(per_kol)] for c in centres]


def synthetic_model(data_dir, n_kols=3, per_kol=6, seed=0):
    """Train and save a real model on made-up embeddings; returns its version."""
    from shared.recognition.model import train
    from shared.recognition.store import ModelStore

    E = _embeddings(n_kols, per_kol, seed)
    X = np.array([e for kol in E for e in kol])
    slugs = [f"kol-{k}" for k in range(n_kols) for _ in range(per_kol)]
    model = train(X, slugs, {f"kol-{k}": f"KOL {k}" for k in range(n_kols)})
    return ModelStore(Path(data_dir) / "models").save(model)


def aligned_job(data_dir, kols=("Ann", "Bob"), per_kol=8, seed=0, chip_px=150):
    """A job whose align step is done: chips (random pixels) and records with made-up embeddings.

    Written with the project's own JobStore and save_chip; returns the job id.
    """
    from shared.training.jobs import JobStore
    from shared.training.pool import save_chip

    store = JobStore(Path(data_dir) / "jobs")
    photo = jpeg(32, 32)

    def save(path):
        Path(path).write_bytes(build_zip({f"{name}/{i}.jpg": photo for name in kols for i in range(per_kol)}))

    # the job is created from a real zip by the real extraction code (the photos are noise: align is faked below)
    job = store.create(save, "image", "synthetic.zip")
    state = store.state(job)
    folder = store.folder(job)
    rng = np.random.default_rng(seed)
    E = _embeddings(len(kols), per_kol, seed)
    result = {"kind": "image", "kols": []}
    for k, kol in enumerate(state["kols"]):
        entry = {"name": kol["name"], "sources": []}
        for i, f in enumerate(kol["files"]):
            chip = rng.integers(0, 255, (chip_px, chip_px, 3), dtype=np.uint8)
            cid = save_chip(folder / "chips" / str(k), chip, E[k][i])
            rec = {"crop": cid, "box": [10, 110, 110, 10], "size": 100, "sharpness": 200.0, "faces": 1,
                   "embedding": [float(v) for v in E[k][i]]}
            entry["sources"].append({"id": f"{k:08x}{i:08x}", "name": f["name"], "path": f["path"],
                                     "error": None, "crops": [rec], "width": 32, "height": 32})
        result["kols"].append(entry)
    store.write(job, "align", result)
    store.finish_sync(job, "align", summary={}, total=len(kols) * per_kol)
    return job


def write_clip(path, rgb_frames, fps, fourcc="mp4v"):
    """A real video file at ``path`` of ``rgb_frames`` (RGB ``uint8`` arrays of one size) at ``fps``,
    encoded by OpenCV with ``fourcc`` (``"mp4v"`` for .mp4, ``"MJPG"`` for .avi). Returns ``path``."""
    h, w = rgb_frames[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    for rgb in rgb_frames:
        out.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out.release()
    return path
