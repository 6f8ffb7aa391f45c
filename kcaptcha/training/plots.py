"""Pictures for people: learning curves from a run's history."""

import csv
import os


def learning_curves(csv_path: str, png_path: str) -> bool:
    """Draws training loss and whole-image accuracy against steps from history.csv; False if nothing to draw."""
    if not os.path.exists(csv_path):
        return False
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [float(r.get("step") or i) for i, r in enumerate(rows)]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    panels = (("loss", ("loss",)), ("whole-image accuracy", ("image_accuracy", "val_image_accuracy")))
    for axis, (title, keys) in zip(axes, panels):
        for key in keys:
            values = [r.get(key) for r in rows]
            if all(v not in (None, "", "NA") for v in values):
                axis.plot(steps, [float(v) for v in values], "--" if key.startswith("val_") else "-",
                          label=key if key.startswith("val_") or key == "loss" else "train_" + key)
        axis.set_xlabel("step")
        axis.set_title(title)
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(png_path, dpi=80)
    plt.close(figure)
    return True
