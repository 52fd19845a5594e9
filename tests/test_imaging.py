"""gaudi_engine.imaging: pictures as users bring them -> the working image and the model canvas."""
import io

import numpy as np
import pytest
from PIL import Image

from tests.hostile_files import bad_images, good_images
from gaudi_engine.imaging import (ImageError, Preprocess, WorkingImageCache, canvas, fit_short, load_working,
                                  maps_to_working, model_input, open_image, picture_box, square_window,
                                  to_working, upsample_mask)

PRE = Preprocess(image_size=128)


def test_sizes_keep_the_aspect_with_the_short_side_set_and_the_long_side_capped():
    assert fit_short(2048, 3072, 128) == (128, 192)  # a 2:3 portrait, seen whole
    assert fit_short(3072, 2048, 192) == (288, 192)
    assert fit_short(1, 4000, 128) == (1, 256)  # a strip: capped at 2x, never exploding
    assert PRE.working_size(4000, 6000) == PRE.working_size(400, 600) == (192, 288)
    box = picture_box((2048, 3072), PRE)
    assert (box.height, box.width, box.w, box.h) == (192, 128, 128, 192)


def test_the_working_image_does_not_depend_on_the_pixel_count():
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 255, (60, 40, 3), dtype=np.uint8)).resize((200, 300), Image.NEAREST)
    big = small.resize((2000, 3000), Image.NEAREST)
    a, b = to_working(small, PRE), to_working(big, PRE)
    assert a.pixels.shape == b.pixels.shape == (288, 192, 3) and b.size == (2000, 3000)
    assert np.abs(a.pixels.astype(int) - b.pixels.astype(int)).mean() < 3


def test_canvas_pads_with_the_mean_and_maps_come_back_to_the_picture():
    import torch

    work = to_working(Image.new("RGB", (300, 100), (200, 10, 10)), PRE)
    c, box = canvas(work.pixels, PRE)
    assert c.shape[:2] == (box.height, box.width) and box.height % 32 == 0 and box.width % 32 == 0
    assert min(c.shape[:2]) >= PRE.image_size
    assert (c[0, 0] == PRE.fill).all() and (c[box.y0 + 1, box.x0 + 1] == (200, 10, 10)).all()
    x, box2 = model_input(work, PRE)
    assert box2 == box and float(x[:, 0, 0].abs().max()) < 0.01  # padding is 0 for the model
    grid = torch.zeros(1, box.height // 4, box.width // 4)
    back = maps_to_working(grid, box, work.shape)
    assert tuple(back.shape[-2:]) == work.shape
    assert square_window(c.transpose(2, 0, 1), 128).shape == (3, 128, 128)
    m = np.zeros(work.shape, bool)
    m[:, : work.shape[1] // 2] = True
    full = upsample_mask(m, (3000, 1000))
    assert full.shape == (1000, 3000) and abs(full.mean() - 0.5) < 0.01


def _png(mode, size=(40, 30), **kw) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, kw.pop("color", 0)).save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode,fmt", [("P", "PNG"), ("I;16", "PNG"), ("CMYK", "JPEG"), ("LA", "PNG"),
                                      ("RGBA", "PNG"), ("L", "WEBP")])
def test_odd_modes_become_rgb(tmp_path, mode, fmt):
    p = tmp_path / f"x.{fmt.lower()}"
    p.write_bytes(_png(mode, format=fmt))
    im = open_image(p)
    assert im.mode == "RGB" and im.size == (40, 30)


def test_alpha_goes_over_white_and_sixteen_bit_keeps_its_range(tmp_path):
    p = tmp_path / "a.png"
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(p)
    assert np.asarray(open_image(p)).min() == 255
    p16 = tmp_path / "b.png"
    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(p16)
    assert np.asarray(open_image(p16)).min() == 255


def test_animated_gif_gives_its_first_frame(tmp_path):
    p = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50, loop=0)
    r, g, b = np.asarray(open_image(p))[5, 5]
    assert r > 200 and b < 50


@pytest.mark.parametrize("name", sorted(bad_images()))
def test_bad_files_raise_one_clear_line_naming_the_file(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(bad_images()[name])
    with pytest.raises(ImageError) as err:
        open_image(p)
    msg = str(err.value)
    assert msg.startswith(f"{name}: ") and "\n" not in msg and str(tmp_path) not in msg, msg
    assert {"empty.png": "0 bytes", "page.png": "not a picture", "bomb.png": "decompression bomb",
            "cut.png": "truncated", "cut.jpg": "truncated"}[name] in msg


@pytest.mark.parametrize("name", sorted(good_images()))
def test_every_good_hostile_file_decodes_to_rgb(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(good_images()[name])
    im = open_image(p)
    assert im.mode == "RGB" and min(im.size) >= 1
    work = load_working(p, PRE)
    assert work.pixels.dtype == np.uint8 and work.pixels.shape[2] == 3


def test_a_picture_too_large_to_decode_safely_is_refused_before_decoding(tmp_path):
    p = tmp_path / "huge.png"
    Image.new("L", (5000, 5000)).save(p)
    with pytest.raises(ImageError, match="too large to decode safely"):
        open_image(p, max_pixels=20_000_000)


def test_truncated_jpeg_and_a_strip(tmp_path):
    p = tmp_path / "t.jpg"
    Image.new("RGB", (64, 64), (9, 9, 9)).save(p)
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(ImageError):
        open_image(p)
    strip = tmp_path / "strip.png"
    Image.new("RGB", (1, 4000), (10, 200, 10)).save(strip)
    work = load_working(strip, PRE)
    assert work.size == (1, 4000) and work.pixels.shape[0] == 2 * PRE.working_side
    x, box = model_input(work, PRE)
    assert min(x.shape[-2:]) >= PRE.image_size and box.h == 2 * PRE.image_size


def test_cache_decodes_an_original_once(tmp_path):
    p = tmp_path / "big.jpg"
    Image.new("RGB", (2048, 3072), (1, 2, 3)).save(p, quality=90)
    cache = WorkingImageCache(tmp_path / "cache")
    a = load_working(p, PRE, cache, md5="ab" * 16)
    b = load_working(p, PRE, cache, md5="ab" * 16)
    assert (cache.hits, cache.misses) == (1, 1)
    assert b.size == (2048, 3072) and (a.pixels == b.pixels).all()
    assert len(list((tmp_path / "cache").rglob("*.png"))) == 1
    other = Preprocess(image_size=64)
    load_working(p, other, cache, md5="ab" * 16)  # another geometry is another entry
    assert len(list((tmp_path / "cache").rglob("*.png"))) == 2


def test_a_damaged_cache_entry_is_decoded_again(tmp_path):
    p = tmp_path / "a.png"
    Image.new("RGB", (40, 60), (1, 2, 3)).save(p)
    cache = WorkingImageCache(tmp_path / "cache")
    first = load_working(p, PRE, cache, md5="cd" * 16)
    entry = next((tmp_path / "cache").rglob("*.png"))
    entry.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + b"\xff" * 40)  # a broken chunk
    again = load_working(p, PRE, cache, md5="cd" * 16)
    assert (again.pixels == first.pixels).all() and cache.misses == 2
