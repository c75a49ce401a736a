"""Looking at a map and taking it elsewhere: readable images, exports that round-trip, the web viewer."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from plyfile import PlyData

from clipgs.cli import main
from clipgs.data.images import label_palette, legend_image, read_image, titled_row
from clipgs.mapping import load_ply
from clipgs.semantics.export import gaussian_labels
from clipgs.semantics.model import load_semantics
from clipgs.semantics.query import negative_names, query_map
from clipgs.semantics.text import TextEncoder


@pytest.fixture(scope="module")
def semantic_map(synth_dir, tmp_path_factory):
    """A small semantic map of the shared synthetic room (simulated teacher, 3DCS on)."""
    out = tmp_path_factory.mktemp("look") / "map.ply"
    cfg = out.parent / "c.yaml"
    cfg.write_text("iters_per_keyframe: 10\nw_ssim: 0.0\nsem_dim: 8\ndcs_start: 11\ndcs_every: 5\n")
    assert main(["map", str(synth_dir), "--out", str(out), "--config", str(cfg), "--semantics", "simulated"]) == 0
    return out


def answer_for(map_path: Path, label: str):
    gmap = load_ply(map_path)
    model = load_semantics(map_path, gmap)
    text = TextEncoder.from_identity(model.text_encoder)
    return gmap, model, query_map(gmap, model.decoder, text.encode([label])[0],
                                  text.encode(negative_names(model.vocabulary, label)), None)


def test_titled_row_upscales_small_tiles_and_keeps_titles_apart():
    tile = np.zeros((60, 80, 3), np.uint8)
    row = titled_row([tile, tile[..., 0]], ["a", "b"])
    assert row.dtype == np.uint8 and row.ndim == 3
    assert row.shape[1] >= 2 * 320  # each tile at least 320 px wide (80 x 4)
    assert row.shape[0] > 60 * 4  # a title band above the upscaled tiles
    with pytest.raises(ValueError, match="2 tiles for 1 titles"):
        titled_row([tile, tile], ["only one"])


def test_legend_wraps_into_rows_when_names_do_not_fit():
    names = [f"class number {i}" for i in range(12)]
    narrow, wide = legend_image(names, label_palette()[1:13], 200), legend_image(names, label_palette()[1:13], 1200)
    assert narrow.shape[1] == 200 and wide.shape[1] == 1200
    assert narrow.shape[0] > wide.shape[0]
    assert (narrow != 255).any()  # something drawn


def test_first_twenty_class_colours_are_far_apart():
    pal = label_palette()[1:21].astype(float)
    dist = np.linalg.norm(pal[:, None] - pal[None], axis=-1) + np.eye(20) * 1e9
    assert dist.min() > 25 and (label_palette()[0] == 0).all()


def test_export_semantic_colours_and_labels_round_trip(semantic_map, tmp_path):
    out = tmp_path / "semantic.ply"
    assert main(["export", str(semantic_map), "--out", str(out), "--semantic-colors", "--labels"]) == 0
    gmap = load_ply(semantic_map)
    labels = gaussian_labels(gmap, load_semantics(semantic_map, gmap))
    vertex = PlyData.read(str(out))["vertex"]
    assert vertex.count == len(gmap)
    assert np.array_equal(np.asarray(vertex["class_id"]), labels.class_ids)
    conf = np.asarray(vertex["confidence"])
    assert ((conf > 0) & (conf <= 1)).all()
    assert not any(p.name.startswith("sem_") for p in vertex.properties)  # a plain 3DGS PLY
    coloured = load_ply(out)  # clipgs' own loader skips the extra properties
    assert torch.allclose(coloured.rgb, torch.from_numpy(label_palette()[labels.class_ids] / 255.0).float(),
                          atol=1e-5)
    assert torch.equal(coloured.means, gmap.means)
    legend = read_image(tmp_path / "semantic_legend.png")
    assert legend.shape[1] >= 320
    table = (tmp_path / "semantic_classes.txt").read_text().splitlines()
    assert len(table) == 1 + len(load_semantics(semantic_map).vocabulary)
    counts = {int(line.split()[0]): int(line.split()[2]) for line in table[1:]}
    assert sum(counts.values()) == len(gmap)


def test_export_labels_keeps_the_map_and_adds_properties(semantic_map, tmp_path):
    out = tmp_path / "labelled.ply"
    assert main(["export", str(semantic_map), "--out", str(out), "--labels"]) == 0
    original, labelled = load_ply(semantic_map), load_ply(out)
    for k, v in original.tensors().items():
        assert torch.equal(v, labelled.tensors()[k]), k
    assert "class_id" in [p.name for p in PlyData.read(str(out))["vertex"].properties]


def test_export_query_writes_one_ply_per_object(semantic_map, tmp_path):
    gmap, _, answer = answer_for(semantic_map, "floor")
    assert answer.instances, "the floor of the synthetic room should be found"
    out = tmp_path / "floor_objects"
    assert main(["export", str(semantic_map), "--out", str(out), "--query", "floor"]) == 0
    doc = json.loads((out / "objects.json").read_text())
    assert doc["query"] == "floor" and len(doc["objects"]) == len(answer.instances)
    for obj, inst in zip(doc["objects"], answer.instances):
        part = load_ply(out / obj["file"])
        assert len(part) == obj["gaussians"] == inst.gaussians
        assert torch.equal(part.means, gmap.means[torch.from_numpy(inst.indices)])
        assert PlyData.read(str(out / obj["file"]))["vertex"].count == inst.gaussians
        assert np.allclose(obj["size_m"], inst.box_max - inst.box_min, atol=1e-3)
        assert 0 < obj["score"] <= 1


def test_export_refuses_unclear_requests_with_one_line(semantic_map, tmp_path, capsys):
    assert main(["export", str(semantic_map), "--out", str(tmp_path / "x.ply")]) == 2
    assert "nothing to export" in capsys.readouterr().err
    assert main(["export", str(semantic_map), "--out", str(tmp_path / "x.txt"), "--semantic-colors"]) == 2
    assert ".ply" in capsys.readouterr().err
    assert main(["export", str(semantic_map), "--out", str(tmp_path / "o"), "--query", "chair", "--labels"]) == 2
    assert "another call" in capsys.readouterr().err


def test_viewer_queries_recolours_and_shows_views(semantic_map, synth_dir):
    from clipgs.viewer import MapViewer, object_rows

    viewer = MapViewer(semantic_map, synth_dir, port=0)
    try:
        assert viewer.url.startswith("http://127.0.0.1:") and viewer.model is not None
        _, _, expected = answer_for(semantic_map, "floor")
        answer = viewer.query("floor")
        assert len(answer.instances) == len(expected.instances) and answer.selected.sum() == expected.selected.sum()
        assert len(object_rows(answer)) == len(expected.instances)
        assert f"{len(expected.instances)} object" in viewer.objects.content
        rgbs = viewer.splats.rgbs
        assert rgbs.shape == (len(viewer.gmap), 3)
        viewer.colour_by("semantic classes")
        assert np.array_equal(viewer.splats.rgbs[:5], label_palette()[viewer.labels.class_ids[:5]])
        panel = viewer.show_view(3)
        assert panel.shape[1] >= 2 * 240
        with pytest.raises(ValueError, match="empty query"):
            viewer.query("  ")
    finally:
        viewer.close()


def test_viewer_opens_a_map_without_semantics_in_colour_only(tmp_path, synth_dir):
    from clipgs.viewer import MapViewer

    cfg = tmp_path / "c.yaml"
    cfg.write_text("iters_per_keyframe: 2\n")
    plain = tmp_path / "plain.ply"
    assert main(["map", str(synth_dir), "--out", str(plain), "--config", str(cfg), "--max-frames", "3"]) == 0
    viewer = MapViewer(plain, port=0)
    try:
        assert viewer.model is None and "without --semantics" in viewer.no_semantics_reason
        assert viewer.mode.options == ("colour",)
        with pytest.raises(ValueError, match="no semantics to query"):
            viewer.query("chair")
    finally:
        viewer.close()


def _browser() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)


def test_view_in_headless_chromium_answers_a_typed_query(semantic_map, synth_dir, tmp_path):
    """The user's flow: `clipgs view`, open the URL, type a query, press Search, read the object list."""
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium installed (apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    _, _, expected = answer_for(semantic_map, "floor")
    proc = subprocess.Popen([sys.executable, "-m", "clipgs.cli", "view", str(semantic_map), "--data", str(synth_dir),
                             "--port", "0", "--seconds", "90"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url, lines, deadline = None, [], time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            url = (re.search(r"open (http://127\.0\.0\.1:\d+)", line) or [None, None])[1]
            assert line or proc.poll() is None, "clipgs view exited: " + "".join(lines)
        assert url, "clipgs view printed no URL: " + "".join(lines)
        with sync_api.sync_playwright() as p:
            chrome = p.chromium.launch(executable_path=browser, args=[
                "--no-sandbox", "--enable-unsafe-swiftshader", "--use-angle=swiftshader"])
            page = chrome.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url)
            page.get_by_text(re.compile(r"Gaussians, 8 semantic attributes")).wait_for(timeout=30_000)
            assert page.locator("canvas").count() >= 1  # the 3D scene
            page.get_by_text("floor (", exact=False).first.wait_for(timeout=10_000)  # the class legend
            page.locator("input.mantine-TextInput-input").last.fill("floor")
            page.get_by_role("button", name="Search").click()
            found = page.get_by_text(re.compile(r"floor: \d+ objects?")).first
            found.wait_for(timeout=30_000)
            n = len(expected.instances)
            assert f"floor: {n} object{'s' if n != 1 else ''}" in found.inner_text()
            page.wait_for_timeout(1500)
            page.screenshot(path=str(tmp_path / "viewer.png"))
            chrome.close()
        assert (tmp_path / "viewer.png").stat().st_size > 10_000
    finally:
        proc.terminate()
        proc.wait(timeout=20)
