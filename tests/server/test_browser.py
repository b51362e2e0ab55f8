"""The page in a real browser: headless Chromium (Debian's package) driven by Playwright's
Python package. Load the page, click the scene: the polygon appears where the click was, in
map coordinates; run a `segment` job from the class list: its layer shows. A screenshot is
kept ($TERRAMASK_TEST_ARTEFACTS/serve.png, else in the test's temporary folder).

The clicks go to a segmenter double whose answer is a disc around the click (so "where
clicked" is exact; the tiny random SAM's masks fall anywhere, and the API tests cover it);
`segment` runs dense CLIP with a tiny random CLIP loaded from its folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import rasterio

from terramask.options import ModelOptions, ServerOptions
from terramask.server import create_app
from tests.helpers.doubles import ShapeSegmenter
from tests.helpers.paths import rs_samples_folder
from tests.server.conftest import serving

pytestmark = pytest.mark.slow

#: Where Chromium is looked for: $TERRAMASK_CHROMIUM, then the PATH (Debian's `chromium`).
CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
RADIUS_PX = 15


def chromium() -> str:
    given = os.environ.get("TERRAMASK_CHROMIUM")
    if given:
        return given
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium here: install Debian's `chromium` (apt-get install chromium; "
                ".ci/run does) or point $TERRAMASK_CHROMIUM at one")  # fmt: skip


def scene_for_page(folder: Path) -> Path:
    """A real aerial tile (Potsdam, from the shared samples) when present, else a synthetic
    scene: the screenshot then shows what users see."""
    from terramask.testing.scenes import write_geotiff_from_image, write_synthetic_scene

    sample = rs_samples_folder() / "potsdam" / "img_dir" / "2_10_0_0_512_512.png"
    if sample.is_file():
        return write_geotiff_from_image(
            sample, folder / "potsdam.tif", crs="EPSG:32633", origin=(500_000.0, 5_808_000.0),
            pixel_size=0.1,
        )
    return write_synthetic_scene(folder / "potsdam.tif", width=512, height=512)


def test_click_and_segment_in_a_real_browser(tmp_path, tiny_clip):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs Playwright's Python "
                                   "package (the `dev` extra)")  # fmt: skip
    executable = chromium()
    root = tmp_path / "root"
    root.mkdir()
    scene = scene_for_page(root)
    with rasterio.open(scene) as src:
        transform, crs = src.transform, src.crs
    options = ServerOptions(root=root, output=tmp_path / "out", embedding_cache_mb=0)
    models = ModelOptions(segmenter=ShapeSegmenter(radius=RADIUS_PX), clip=str(tiny_clip),
                          device="cpu")  # fmt: skip
    app = create_app(options, models=models)
    artefacts = Path(os.environ.get("TERRAMASK_TEST_ARTEFACTS") or tmp_path)
    artefacts.mkdir(parents=True, exist_ok=True)

    from pyproj import Transformer

    to_wgs84 = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    target = to_wgs84.transform(*(transform @ (300.5, 200.5)))  # lon, lat of pixel (300, 200)

    with serving(app) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=["--no-sandbox"])  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("requestfailed", lambda r: errors.append(f"{r.url} {r.failure}"))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"{url}/?scene=potsdam.tif")
            try:
                page.wait_for_selector("body[data-ready='1']", state="attached", timeout=30_000)
                page.wait_for_selector("body[data-scene-loaded='1']", state="attached",
                                       timeout=30_000)  # fmt: skip
            except sync_api.TimeoutError:
                raise AssertionError(f"the page did not load: {page.inner_text('#status')!r}, "
                                     f"{errors}") from None
            assert page.locator("img.leaflet-tile-loaded").count() > 0  # the scene's tiles
            assert not page.is_visible("#ask-job")  # no job yet: no progress bar

            # ---- click the scene where pixel (300, 200) is shown
            point = page.evaluate(
                "([lon, lat]) => terramask.map.latLngToContainerPoint([lat, lon])", list(target)
            )
            box = page.locator("#map").bounding_box()
            page.mouse.click(box["x"] + point["x"], box["y"] + point["y"])
            page.wait_for_selector("body[data-prompts='1']", state="attached", timeout=30_000)
            sent = page.evaluate("terramask.state.current.points")
            per_px = page.evaluate(
                "() => { const m = terramask.map, c = m.getSize().divideBy(2);"
                " const a = m.containerPointToLatLng(c);"
                " const b = m.containerPointToLatLng(c.add([1, 1]));"
                " return [Math.abs(b.lng - a.lng), Math.abs(b.lat - a.lat)]; }"
            )  # fmt: skip
            assert len(sent) == 1
            assert abs(sent[0][0] - target[0]) <= 1.5 * per_px[0]  # the map coordinates sent
            assert abs(sent[0][1] - target[1]) <= 1.5 * per_px[1]
            drawn = page.evaluate(
                "() => { const layers = []; terramask.map.eachLayer((l) => {"
                " if (l.feature && l.feature.geometry) layers.push(l.getBounds()); });"
                " return layers.map((b) =>"
                " [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()]); }"
            )  # fmt: skip
            assert len(drawn) == 1, drawn  # one polygon on the map: the object
            west, south, east, north = drawn[0]
            assert west < target[0] < east and south < target[1] < north
            centre = ((west + east) / 2, (south + north) / 2)
            assert abs(centre[0] - target[0]) <= 2 * per_px[0] + 1e-7
            assert abs(centre[1] - target[1]) <= 2 * per_px[1] + 1e-7
            assert page.locator(".leaflet-overlay-pane path").count() >= 1
            assert "Score" in page.inner_text("#click-result")
            page.keyboard.press("Enter")  # keep it as a layer
            page.wait_for_selector("#layers li[data-kind='object']")

            # ---- segment from the class list, as a job with progress
            page.fill("#classes", "building\nroad,street\ntree")
            page.select_option("#engine", "clip")
            page.click("#segment-form button[type=submit]")
            page.wait_for_selector("#layers li[data-kind='segment']", timeout=120_000)
            assert page.inner_text("#segment-job .status") == "done"
            assert page.eval_on_selector("#segment-job progress", "p => p.value") == 100
            features = page.evaluate(
                "terramask.state.layers.find((l) => l.kind === 'segment').geojson.features.length"
            )
            assert features > 0
            on_map = page.evaluate(
                "terramask.map.hasLayer(terramask.state.layers.find((l) => l.kind === "
                "'segment').leaflet)"
            )  # fmt: skip
            assert on_map
            links = page.inner_text("#layers li[data-kind='segment'] .links")
            assert "GPKG" in links and "labels COG" in links
            page.wait_for_timeout(300)
            shot = artefacts / "serve.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            assert not errors, errors
        finally:
            browser.close()


def test_clicks_on_a_scene_without_georeferencing_are_not_sent(tmp_path, tiny_clip):
    """The page cannot place such a scene on the map: a click says so, and sends nothing
    (before, it went out as WGS84 and came back as a 422 about a map CRS)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs Playwright's Python "
                                   "package (the `dev` extra)")  # fmt: skip
    from terramask.testing.scenes import write_synthetic_scene

    executable = chromium()
    root = tmp_path / "root"
    root.mkdir()
    write_synthetic_scene(root / "plain.tif", width=96, height=96, crs=None)
    options = ServerOptions(root=root, output=tmp_path / "out", embedding_cache_mb=0)
    models = ModelOptions(segmenter=ShapeSegmenter(radius=RADIUS_PX), device="cpu")
    app = create_app(options, models=models)
    with serving(app) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=["--no-sandbox"])  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1024, "height": 700})
            prompts: list[str] = []
            page.on("request", lambda r: prompts.append(r.url) if "/prompt" in r.url else None)
            page.goto(f"{url}/?scene=plain.tif")
            page.wait_for_selector("body[data-ready='1']", state="attached", timeout=30_000)
            page.wait_for_function("document.querySelector('#status').textContent"
                                   ".includes('no georeferencing')", timeout=30_000)  # fmt: skip
            box = page.locator("#map").bounding_box()
            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.keyboard.press("c")  # the tool at the cross: the same
            page.wait_for_timeout(500)
            assert prompts == []
            assert "cannot be placed" in page.inner_text("#status")
            assert page.evaluate("terramask.state.current.points.length") == 0
        finally:
            browser.close()
