"""Fault-injected replay: the default room as a bag, clean and with ~5 % of its messages corrupted.

Faults, each on frames chosen at random (seeded): colour images with an encoding nobody decodes, depth images
of the wrong size, /tf transforms with NaN translations, a pair stamped 0.5 s behind the stream (stale), and a
20 m jump of the camera in /tf. Both bags are mapped as ``clipgs map BAG`` does (geometry only) and scored
on the dataset's held-out views. Prints one row per fault (injected, and where it was counted) and the PSNR
of both maps; the last line sums it up.

    .venv/bin/python benchmarks/faults.py [--frames 120] [--rate 0.05] [--seed 0] [--out DIR]
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from clipgs.data.dataset import open_dataset
from clipgs.data.rosbag_io import BagReplay, _typestore, export_bag
from clipgs.demo import DEMO_SCENE, ensure_scene
from clipgs.eval.evaluate import evaluate
from clipgs.mapping.config import MapperConfig
from clipgs.mapping.offline import map_frames

FAULTS = ("bad_encoding", "wrong_size", "nan_pose", "stale_stamp", "pose_jump_20m")


def plan_faults(n_frames: int, rate: float, seed: int) -> dict[int, str]:
    """Frame number (1-based, as stamped by export_bag) -> fault; about ``rate`` of all messages (4 per frame)."""
    rng = np.random.default_rng(seed)
    n_faults = max(len(FAULTS), round(rate * 4 * n_frames))
    frames = rng.choice(np.arange(3, n_frames + 1), size=min(n_faults, n_frames - 2), replace=False)
    kinds = ["pose_jump_20m", "stale_stamp"] + [FAULTS[k % 3] for k in range(len(frames) - 2)]
    return {int(f): kind for f, kind in zip(frames, kinds)}


def corrupt_bag(clean: Path, out: Path, plan: dict[int, str], fps: float) -> Counter:
    """Copy ``clean`` to ``out`` with the planned faults; returns faults injected by kind."""
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import StoragePlugin, Writer

    ts = _typestore()
    injected: Counter = Counter()

    def frame_of(stamp) -> int:
        return round((stamp.sec + stamp.nanosec * 1e-9) * fps)

    def restamp(header, seconds: float):
        sec = int(np.floor(seconds))
        return dataclasses.replace(header, stamp=dataclasses.replace(header.stamp, sec=sec,
                                                                     nanosec=round((seconds - sec) * 1e9)))

    with AnyReader([clean], default_typestore=ts) as reader, \
            Writer(out, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {c.topic: writer.add_connection(c.topic, c.msgtype, typestore=ts) for c in reader.connections}
        for conn, t_ns, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == "/tf_static":
                writer.write(conns[conn.topic], t_ns, raw)
                continue
            stamp = msg.transforms[0].header.stamp if conn.topic == "/tf" else msg.header.stamp
            fault = plan.get(frame_of(stamp))
            is_color, is_depth = conn.msgtype == "sensor_msgs/msg/Image" and msg.encoding == "rgb8", \
                conn.msgtype == "sensor_msgs/msg/Image" and msg.encoding == "16UC1"
            if fault == "bad_encoding" and is_color:
                msg = dataclasses.replace(msg, encoding="yuv422")
            elif fault == "wrong_size" and is_depth:
                half = np.frombuffer(bytes(msg.data), np.uint16).reshape(msg.height, msg.width)[::2, ::2]
                msg = dataclasses.replace(msg, height=half.shape[0], width=half.shape[1], step=half.shape[1] * 2,
                                          data=np.frombuffer(np.ascontiguousarray(half).tobytes(), np.uint8).copy())
            elif fault in ("nan_pose", "pose_jump_20m") and conn.topic == "/tf":
                tr = msg.transforms[0].transform.translation
                moved = dataclasses.replace(tr, x=float("nan")) if fault == "nan_pose" else \
                    dataclasses.replace(tr, x=tr.x + 20.0)
                tf = dataclasses.replace(msg.transforms[0], transform=dataclasses.replace(
                    msg.transforms[0].transform, translation=moved))
                msg = dataclasses.replace(msg, transforms=[tf])
            elif fault == "stale_stamp" and (is_color or is_depth):
                seconds = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
                msg = dataclasses.replace(msg, header=restamp(msg.header, seconds - 0.5))
            else:
                writer.write(conns[conn.topic], t_ns, raw)
                continue
            injected[fault] += 1
            writer.write(conns[conn.topic], t_ns, ts.serialize_cdr(msg, conn.msgtype))
    return injected


def map_bag(bag: Path, config: MapperConfig) -> tuple:
    replay = BagReplay(bag)
    mapper, summary = map_frames(replay.frames(), config, progress=False)
    return mapper, summary, replay


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=120, help="frames of the default room (every 10th held out)")
    parser.add_argument("--rate", type=float, default=0.05, help="share of messages corrupted")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "clipgs_faults")
    args = parser.parse_args()
    fps = 5.0
    scene = ensure_scene(args.out / f"room_{args.frames}", **{**DEMO_SCENE, "n_frames": args.frames})
    ds = open_dataset(scene)
    clean, faulty = args.out / "clean_bag", args.out / f"faulty_bag_{args.rate}_{args.seed}"
    for bag in (clean, faulty):
        if bag.exists():
            for f in sorted(bag.rglob("*"), reverse=True):
                f.unlink() if f.is_file() else f.rmdir()
            bag.rmdir()
    export_bag(ds, clean, indices=ds.train_indices, fps=fps)
    plan = plan_faults(len(ds.train_indices), args.rate, args.seed)
    injected = corrupt_bag(clean, faulty, plan, fps)
    total_msgs = 4 * len(ds.train_indices)
    config = MapperConfig()
    rows = {}
    for name, bag in (("clean", clean), ("faulty", faulty)):
        mapper, summary, replay = map_bag(bag, config)
        score = evaluate(mapper.snapshot().gaussians, ds, progress=False)
        rows[name] = (summary, replay, score)
    summary, replay, _ = rows["faulty"]
    n_bad = sum(injected.values())
    print(f"fault-injected replay: default room, {len(ds.train_indices)} training frames at {fps:g} Hz, "
          f"{n_bad} of {total_msgs} messages corrupted ({100 * n_bad / total_msgs:.1f} %), seed {args.seed}\n")
    print("| fault | messages corrupted | frames counted, as |\n|---|---|---|")
    bag_errors = {k: v for k, v in replay.errors.items() if v}
    where = {"bad_encoding": [k for k in bag_errors if "encoding" in k],
             "wrong_size": [k for k in bag_errors if "differs from colour" in k or "bytes" in k],
             "nan_pose": [k for k in bag_errors if k.startswith("bad_pose")],
             "stale_stamp": ["timestamp_backwards"], "pose_jump_20m": ["pose_jump"]}
    counted = {**bag_errors, **summary["rejected"]}
    for fault in FAULTS:
        keys = where[fault]
        n = sum(counted.get(k, 0) for k in keys)
        reason = (keys[0].split(":")[0] + ": " + keys[0].split(":", 1)[1][:45].strip()) if keys and ":" in keys[0] \
            else (keys[0] if keys else "nothing")
        print(f"| {fault} | {injected[fault]} | {n} x {reason} |")
    print("\n| bag | frames mapped | keyframes | Gaussians | rejected by the mapper | held-out PSNR dB |\n"
          "|---|---|---|---|---|---|")
    for name, (s, _, score) in rows.items():
        print(f"| {name} | {s['frames']} | {s['keyframes']} | {s['gaussians']} | {dict(s['rejected']) or '-'} | "
              f"{score['psnr_db']:.2f} |")
    gap = rows["clean"][2]["psnr_db"] - rows["faulty"][2]["psnr_db"]
    print(f"\nfaults: PSNR clean {rows['clean'][2]['psnr_db']:.2f} dB, faulty {rows['faulty'][2]['psnr_db']:.2f} dB "
          f"(gap {gap:+.2f} dB, target <= 1), {sum(injected.values())} faults injected")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
