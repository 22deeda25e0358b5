"""Stage uploaded photos and zips of photos into a folder: each photo saved on disk, each unusable file named.

Used by a batch of photos to name (:func:`shared.recognition.batch.stage`) and by a KOL's
"add photos" (``main_server/kols.py``); each caller turns the problems into its own sentences.
"""
from dataclasses import dataclass
from pathlib import Path

from werkzeug.utils import secure_filename

from shared.core.errors import UserError
from shared.core.names import upload_name
from shared.faces import archive, images

#: :attr:`Part.problem` values.
EMPTY, NOT_A_PHOTO, BAD_ZIP, NOT_USED = "empty", "not a photo", "bad zip", "not used"


@dataclass(frozen=True)
class Part:
    """One photo of an upload, or one file of it that cannot be used.

    name: the upload part's name as shown (:func:`shared.core.names.upload_name`, ``photo-<n>``
        when it has none; n counts the parts from 1). inner: for a file of a zip, its name inside
        the zip (``name`` is then the zip's), else ``None``. path: where the photo was saved
        (``None`` when nothing usable was saved). problem: ``None`` for a photo, else
        :data:`EMPTY` (a photo of 0 bytes, saved at ``path``), :data:`NOT_A_PHOTO` (not an
        image file name; not saved), :data:`BAD_ZIP` (a zip that could not be used; ``error``
        says why) or :data:`NOT_USED` (a file of a zip that was left out; ``reason`` says why).
    """
    name: str
    inner: str | None = None
    path: Path | None = None
    problem: str | None = None
    error: UserError | None = None
    reason: str | None = None


def stage(uploads, folder):
    """Save ``uploads`` under ``folder`` (made if missing), one part at a time, and yield what each held.

    uploads: werkzeug ``FileStorage`` objects with a non-empty ``filename``, photos or zips of
    photos (:func:`shared.faces.archive.extract_media_zip`: the zips of one request share its
    limits). Yields :class:`Part` in upload order; a zip gives its photos in the zip's order,
    then the files it left out. Files are saved as ``<i>.<ext>`` (``i`` the part's position from 0,
    five digits) and a zip's photos under ``<i>/``; the uploaded zip itself is deleted once
    unpacked. Lazy: a caller that stops at a problem saves nothing more.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, upload in enumerate(uploads):
        name = upload_name(upload.filename, f"photo-{i + 1}")
        if upload.filename.lower().endswith(".zip"):
            raw = folder / f"{i:05d}.zip"
            upload.save(raw)
            upload.close()
            try:
                found, skipped = archive.extract_media_zip(raw, folder / f"{i:05d}", "image")
            except UserError as exc:
                found, skipped, failed = [], [], exc
            else:
                failed = None
            finally:
                raw.unlink(missing_ok=True)
            if failed is not None:
                yield Part(name, problem=BAD_ZIP, error=failed)
            for f in found:
                yield Part(name, inner=f["name"], path=Path(f["path"]))
            for s in skipped:
                yield Part(name, inner=s["name"], problem=NOT_USED, reason=s["reason"])
            continue
        if not images.is_image_name(upload.filename):
            yield Part(name, problem=NOT_A_PHOTO)
            continue
        path = folder / f"{i:05d}{Path(secure_filename(upload.filename)).suffix.lower() or '.img'}"
        upload.save(path)
        upload.close()
        yield Part(name, path=path, problem=EMPTY if path.stat().st_size == 0 else None)
