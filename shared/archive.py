"""Safe extraction of an uploaded training zip (one folder per KOL).

:func:`extract_training_zip` reads a zip that a person uploaded and writes the
usable photos (or videos) under a destination folder, one sub-folder per KOL,
without ever using a member's name as a path: files are written as
``<dest>/<kol index>/<n><ext>`` and the original names are only recorded as text.

Everything hostile is refused with an :class:`ArchiveError` whose message says
what is wrong and how to fix it, and the destination is left empty (removed):

- not a zip at all (or damaged), an empty zip, a zip with no usable file;
- members with absolute paths, drive letters or ``..`` parts, symbolic links;
- zip bombs: more than ``max_members`` members, more than ``max_total`` bytes
  once uncompressed (counted while decompressing, headers are not trusted), or a
  member that expands more than ``max_ratio`` times;
- nested archives (a zip inside the zip).

Junk (``__MACOSX/``, ``.DS_Store``, ``Thumbs.db``, hidden ``._`` files) is ignored
silently; other files that are not photos/videos are skipped and listed.

Layouts understood: ``KOL/photo.jpg`` (the normal one, deeper sub-folders of a
KOL folder belong to that KOL), and the same inside one wrapper folder
(``set/KOL/photo.jpg``). A zip with only loose photos (or one folder of photos
with no sub-folders) is taken as a single KOL only when that KOL's name is
clear from a folder; loose photos at the top level are refused with a sentence
saying how to lay the zip out.
"""
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from . import frames, images
from .errors import UserError
from .pool import display_name

#: Most members a training zip may hold.
MAX_MEMBERS = 20_000
#: Most bytes a training zip may expand to.
MAX_TOTAL = 4 * 1024 ** 3
#: Most a single member may expand, relative to its compressed size (for members over 1 MiB).
MAX_RATIO = 100
RATIO_MIN_SIZE = 1024 * 1024
#: Photos narrower or lower than this (pixels) cannot hold a face that detection would find.
MIN_PHOTO_SIDE = 20

JUNK_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}
ARCHIVE_EXTENSIONS = (".zip", ".rar", ".7z", ".tar", ".gz", ".tgz", ".bz2", ".xz")

KINDS = {
    "image": (images.IMAGE_EXTENSIONS, "photo", "photos"),
    "video": (frames.VIDEO_EXTENSIONS, "video", "videos"),
}


class ArchiveError(UserError):
    """The zip cannot be used; the message says why and how to fix it."""


@dataclass
class Extracted:
    """What a training zip held.

    kols: ``[{"name": display name, "files": [{"path": str (absolute, on disk),
        "name": original name inside the zip}]}]`` in the order of the names.
    skipped: ``[{"name": member name, "reason": sentence}]`` for files not used.
    """

    kols: list = field(default_factory=list)
    skipped: list = field(default_factory=list)


def _member_name(info):
    """The member's name as its creator meant it (UTF-8 even without the zip's UTF-8 flag)."""
    name = info.filename
    if not info.flag_bits & 0x800:
        try:
            name = name.encode("cp437").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    return name


def _is_symlink(info):
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def _parts(name):
    """Split a member name into safe parts, or raise for absolute / parent-relative names."""
    raw = name.replace("\\", "/")
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise ArchiveError(f"The zip holds a file with an absolute path ('{name}'); "
                           "zip the KOL folders themselves, with relative paths.")
    parts = [p for p in PurePosixPath(raw).parts if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"The zip holds a file whose path climbs out of the zip ('{name}'); "
                           "it was refused. Zip the KOL folders themselves.")
    return parts


def _is_junk(parts):
    return any(p == "__MACOSX" or p.lower() in JUNK_NAMES or p.startswith("._") for p in parts)


def _open_zip(path):
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ArchiveError("The file is not a zip archive (or it is damaged). "
                           "Create it with your system's 'Compress' / 'Send to zip' command.", 400) from None
    except OSError as exc:
        raise ArchiveError(f"The zip could not be read ({exc}).", 400) from None


def _layout(entries, kind):
    """Group usable entries ``(parts, info)`` into ``{kol folder name: [(parts, info)]}``; list skipped ones."""
    exts, _, plural = KINDS[kind]
    skipped = []
    tops = {parts[0] for parts, _ in entries if len(parts) > 1}
    loose = [(p, i) for p, i in entries if len(p) == 1]
    depth = 0
    # One wrapper folder around the KOL folders: look inside it.
    if len(tops) == 1 and not loose:
        inner = [(p[1:], i) for p, i in entries]
        if any(len(p) > 1 for p, _ in inner):
            entries, depth = inner, 1
            loose = [(p, i) for p, i in entries if len(p) == 1]
    media = [(p, i) for p, i in entries if p[-1].lower().endswith(exts)]
    groups = {}
    for parts, info in entries:
        if not parts[-1].lower().endswith(exts):
            skipped.append({"name": "/".join(parts), "reason": f"not a {KINDS[kind][1]} ({', '.join(exts)})"})
            continue
        if len(parts) == 1:
            continue
        groups.setdefault(parts[0], []).append((parts, info))
    loose_media = [(p, i) for p, i in loose if p[-1].lower().endswith(exts)]
    if loose_media and not groups and depth == 0:
        raise ArchiveError(
            f"The {plural} are at the top level of the zip, so there is no KOL name for them. "
            f"Put each KOL's {plural} in a folder named after the KOL (for example "
            f"'Jane Doe/1.jpg') and zip those folders.")
    for parts, _ in loose_media:
        skipped.append({"name": "/".join(parts), "reason": "not inside a KOL folder"})
    if not media:
        raise ArchiveError(f"The zip holds no {KINDS[kind][1]} this tool can use "
                           f"({', '.join(exts)}). See the instructions page for the layout."
                           + other_kind_hint([p[-1] for p, _ in entries], kind))
    return groups, skipped


def _copy_member(zf, info, target, budget, max_ratio):
    """Stream one member to ``target``; returns bytes written. Stops at the size and ratio caps."""
    limit = info.file_size
    if info.file_size > RATIO_MIN_SIZE and info.file_size > max_ratio * max(info.compress_size, 1):
        raise ArchiveError(f"'{_member_name(info)}' expands {info.file_size // max(info.compress_size, 1)} "
                           "times when unzipped: the zip looks like a zip bomb and was refused.", 413)
    written = 0
    with zf.open(info) as src, open(target, "wb") as dst:
        while True:
            chunk = src.read(1024 * 1024)
            if not chunk:
                break
            written += len(chunk)
            if written > limit or written > budget:
                raise ArchiveError("The zip expands to more data than it declares or than this tool "
                                   "accepts: it was refused as a possible zip bomb.", 413)
            if written > RATIO_MIN_SIZE and written > max_ratio * max(info.compress_size, 1):
                raise ArchiveError(f"'{_member_name(info)}' expands too much when unzipped: "
                                   "the zip looks like a zip bomb and was refused.", 413)
            dst.write(chunk)
    return written


def extract_training_zip(zip_path, dest, kind="image", max_members=MAX_MEMBERS, max_total=MAX_TOTAL,
                         max_ratio=MAX_RATIO):
    """Check a training zip and extract its usable files under ``dest``.

    zip_path: the uploaded file. dest: a folder that must not exist yet; it is
        created, and removed again when anything is refused.
    kind: ``"image"`` (photos) or ``"video"``.

    Returns :class:`Extracted`. Raises :class:`ArchiveError` (4xx) with a sentence
    for anything unusable; nothing is left behind in that case.
    Photos are checked by reading their header, videos by decoding their first
    frame; files that fail are skipped and listed, not fatal.
    """
    if kind not in KINDS:
        raise ValueError(kind)
    dest = Path(dest)
    dest.mkdir(parents=True)
    try:
        return _extract(zip_path, dest, kind, max_members, max_total, max_ratio)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _copy_checked(zf, info, target, budget, max_ratio, kind, parts):
    """Copy one member to ``target`` (at most ``budget`` bytes, :func:`_copy_member`) and check it is
    a readable file of ``kind``. ``parts``: the member's path in the zip, for messages.

    Returns ``(bytes written, problem)``: ``problem`` is a sentence (the file is then removed) or
    ``None``. A member the zip cannot give back is a 400 for the whole upload.
    """
    try:
        used = _copy_member(zf, info, target, budget, max_ratio)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise ArchiveError(f"The zip is damaged or uses an unsupported format at "
                           f"'{'/'.join(parts)}' ({exc}). Create it again and upload it.", 400) from None
    problem = _check_file(target, kind, parts[-1])
    if problem:
        target.unlink()
    return used, problem


def _checked_infos(zf, max_members, max_total):
    """The zip's members, after the two checks made before anything is read: how many entries and
    how much data they declare (413 with the limit and the zip's own number when over)."""
    infos = zf.infolist()
    if len(infos) > max_members:
        raise ArchiveError(f"The zip holds too many entries: at most {max_members} are accepted, yours has "
                           f"{len(infos)}. Split it into several zips.", 413)
    declared = sum(i.file_size for i in infos)
    if declared > max_total:
        raise ArchiveError(f"The zip expands to too much data: at most {max_total // 1024 ** 2} MiB are "
                           f"accepted, yours is {declared // 1024 ** 2} MiB. Split it into several zips.", 413)
    return infos


def _extract(zip_path, dest, kind, max_members, max_total, max_ratio):
    _, singular, plural = KINDS[kind]
    with _open_zip(zip_path) as zf:
        infos = _checked_infos(zf, max_members, max_total)
        entries = []
        for info in infos:
            name = _member_name(info)
            parts = _parts(name)
            if not parts or _is_junk(parts):
                continue
            if _is_symlink(info):
                raise ArchiveError(f"The zip holds a symbolic link ('{name}'); links are refused. "
                                   "Zip the photos themselves.")
            if info.is_dir():
                continue
            if info.flag_bits & 0x1:
                raise ArchiveError("The zip is protected by a password, which this tool cannot open. "
                                   "Zip the KOL folders again without a password.")
            if parts[-1].lower().endswith(ARCHIVE_EXTENSIONS):
                raise ArchiveError(f"The zip holds another archive ('{name}'). Unzip it and put its "
                                   "KOL folders directly into one zip.")
            entries.append((parts, info))
        if not entries:
            raise ArchiveError("The zip is empty.")
        groups, skipped = _layout(entries, kind)
        out = Extracted(skipped=skipped)
        budget = max_total
        names = {}
        for folder in sorted(groups):
            try:
                name = display_name(folder)
            except UserError:
                for parts, _ in groups[folder]:
                    skipped.append({"name": "/".join(parts), "reason": "the folder name is not usable as a KOL name"})
                continue
            if name in names:  # two folders that differ only in invisible characters
                kol = names[name]
            else:
                kol = {"name": name, "files": []}
                names[name] = kol
                out.kols.append(kol)
            folder_dir = dest / str(out.kols.index(kol))
            folder_dir.mkdir(exist_ok=True)
            for parts, info in groups[folder]:
                ext = Path(parts[-1]).suffix.lower()
                target = folder_dir / f"{len(kol['files']):05d}{ext}"
                used, problem = _copy_checked(zf, info, target, budget, max_ratio, kind, parts)
                budget -= used
                if problem:
                    skipped.append({"name": "/".join(parts), "reason": problem})
                    continue
                kol["files"].append({"path": str(target), "name": "/".join(parts[1:]) or parts[-1]})
        out.kols = [k for k in out.kols if k["files"]]
        if not out.kols:
            raise ArchiveError(f"No {singular} in the zip could be read, so there is nothing to train on"
                               + (f" ({skipped[0]['name']}: {skipped[0]['reason']})" if skipped else "") + ".")
        return out


def _check_file(path, kind, name):
    """``None`` when the file is usable, else a short reason."""
    if kind == "image":
        from PIL import Image

        try:
            with Image.open(path) as im:
                width, height = im.size
                im.verify()
        except Image.DecompressionBombError:
            return f"declares too many pixels (at most {images.MAX_PIXELS // 1_000_000} megapixels)"
        except Exception:  # noqa: BLE001 - any decoder failure means the same to the user
            return "not a readable photo"
        if width * height > images.MAX_PIXELS:
            return (f"too large: at most {images.MAX_PIXELS // 1_000_000} megapixels, yours is {width}x{height} "
                    f"= {width * height / 1e6:.0f} megapixels")
        if min(width, height) < MIN_PHOTO_SIDE:
            return f"only {width}x{height} pixels: too small to hold a face"
        return None
    try:
        frames.probe(path, name=name)
    except UserError as exc:
        return exc.message
    return None


def other_kind_hint(names, kind):
    """A sentence pointing to the right form when ``names`` (file names of a zip or an
    upload) hold the other kind of media than ``kind``, else ``""``.

    ``kind="image"`` with only videos: "use the video form"; and the other way round.
    """
    other = "video" if kind == "image" else "image"
    exts = KINDS[other][0]
    if any(str(n).lower().endswith(exts) for n in names):
        if other == "video":
            return (" Videos are not read here: use the video form instead (Train → from videos, "
                    "/trainByVideo; or Video, to recognise the faces in one video).")
        return (" Photos are not read here: use the photo form instead (Train → from photos, /trainByImage; "
                "or Recognise, for photos to name).")
    return ""


def extract_media_zip(zip_path, dest, kind="image", max_members=MAX_MEMBERS, max_total=MAX_TOTAL,
                      max_ratio=MAX_RATIO):
    """Extract every photo (or video) of a zip, whatever its folders, under ``dest``.

    For uploads where the folders carry no KOL names: a batch of photos to recognise,
    or more photos for one KOL. The same refusals as :func:`extract_training_zip`
    (unsafe paths, links, bombs, nested archives, passwords); ``dest`` must not exist
    and is removed again when the zip is refused.

    Returns ``(files, skipped)``: ``files`` ``[{"path": str on disk, "name": path inside the zip}]``
    in the zip's order, ``skipped`` ``[{"name", "reason"}]``. Raises :class:`ArchiveError`
    when nothing usable is inside (pointing to the other form when the zip holds the
    other kind of media).
    """
    if kind not in KINDS:
        raise ValueError(kind)
    exts, singular, plural = KINDS[kind]
    dest = Path(dest)
    dest.mkdir(parents=True)
    try:
        files, skipped = [], []
        with _open_zip(zip_path) as zf:
            infos = _checked_infos(zf, max_members, max_total)
            budget, names = max_total, []
            for info in infos:
                name = _member_name(info)
                parts = _parts(name)
                if not parts or _is_junk(parts) or info.is_dir():
                    continue
                if _is_symlink(info):
                    raise ArchiveError(f"The zip holds a symbolic link ('{name}'); links are refused.")
                if info.flag_bits & 0x1:
                    raise ArchiveError("The zip is protected by a password, which this tool cannot open. "
                                       "Zip the files again without a password.")
                if parts[-1].lower().endswith(ARCHIVE_EXTENSIONS):
                    raise ArchiveError(f"The zip holds another archive ('{name}'). Unzip it and put its "
                                       f"{plural} directly into one zip.")
                names.append(parts[-1])
                shown = "/".join(parts)
                if not parts[-1].lower().endswith(exts):
                    skipped.append({"name": shown, "reason": f"not a {singular} ({', '.join(exts)})"})
                    continue
                target = dest / f"{len(files):05d}{Path(parts[-1]).suffix.lower()}"
                used, problem = _copy_checked(zf, info, target, budget, max_ratio, kind, parts)
                budget -= used
                if problem:
                    skipped.append({"name": shown, "reason": problem})
                    continue
                files.append({"path": str(target), "name": shown})
        if not files:
            raise ArchiveError(f"The zip holds no {singular} this tool can use ({', '.join(exts)})."
                               + other_kind_hint(names, kind), 415 if names else 400)
        return files, skipped
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
