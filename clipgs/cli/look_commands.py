"""``clipgs`` commands to look at a map and take it elsewhere: view (web viewer), export (PLYs other tools open)."""
from __future__ import annotations

import argparse
import time


def run_view(args: argparse.Namespace) -> int:
    from clipgs.viewer import MapViewer

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}: anyone who can reach this machine on port {args.port} sees the map")
    viewer = MapViewer(args.map, args.data, host=args.host, port=args.port)
    if viewer.model is None:
        print(f"colour only: {viewer.no_semantics_reason}")
    print(f"clipgs view: {len(viewer.gmap)} Gaussians loaded in {viewer.load_seconds:.1f} s; open {viewer.url} "
          "(Ctrl-C to stop)", flush=True)
    start = time.monotonic()
    try:
        while args.seconds is None or time.monotonic() - start < args.seconds:
            time.sleep(0.2)
    finally:
        viewer.close()
    return 0


def run_export(args: argparse.Namespace) -> int:
    from clipgs.mapping import load_ply
    from clipgs.mapping.ply import MapFileError, check_writable
    from clipgs.semantics.export import export_labels, export_query_objects, export_semantic_colours
    from clipgs.semantics.model import load_semantics

    if not (args.semantic_colors or args.labels or args.query):
        raise ValueError("nothing to export: give --semantic-colors, --labels or --query TEXT")
    if args.query is not None and (args.semantic_colors or args.labels):
        raise ValueError("--query writes a folder of objects; export --semantic-colors / --labels in another call")
    gmap = load_ply(args.map)
    model = load_semantics(args.map, gmap)
    if model is None:
        raise MapFileError(f"{args.map}: no semantic model beside it; map with --semantics to get one")
    if args.query is not None:
        from clipgs.semantics.instances import describe_instances
        from clipgs.semantics.query import negative_names, query_map
        from clipgs.semantics.text import TextEncoder

        label = args.query.strip()
        if not label:
            raise ValueError("empty query: give an object name such as 'chair'")
        if args.out.exists() and not args.out.is_dir():
            raise ValueError(f"--out {args.out} is a file; --query writes a folder (one PLY per object + objects.json)")
        text = TextEncoder.from_identity(model.text_encoder)
        answer = query_map(gmap, model.decoder, text.encode([label])[0],
                           text.encode(negative_names(model.vocabulary, label, args.negatives)), None)
        paths = export_query_objects(gmap, answer, label, args.out)
        print(f"'{label}': {describe_instances(answer.instances)}")
    else:
        if args.out.suffix.lower() != ".ply":
            raise ValueError(f"--out {args.out}: give a .ply file name, e.g. semantic.ply")
        check_writable(args.out)
        paths = (export_semantic_colours(gmap, model, args.out, with_labels=args.labels) if args.semantic_colors
                 else export_labels(gmap, model, args.out))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
