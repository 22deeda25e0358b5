import io

import numpy as np
import pytest
from PIL import Image

from shared.faces import images
from shared.faces.images import ImageError, load_image

from .conftest import FIVE, needs_data


def _jpeg(rgb, **kw):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", **kw)
    return buf.getvalue()


@needs_data
def test_real_photo_loads_as_rgb_uint8():
    rgb = load_image(FIVE / "madonna" / "train_1.jpg")
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert rgb.flags["C_CONTIGUOUS"]


def test_exif_orientation_is_applied():
    rgb = np.zeros((40, 100, 3), np.uint8)
    rgb[:, :50] = (255, 0, 0)  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img = Image.fromarray(rgb)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    out = load_image(buf.getvalue())
    assert out.shape[:2] == (100, 40)
    assert out[10, 20, 0] > 200 and out[90, 20, 0] < 60  # red half now on top


def test_large_photo_is_scaled_to_bound():
    rgb = np.random.default_rng(0).integers(0, 255, (1200, 3000, 3), dtype=np.uint8)
    out = load_image(_jpeg(rgb), max_side=1000)
    assert max(out.shape[:2]) == 1000
    assert abs(out.shape[1] / out.shape[0] - 2.5) < 0.02


@pytest.mark.parametrize("payload", [b"", b"hello, I am a text file", b"\x89PNG\r\n\x1a\n" + b"\0" * 50])
def test_undecodable_bytes_give_clear_error(payload):
    with pytest.raises(ImageError) as err:
        load_image(payload, name="x.jpg")
    assert "'x.jpg'" in err.value.message and 400 <= err.value.status < 500


def test_truncated_jpeg_gives_clear_error():
    data = _jpeg(np.full((300, 300, 3), 128, np.uint8))
    with pytest.raises(ImageError) as err:
        load_image(data[: len(data) // 2])
    assert "truncated" in err.value.message or "damaged" in err.value.message


def test_decompression_bomb_header_is_refused_without_decoding():
    img = Image.new("1", (20000, 20000))  # 1-bit: tiny file, 400 megapixels declared
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    with pytest.raises(ImageError) as err:
        load_image(buf.getvalue())
    assert err.value.status == 413


def test_grey_and_rgba_become_rgb():
    for mode in ("L", "RGBA", "P"):
        buf = io.BytesIO()
        Image.new(mode, (30, 20)).save(buf, format="PNG")
        assert load_image(buf.getvalue()).shape == (20, 30, 3)


def test_is_image_name():
    assert images.is_image_name("A.JPG") and images.is_image_name("b.webp")
    assert not images.is_image_name("c.txt") and not images.is_image_name("jpg")
