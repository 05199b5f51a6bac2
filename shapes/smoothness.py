"""Interpolation smoothness on the shapes world, measured in code (no learned metric).

    python -m shapes.smoothness                         # shapes -> assets/shapes/interpolation.json
    python -m shapes.smoothness --model shapes-lcm      # 4 + 4 steps (also writes the README's strip)
    python -m shapes.smoothness --pairs 2 --inverters ddim --no-save   # a quick look

Pairs of scenes that differ in one attribute, everything else equal (one shape on a plain
background; held-out and training triples alike, from a seeded stream):
- colour: the object's colour (shape, position, size and background kept);
- position: the object's horizontal position (x = 0.3 against x = 0.7; colour, shape, size,
  height and background kept).
Both ends are inverted with each inverter (their own captions) and `editing.interpolate` samples
`frames` frames. Per frame, the attribute is read in code and placed on the segment between the
two ends (0 at the first frame, 1 at the last):
- colour: the mean RGB inside the object's true mask (shrunk by one pixel: no anti-aliased edge),
  projected onto the line from the first frame's colour to the last's;
- position: the x centroid of the largest object the judge finds (`shapes.judge.find_objects`),
  so a fade (one object vanishing while the other appears) reads as the jump it is.
Reported per inverter: the fraction of pairs whose sequence is monotonic (non-decreasing, each step
back at most `TOLERANCE` of the total change), the largest step between neighbouring frames as a
fraction of the total change (mean over pairs; evenly spaced frames would give 1 / (frames - 1)),
the largest distance of a frame's colour from the straight line between the ends (colour pairs, as
a fraction of the ends' distance), the frames where no object is found (position pairs), and the
grain of the in-between frames beside the ends' (mean |frame - its 3x3 median|: a mean colour can
move smoothly through a salt-and-pepper mix of the two images, which this sees; calibrated by
the grain of ordinary text-to-image samples of the pairs' first captions (the model's steps,
its edit guidance: 3 on both shapes models).
"""

from __future__ import annotations

import datetime
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from editing import interpolate
from inversion import generate, invert, load_model

from .evaluate import to_tensor, to_uint8
from .judge import find_objects
from .rare_seeds import finish, machine, measurement_parser
from .scenes import COLOURS, SHAPES, Scene, Shape, render

OUT = Path(__file__).resolve().parents[1] / "assets" / "shapes" / "interpolation.json"
STRIP = Path(__file__).resolve().parents[1] / "assets" / "shapes" / "interpolation_strip.png"
SEED = 59
TOLERANCE = 0.02  # a step back of at most 2% of the total change still counts as monotonic
KINDS = ("colour", "position")


def scene_pairs(kind: str, count: int, seed: int = SEED) -> list[tuple[Scene, Scene]]:
    rng = random.Random(f"{seed}|{kind}")
    names = list(COLOURS)
    out = []
    for _ in range(count):
        bg = rng.choice(names)
        c1 = rng.choice([c for c in names if c != bg])
        shape = rng.choice(SHAPES)
        if kind == "colour":
            c2 = rng.choice([c for c in names if c not in (bg, c1)])
            size = rng.uniform(0.35, 0.55)
            cx, cy = (rng.uniform(size / 2 + 0.03, 1 - size / 2 - 0.03) for _ in range(2))
            a, b = Shape(shape, c1, cx, cy, size), Shape(shape, c2, cx, cy, size)
        else:
            size = rng.uniform(0.3, 0.4)
            cy = rng.uniform(size / 2 + 0.03, 1 - size / 2 - 0.03)
            a, b = Shape(shape, c1, 0.3, cy, size), Shape(shape, c1, 0.7, cy, size)
        out.append((Scene((a,), (bg,)), Scene((b,), (bg,))))
    return out


def colour_track(frames: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float]:
    """(each frame's place on the line from the first frame's mean object colour to the last's,
    the largest distance of a frame's colour from that line as a fraction of the ends' distance)."""
    inner = ndimage.binary_erosion(mask)
    inner = inner if inner.any() else mask
    rgb = np.stack([f[inner].astype(np.float64).mean(0) for f in frames])
    d = rgb[-1] - rgb[0]
    span = float(np.linalg.norm(d))
    if span == 0:
        return np.full(len(frames), np.nan), float("nan")
    p = (rgb - rgb[0]) @ d / span**2
    off = np.linalg.norm((rgb - rgb[0]) - p[:, None] * d[None], axis=1) / span
    return p, float(off.max())


def position_track(frames: np.ndarray) -> tuple[np.ndarray, int]:
    """(each frame's place between the first and last frame's object x centroid, frames with no object)."""
    xs, missing = [], 0
    for f in frames:
        objs, _ = find_objects(f)
        if not objs:
            xs.append(np.nan)
            missing += 1
            continue
        xs.append(float(np.nonzero(objs[0].mask)[1].mean()))
    xs = np.array(xs)
    span = xs[-1] - xs[0]
    if not np.isfinite(span) or span == 0:
        return np.full(len(frames), np.nan), missing
    return (xs - xs[0]) / span, missing


def grain(frame: np.ndarray) -> float:
    """Mean |frame - its 3x3 median| over pixels and channels, on the [0, 1] scale: ~0 on flat
    colours (edges aside), large on the salt-and-pepper mix of two images a mean colour hides."""
    f = frame.astype(np.float32) / 255.0
    return float(np.abs(f - ndimage.median_filter(f, size=(3, 3, 1))).mean())


def smoothness(p: np.ndarray) -> tuple[bool, float]:
    """(monotonic within TOLERANCE, the largest neighbouring step) of a track from 0 to 1; a track
    with a missing frame is not monotonic and its largest step is 1 (the whole change at once)."""
    if not np.isfinite(p).all():
        return False, 1.0
    steps = np.diff(p)
    return bool((steps >= -TOLERANCE).all()), float(np.abs(steps).max())


def run(model, inverters, pairs: int, frames: int, kinds=KINDS, log=None) -> dict:
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    start = time.perf_counter()
    rows, tracks = [], []
    generated = {}
    for kind in kinds:
        items = scene_pairs(kind, pairs)
        # what an ordinary sample's grain is: one text-to-image sample per pair (its first caption)
        generated[kind] = float(np.mean([grain(f) for f in to_uint8(generate(model, [a.caption for a, _ in items], guidance=model.stages[0].default_edit_guidance, seed=SEED))]))
        for inv_name in inverters:
            t0 = time.perf_counter()
            mono, jumps, offs, missing, grains, end_grains = [], [], [], 0, [], []
            for a, b in items:
                invs = [invert(model, to_tensor(render(s, 64)[0]), s.caption, inv_name) for s in (a, b)]
                imgs = to_uint8(interpolate(model, *invs, frames=frames).frames)
                grains += [grain(f) for f in imgs[1:-1]]
                end_grains += [grain(imgs[0]), grain(imgs[-1])]
                if kind == "colour":
                    p, off = colour_track(imgs, render(a, 64)[1][0])
                    offs.append(off)
                else:
                    p, miss = position_track(imgs)
                    missing += miss
                m, j = smoothness(p)
                mono.append(m)
                jumps.append(j)
                tracks.append({"kind": kind, "inverter": inv_name, "from": a.caption, "to": b.caption,
                               "track": [None if not np.isfinite(v) else round(float(v), 4) for v in p]})
            row = {"kind": kind, "inverter": inv_name, "pairs": len(items), "frames": frames,
                   "monotonic": float(np.mean(mono)), "monotonic_count": int(np.sum(mono)),
                   "largest_step": float(np.mean(jumps)), "largest_step_max": float(np.max(jumps)),
                   "grain": float(np.mean(grains)), "grain_ends": float(np.mean(end_grains)), "grain_generated": generated[kind]}
            if kind == "colour":
                row["off_line"] = float(np.nanmean(offs))
            else:
                row["frames_without_object"] = missing
            rows.append(row)
            log(f"{kind} {inv_name}: {row} ({time.perf_counter() - t0:.0f} s)")
    base = model.stages[0]
    return {"model": base.name, "steps_per_stage": [s.default_steps for s in model.stages], "frames": frames,
            "tolerance": TOLERANCE, "even_step": 1 / (frames - 1), "rows": rows, "tracks": tracks,
            "seconds": time.perf_counter() - start, "machine": machine(), "date": datetime.date.today().isoformat()}


def markdown(result: dict) -> str:
    head = ("| change | inverter | pairs | monotonic | largest step (mean / max) | colour off the line | frames without an object "
            "| grain: in-betweens / ends / generated |")
    lines = [f"{result['model']}, {result['frames']} frames (an even step is {result['even_step']:.3f} of the change):", "",
             head, "|" + "---|" * (head.count("|") - 1)]
    for r in result["rows"]:
        off = f"{r['off_line']:.3f}" if "off_line" in r else "-"
        miss = str(r["frames_without_object"]) if "frames_without_object" in r else "-"
        lines.append(f"| {r['kind']} | {r['inverter']} | {r['pairs']} | {r['monotonic']:.0%} ({r['monotonic_count']}/{r['pairs']}) | "
                     f"{r['largest_step']:.3f} / {r['largest_step_max']:.3f} | {off} | {miss} | {r['grain']:.4f} / {r['grain_ends']:.4f} / {r['grain_generated']:.4f} |")
    return "\n".join(lines)


def save_strip(model, path: Path = STRIP, inverter: str = "ddim", frames: int = 8) -> Path:
    """A red circle to a green circle on blue (the README's figure)."""
    a = Scene((Shape("circle", "red", 0.5, 0.5, 0.5),), ("blue",))
    b = Scene((Shape("circle", "green", 0.5, 0.5, 0.5),), ("blue",))
    invs = [invert(model, to_tensor(render(s, 64)[0]), s.caption, inverter) for s in (a, b)]
    interpolate(model, *invs, frames=frames).strip().save(path, format="PNG")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = measurement_parser(__doc__, OUT)
    ap.add_argument("--pairs", type=int, default=10, help="pairs per kind of change")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--inverters", default="ddim,easyinv,rnri")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--strip", type=Path, default=None, help="also write the red-to-green circle strip (DDIM) here")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = load_model(a.model)
    with torch.no_grad():
        result = run(model, a.inverters.split(","), a.pairs, a.frames, a.kinds.split(","))
        if a.strip:
            result["strip"] = str(save_strip(model, a.strip, frames=a.frames))
    return finish(result, a, markdown(result))


if __name__ == "__main__":
    sys.exit(main())
