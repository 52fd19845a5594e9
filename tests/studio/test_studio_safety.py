"""Studio safety in a real browser: the upload size limit says so visibly, a hostile picture is one
visible line naming it, and two browsers working at once never see each other's results or
status. (The secrets audit is test_secrets_audit.py.)"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from studio.uploads import check_upload_size, max_upload_bytes, open_upload
from gaudi_engine.errors import GaudiError
from tests.hostile_files import bad_images, good_images

from .conftest import UPLOAD_LIMIT_MB, copy_sample, shot
from .test_studio_browser import no_error_toast, open_tab


def big_png(path, mb: float):
    """A PNG of noise (incompressible) a bit over `mb` megabytes."""
    side = int((mb * 1.2 * 2**20 / 3) ** 0.5)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)).save(path)
    return path


def test_the_limit_is_configurable_and_checked_in_the_handler(tmp_path, monkeypatch):
    assert max_upload_bytes(2) == 2 * 2**20 and max_upload_bytes("0.5") == 2**19
    monkeypatch.setenv("GAUDI_MAX_UPLOAD_MB", "3")
    assert max_upload_bytes() == 3 * 2**20
    for bad in ("lots", "0", "-1"):
        with pytest.raises(GaudiError):
            max_upload_bytes(bad)
    big = big_png(tmp_path / "big one.png", 1)
    with pytest.raises(GaudiError) as err:
        open_upload(str(big), 2**20)
    msg = str(err.value)
    assert "big one.png" in msg and "upload limit of 1.0 MB" in msg and "--max-upload-mb" in msg and "\n" not in msg
    check_upload_size(big, 2 * 2**20)  # under the limit: fine
    assert open_upload(str(big), 2 * 2**20).mode == "RGB"
    with pytest.raises(GaudiError, match="upload an image first"):
        open_upload(None, 2**20)


def _upload_and_segment(page, path, tags) -> None:
    open_tab(page, "Playground")
    page.wait_for_selector("#pg-run:not([disabled])")
    page.locator("#pg-image input[type=file]").set_input_files(str(path))
    box = page.locator("#pg-tags input")
    for t in tags:
        box.fill(t)
        box.press("Enter")
    page.locator("#pg-run").click()


def test_an_upload_over_the_limit_is_refused_with_a_visible_message(page, studio, tmp_path):
    big = big_png(tmp_path / "too big.png", UPLOAD_LIMIT_MB)
    open_tab(page, "Playground")
    assert f"up to {UPLOAD_LIMIT_MB} MB" in page.locator("#pg-image").inner_text()
    page.locator("#pg-image input[type=file]").set_input_files(str(big))
    page.get_by_text("exceed the maximum allowed size").first.wait_for(timeout=15_000)
    shot(page, "upload_too_big")


@pytest.mark.parametrize("name,words", [("page.png", "not a picture"), ("bomb.png", "decompression bomb"),
                                        ("cut.jpg", "truncated")])
def test_a_hostile_upload_is_one_visible_line_naming_it(page, pipeline, studio, tmp_path, name, words):
    pipeline.wait()
    path = tmp_path / name
    path.write_bytes(bad_images()[name])
    _upload_and_segment(page, path, ["sky"])
    toast = page.locator(".toast-body.error").filter(has_text=name).first
    toast.wait_for(timeout=30_000)
    text = toast.inner_text()
    assert words in text and "Traceback" not in text and str(tmp_path) not in text, text


def test_odd_but_good_uploads_are_segmented(page, pipeline, studio, tmp_path):
    """CMYK JPEG, a 1x8000 strip, an animated GIF: decoded by the engine, one mask row each."""
    pipeline.wait()
    for name in ("cmyk.jpg", "strip.png", "animated.gif"):
        path = tmp_path / name
        path.write_bytes(good_images()[name])
        page.reload()
        page.wait_for_selector("#sync-gallery")
        _upload_and_segment(page, path, ["sky"])
        page.wait_for_function("document.querySelectorAll('#pg-table .virtual-row').length == 1", timeout=60_000)
        assert "sky" in page.locator("#pg-table").inner_text()
        no_error_toast(page)


def test_two_browsers_at_once_do_not_see_each_others_state(browser, studio, pipeline, tmp_path):
    """Two visitors segment different pictures with different tags at the same time; then one
    starts a catalogue task: each page shows only its own result, and only the starter sees the
    task's status."""
    pipeline.wait()
    url, ws = studio
    pages = []
    for _ in range(2):
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        pg = ctx.new_page()
        pg.set_default_timeout(60_000)
        pg.goto(url)
        pg.wait_for_selector("#sync-gallery")
        pages.append(pg)
    a, b = pages
    try:
        tags = {0: ["sky", "grass"], 1: ["1girl"]}
        imgs = [copy_sample(ws, tmp_path / f"visitor{i}.png") for i in range(2)]
        for i, pg in enumerate(pages):  # both requests in flight together
            _upload_and_segment(pg, imgs[i], tags[i])
        for i, pg in enumerate(pages):
            pg.wait_for_function(f"document.querySelectorAll('#pg-table .virtual-row').length == {len(tags[i])}",
                                 timeout=120_000)
            pg.wait_for_selector("#pg-files:has-text('masks')")
        table_a, table_b = (pg.locator("#pg-table").inner_text() for pg in pages)
        assert "sky" in table_a and "grass" in table_a and "1girl" not in table_a, table_a
        assert "1girl" in table_b and "sky" not in table_b and "grass" not in table_b, table_b
        links = [sorted(x.get_attribute("href") or "" for x in pg.locator("#pg-files a").all()) for pg in pages]
        assert links[0] and links[1] and not set(links[0]) & set(links[1])  # each its own JSON and masks
        for pg in pages:
            no_error_toast(pg)

        open_tab(a, "Sync")
        open_tab(b, "Sync")
        a.get_by_role("button", name="Sync tags").click()
        a.wait_for_selector("#sync-status:has-text('sync tags'), #sync-status:has-text('done'), "
                            "#sync-status:has-text('failed')", timeout=60_000)
        for _ in range(6):  # a few timer ticks: B's status never tells A's task (Gradio's own
            b.wait_for_timeout(500)  # "processing" flicker while B's timer polls is no leak)
            seen = b.locator("#sync-status").inner_text()
            assert not any(w in seen for w in ("sync tags", "done", "failed", "requested")), seen
        assert "sync tags" not in b.locator("#sync-progress").inner_text()
        shot(a, "two_browsers_a")
        shot(b, "two_browsers_b")
    finally:
        for pg in pages:
            pg.context.close()
