"""``clipgs`` commands that use a saved map: query, render; and params, demo."""
from __future__ import annotations

import argparse


def run_query(args: argparse.Namespace) -> int:

    from clipgs.data.dataset import open_dataset
    from clipgs.mapping import load_ply
    from clipgs.mapping.ply import MapFileError
    from clipgs.semantics.instances import describe_instances
    from clipgs.semantics.model import load_semantics
    from clipgs.semantics.query import negative_names, query_map, write_query_images
    from clipgs.semantics.text import TextEncoder

    if not args.label.strip():
        raise ValueError("empty query: give an object name such as 'chair'")
    gmap = load_ply(args.map)
    model = load_semantics(args.map, gmap)
    if model is None:
        raise MapFileError(f"{args.map}: no semantic model beside it; map with --semantics to get one")
    text = TextEncoder.from_identity(model.text_encoder)
    label = args.label.strip()
    camera = None
    if args.data is not None:
        camera = open_dataset(args.data)[args.view].camera
    negatives = text.encode(negative_names(model.vocabulary, label, args.negatives))
    answer = query_map(gmap, model.decoder, text.encode([label])[0], negatives, camera)
    if camera is not None:
        write_query_images(answer, args.out, answer.rgb, label)
        print(f"'{label}': {int(answer.mask.sum())} pixels, score {answer.score:.2f}; wrote {args.out}/mask.png, "
              f"relevancy.png, overlay.png")
    if answer.centroid is None:
        print(f"'{label}': no Gaussians above the relevancy threshold")
    else:
        print(f"3D: {int(answer.selected.sum())} Gaussians (metres, map frame), {describe_instances(answer.instances)}")
    return 0


def run_render(args: argparse.Namespace) -> int:
    from clipgs.data.dataset import open_dataset
    from clipgs.eval.evaluate import write_view_images
    from clipgs.mapping import load_ply

    gmap = load_ply(args.map)
    ds = open_dataset(args.data)
    paths = write_view_images(gmap, ds[args.view], args.out, backend=args.backend)
    print("wrote", ", ".join(str(p) for p in paths))
    return 0


def run_params(args: argparse.Namespace) -> int:
    from clipgs.parameters import params_file_text

    text = params_file_text()
    if args.out is None:
        print(text, end="")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote every parameter with its default and help to {args.out}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from clipgs.demo import run_demo

    run_demo(args.out, teacher_kind=args.teacher)
    return 0
