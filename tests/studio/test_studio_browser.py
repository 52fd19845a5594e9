"""The studio in a real browser (Playwright driving Debian Chromium, headless) and through
gradio_client. Tests run in file order on one studio: the Sync test fills the catalogue the later
ones use. Screenshots of every tab land in test-artifacts/."""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests.conftest import REPO_ROOT

from .conftest import ARTIFACTS, N_SCENES, copy_sample, shot

TABS = ["Sync", "Descriptions", "Train", "Pseudo-masks", "Playground"]


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()
    page.wait_for_timeout(600)


def cells(page, table: str) -> list[str]:
    """The visible cells of a gr.Dataframe, row by row (Gradio 6 renders a virtual grid)."""
    return [c.inner_text().strip() for c in page.locator(f"{table} [role=gridcell]").all()]


def no_error_toast(page, expected: str | None = None) -> None:
    """No error message is shown (but the `expected` one)."""
    texts = [t.inner_text() for t in page.locator(".toast-body.error").all()]
    unexpected = [t for t in texts if not (expected and expected in t)]
    assert not unexpected, unexpected


def test_every_tab_renders(page):
    assert [t.inner_text().strip() for t in page.get_by_role("tab").all()] == TABS
    for name in TABS:
        open_tab(page, name)
        no_error_toast(page)
        shot(page, f"empty_{name.lower()}")
    assert page.js_errors == []


def test_sync_from_the_test_booru_fills_the_grid(page):
    assert cells(page, "#sync-counts")[0] == "0"  # empty catalogue
    assert page.locator("#sync-source input[value='Demo booru']").is_checked()
    page.locator("#sync-start").click()
    page.wait_for_function(
        f"document.querySelectorAll('#sync-gallery img').length >= {N_SCENES}", timeout=60_000)
    page.wait_for_selector("#sync-status:has-text('done')")
    page.wait_for_function(f"document.querySelector('#sync-counts [data-testid=cell-0-0]').innerText.trim() == '{N_SCENES}'")
    assert cells(page, "#sync-counts")[:2] == [str(N_SCENES), str(N_SCENES)]  # posts, images ok
    caption = page.locator("#sync-gallery").inner_text()
    assert re.search(r"#\d+ .*(sky|grass|1girl)", caption)  # captions carry general tags
    assert page.locator("#sync-progress [data-pct='100']").count() == 1
    shot(page, "sync")


def test_sync_status_belongs_to_the_page_that_started_it(page, browser, studio):
    """Another visitor's page is not greeted by this page's task outcome, and a long line is whole."""
    page.get_by_role("button", name="Sync tags").click()
    # the task's line names it while it runs; a fast sync may already have ended by the first poll
    page.wait_for_selector("#sync-status:has-text('sync tags'), #sync-status:has-text('done'), "
                           "#sync-status:has-text('failed')", timeout=60_000)
    page.wait_for_selector("#sync-status:has-text('done'), #sync-status:has-text('failed')", timeout=60_000)
    other = browser.new_context().new_page()
    try:
        other.goto(studio[0])
        other.wait_for_selector("#sync-gallery")
        other.wait_for_timeout(2500)  # a couple of timer ticks
        # a tick still pending shows Gradio's own timer ("0.0s") over the line: wait it out
        other.wait_for_function(r"!/\d+\.\ds/.test(document.querySelector('#sync-status').innerText)",
                                timeout=30_000)
        assert other.locator("#sync-status").inner_text().strip() == ""
        assert "idle" in other.locator("#sync-progress").inner_text()
    finally:
        other.context.close()


def test_fill_from_wiki_says_what_it_did(page):
    open_tab(page, "Descriptions")
    page.locator("#desc-wiki").click()
    page.wait_for_selector("#desc-status:has-text('Fill'), #desc-status:has-text('Nothing')")
    text = page.locator("#desc-status").inner_text()
    # the demo's tags all have user descriptions: it says so and how to replace them
    assert "Filled" in text or "Replace my descriptions" in text or "Sync wiki" in text, text
    no_error_toast(page)


def test_description_edit_persists(page, studio):
    open_tab(page, "Descriptions")
    page.locator("#desc-search textarea, #desc-search input").first.fill("sky")
    page.wait_for_timeout(800)
    page.locator("#desc-table").get_by_text("sky", exact=True).first.click()
    page.wait_for_function("[...document.querySelectorAll('#desc-tag textarea, #desc-tag input')]"
                           ".some(e => e.value == 'sky')")
    texts = "the open sky above the horizon\nblue or orange sky behind everything"
    page.locator("#desc-texts textarea").fill(texts)
    page.locator("#desc-save").click()
    page.wait_for_selector("#desc-status:has-text('Saved 2 description(s)')")
    page.reload()
    page.wait_for_selector("#sync-gallery")
    open_tab(page, "Descriptions")
    page.locator("#desc-search textarea, #desc-search input").first.fill("sky")
    page.wait_for_timeout(800)
    row = page.locator("#desc-table .virtual-row", has_text="sky").first
    assert "user" in row.inner_text()
    page.locator("#desc-table").get_by_text("sky", exact=True).first.click()
    page.wait_for_function("document.querySelector('#desc-texts textarea').value.length > 0")
    assert page.locator("#desc-texts textarea").input_value() == texts
    shot(page, "descriptions")


def test_training_job_reaches_100_percent_with_a_loss_plot(page, pipeline):
    pipeline.wait()  # Stage A + pseudo-masks v1 exist: the tab's "Stage B" trains on them
    open_tab(page, "Train")
    for elem, value in (("#train-epochs", "2"), ("#train-batch", "8")):
        page.locator(f"{elem} input").fill(value)
    page.get_by_role("button", name="Stage B", exact=True).click()
    page.wait_for_selector("#train-jobs:has-text('Stage B')")
    page.wait_for_selector("#train-progress[data-pct='100'], #train-progress [data-pct='100']", timeout=240_000)
    page.wait_for_selector("#train-jobs:has-text('done')")
    assert "train-segmenter" in page.locator("#train-log textarea").input_value()
    # the loss plot has drawn a line through several points (Vega renders an SVG path)
    page.wait_for_function("""() => {
        const p = document.querySelector('#train-plot .mark-line path');
        return p && ((p.getAttribute('d') || '').match(/L/g) || []).length >= 2; }""")
    page.wait_for_selector("#train-runs:has-text('runs/seg_s1/checkpoints/model.pt')")
    shot(page, "train")
    # the job lives in the server (and runs/_jobs/), not in the page
    page.reload()
    page.wait_for_selector("#sync-gallery")
    open_tab(page, "Train")
    page.wait_for_selector("#train-jobs:has-text('Stage B')")
    page.wait_for_selector("#train-progress [data-pct='100']")


def pick(page, dropdown: str, label: str) -> None:
    """Choose an option of a gr.Dropdown by its label."""
    page.locator(f"{dropdown} input").click()
    page.get_by_role("option", name=label, exact=True).click()
    page.wait_for_timeout(300)


def test_each_launch_is_a_new_run_listed_with_its_inputs(page, pipeline, studio):
    """Stage B launched again writes seg_s1-002 beside seg_s1 (the test above); both rows say they
    were made from pseudomasks_v1 (its index's sha256), with their own times; deleting one asks."""
    from gaudi_engine.lineage import read_lineage, sha256_file

    pipeline.wait()
    ws = studio[1]
    open_tab(page, "Train")
    for elem, value in (("#train-epochs", "1"), ("#train-batch", "8")):
        page.locator(f"{elem} input").fill(value)
    page.get_by_role("button", name="Stage B", exact=True).click()
    row = page.locator("#train-runs .virtual-row", has_text="seg_s1-002")
    row.wait_for(timeout=60_000)
    page.wait_for_function("[...document.querySelectorAll('#train-runs .virtual-row')].some("
                           "r => r.innerText.includes('seg_s1-002') && r.innerText.includes('done'))", timeout=120_000)
    page.wait_for_selector("#train-status:has-text('Stage B — done')", timeout=30_000)  # its job has ended
    pm_sha = sha256_file(ws / "runs" / "pseudomasks_v1" / "index.parquet")[:8]
    for name in ("seg_s1", "seg_s1-002"):
        text = page.locator("#train-runs .virtual-row", has_text=f"runs/{name}/checkpoints/model.pt").inner_text()
        assert f"pseudomasks: pseudomasks_v1 @{pm_sha}" in text and "manifest.csv @" in text, text
        assert read_lineage(ws / "runs" / name)["status"] == "done"
    assert (ws / "runs" / "seg_s1" / "checkpoints" / "model.pt").exists()  # the first run is still there
    shot(page, "train_runs")
    pick(page, "#train-delete-run", "seg_s1-002")
    page.locator("#train-delete").click()
    page.wait_for_selector("#train-delete-status:has-text('cannot be undone')")
    assert (ws / "runs" / "seg_s1-002").exists()  # only asked so far
    page.locator("#train-delete-yes").click()
    page.wait_for_selector("#train-delete-status:has-text('Deleted run seg_s1-002')")
    assert not (ws / "runs" / "seg_s1-002").exists() and (ws / "runs" / "seg_s1").exists()
    page.wait_for_function("!document.querySelector('#train-runs').innerText.includes('seg_s1-002')")
    no_error_toast(page)


def test_pseudo_mask_browser_shows_overlay_and_scores(page, pipeline):
    pipeline.wait()
    open_tab(page, "Pseudo-masks")
    page.wait_for_function("document.querySelectorAll('#pm-gallery img').length > 0", timeout=30_000)
    from gaudi_engine.pseudo.index import PseudoMaskIndex

    idx = PseudoMaskIndex(pipeline.ws / "runs" / "pseudomasks_v1")
    n_posts, n_masks = len(idx.posts()), len(idx.query())
    idx.close()
    # the filter's counts, not the gallery's cap
    page.wait_for_selector(f"#pm-summary:has-text('{n_posts} image(s), {n_masks} mask(s)')")
    assert cells(page, "#pm-scores") == [] and "1" not in page.locator("#pm-scores thead").inner_text()
    # every gallery column fits (none cut off at the right)
    assert page.locator("#pm-gallery .grid-container").evaluate("e => e.scrollWidth <= e.clientWidth")
    page.locator("#pm-gallery img").first.click()
    page.wait_for_selector("#pm-title:has-text('#')")
    page.locator("#pm-download").click()
    page.wait_for_selector("#pm-image-files:has-text('.zip')")
    overlay = page.locator("#pm-overlay")
    overlay.locator("img").first.wait_for()
    assert page.locator("#pm-scores").inner_text().split("\n").count("quality") == 1  # one header
    rows = page.locator("#pm-scores .virtual-row").count()
    assert rows >= 1
    before = page.locator("#pm-title").inner_text()
    page.locator("#pm-next").click()
    page.wait_for_function(f"!document.querySelector('#pm-title').innerText.includes({before!r})")
    shot(page, "pseudo_masks")


def test_pseudo_mask_export_writes_every_format(page, pipeline, studio):
    import json
    import zipfile

    from gaudi_engine import rle
    from gaudi_engine.pseudo.export import read_coco, read_cvat

    pipeline.wait()
    open_tab(page, "Pseudo-masks")
    page.locator("#pm-export").click()
    page.wait_for_selector("#pm-files:has-text('pseudomasks_v1_fiftyone')", timeout=60_000)
    export = studio[1] / "runs" / "pseudomasks_v1" / "export"
    coco = json.loads((export / "pseudomasks_v1_coco.json").read_text())
    names = zipfile.ZipFile(export / "pseudomasks_v1_masks.zip").namelist()
    assert coco["annotations"] and len(names) == len(coco["annotations"])
    assert sorted(zipfile.ZipFile(export / "pseudomasks_v1_scores.zip").namelist()) == sorted(names)
    # CVAT (one label per pixel) re-imports inside the COCO masks, the smaller mask whole
    by_image = read_coco(export / "pseudomasks_v1_coco.json")
    file_of = {i["id"]: i["file_name"] for i in coco["images"]}
    cvat = read_cvat(export / "pseudomasks_v1_cvat.zip")
    assert len(cvat) == len(by_image)
    for post_id, masks in by_image.items():
        got = cvat[file_of[post_id].rsplit("/", 1)[-1].rsplit(".", 1)[0]]
        drawn = [t for t in masks if masks[t].any()]
        if drawn:  # the smallest drawn mask is on top: it comes back whole
            smallest = max(drawn, key=lambda t: (-int(masks[t].sum()), t))  # ties: later tag on top
            assert np.array_equal(got[smallest], masks[smallest])
        for t, m in got.items():
            assert not (m & ~masks[t]).any()
    assert "labels/" in " ".join(zipfile.ZipFile(export / "pseudomasks_v1_fiftyone.zip").namelist())
    by_id = {c["id"]: c["name"] for c in coco["categories"]}
    for ann in coco["annotations"][:5]:
        m = rle.decode(ann["segmentation"])
        img = next(i for i in coco["images"] if i["id"] == ann["image_id"])
        assert m.shape == (img["height"], img["width"]) and int(m.sum()) == ann["area"] > 0
        assert by_id[ann["category_id"]]


def test_playground_upload_shows_one_mask_per_tag(page, pipeline, studio, tmp_path):
    pipeline.wait()
    img = copy_sample(studio[1], tmp_path / "upload.png")
    open_tab(page, "Playground")
    page.wait_for_selector("#pg-run:not([disabled])")  # a checkpoint exists: Segment is enabled
    page.locator("#pg-samples img").first.click()  # a sample brings its tags
    page.wait_for_function("document.querySelectorAll('#pg-tags .token').length > 0")
    sample_tags = open(sorted(__import__("glob").glob(str(REPO_ROOT / "assets/samples/*.txt")))[0]).read()
    assert [t.inner_text().strip() for t in page.locator("#pg-tags .token").all()] == \
        [t.strip() for t in sample_tags.split(",") if t.strip()]
    page.reload()
    page.wait_for_selector("#sync-gallery")
    open_tab(page, "Playground")
    page.wait_for_selector("#pg-run:not([disabled])")
    page.locator("#pg-run").click()  # no image yet: a visible message, not a silent spinner
    page.get_by_text("upload an image first").first.wait_for()
    page.locator("#pg-image input[type=file]").set_input_files(str(img))
    tags = page.locator("#pg-tags input")
    for t in ("sky", "grass"):
        tags.fill(t)
        tags.press("Enter")
    page.locator("#pg-run").click()
    page.wait_for_function("document.querySelectorAll('#pg-table .virtual-row').length == 2", timeout=60_000)
    table = page.locator("#pg-table").inner_text()
    assert "sky" in table and "grass" in table
    page.wait_for_selector("#pg-files:has-text('masks')")
    page.wait_for_timeout(500)
    legend = page.locator("#pg-overlay").inner_text()
    assert "sky" in legend and "grass" in legend
    no_error_toast(page, expected="upload an image first")
    shot(page, "playground")


def test_gradio_client_infer_returns_a_mask_per_tag(studio, pipeline, tmp_path):
    pipeline.wait()
    from gradio_client import Client, handle_file
    from PIL import Image

    from gaudi_engine import rle

    img = copy_sample(studio[1], tmp_path / "api.png")
    client = Client(studio[0], verbose=False)
    overlay, result = client.predict(handle_file(str(img)), "sky grass 1girl", api_name="/infer")
    w, h = Image.open(img).size
    assert [t["tag"] for t in result["tags"]] == ["sky", "grass", "1girl"]
    assert (result["width"], result["height"]) == (w, h)
    for t in result["tags"]:
        m = rle.decode(t["mask"])
        assert m.shape == (h, w) and int(m.sum()) == t["area"]
    assert Image.open(overlay).size == (w, h) and overlay.endswith(".png")
    # no server paths in the answer: checkpoints are workspace-relative
    assert result["model"]["align_ckpt"] and not result["model"]["align_ckpt"].startswith("/")
    assert str(studio[1]) not in json.dumps(result)
    assert not np.array_equal(np.asarray(Image.open(overlay).convert("RGB")), np.asarray(Image.open(img).convert("RGB")))


def test_user_errors_leave_no_traceback_in_the_log(studio):
    """"upload an image first" (Playground and /infer tests above) is logged as one line."""
    log = (ARTIFACTS / "studio_server.log").read_text()
    assert "upload an image first" in log and "Traceback" not in log, log[-3000:]


def _status(url: str) -> int:
    try:
        return urllib.request.urlopen(url, timeout=10).status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_files_outside_the_workspace_are_not_served(studio):
    url, ws = studio
    inside = sorted((ws / "demo_source" / "images").glob("*.png"))[0]
    assert _status(f"{url}gradio_api/file={inside}") == 200
    assert _status(f"{url}gradio_api/file=/etc/passwd") == 403
    assert _status(f"{url}gradio_api/file={ws / 'data' / 'catalogue.duckdb'}") == 403
    assert _status(f"{url}gradio_api/file={ws}/../../../../etc/hostname") == 403


def test_pseudo_masks_shows_a_run_being_written_with_its_count(page, studio):
    """A pseudo-mask run a live process writes (its lineage, parts lines so far) is listed as in
    progress with its count, which follows the parts file, instead of "no run yet"."""
    import os
    import shutil
    import socket

    run = studio[1] / "runs" / "pseudomasks_v1-900"
    (run / "parts").mkdir(parents=True)
    part = run / "parts" / "shard-0-of-1.jsonl"
    part.write_text("".join(json.dumps({"post_id": i, "rows": []}) + "\n" for i in range(5)))
    (run / "lineage.json").write_text(json.dumps({  # this test's process stands for the writer
        "command": "pseudolabels", "status": "running", "pid": os.getpid(), "host": socket.gethostname(),
        "created": "2026-01-01T00:00:00Z", "expected": {"posts": N_SCENES}, "inputs": {}}))
    try:
        open_tab(page, "Pseudo-masks")
        page.wait_for_selector(f"#pm-summary:has-text('pseudomasks_v1-900 is being written: 5 of {N_SCENES} posts')")
        pick(page, "#pm-run", "pseudomasks_v1-900 (in progress)")
        page.wait_for_selector("#pm-summary:has-text('its masks show here when it ends')")
        with open(part, "a") as fh:
            fh.write("".join(json.dumps({"post_id": i, "rows": []}) + "\n" for i in range(5, 8)))
        page.wait_for_selector(f"#pm-summary:has-text('8 of {N_SCENES} posts so far')", timeout=15_000)
        assert "No pseudo-mask run yet" not in page.locator("#pm-summary").inner_text()
        shot(page, "pseudo_masks_in_progress")
    finally:
        shutil.rmtree(run)
