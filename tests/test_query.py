"""Text queries: relevancy, the 2D mask and the matching Gaussians split into 3D objects."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from clipgs.semantics.sac import SemanticDecoder


def test_relevancy_and_3d_query_on_a_toy_map():
    from clipgs.mapping import GaussianMap
    from clipgs.semantics.query import query_map, relevancy, relevancy_from_cosines

    g = torch.Generator().manual_seed(0)
    chair, table, other = torch.nn.functional.normalize(torch.randn(3, 16, generator=g), dim=-1)
    x = torch.stack([chair, table])
    rel = relevancy(x, chair, torch.stack([table, other]))
    assert rel[0] > 0.99 and rel[1] < 0.01
    cosines = torch.rand(50, 1 + 30, generator=g) * 2 - 1  # LERF's definition, pair by pair: the same values
    pairwise = torch.stack([torch.softmax(torch.stack([cosines[:, 0], cosines[:, k]], -1) / 0.01, -1)[:, 0]
                            for k in range(1, 31)]).min(dim=0).values
    torch.testing.assert_close(relevancy_from_cosines(cosines), pairwise, rtol=1e-6, atol=1e-7)
    # A toy map: two clusters of Gaussians whose attributes decode (identity decoder) to chair / table.
    n = 200
    means = torch.cat([torch.randn(n, 3, generator=g) * 0.05 + torch.tensor([1.0, 0, 0]),
                       torch.randn(n, 3, generator=g) * 0.05 + torch.tensor([-1.0, 0, 0])])
    sem = torch.cat([chair.expand(n, 16), table.expand(n, 16)])
    gmap = GaussianMap(means, torch.tensor([[1.0, 0, 0, 0]]).expand(2 * n, 4), torch.full((2 * n, 3), -3.0),
                       torch.full((2 * n,), 3.0), torch.zeros(2 * n, 3), sem)
    identity = SemanticDecoder(16, 16)
    with torch.no_grad():
        identity.net[0].weight.copy_(torch.eye(128, 16))
        identity.net[0].bias.zero_()
        identity.net[2].weight.copy_(torch.eye(16, 128))
        identity.net[2].bias.zero_()
    chair_pos = torch.relu(chair)  # the ReLU decoder keeps only positive parts; query with what it outputs
    answer = query_map(gmap, identity, torch.nn.functional.normalize(chair_pos, dim=0),
                       torch.nn.functional.normalize(torch.relu(torch.stack([table, other])), dim=-1), None)
    assert answer.selected[:n].all() and not answer.selected[n:].any()
    np.testing.assert_allclose(answer.centroid, [1.0, 0, 0], atol=0.02)
    assert answer.box_min[0] > 0.8 and answer.box_max[0] < 1.2
    assert answer.instances[0].gaussians > 0.9 * n and sum(i.gaussians for i in answer.instances) <= n
    with pytest.raises(ValueError, match="not finite"):
        query_map(gmap, identity, torch.full((16,), float("nan")), torch.stack([table]), None)


def test_query_splits_matching_gaussians_into_instances():
    from clipgs.semantics.instances import group_instances

    g = np.random.default_rng(0)
    # Two chairs 1.9 m apart, made of surface-like points 2 cm apart, and one stray Gaussian far away.
    seat = np.stack(np.meshgrid(np.arange(0, 0.44, 0.02), np.arange(0, 0.44, 0.02), [0.45]), -1).reshape(-1, 3)
    back = np.stack(np.meshgrid([0.42], np.arange(0, 0.44, 0.02), np.arange(0.45, 1.05, 0.02)), -1).reshape(-1, 3)
    chair = np.concatenate([seat, back])
    left, right = chair + np.array([-1.0, 0, 0]), chair[::2] + np.array([0.9, 0, 0])  # right: half as dense
    stray = np.array([[0.0, 3.0, 1.0]])
    points = np.concatenate([left, right, stray])
    weights = g.uniform(0.5, 1.0, len(points))
    found = group_instances(points, weights)
    assert [i.gaussians for i in found] == [len(left), len(right)]  # strongest first, stray dropped
    assert found[0].weight > found[1].weight
    for inst, pts in zip(found, (left, right), strict=True):
        assert np.all(inst.box_min >= pts.min(0) - 1e-9) and np.all(inst.box_max <= pts.max(0) + 1e-9)
        assert np.all(inst.box_min <= inst.centroid) and np.all(inst.centroid <= inst.box_max)
        assert np.linalg.norm(inst.centroid - pts.mean(0)) < 0.05
    # A copy 6 cm over touches the first: one object. Only strays: the largest stray group is still an answer.
    assert len(group_instances(np.concatenate([left, left + np.array([0.06, 0, 0])]), np.ones(2 * len(left)))) == 1
    assert [i.gaussians for i in group_instances(stray, np.ones(1))] == [1]
    # A fragment (a few mislabelled Gaussians) much lighter than the strongest object is not an object.
    fragment = chair[:40] + np.array([0, 2.0, 0])
    found = group_instances(np.concatenate([left, fragment]), np.ones(len(left) + 40))
    assert [i.gaussians for i in found] == [len(left)]
    assert len(group_instances(np.concatenate([left, fragment]), np.ones(len(left) + 40), min_fraction=0.0)) == 2
    # Under 20 Gaussians is a fragment however heavy (a small object's stray pieces came back as extra objects).
    few = chair[:15] + np.array([0, 2.0, 0])
    heavy = np.concatenate([np.ones(len(left)), np.full(15, 100.0)])
    assert [i.gaussians for i in group_instances(np.concatenate([left, few]), heavy)] == [len(left)]
    assert len(group_instances(np.concatenate([left, few]), heavy, min_gaussians=10)) == 2
    assert group_instances(np.zeros((0, 3)), np.zeros(0)) == []


def test_query_joins_pieces_of_one_object_but_not_two_like_objects():
    from clipgs.semantics.instances import group_instances

    def plank(x0: float, x1: float) -> np.ndarray:  # a flat board sampled every 2 cm
        return np.stack(np.meshgrid(np.arange(x0, x1, 0.02), np.arange(0, 0.4, 0.02), [0.5]), -1).reshape(-1, 3)

    # A cabinet front that matches in two pieces 10 cm apart (not touching at 5 cm voxels, touching at 10 cm).
    body, piece = plank(0.0, 0.6), plank(0.7, 0.82)
    found = group_instances(np.concatenate([body, piece]), np.ones(len(body) + len(piece)))
    assert [i.gaussians for i in found] == [len(body) + len(piece)]
    assert found[0].centroid[0] > body[:, 0].mean()  # the joined piece counts in the centroid
    assert len(group_instances(np.concatenate([body, piece]), np.ones(len(body) + len(piece)), absorb=0.0)) == 2
    # Two chairs' seats with the same gap between them: like pieces, two objects.
    twin = plank(0.7, 1.3)
    assert len(group_instances(np.concatenate([body, twin]), np.ones(len(body) + len(twin)))) == 2


def test_query_joins_patches_of_one_wall_but_not_other_planes_or_small_flat_things():
    from clipgs.semantics.instances import group_instances

    def patch(x0: float, x1: float, y0: float, y1: float, z: float = 2.6, step: float = 0.04) -> np.ndarray:
        return np.stack(np.meshgrid(np.arange(x0, x1, step), np.arange(y0, y1, step), [z]), -1).reshape(-1, 3)

    def sizes(*parts: np.ndarray, **options) -> list[int]:
        points = np.concatenate(parts)
        return sorted(i.gaussians for i in group_instances(points, np.ones(len(points)), **options))

    # A ceiling the query matches in three patches, 15 and 20 cm apart (where the rest of it reads as something
    # else): one surface. Not with plane_gap_m 0, nor 50 cm apart.
    a, b, c = patch(0.0, 1.5, 0.0, 1.2), patch(1.65, 3.0, 0.0, 1.2), patch(0.0, 1.5, 1.4, 2.6)
    assert sizes(a, b, c) == [len(a) + len(b) + len(c)]
    assert sizes(a, b, c, plane_gap_m=0.0) == sorted([len(a), len(b), len(c)])
    fine = [patch(0.0, 1.5, 0.0, 1.2, step=0.006), patch(1.65, 3.0, 0.0, 1.2, step=0.006)]  # gaps on a sample
    assert len(fine[0]) > 2 * 20_000 and sizes(*fine) == [len(fine[0]) + len(fine[1])]
    far = patch(2.0, 3.5, 0.0, 1.2)
    assert sizes(a, far) == sorted([len(a), len(far)])
    # The floor under it (another plane), and a ceiling patch 10 cm lower (a soffit): not the same surface.
    floor, soffit = patch(0.0, 1.5, 0.0, 1.2, z=0.0), patch(1.65, 3.0, 0.0, 1.2, z=2.5)
    assert sizes(a, floor) == sorted([len(a), len(floor)]) and sizes(a, soffit) == sorted([len(a), len(soffit)])
    # Two pictures side by side on one wall are flat and coplanar, but small: two objects.
    left, right = patch(0.0, 0.6, 0.0, 0.4, step=0.02), patch(0.8, 1.4, 0.0, 0.4, step=0.02)
    assert sizes(left, right) == [len(left), len(right)]


def test_a_misread_floor_does_not_make_solid_objects_fragments():
    from clipgs.semantics.instances import group_instances

    def box(x0: float, y0: float, size: float, step: float = 0.03) -> np.ndarray:
        """The surface of a cube standing on the floor at (x0, y0): a solid object."""
        grid = np.arange(0, size + 1e-9, step)
        u, v = [a.ravel() for a in np.meshgrid(grid, grid)]
        faces = [np.stack([u, v, np.full_like(u, z)], -1) for z in (0.0, size)]
        faces += [np.stack([np.full_like(u, x), u, v], -1) for x in (0.0, size)]
        faces += [np.stack([u, np.full_like(u, y), v], -1) for y in (0.0, size)]
        return np.unique(np.concatenate(faces).round(6), axis=0) + np.array([x0, y0, 0.0])

    # What the query matches: 4 x 4 m of a floor it misreads (heavy: surface counts), a lamp 0.3 m across
    # (a 70th of the floor's weight), a solid stray lighter than a tenth of the lamp, a flat patch (a rug-like
    # stray on the floor, 1 m from it) lighter than a tenth of the floor.
    floor = np.stack(np.meshgrid(np.arange(0, 4, 0.05), np.arange(0, 4, 0.05), [0.0]), -1).reshape(-1, 3)
    lamp, stray = box(6.0, 0.0, 0.3), box(6.0, 3.0, 0.12)
    patch = np.stack(np.meshgrid(np.arange(0, 0.6, 0.05), np.arange(5.0, 5.6, 0.05), [0.0]), -1).reshape(-1, 3)
    parts = {"floor": (floor, 1.0), "lamp": (lamp, 0.2), "stray": (stray, 0.05), "patch": (patch, 1.0)}
    points = np.concatenate([p for p, _ in parts.values()])
    weights = np.concatenate([np.full(len(p), w) for p, w in parts.values()])
    mass = {k: len(p) * w for k, (p, w) in parts.items()}
    assert mass["lamp"] < 0.1 * mass["floor"] and mass["stray"] < 0.1 * mass["lamp"]
    assert mass["patch"] < 0.1 * mass["floor"] and mass["patch"] > mass["lamp"] and len(stray) >= 20
    found = group_instances(points, weights)
    assert [i.gaussians for i in found] == [len(floor), len(lamp)]  # the lamp stays; both strays are fragments
    assert np.linalg.norm(found[1].centroid - lamp.mean(0)) < 0.01
    # Measured against the floor (the rule before), the lamp was dropped; without the floor nothing changes.
    assert [i.gaussians for i in group_instances(lamp, np.full(len(lamp), 0.2))] == [len(lamp)]
    both = np.concatenate([lamp, stray])
    assert [i.gaussians for i in group_instances(both, np.r_[np.full(len(lamp), 0.2), np.full(len(stray), 0.05)])] \
        == [len(lamp)]


def test_joining_pieces_equals_the_loop_over_regions():
    from clipgs.semantics.instances import _centroid, _components, _join_pieces, _regroup, _split, group_instances

    def reference(points, w, pieces, coarse, absorb):  # the loop _join_pieces replaced: one region at a time
        mass = np.array([w[g].sum() for g in pieces])
        centre = np.stack([_centroid(points, w, g) for g in pieces])
        region = coarse[[g[0] for g in pieces]]
        target = np.arange(len(pieces))
        for r in np.unique(region):
            members = np.nonzero(region == r)[0]
            light = mass[members] < absorb * mass[members].max()
            heavy = members[~light]
            for k in members[light]:
                target[k] = heavy[np.argmin(np.linalg.norm(centre[heavy] - centre[k], axis=1))]
        return [np.concatenate([pieces[k] for k in np.nonzero(target == t)[0]]) for t in np.unique(target)]

    rng = np.random.default_rng(3)
    for n, spread in ((300, 0.6), (3000, 1.5), (20000, 3.0)):  # few, some and many pieces per coarse region
        points = rng.uniform(0, spread, (n, 3))
        w = rng.uniform(0.01, 1.0, n) ** 3  # some pieces much lighter than their neighbours
        pieces = _split(_components(points, 0.05))
        coarse = _components(points, 0.1)
        for absorb in (0.0, 0.5, 0.9):
            got = _join_pieces(points, w, pieces, coarse, absorb)
            want = reference(points, w, pieces, coarse, absorb)
            assert len(got) == len(want) and all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
        assert len(got) < len(pieces)  # something was joined
    # A light piece joins the nearest heavy piece of its own coarse region, not a nearer one of the next region.
    points = np.array([[0.0, 0, 0], [3.0, 0, 0], [2.0, 0, 0], [2.1, 0, 0], [5.0, 0, 0]])
    w, coarse = np.array([1.0, 1.0, 0.1, 1.0, 1.0]), np.array([0, 0, 0, 1, 1])
    pieces = [np.array([k]) for k in range(5)]
    want = [[0], [1, 2], [3], [4]]
    assert [list(g) for g in _join_pieces(points, w, pieces, coarse, 0.5)] == want
    assert [list(g) for g in reference(points, w, pieces, coarse, 0.5)] == want
    with pytest.raises(ValueError, match="absorb"):
        group_instances(points, w, absorb=1.5)
    labels = np.array([2, 0, 2, 1])
    parts = [np.array([0]), np.array([1, 2]), np.array([3]), np.array([4, 5])]
    assert [list(g) for g in _regroup(parts, labels)] == [[1, 2], [4, 5], [0, 3]]


def test_footprint_areas_are_the_two_largest_axes():
    from clipgs.mapping import GaussianMap
    from clipgs.semantics.query import footprint_areas

    log_scales = torch.log(torch.tensor([[0.1, 0.001, 0.2], [0.03, 0.03, 0.03]]))
    gmap = GaussianMap(torch.zeros(2, 3), torch.tensor([[1.0, 0, 0, 0]]).expand(2, 4), log_scales, torch.zeros(2),
                       torch.zeros(2, 3), torch.zeros(2, 0))
    assert torch.allclose(footprint_areas(gmap), torch.pi * torch.tensor([0.02, 0.0009]))
