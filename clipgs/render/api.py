"""The one render interface: Gaussians + camera -> image, depth, alpha, per-Gaussian radii."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

from clipgs.data.frame import Camera
from clipgs.render import cpu_kernel
from clipgs.render.cpu_backend import composite_cpu, cull_cpu, project_cpu, render_cpu
from clipgs.render.gsplat_backend import gsplat_available, rasterize_gsplat
from clipgs.render.occlusion import Occluder
from clipgs.render.projection import project_gaussians
from clipgs.render.torch_backend import TILE, composite

BACKENDS = ("auto", "cpu", "cpu_scalar", "torch", "gsplat")
COMPILED_CPU_BACKENDS = ("cpu", "cpu_scalar")  # the compiled kernel, vectorised or scalar compositing
COLOR_CHANNELS = 3  # features are laid out as RGB first, then the semantic attribute channels
# A render with gradients first leaves out the Gaussians out of view when fewer than this share of them are in it:
# the copies of the rest (index_select) and their backward (a scatter into zeros per field) cost about what
# projecting and compositing them would (fwd+bwd at 160x120, 2 cores: 20k Gaussians with 65 % in view 17.4 ms
# with the cull, 15.2 without; 200k with 57 %, 75.8 / 71.6; the cull pays from about a third in view).
CULL_KEEP_SHARE = 0.5


@dataclass
class RenderOutput:
    """What one camera sees.

    image: (H, W, C) composited features (RGB and semantic channels alike), plus background; ``rgb`` and
        ``semantics`` split it by the one feature layout (RGB first, then the attribute channels).
    depth: (H, W) accumulated depth sum_i w_i z_i in metres (not normalised; see ``expected_depth``).
    alpha: (H, W) accumulated opacity in [0, 1].
    radii: (N, 2) int32 screen half-extent per Gaussian in pixels; (0, 0) = not rendered.
    means2d: (N, 2) projected centres in pixels (OpenCV convention: integer = pixel centre); meaningful where
        radii > 0 (0 for Gaussians culled before projection).
    backend: name of the backend that produced it.
    """

    image: Tensor
    depth: Tensor
    alpha: Tensor
    radii: Tensor
    means2d: Tensor
    backend: str
    attribute_pixels: Tensor | None = None  # (P,) where the channels after RGB were asked for (None: all)
    _parts: tuple[Tensor, Tensor, Tensor] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def rgb(self) -> Tensor:
        """(H, W, 3) rendered colour."""
        return self._split()[0]

    @property
    def semantics(self) -> Tensor:
        """(H, W, d) rendered semantic attributes (d = 0 when rendered without them)."""
        return self._split()[1]

    def _split(self) -> tuple[Tensor, Tensor, Tensor]:
        """(rgb, semantics, image) from one split of ``image``: a loss on both then backpropagates through one
        concatenation rather than a zero-filled (H, W, C) buffer per slice."""
        if self._parts is None or self._parts[2] is not self.image:
            rgb, sem = self.image.split([COLOR_CHANNELS, self.image.shape[-1] - COLOR_CHANNELS], dim=-1)
            self._parts = (rgb, sem, self.image)
        return self._parts

    @property
    def visible(self) -> Tensor:
        """(N,) bool: Gaussians that touched the image."""
        return (self.radii > 0).any(dim=-1)

    def expanded(self, rows: Tensor, n: int) -> RenderOutput:
        """This render of the Gaussians ``rows`` (V,) of an N-Gaussian map, as the whole map's (radii and centres
        of the others 0)."""
        radii = self.radii.new_zeros(n, 2).index_copy(0, rows, self.radii)
        means2d = self.means2d.new_zeros(n, 2).index_copy(0, rows, self.means2d)
        return RenderOutput(self.image, self.depth, self.alpha, radii, means2d, self.backend, self.attribute_pixels)

    def expected_depth(self, min_alpha: float = 1e-6) -> Tensor:
        """(H, W) depth / alpha in metres; 0 where alpha < ``min_alpha``."""
        return torch.where(self.alpha >= min_alpha, self.depth / self.alpha.clamp(min=min_alpha), 0.0)


def resolve_backend(backend: str, device: torch.device) -> str:
    """Pick the backend.

    'auto': gsplat for CUDA tensors (when importable); on the CPU the compiled kernel ('cpu'), or the
    plain PyTorch reference ('torch') where it cannot be built. 'torch' runs on any device. 'cpu_scalar' is
    the compiled kernel without the vectorised compositing (the previous kernel, kept for comparison).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown render backend {backend!r}; expected one of {BACKENDS}")
    if backend == "auto":
        if device.type == "cuda":
            return "gsplat" if gsplat_available() else "torch"
        return "cpu" if device.type == "cpu" and cpu_kernel.available() else "torch"
    if backend in COMPILED_CPU_BACKENDS and (device.type != "cpu" or not cpu_kernel.available()):
        raise RuntimeError(f"render backend {backend!r} needs CPU tensors and a C++ compiler to build its kernel "
                           "(see clipgs.render.cpu_kernel); use backend='torch' instead")
    if backend == "gsplat" and not (device.type == "cuda" and gsplat_available()):
        raise RuntimeError(
            "render backend 'gsplat' needs a CUDA GPU, gsplat installed and the Gaussians on the GPU; "
            "use backend='torch' (or 'auto') on CPU"
        )
    return backend


def camera_tensors(camera: Camera, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """(viewmat (4, 4), K (3, 3)) tensors; K shifted by +0.5 px to gsplat's pixel-centre convention."""
    K = np.array(camera.K, dtype=np.float64, copy=True)
    K[0, 2] += 0.5
    K[1, 2] += 0.5
    viewmat = torch.as_tensor(camera.camera_from_world, dtype=dtype, device=device)
    return viewmat, torch.as_tensor(K, dtype=dtype, device=device)


def rasterize(
    means: Tensor,
    quats: Tensor,
    log_scales: Tensor,
    opacity_logits: Tensor,
    features: Tensor | Sequence[Tensor],
    camera: Camera,
    *,
    background: Tensor | None = None,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = 0.3,
    backend: str = "auto",
    attribute_pixels: Tensor | None = None,
    cull: bool = True,
    attributes_move_geometry: bool = True,
) -> RenderOutput:
    """Render N Gaussians into one camera.

    means: (N, 3) world metres. quats: (N, 4) (w, x, y, z), normalised here.
    log_scales: (N, 3) log standard deviations (metres). opacity_logits: (N,) pre-sigmoid opacities.
    features: (N, C) any channel count; RGB and semantic attributes render in one pass. Or a sequence of
        (N, C_i) parts rendered as their concatenation along channels (colour and attributes kept apart: the
        compiled backend then never copies the whole map's features).
    camera: intrinsics, size and world_from_camera pose (OpenCV optical frame).
    background: optional (C,) added where alpha < 1: image + (1 - alpha) * background.
    backend: 'auto' (gsplat on CUDA, the compiled kernel on CPU), 'cpu', 'cpu_scalar', 'torch' (reference) or
        'gsplat'.
    attribute_pixels: optional (P,) flat row-major pixel indices: the channels after RGB are only wanted there
        (a loss on sampled pixels); elsewhere they may come back 0 (the 'cpu' kernel skips them per 8-pixel row
        segment, about a third of a 16-attribute render at 320x240; other backends compute every pixel).
    cull: first leave out the Gaussians :func:`maybe_in_view` rules out (a superset of those composited, so the
        image is the same) when that drops more than half of them (``CULL_KEEP_SHARE``): projection, binning and
        the feature copies then scale with the view, not the map (a 185k-Gaussian flat at 160x120: 32.5 -> 27.2 ms
        a view on average).
        Not on gsplat, which culls on the GPU, nor on a 'cpu' render that wants no gradient, whose one compiled
        call culls before anything is copied; False where the caller already holds the view's rows.
    attributes_move_geometry: False: the gradients of the channels after RGB reach those features only, not the
        means, quats, scales or opacities (as if the attributes were composited with detached geometry), so a
        semantic loss never bends the map's shape. The 'cpu' kernels leave those channels out of dL/dalpha (less
        work); the other backends render the attributes a second time with the geometry detached.
    """
    n = means.shape[0]
    for name, t, shape in (
        ("means", means, (n, 3)), ("quats", quats, (n, 4)), ("log_scales", log_scales, (n, 3)),
        ("opacity_logits", opacity_logits, (n,)),
    ):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    parts = tuple(features) if isinstance(features, (tuple, list)) else (features,)
    for part in parts:
        if part.dim() != 2 or part.shape[0] != n:
            raise ValueError(f"features must have shape ({n}, C), got {tuple(part.shape)}")
    chosen = resolve_backend(backend, means.device)
    if _renders_in_one_call(chosen, means, quats, log_scales, opacity_logits, *parts):
        viewmat, K = camera_tensors(camera, torch.float32, means.device)
        image, depth, alpha, radii, means2d = render_cpu(
            means, quats, log_scales, torch.sigmoid(opacity_logits), viewmat, K, camera.width, camera.height, parts,
            near, far, eps2d, attribute_pixels)
        return RenderOutput(_on_background(image, alpha, background), depth, alpha, radii, means2d, chosen,
                            attribute_pixels)
    rows = worth_culling(means, log_scales, opacity_logits, camera, near, far, eps2d, chosen) if cull else None
    options = dict(near=near, far=far, eps2d=eps2d, backend=chosen, attribute_pixels=attribute_pixels, cull=False)
    if rows is not None:
        part = rasterize(*(t.index_select(0, rows) for t in (means, quats, log_scales, opacity_logits)),
                         tuple(t.index_select(0, rows) for t in parts), camera, background=background,
                         attributes_move_geometry=attributes_move_geometry, **options)
        return part.expanded(rows, n)
    if chosen not in COMPILED_CPU_BACKENDS:  # the compiled kernel's one concatenation (depth first) takes the parts
        features = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        if not attributes_move_geometry and features.shape[1] > COLOR_CHANNELS:
            return _attributes_on_detached_geometry(means, quats, log_scales, opacity_logits, features, camera,
                                                    background, options)
    viewmat, K = camera_tensors(camera, means.dtype, means.device)
    W, H = camera.width, camera.height
    opacities = torch.sigmoid(opacity_logits)
    if chosen == "gsplat":
        quats_n = quats / quats.norm(dim=-1, keepdim=True)
        image, depth, alpha, radii, means2d = rasterize_gsplat(
            means, quats_n, torch.exp(log_scales), opacities, features, viewmat, K, W, H, near, far, eps2d
        )
    elif chosen in COMPILED_CPU_BACKENDS:
        proj = project_cpu(means, quats, log_scales, opacities, viewmat, K, W, H, near, far, eps2d)
        image, depth, alpha = composite_cpu(proj, parts, W, H, chosen == "cpu", attribute_pixels,
                                            attributes_move_geometry)
        radii, means2d = proj.radii, proj.means2d
    else:
        proj = project_gaussians(means, quats, log_scales, opacities, viewmat, K, W, H, near, far, eps2d)
        image, depth, alpha = composite(proj, features, W, H)
        radii, means2d = proj.radii, proj.means2d
    return RenderOutput(_on_background(image, alpha, background), depth, alpha, radii, means2d - 0.5, chosen,
                        attribute_pixels)


def _on_background(image: Tensor, alpha: Tensor, background: Tensor | None) -> Tensor:
    """image + (1 - alpha) * background where a background (C,) is given, else the image itself."""
    return image if background is None else image + (1.0 - alpha)[..., None] * background.to(image.dtype)


def _renders_in_one_call(backend: str, means: Tensor, *tensors: Tensor) -> bool:
    """True where :func:`clipgs.render.cpu_backend.render_cpu` gives the render: the vectorised 'cpu' backend,
    float32 geometry, and no gradient wanted (no grad mode, or nothing that requires one)."""
    wants_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (means, *tensors))
    return backend == "cpu" and TILE == 16 and means.dtype == torch.float32 and not wants_grad


def _attributes_on_detached_geometry(means: Tensor, quats: Tensor, log_scales: Tensor, opacity_logits: Tensor,
                                     features: Tensor, camera: Camera, background: Tensor | None,
                                     options: dict) -> RenderOutput:
    """``rasterize(attributes_move_geometry=False)`` on backends without the kernel flag: RGB rendered with the
    geometry, the channels after it rendered again with the geometry detached (same image, two passes)."""
    split = [COLOR_CHANNELS, features.shape[1] - COLOR_CHANNELS]
    colour, attributes = features.split(split, dim=1)
    back = (None, None) if background is None else background.split(split)
    geo = rasterize(means, quats, log_scales, opacity_logits, colour, camera, background=back[0], **options)
    att = rasterize(means.detach(), quats.detach(), log_scales.detach(), opacity_logits.detach(), attributes,
                    camera, background=back[1], **options)
    return replace(geo, image=torch.cat([geo.image, att.image], dim=-1))


def worth_culling(means: Tensor, log_scales: Tensor, opacity_logits: Tensor, camera: Camera, near: float = 0.01,
                  far: float = 1e10, eps2d: float = 0.3, backend: str = "auto") -> Tensor | None:
    """Sorted rows (V,) of the Gaussians :func:`maybe_in_view` keeps when rendering only them pays (fewer than
    ``CULL_KEEP_SHARE`` of N; not on gsplat, which culls on the GPU), else None: render them all."""
    n = means.shape[0]
    if n == 0 or resolve_backend(backend, means.device) == "gsplat":
        return None
    rows = torch.nonzero(maybe_in_view(means, log_scales, opacity_logits, camera, near=near, far=far, eps2d=eps2d,
                                       backend=backend)).squeeze(1)
    return rows if len(rows) < CULL_KEEP_SHARE * n else None


@torch.no_grad()
def maybe_in_view(means: Tensor, log_scales: Tensor, opacity_logits: Tensor, camera: Camera, *, near: float = 0.01,
                  far: float = 1e10, eps2d: float = 0.3, backend: str = "auto",
                  occluder: Occluder | None = None) -> Tensor:
    """(N,) bool: a superset of the Gaussians ``rasterize`` composites into ``camera``, from centres and largest
    scales only (no covariance): depth inside (near, far), opacity >= 1/255, and the centre within a bound of
    the footprint's radius from the image (the largest scale seen at the clamped field-of-view edge, 3.33
    sigma). The compiled projection's own cull on the CPU; these PyTorch ops on other devices.

    occluder: also drop the Gaussians an observed surface hides (:class:`clipgs.render.occlusion.Occluder`, its
    image (H, W) of ``camera``'s size); those may still composite a little where the map is see-through there.
    """
    viewmat, K = camera_tensors(camera, means.dtype, means.device)
    W, H = camera.width, camera.height
    if occluder is not None and tuple(occluder.far.shape) != (H, W):
        raise ValueError(f"occluder image is {tuple(occluder.far.shape)}, the camera is ({H}, {W})")
    if resolve_backend(backend, means.device) in COMPILED_CPU_BACKENDS:
        return cull_cpu(means, log_scales, torch.sigmoid(opacity_logits), viewmat, K, W, H, near, far, eps2d, occluder)
    cam = means @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = cam[:, 2]
    keep = (z > near) & (z < far) & (torch.sigmoid(opacity_logits) >= 1 / 255)
    zs = torch.where(keep, z, torch.ones_like(z))
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    lim_x = torch.maximum((W - cx) / fx, cx / fx) + 0.3 * 0.5 * W / fx  # the projection's clamp of x/z, y/z
    lim_y = torch.maximum((H - cy) / fy, cy / fy) + 0.3 * 0.5 * H / fy
    s_max = log_scales.max(dim=1).values.exp()
    reach_x = 3.33 * torch.sqrt((fx / zs * s_max) ** 2 * (1 + lim_x**2) + eps2d) + 1
    reach_y = 3.33 * torch.sqrt((fy / zs * s_max) ** 2 * (1 + lim_y**2) + eps2d) + 1
    mx, my = fx * cam[:, 0] / zs + cx, fy * cam[:, 1] / zs + cy
    keep &= (mx + reach_x > 0) & (mx - reach_x < W) & (my + reach_y > 0) & (my - reach_y < H)
    if occluder is None:
        return keep
    r = occluder.radius_px
    tested = (reach_x <= r) & (reach_y <= r)
    pix = my.clamp(0, H - 1).long() * W + mx.clamp(0, W - 1).long()  # the pixel nearest the centre
    hidden = zs - 3 * s_max > occluder.far.to(means).reshape(-1)[pix] + occluder.margin_m
    return keep & ~(tested & hidden)


def splat_to_gaussians(means: Tensor, quats: Tensor, log_scales: Tensor, opacity_logits: Tensor, camera: Camera,
                       values: Tensor, *, backend: str = "auto") -> Tensor:
    """(N, C): for each Gaussian, the sum over pixels of its compositing weight times ``values`` (H, W, C).

    The transpose of compositing (rendering features F gives image(p) = sum_i w_i(p) F_i, so this is
    d sum_p <image(p), values(p)> / dF): one backward pass through any backend. With one-hot class images it
    counts, per Gaussian, how much of each class the pixels it was seen on carry (label fusion).
    """
    if tuple(values.shape[:2]) != (camera.height, camera.width) or values.dim() != 3:
        raise ValueError(f"values must have shape ({camera.height}, {camera.width}, C), got {tuple(values.shape)}")
    features = torch.zeros(means.shape[0], values.shape[2], dtype=means.dtype, device=means.device,
                           requires_grad=True)
    with torch.enable_grad():
        out = rasterize(means.detach(), quats.detach(), log_scales.detach(), opacity_logits.detach(), features,
                        camera, backend=backend)
        (grad,) = torch.autograd.grad((out.image * values.to(out.image)).sum(), features)
    return grad
