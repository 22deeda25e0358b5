"""A training zip, one folder per KOL: which folder names each KOL, the sentences that show the
expected layout when the folders do not say, and its extraction into one folder per KOL.

:func:`extract_training_zip` reads a zip that a person uploaded and writes the usable photos (or
videos) as ``<dest>/<kol index>/<n><ext>``, with every refusal and limit of
:mod:`shared.faces.archive` (unsafe names, links, bombs, nested archives, the upload's limits).

Layout (:func:`kol_groups`): a photo's KOL is the folder holding it (``Name of KOL/photo.jpg``), or
the folder above when that one has a container name such as ``photos`` (:data:`CONTAINER_NAMES`:
``Jane Doe/photos/1.jpg`` is Jane Doe's). Folders that every KOL folder sits in are wrappers
(``Export/2024/Jane Doe/1.jpg``); sub-folders of a KOL folder that holds photos itself belong to
that KOL (``Jane Doe/stage/2.jpg``). One folder of photos is a single KOL. Refused with a sentence
showing the expected layout (:func:`ambiguous`): only loose photos (no KOL name), KOL folders at
different depths (``A/1.jpg`` beside ``Actors/B/2.jpg``), and two folders in different places that
would give the same KOL name (``Jane/2024/`` and ``Bob/2024/``). Loose photos beside KOL folders
are skipped and listed.

Names: a folder's name is kept whole as the KOL's display name (``AC\\DC``, ``R&B <Star>``: a zip whose
names use ``/`` holds ``\\`` as a character); a ``/`` always separates two folders, so where a name
is not its folder's (a wrapper folder, a name cleaned or shortened) :attr:`Extracted.notes` says
what it became and why, for the job page.
"""
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from shared.core.errors import UserError
from shared.core.names import display_name
from shared.faces.archive import (ARCHIVE_EXTENSIONS, KINDS, MAX_RATIO, ArchiveError, checked_infos, copy_checked,
                                  is_junk, is_symlink, member_name, member_parts, open_zip, other_kind_hint, size_of,
                                  upload_allowance)

#: Folder names that hold a KOL's photos without naming the KOL (compared in lower case): a
#: photo in ``Jane Doe/photos/`` belongs to "Jane Doe". Kept small: a real name never equals one.
CONTAINER_NAMES = {"photos", "photo", "pictures", "pics", "images", "image", "img", "imgs", "videos", "video",
                   "照片", "图片", "相片", "写真", "사진"}


@dataclass
class Extracted:
    """What a training zip held.

    kols: ``[{"name": display name, "files": [{"path": str (absolute, on disk),
        "name": original name inside the zip}]}]`` in the order of the names.
    skipped: ``[{"name": member name, "reason": sentence}]`` for files not used.
    notes: sentences saying where a KOL's name is not its folder's name as the zip holds it (folders
        taken as wrappers, a name cleaned or shortened), for the job page.
    """

    kols: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def kol_path(folders):
    """The folders up to and including the one that names the KOL of a photo in ``folders``:
    the folder directly holding it, or the nearest one above it whose name is not a
    :data:`CONTAINER_NAMES` one (``Al Gore/photos/1.jpg`` -> ``("Al Gore",)``). Empty when none."""
    folders = tuple(folders)
    while folders and folders[-1].strip().lower() in CONTAINER_NAMES:
        folders = folders[:-1]
    return folders


def common_prefix(paths):
    """The leading folders that every path of ``paths`` (tuples of folder names) shares."""
    first = min(paths, key=len)
    for n, name in enumerate(first):
        if any(p[n] != name for p in paths):
            return first[:n]
    return first


def ambiguous(sentence):
    """The refusal for a zip whose folders do not say which KOL each photo belongs to."""
    return ArchiveError(f"{sentence} Lay the zip out as one folder per KOL, named after the KOL and holding that "
                        "KOL's photos: 'Name of KOL/photo.jpg' (for example 'Jane Doe/1.jpg' and 'John Roe/1.jpg'), "
                        "then zip those folders.")


def kol_groups(entries, kind):
    """Group usable entries ``(parts, info)`` into ``{kol folder path: [(parts, info)]}`` and list skipped ones.

    A photo's KOL folder is the folder holding it (:func:`kol_path`); folders shared by all
    photos (wrappers such as ``Export/2024/``) are never KOL names unless every photo is in the
    same one, and a KOL folder inside another KOL folder belongs to the outer one. Returns
    ``(groups, skipped, prefix)``: the group keys and skipped names are relative to ``prefix``,
    the count of wrapper folders. Raises :class:`ArchiveError` when the layout is ambiguous
    (KOL folders at different depths).
    """
    exts, singular, plural = KINDS[kind]
    media = [(p, i) for p, i in entries if p[-1].lower().endswith(exts)]
    if not media:
        raise ArchiveError(f"The zip holds no {singular} this tool can use "
                           f"({', '.join(exts)}). See the instructions page for the layout."
                           + other_kind_hint([p[-1] for p, _ in entries], kind))
    found = [(kol_path(p[:-1]), p, i) for p, i in media]
    named = {kol for kol, _, _ in found if kol}
    if not named:
        raise ArchiveError(
            f"The {plural} are at the top level of the zip, so there is no KOL name for them. "
            f"Put each KOL's {plural} in a folder named after the KOL (for example "
            f"'Jane Doe/1.jpg') and zip those folders.")
    # wrappers: the folders all KOL folders share (but the KOL folder itself when there is only one)
    prefix = len(common_prefix(named)) - (len(named) == 1)

    def shown(parts):
        """A member's name below the wrappers, as the person sees it."""
        return "/".join(parts[min(prefix, len(parts) - 1):])

    kols = {kol for kol in named if len(kol) > prefix}
    outer = {kol: min((k for k in kols if kol[:len(k)] == k), key=len) for kol in kols}
    depths = sorted({len(k) for k in outer.values()})
    if len(depths) > 1:
        deep = next(k for k in outer.values() if len(k) == depths[-1])
        high = next(k for k in outer.values() if len(k) == depths[0])
        raise ambiguous(f"The {plural} lie at different depths of the zip ('{'/'.join(high[prefix:])}/' "
                        f"and '{'/'.join(deep[prefix:])}/'), so it is not clear which folders are the KOLs. "
                        f"If '{'/'.join(deep[prefix:])}' is one KOL's name: a '/' in a zip path always separates "
                        "two folders, so a folder name cannot hold one; name the folder without it and rename "
                        "the KOL after the import.")
    groups, skipped = {}, []
    for parts, _ in entries:
        if not parts[-1].lower().endswith(exts):
            skipped.append({"name": shown(parts), "reason": f"not a {singular} ({', '.join(exts)})"})
    for kol, parts, info in found:
        if len(kol) <= prefix:
            skipped.append({"name": shown(parts), "reason": "not inside a KOL folder"})
        else:
            groups.setdefault(outer[kol], []).append((parts, info))
    return groups, skipped, prefix


def wrapper_notes(groups, prefix, plural):
    """The note for folders taken as wrappers around the KOL folders (``prefix`` of them, the same in
    every key of ``groups``): ``[]`` when there are none, else one sentence naming them."""
    if not prefix or not groups:
        return []
    wrapper = "/".join(next(iter(groups))[:prefix])
    kols = sorted(key[prefix] for key in groups)
    if len(kols) > 1:
        return [f"'{wrapper}/' holds every folder of {plural}, so it was taken as a folder around the KOLs, "
                f"not as a KOL: the KOLs are the {len(kols)} folders inside it."]
    return [f"'{wrapper}/' holds the folder of {plural}, so it was taken as a folder around the KOL, not as part "
            f"of the name: the KOL is '{kols[0]}'. A '/' in a zip path always separates two folders, so a KOL "
            f"name cannot hold one; if the name is '{wrapper}/{kols[0]}', rename the KOL after the import."]


def name_note(folder, name):
    """The note for a KOL folder whose name had to change to become a display name (:func:`display_name`)."""
    if len(folder.strip()) > len(name) and folder.strip().startswith(name):
        return f"The folder name '{folder}' is longer than a KOL name may be; the KOL is '{name}'."
    return f"The folder name '{folder}' held invisible characters or extra spaces; the KOL is '{name}'."


def extract_training_zip(zip_path, dest, kind="image", max_members=None, max_total=None, max_ratio=MAX_RATIO):
    """Check a training zip and extract its usable files under ``dest``.

    zip_path: the uploaded file. dest: a folder that must not exist yet; it is
        created, and removed again when anything is refused.
    kind: ``"image"`` (photos) or ``"video"``. max_members, max_total: most files and bytes
        it may unpack to; ``None``: the upload's settings (:func:`upload_allowance`).

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
        allowance = upload_allowance(max_members, max_total)
        out = _extract(zip_path, dest, kind, allowance, max_ratio)
        allowance.take(sum(len(k["files"]) for k in out.kols), size_of(dest))
        return out
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _extract(zip_path, dest, kind, allowance, max_ratio):
    _, singular, plural = KINDS[kind]
    with open_zip(zip_path) as zf:
        infos = checked_infos(zf, os.path.getsize(zip_path), allowance, max_ratio)
        # a zip whose names use '/' keeps a '\' as part of a name (AC\DC); one without any '/' was
        # written by a Windows tool that separates folders with '\'
        backslash_separates = not any("/" in member_name(info) for info in infos)
        entries = []
        for info in infos:
            name = member_name(info)
            parts = member_parts(name, backslash_separates)
            if not parts or is_junk(parts):
                continue
            if is_symlink(info):
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
        groups, skipped, prefix = kol_groups(entries, kind)
        out = Extracted(skipped=skipped, notes=wrapper_notes(groups, prefix, plural))
        budget = allowance.bytes_left()
        names = {}  # display name -> (kol, its folder path)
        for folder in sorted(groups, key=lambda path: (path[-1], path)):
            try:
                name = display_name(folder[-1])
            except UserError:
                for parts, _ in groups[folder]:
                    skipped.append({"name": "/".join(parts[prefix:]),
                                    "reason": "the folder name is not usable as a KOL name"})
                continue
            if name in names and names[name][1][:-1] != folder[:-1]:
                raise ambiguous(f"The folders '{'/'.join(names[name][1][prefix:])}/' and "
                                f"'{'/'.join(folder[prefix:])}/' would both be the KOL '{name}', "
                                "so it is not clear which folders are the KOLs.")
            if name != folder[-1].strip():
                out.notes.append(name_note(folder[-1], name))
            if name in names:  # two sibling folders that differ only in invisible characters
                kol = names[name][0]
            else:
                kol = {"name": name, "files": []}
                names[name] = (kol, folder)
                out.kols.append(kol)
            folder_dir = dest / str(out.kols.index(kol))
            folder_dir.mkdir(exist_ok=True)
            for parts, info in groups[folder]:
                ext = Path(parts[-1]).suffix.lower()
                target = folder_dir / f"{len(kol['files']):05d}{ext}"
                used, problem = copy_checked(zf, info, target, budget, max_ratio, kind, parts, allowance)
                budget -= used
                if problem:
                    skipped.append({"name": "/".join(parts[prefix:]), "reason": problem})
                    continue
                kol["files"].append({"path": str(target), "name": "/".join(parts[len(folder):])})
        out.kols = [k for k in out.kols if k["files"]]
        if not out.kols:
            raise ArchiveError(f"No {singular} in the zip could be read, so there is nothing to train on"
                               + (f" ({skipped[0]['name']}: {skipped[0]['reason']})" if skipped else "") + ".")
        return out
