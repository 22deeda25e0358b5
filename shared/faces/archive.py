"""Safe reading of an uploaded zip, and the limits of an upload: nothing a member says can harm the disk.

No member's name is ever used as a path: files are written under a destination folder as
``<n><ext>`` and the original names are only recorded as text. Everything hostile is refused with
an :class:`ArchiveError` whose message says what is wrong and how to fix it, and the destination
is left empty (removed):

- not a zip at all (or damaged), an empty zip, a zip with no usable file;
- members with absolute paths, drive letters or ``..`` parts (:func:`member_parts`), symbolic links;
- zip bombs and zips that would fill the disk: more files than the setting
  ``UPLOAD_MAX_FILES``, more bytes once uncompressed than ``UPLOAD_MAX_UNPACKED_BYTES``
  (both from the zip's directory first, :func:`checked_infos`, then the bytes counted again while
  decompressing, since the directory can lie, :func:`copy_checked`; all zips of one request count
  together, :func:`upload_allowance`), a member or a whole zip that expands more than ``max_ratio`` times;
- nested archives (a zip inside the zip), password-protected members.

Junk (``__MACOSX/``, ``.DS_Store``, ``Thumbs.db``, hidden ``._`` files) is ignored silently; other
files that are not photos/videos are skipped and listed; each copied file is checked to be a
readable photo (its header) or video (its first frame), :func:`check_file`.

:func:`extract_media_zip` extracts every photo (or video) of a zip whatever its folders; a training
zip, one folder per KOL, is :func:`shared.faces.layout.extract_training_zip`, built on the pieces here.
"""
import os
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from flask import current_app, g, has_app_context, has_request_context
from PIL import Image

from shared.core.config import DEFAULTS
from shared.core.errors import UserError
from shared.core.names import human_size
from shared.faces import frames, images

#: Most a single member, and the whole zip, may expand relative to its compressed size
#: (for members and zips that expand to over 1 MiB).
MAX_RATIO = 100
RATIO_MIN_SIZE = 1024 * 1024
#: Photos narrower or lower than this (pixels) cannot hold a face that detection would find.
MIN_PHOTO_SIDE = 20

JUNK_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}
ARCHIVE_EXTENSIONS = (".zip", ".rar", ".7z", ".tar", ".gz", ".tgz", ".bz2", ".xz")

#: Per kind of media: (file extensions, the word for one, the word for several).
KINDS = {
    "image": (images.IMAGE_EXTENSIONS, "photo", "photos"),
    "video": (frames.VIDEO_EXTENSIONS, "video", "videos"),
}


class ArchiveError(UserError):
    """The zip cannot be used; the message says why and how to fix it."""


@dataclass
class Allowance:
    """What one upload may still unpack: the settings ``UPLOAD_MAX_FILES`` and ``UPLOAD_MAX_UNPACKED_BYTES``.

    max_files: most files; max_bytes: most bytes once uncompressed; files, bytes: what the
    upload's zips extracted so far (a batch may send several zips in one request).
    """

    max_files: int
    max_bytes: int
    files: int = 0
    bytes: int = 0

    def bytes_left(self):
        """Bytes the next zip may still unpack to."""
        return self.max_bytes - self.bytes

    def check(self, files, size):
        """413 when ``files`` more files or ``size`` more bytes (as a zip's directory declares them)
        would go over a limit; the sentence names the limit, the setting and the upload's number."""
        earlier = " with the zips before it in this upload" if self.files or self.bytes else ""
        if self.files + files > self.max_files:
            raise ArchiveError(f"The zip holds too many files: at most {self.max_files} are accepted in one upload "
                               f"(setting UPLOAD_MAX_FILES), yours has {self.files + files}{earlier}. "
                               "Split it into several zips.", 413)
        if self.bytes + size > self.max_bytes:
            raise self.too_much(self.bytes + size, earlier)

    def too_much(self, total, earlier=""):
        """The 413 for an upload that unpacks to ``total`` bytes, over ``UPLOAD_MAX_UNPACKED_BYTES``
        (also raised while extracting, when a zip expands to more than its directory said)."""
        shown = human_size(total)
        if shown == human_size(self.max_bytes):
            shown = f"{total:,} bytes"
        return ArchiveError(f"The zip unpacks to too much data: at most {human_size(self.max_bytes)} are accepted "
                            f"in one upload (setting UPLOAD_MAX_UNPACKED_BYTES), yours is {shown}{earlier}. "
                            "Split it into several zips.", 413)

    def take(self, files, size):
        """Count a zip's extracted ``files`` (and their ``size`` in bytes) against the upload."""
        self.files += files
        self.bytes += size


def upload_allowance(max_files=None, max_bytes=None):
    """The :class:`Allowance` for the next zip of the current upload.

    The limits not given come from the current app's settings ``UPLOAD_MAX_FILES`` and
    ``UPLOAD_MAX_UNPACKED_BYTES`` (shared/core/config.py's ``DEFAULTS`` outside an app). With no limit
    given, inside a request, all zips of that request share one allowance (kept in ``flask.g``),
    so a batch of several zips stays under the limits together.
    """
    config = current_app.config if has_app_context() else DEFAULTS
    limits = (config["UPLOAD_MAX_FILES"] if max_files is None else max_files,
              config["UPLOAD_MAX_UNPACKED_BYTES"] if max_bytes is None else max_bytes)
    if max_files is not None or max_bytes is not None or not has_request_context():
        return Allowance(*limits)
    if "upload_allowance" not in g:
        g.upload_allowance = Allowance(*limits)
    return g.upload_allowance


def size_of(folder):
    """Bytes of the files under ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def member_name(info):
    """The member's name as its creator meant it (UTF-8 even without the zip's UTF-8 flag)."""
    name = info.filename
    if not info.flag_bits & 0x800:
        try:
            name = name.encode("cp437").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    return name


def is_symlink(info):
    """True for a member that is a symbolic link (made on Unix with the link's mode bits)."""
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def member_parts(name, backslash_separates=True):
    """Split a member name into safe parts, or raise for absolute / parent-relative names.

    backslash_separates: ``\\`` separates folders too (zips written by some Windows tools); with
    ``False`` (a zip whose names use ``/``) it is a character of the name (``AC\\DC``). Either way a
    name that would climb out or be absolute when read with either separator is refused."""
    raw = name.replace("\\", "/")
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise ArchiveError(f"The zip holds a file with an absolute path ('{name}'); "
                           "zip the KOL folders themselves, with relative paths.")
    parts = [p for p in PurePosixPath(raw).parts if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"The zip holds a file whose path climbs out of the zip ('{name}'); "
                           "it was refused. Zip the KOL folders themselves.")
    if not backslash_separates:
        parts = [p for p in name.split("/") if p not in ("", ".")]
    return parts


def is_junk(parts):
    """True for the junk of zipping tools (``__MACOSX/``, ``.DS_Store``, ``Thumbs.db``, ``._`` files)."""
    return any(p == "__MACOSX" or p.lower() in JUNK_NAMES or p.startswith("._") for p in parts)


def open_zip(path):
    """The uploaded file as a ``zipfile.ZipFile``; 400 with a sentence when it is not a zip or cannot be read."""
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ArchiveError("The file is not a zip archive (or it is damaged). "
                           "Create it with your system's 'Compress' / 'Send to zip' command.", 400) from None
    except OSError as exc:
        raise ArchiveError(f"The zip could not be read ({exc}).", 400) from None


def _copy_member(zf, info, target, budget, max_ratio, budget_error):
    """Stream one member to ``target``; returns bytes written. Stops at the size and ratio caps:
    over ``budget`` bytes it raises ``budget_error.too_much(the upload's bytes so far)``
    (``budget_error``: the upload's :class:`Allowance`)."""
    limit = info.file_size
    if info.file_size > RATIO_MIN_SIZE and info.file_size > max_ratio * max(info.compress_size, 1):
        raise ArchiveError(f"'{member_name(info)}' expands {info.file_size // max(info.compress_size, 1)} "
                           "times when unzipped: the zip looks like a zip bomb and was refused.", 413)
    written = 0
    with zf.open(info) as src, open(target, "wb") as dst:
        while True:
            chunk = src.read(1024 * 1024)
            if not chunk:
                break
            written += len(chunk)
            if written > limit:
                raise ArchiveError("The zip expands to more data than it declares: it was refused as "
                                   "a possible zip bomb.", 413)
            if written > budget:
                raise budget_error.too_much(budget_error.max_bytes + written - budget)
            if written > RATIO_MIN_SIZE and written > max_ratio * max(info.compress_size, 1):
                raise ArchiveError(f"'{member_name(info)}' expands too much when unzipped: "
                                   "the zip looks like a zip bomb and was refused.", 413)
            dst.write(chunk)
    return written


def copy_checked(zf, info, target, budget, max_ratio, kind, parts, allowance):
    """Copy one member to ``target`` (at most ``budget`` bytes, :func:`_copy_member`; ``allowance``
    words the refusal) and check it is a readable file of ``kind``. ``parts``: the member's path
    in the zip, for messages.

    Returns ``(bytes written, problem)``: ``problem`` is a sentence (the file is then removed) or
    ``None``. A member the zip cannot give back is a 400 for the whole upload.
    """
    try:
        used = _copy_member(zf, info, target, budget, max_ratio, allowance)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise ArchiveError(f"The zip is damaged or uses an unsupported format at "
                           f"'{'/'.join(parts)}' ({exc}). Create it again and upload it.", 400) from None
    problem = check_file(target, kind, parts[-1])
    if problem:
        target.unlink()
    return used, problem


def checked_infos(zf, zip_size, allowance, max_ratio):
    """The zip's members, after the checks made before anything is read, from the zip's directory:
    how many files (junk such as ``__MACOSX/`` not counted) and how many bytes they declare against
    ``allowance`` (:meth:`Allowance.check`), and how much the whole zip expands (at most
    ``max_ratio`` times its ``zip_size`` in bytes)."""
    infos = zf.infolist()
    declared = sum(i.file_size for i in infos)
    files = [i for i in infos if not i.is_dir() and not is_junk(i.filename.replace("\\", "/").split("/"))]
    allowance.check(len(files), declared)
    if declared > RATIO_MIN_SIZE and declared > max_ratio * max(zip_size, 1):
        raise ArchiveError(f"The zip expands {declared // max(zip_size, 1)} times when unzipped "
                           f"({human_size(zip_size)} to {human_size(declared)}): it looks like a zip bomb "
                           "and was refused.", 413)
    return infos


def check_file(path, kind, name):
    """``None`` when the file is usable, else a short reason."""
    if kind == "image":
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


def extract_media_zip(zip_path, dest, kind="image", max_members=None, max_total=None, max_ratio=MAX_RATIO):
    """Extract every photo (or video) of a zip, whatever its folders, under ``dest``.

    For uploads where the folders carry no KOL names: a batch of photos to recognise,
    or more photos for one KOL. The same refusals as :func:`extract_training_zip`
    (unsafe paths, links, bombs, nested archives, passwords) and the same limits
    (``max_members``, ``max_total``: :func:`extract_training_zip`); ``dest`` must not exist
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
        with open_zip(zip_path) as zf:
            allowance = upload_allowance(max_members, max_total)
            infos = checked_infos(zf, os.path.getsize(zip_path), allowance, max_ratio)
            budget, names = allowance.bytes_left(), []
            for info in infos:
                name = member_name(info)
                parts = member_parts(name)
                if not parts or is_junk(parts) or info.is_dir():
                    continue
                if is_symlink(info):
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
                used, problem = copy_checked(zf, info, target, budget, max_ratio, kind, parts, allowance)
                budget -= used
                if problem:
                    skipped.append({"name": shown, "reason": problem})
                    continue
                files.append({"path": str(target), "name": shown})
        if not files:
            raise ArchiveError(f"The zip holds no {singular} this tool can use ({', '.join(exts)})."
                               + other_kind_hint(names, kind), 415 if names else 400)
        allowance.take(len(files), size_of(dest))
        return files, skipped
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
