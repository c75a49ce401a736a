"""``clipgs view``: a local web viewer (viser) for a saved map: splats in colour or class colours with a legend,
live text queries that light up the matching Gaussians and box the objects, and the dataset's cameras.

The core work (what the page shows) lives in plain functions and :class:`MapViewer` methods that tests call
directly; viser only draws. Binds to 127.0.0.1 unless told otherwise.
"""
from __future__ import annotations

import html
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clipgs.data.dataset import SequenceDataset, open_dataset
from clipgs.data.images import colorize_unit, label_palette, titled_row, to_uint8
from clipgs.geometry import rotmat_to_quat
from clipgs.mapping import GaussianMap, load_ply
from clipgs.render.projection import covariance_3d
from clipgs.semantics.export import GaussianLabels, gaussian_labels
from clipgs.semantics.model import SemanticModel, load_semantics
from clipgs.semantics.query import QueryAnswer, negative_names, query_map
from clipgs.semantics.text import TextEncoder

MAX_FRUSTUMS = 40


@dataclass
class SplatArrays:
    """What a splat renderer needs, float32 numpy: centers (N, 3) m, covariances (N, 3, 3) m², rgbs (N, 3) 0..1,
    opacities (N, 1) 0..1."""

    centers: np.ndarray
    covariances: np.ndarray
    rgbs: np.ndarray
    opacities: np.ndarray


def splat_arrays(gmap: GaussianMap) -> SplatArrays:
    with torch.no_grad():
        return SplatArrays(gmap.means.cpu().numpy().astype(np.float32),
                           covariance_3d(gmap.quats, gmap.log_scales).cpu().numpy().astype(np.float32),
                           gmap.rgb.clamp(0, 1).cpu().numpy().astype(np.float32),
                           gmap.opacities[:, None].cpu().numpy().astype(np.float32))


def relevancy_colours(base_rgb: np.ndarray, answer: QueryAnswer) -> np.ndarray:
    """(N, 3) 0..1: the matching Gaussians in turbo colours by relevancy, the rest dimmed grey."""
    grey = 0.25 + 0.25 * base_rgb.mean(axis=1, keepdims=True)
    out = np.repeat(grey, 3, axis=1).astype(np.float32)
    sel = answer.selected
    out[sel] = colorize_unit(answer.gaussian_relevancy[sel][None])[0].astype(np.float32) / 255.0
    return out


def object_rows(answer: QueryAnswer) -> list[dict]:
    """The object list: rank, centroid, size (m), score and Gaussians per found object, strongest first."""
    return [{"rank": k, "centroid": inst.centroid, "size": inst.box_max - inst.box_min, "score": inst.score,
             "gaussians": inst.gaussians} for k, inst in enumerate(answer.instances, start=1)]


def objects_markdown(label: str, answer: QueryAnswer, ms: float) -> str:
    rows = object_rows(answer)
    if not rows:
        return f"**{html.escape(label)}**: no objects (nothing above the relevancy threshold)"
    fmt = lambda v: ", ".join(f"{x:.2f}" for x in v)  # noqa: E731
    lines = [f"**{html.escape(label)}**: {len(rows)} object{'s' if len(rows) != 1 else ''} "
             f"({int(answer.selected.sum())} Gaussians, {ms:.0f} ms)", "",
             "| # | centroid (m) | size (m) | score | Gaussians |", "|---|---|---|---|---|"]
    lines += [f"| {r['rank']} | {fmt(r['centroid'])} | {fmt(r['size'])} | {r['score']:.2f} | {r['gaussians']} |"
              for r in rows]
    return "\n".join(lines)


def legend_html(labels: GaussianLabels, vocabulary: list[str], limit: int = 24) -> str:
    palette = label_palette()
    swatch = 'style="width:14px;height:14px;border:1px solid #333;background:rgb{}"'
    items = [f'<div style="display:flex;align-items:center;gap:6px;font-size:0.85em">'
             f'<span {swatch.format(tuple(int(v) for v in palette[c]))}></span>'
             f'{html.escape(vocabulary[c])} ({share:.0f}%)</div>'
             for c, share in labels.shares(len(vocabulary))[:limit]]
    return '<div style="display:grid;grid-template-columns:1fr 1fr;gap:2px 8px">' + "".join(items) + "</div>"


def up_direction(dataset: SequenceDataset | None) -> np.ndarray:
    """The world's up: the mean of the cameras' up (-y of the optical frame), +z without cameras."""
    if dataset is None or len(dataset) == 0:
        return np.array([0.0, 0.0, 1.0])
    ups = [-dataset.camera_at(i).world_from_camera[:3, 1] for i in np.linspace(0, len(dataset) - 1, 20).astype(int)]
    up = np.mean(ups, axis=0)
    return up / np.linalg.norm(up) if np.linalg.norm(up) > 1e-6 else np.array([0.0, 0.0, 1.0])


def start_view(camera, up: np.ndarray, back_m: float = 0.8, rise_m: float = 0.5) -> tuple[tuple, tuple]:
    """(position, look_at) for the page's first view: behind and above a recorded camera, looking where it looks,
    so the map is seen from where the robot saw it (outside a room, the walls' backs hide everything)."""
    T = camera.world_from_camera
    forward = T[:3, 2]
    position = T[:3, 3] - back_m * forward + rise_m * up
    return tuple(float(x) for x in position), tuple(float(x) for x in T[:3, 3] + 2.0 * forward)


class MapViewer:
    """The map (and optionally its dataset) served by viser. ``query(text)`` is what the page's search runs."""

    def __init__(self, map_path: str | Path, data: str | Path | None = None, host: str = "127.0.0.1",
                 port: int = 8080) -> None:
        import viser

        t0 = time.perf_counter()
        self.map_path = Path(map_path)
        self.gmap = load_ply(self.map_path)
        self.model, self.no_semantics_reason = self._semantics()
        self.text = TextEncoder.from_identity(self.model.text_encoder) if self.model else None
        self.labels = gaussian_labels(self.gmap, self.model) if self.model else None
        self.dataset = open_dataset(data) if data is not None else None
        self.arrays = splat_arrays(self.gmap)
        self.answer: QueryAnswer | None = None
        self._object_handles: list = []  # boxes and labels of the last answer
        self._up = up_direction(self.dataset)
        self.server = viser.ViserServer(host=host, port=port, verbose=False)
        # viser's share button would publish the map through a public tunnel: the viewer stays where --host says.
        self.server.gui.configure_theme(show_share_button=False, show_logo=False)
        self.server.scene.set_up_direction(tuple(float(x) for x in self._up))
        self.splats = self.server.scene.add_gaussian_splats(
            "/map", centers=self.arrays.centers, covariances=self.arrays.covariances, rgbs=self.arrays.rgbs,
            opacities=self.arrays.opacities)
        self._build_gui()
        if self.dataset is not None:
            self._add_frustums()
            position, target = start_view(self.dataset.camera_at(self.dataset.train_indices[0]), self._up)
            self.server.initial_camera.position, self.server.initial_camera.look_at = position, target
            self.server.initial_camera.near = 0.01
        self.load_seconds = time.perf_counter() - t0

    # ----------------------------------------------------------------- state
    def _semantics(self) -> tuple[SemanticModel | None, str]:
        if self.gmap.sem_dim == 0:
            return None, "this map has no semantic attributes (it was mapped without --semantics)"
        model = load_semantics(self.map_path, self.gmap)
        if model is None:
            return None, f"no {self.map_path.stem}.semantics.pt beside the map (it holds the decoder and vocabulary)"
        if model.vocabulary_embeddings is None or len(model.vocabulary) < 2:
            return model, "the semantic model has no class vocabulary: queries work, class colours do not"
        return model, ""

    @property
    def url(self) -> str:
        return f"http://{self.server.get_host()}:{self.server.get_port()}"

    def colour_by(self, mode: str) -> None:
        """'colour', 'semantic classes' or 'query relevancy': recolour the splats."""
        if mode == "semantic classes" and self.labels is not None:
            rgbs = label_palette()[self.labels.class_ids].astype(np.float32) / 255.0
        elif mode == "query relevancy" and self.answer is not None:
            rgbs = relevancy_colours(self.arrays.rgbs, self.answer)
        else:
            rgbs = self.arrays.rgbs
        self.splats.rgbs = rgbs

    def query(self, label: str) -> QueryAnswer:
        """Answer ``label`` on the map, recolour by relevancy, box and label each object, fill the object list."""
        label = label.strip()
        if self.model is None:
            raise ValueError(f"no semantics to query: {self.no_semantics_reason}")
        if not label:
            raise ValueError("empty query: type an object name such as 'chair'")
        t0 = time.perf_counter()
        negatives = negative_names(self.model.vocabulary, label)
        self.answer = query_map(self.gmap, self.model.decoder, self.text.encode([label])[0],
                                self.text.encode(negatives), None)
        ms = (time.perf_counter() - t0) * 1e3
        for handle in self._object_handles:
            handle.remove()
        self._object_handles = []
        for k, inst in enumerate(self.answer.instances, start=1):
            centre, size = (inst.box_min + inst.box_max) / 2, np.maximum(inst.box_max - inst.box_min, 0.02)
            self._object_handles += [
                self.server.scene.add_box(f"/objects/{k}", color=(255, 60, 40), dimensions=tuple(size),
                                          wireframe=True, position=tuple(centre)),
                self.server.scene.add_label(f"/objects/{k}_label", f"{label} #{k} ({inst.score:.2f})",
                                            position=tuple(centre + size * self._up / 2))]
        self.mode.value = "query relevancy"
        self.colour_by("query relevancy")
        self.objects.content = objects_markdown(label, self.answer, ms)
        return self.answer

    # ----------------------------------------------------------------- page
    def _build_gui(self) -> None:
        gui = self.server.gui
        gui.add_markdown(f"**{html.escape(self.map_path.name)}**: {len(self.gmap):,} Gaussians"
                         + (f", {self.gmap.sem_dim} semantic attributes" if self.gmap.sem_dim else ""))
        modes = ["colour"] + (["semantic classes"] if self.labels is not None else []) + \
            (["query relevancy"] if self.model is not None else [])
        self.mode = gui.add_dropdown("Show", modes, initial_value="colour")
        self.mode.on_update(lambda _: self.colour_by(self.mode.value))
        if self.labels is not None:
            with gui.add_folder("Classes"):
                gui.add_html(legend_html(self.labels, self.model.vocabulary))
        if self.model is None:
            gui.add_markdown(f"Colour only: {html.escape(self.no_semantics_reason)}.")
            self.objects = gui.add_markdown("")
            return
        self.search_text = gui.add_text("Find", initial_value="", hint="an object, e.g. chair")
        search = gui.add_button("Search")
        self.objects = gui.add_markdown("Type an object name and press Search.")

        def run(_event) -> None:
            try:
                self.query(self.search_text.value)
            except ValueError as exc:
                self.objects.content = f"**{html.escape(str(exc))}**"

        search.on_click(run)

    def _add_frustums(self) -> None:
        ds = self.dataset
        picks = sorted(set(np.linspace(0, len(ds) - 1, min(MAX_FRUSTUMS, len(ds))).astype(int).tolist()))
        self.view_image = None
        with self.server.gui.add_folder("Camera views"):
            self.view_caption = self.server.gui.add_markdown("Click a camera frustum to compare its view.")
        for i in picks:
            cam = ds.camera_at(i)
            T = cam.world_from_camera
            fov = 2 * np.arctan2(cam.height / 2, cam.K[1, 1])
            frustum = self.server.scene.add_camera_frustum(
                f"/cameras/{i}", fov=float(fov), aspect=cam.width / cam.height, scale=0.08, thickness=0.004,
                color=(40, 90, 220), wxyz=tuple(rotmat_to_quat(T[:3, :3])), position=tuple(T[:3, 3]))
            frustum.on_click(lambda _event, index=i: self.show_view(index))

    def show_view(self, index: int) -> np.ndarray:
        """Render dataset frame ``index`` from the map; show it beside the recorded image. Returns the panel."""
        frame = self.dataset[index]
        with torch.no_grad():
            rgb = to_uint8(self.gmap.render(frame.camera, semantic=False).image.clamp(0, 1).cpu().numpy())
        panel = titled_row([frame.rgb, rgb], [f"recorded (frame {index})", "map render"], min_width=240)
        if self.view_image is None:
            with self.server.gui.add_folder("Camera views"):
                self.view_image = self.server.gui.add_image(panel, label=None)
        else:
            self.view_image.image = panel
        self.view_caption.content = f"Frame {index}: recorded | map render"
        return panel

    def close(self) -> None:
        self.server.stop()
