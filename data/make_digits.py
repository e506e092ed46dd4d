"""Writes data/digits.csv: the UCI optical handwritten digits (8x8, 1797 samples)
as shipped with scikit-learn (sklearn.datasets.load_digits).

Run from the repository root: python3 data/make_digits.py
Columns: p0..p63 (pixel counts 0-16, row-major over the 8x8 image), label (0-9).
"""

import csv
import sys

from sklearn.datasets import load_digits


def main(path="data/digits.csv"):
    d = load_digits()
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow([f"p{i}" for i in range(64)] + ["label"])
        for x, y in zip(d.data, d.target):
            w.writerow([int(v) for v in x] + [int(y)])
    print(f"wrote {len(d.target)} rows to {path}", file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:])
