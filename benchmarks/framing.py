"""Measure how FER2013 faces are framed relative to our detector's box, to set PreprocessConfig.box_margin.

    python benchmarks/framing.py --data ../shared/data/fer2013/validation --n 600

Each 48x48 face is enlarged 4x, padded by repeating its edges (so the detector is not cut off by the frame), and
run through fer.faces.detect_faces. If the detector's box has side b in a frame of side S, the margin that turns
such a box back into a FER2013-style crop is (S / b - 1) / 2; the vertical offset of the frame centre from the box
centre, in box heights, is the shift. Prints the medians: the values the shipped model's JSON should carry.
"""

from __future__ import annotations

import argparse
import random

import cv2
import numpy as np

from fer.data import list_images
from fer.faces import detect_faces


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/fer2013/validation")
    parser.add_argument("--n", type=int, default=600, help="faces to sample")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths, _ = list_images(args.data)
    random.Random(args.seed).shuffle(paths)
    scale, pad = 4, 96
    side = 48 * scale
    margins, shifts_x, shifts_y = [], [], []
    for path in paths[: args.n]:
        face = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        enlarged = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
        canvas = cv2.copyMakeBorder(enlarged, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        boxes = detect_faces(canvas)
        if not boxes:
            continue
        x, y, w, h = boxes[0]
        margins.append((side / w - 1) / 2)
        shifts_x.append((x - pad + w / 2 - side / 2) / w)
        shifts_y.append((side / 2 - (y - pad + h / 2)) / h)
    found = len(margins)
    print(f"faces detected: {found} of {min(args.n, len(paths))} ({found / max(1, min(args.n, len(paths))):.0%})")
    if not found:
        return 1
    quartiles = np.percentile(margins, [25, 50, 75])
    print(f"box_margin  median {quartiles[1]:+.3f}  (interquartile {quartiles[0]:+.3f} to {quartiles[2]:+.3f})")
    print(f"box/frame   median {np.median([1 / (1 + 2 * m) for m in margins]):.3f}")
    print(f"centre shift x {np.median(shifts_x):+.3f}  y {np.median(shifts_y):+.3f} (box widths/heights)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
