"""Safe image decoding for photos that users upload.

Every photo the tool reads goes through :func:`load_image`: it applies the EXIF
orientation, converts to RGB, scales very large photos down to a bound and turns
every way a file can fail to decode into one :class:`ImageError` with a sentence a
person can act on. Pixel coordinates everywhere else in the tool refer to the
array this function returns.
"""
import io
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from shared.core.errors import UserError

try:  # HEIC/HEIF photos (every iPhone): pillow-heif adds a decoder to Pillow
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_EXTENSIONS = (".heic", ".heif")
except ImportError:  # pragma: no cover - requirements.txt installs it
    HEIF_EXTENSIONS = ()

#: Extensions accepted for photos (lower case, with the dot).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp") + HEIF_EXTENSIONS
#: Longest side, in pixels, of the array handed to face detection; larger photos are scaled down.
MAX_SIDE = 2000
#: Photos with more pixels than this are refused before decoding (decompression bombs).
MAX_PIXELS = 60_000_000


class ImageError(UserError):
    """The file is not an image this tool can read (the message says why)."""


def load_image(source, max_side=MAX_SIDE, name=None):
    """Decode a photo into an RGB array (see :func:`load_photo`, which also gives the
    photo's own size); returns only the array."""
    return load_photo(source, max_side=max_side, name=name)[0]


#: EXIF orientations that turn the picture a quarter turn (width and height swap).
_QUARTER_TURNS = (5, 6, 7, 8)


def load_photo(source, max_side=MAX_SIDE, name=None):
    """Decode a photo into an RGB array.

    source: a filesystem path, raw ``bytes``, or a binary file-like object.
    max_side: longest side in pixels of the result; larger photos are shrunk
        (aspect ratio kept), smaller ones are left alone. ``None`` keeps full size.
    name: the file name to use in error messages.

    Returns ``(rgb, (width, height))``: a C-contiguous ``uint8`` array of shape
    ``(h, w, 3)``, RGB, upright (EXIF orientation applied), and the size of the photo
    as uploaded, upright, in its own pixels (``(w, h)`` when it was not shrunk). Boxes
    found on ``rgb`` are mapped to the photo's pixels with :func:`to_original`.
    Raises :class:`ImageError` for anything that is not a readable image, a
    truncated file, or a picture over :data:`MAX_PIXELS` pixels.
    """
    label = f"'{name}'" if name else "The file"
    # face_recognition flips this process-wide switch on import; truncated uploads must still fail.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                width, height = im.size
                if width * height > MAX_PIXELS:
                    raise ImageError(_too_many_pixels(label, width, height), 413)
                try:
                    turned = im.getexif().get(0x0112) in _QUARTER_TURNS
                except Exception:  # noqa: BLE001 - a broken EXIF block: no rotation, as exif_transpose does
                    turned = False
                original = (height, width) if turned else (width, height)
                if max_side and im.format == "JPEG":
                    im.draft("RGB", (max_side, max_side))  # cheap DCT downscale for huge JPEGs
                im = ImageOps.exif_transpose(im)
                im = im.convert("RGB")
                if max_side and max(im.size) > max_side:
                    im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
                rgb = np.asarray(im, dtype=np.uint8)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{label} does not hold a photo this tool can read: it is another kind of "
                         f"file, perhaps renamed (use {', '.join(IMAGE_EXTENSIONS)} photos).", 415) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(_too_many_pixels(label, *_declared_size(source)), 413) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{label} is damaged or truncated and cannot be decoded ({exc}).", 422) from None
    if rgb.ndim != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ImageError(f"{label} has no pixels.", 422)
    return np.ascontiguousarray(rgb), original


def _too_many_pixels(label, width, height):
    size = f"{width}x{height} = {width * height / 1e6:.0f} megapixels" if width else "larger"
    return (f"{label} is too large to decode safely: photos may have at most {MAX_PIXELS // 1_000_000} "
            f"megapixels, yours is {size}. Save a smaller copy and upload that.")


def _declared_size(source):
    """``(width, height)`` a photo's header declares, ``(0, 0)`` when it cannot be read."""
    try:
        if hasattr(source, "seek"):
            source.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                with Image.open(source) as im:
                    return im.size
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except Exception:  # noqa: BLE001
        return 0, 0


def to_original(box, analysed_shape, original_size):
    """Map a box ``(top, right, bottom, left)`` from the pixels of the analysed array
    (shape ``(h, w, ...)``) to the photo's own pixels (``original_size = (W, H)``).

    Returns integer ``(top, right, bottom, left)`` clipped to the photo
    (``0 <= left < right <= W - 1``...). The identity when no shrinking took place.
    """
    h, w = analysed_shape[:2]
    W, H = original_size
    sx, sy = W / w, H / h
    top, right, bottom, left = box
    return (max(0, min(H - 1, int(round(top * sy)))), max(0, min(W - 1, int(round((right + 1) * sx)) - 1)),
            max(0, min(H - 1, int(round((bottom + 1) * sy)) - 1)), max(0, min(W - 1, int(round(left * sx)))))


def is_image_name(filename):
    """True when ``filename`` ends with one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return str(filename).lower().endswith(IMAGE_EXTENSIONS)


def encode_jpeg(rgb, quality=90):
    """Encode an RGB ``uint8`` array ``(H, W, 3)`` as JPEG bytes."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_png(rgb):
    """Encode an RGB ``uint8`` array ``(H, W, 3)`` as (lossless) PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
