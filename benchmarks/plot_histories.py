"""Draws the validation accuracy of several runs against their steps, from their history.csv files.

    python benchmarks/plot_histories.py runs/a/history.csv:'EMA 0.99' runs/b/history.csv:'no EMA' \
        --output=docs/ema.png --title='digits, ctc'
"""

import argparse
import csv


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="history.csv:label")
    parser.add_argument("--output", required=True)
    parser.add_argument("--title", default="")
    parser.add_argument("--metric", default="val_image_accuracy")
    parser.add_argument("--ymin", type=float, default=0.0)
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.5))
    for spec in args.runs:
        path, _, label = spec.partition(":")
        with open(path, newline="") as f:
            rows = [row for row in csv.DictReader(f) if row.get(args.metric) not in (None, "", "NA")]
        axis.plot([float(r["step"]) for r in rows], [float(r[args.metric]) for r in rows], "o-", markersize=3,
                  label=label or path)
    axis.set_xlabel("step")
    axis.set_ylabel(args.metric)
    axis.set_ylim(args.ymin, 1.005)
    axis.set_title(args.title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(args.output, dpi=90)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
