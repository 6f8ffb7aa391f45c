"""Finding labelled image files (no TensorFlow here, so commands can fail fast on bad paths)."""

import os
from typing import List

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp")


def label_from_filename(path: str) -> str:
    """`<label>_<anything>.<ext>` -> label; a name without `_` is all label (e.g. `226md.png`)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return stem.split("_", 1)[0]


def list_images(folder: str, recursive: bool = True) -> List[str]:
    """Image files under `folder` by extension, sorted; raises a clear error for a missing folder."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Image folder not found: {folder!r}")
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found.extend(os.path.join(root, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not recursive:
            break
    return found
