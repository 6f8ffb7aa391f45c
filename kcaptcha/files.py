"""Everything about files: finding images, the label a file name carries, safe writes.

No TensorFlow here, so that commands fail fast on a bad path and the runtime install stays light.
"""

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from typing import Callable, Iterator, List, Optional, Sequence

# The formats the training pipeline reads (`kcaptcha.data.images`), and the extension a file of each gets.
FORMAT_EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "GIF": ".gif", "BMP": ".bmp"}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp")  # what a folder walk picks up


class LabelRule:
    """Where a file name carries its label: `prefix`, `stem`, `suffix` or a regex with a `label` group.

    - `prefix` (the default): the part before the first `_` (`226md_001.png` -> `226md`); a name
      without `_` is all label (`226md.png` -> `226md`).
    - `stem`: the whole name without its extension (`226md.png` -> `226md`).
    - `suffix`: the part after the last `_` (`0001_226md.png` -> `226md`); a name without `_` is all label.
    - a regular expression with a group named `label`, searched in the name without its extension
      (`^img-(?P<label>[a-z0-9]+)-\\d+$`); a name it does not match has no label.
    """

    HELP = ("Where file names carry their labels: 'prefix' (before the first '_', or the whole name when it "
            "has none), 'stem' (the whole name), 'suffix' (after the last '_'), or a regular expression with a "
            "group named 'label', searched in the name without its extension.")
    NAMED = ("prefix", "stem", "suffix")

    def __init__(self, kind: str, pattern: Optional["re.Pattern"] = None):
        self.kind, self.pattern = kind, pattern

    @classmethod
    def parse(cls, text: str) -> "LabelRule":
        """A rule from its flag value; raises `ValueError` for a regex without a `label` group."""
        if text in cls.NAMED:
            return cls(text)
        try:
            pattern = re.compile(text)
        except re.error as error:
            raise ValueError(f"label_from must be one of {', '.join(cls.NAMED)} or a regular expression "
                             f"({error}). Received: label_from={text!r}") from None
        if "label" not in pattern.groupindex:
            raise ValueError(f"label_from must be one of {', '.join(cls.NAMED)} or a regular expression with "
                             f"a group named 'label', like (?P<label>[a-z0-9]+). Received: label_from={text!r}")
        return cls("regex", pattern)

    def label(self, path: str) -> Optional[str]:
        """The label that `path`'s file name carries, or None when the rule finds none."""
        stem = os.path.splitext(os.path.basename(path))[0]
        if self.kind == "regex":
            match = self.pattern.search(stem)
            return (match.group("label") or None) if match else None
        if self.kind == "prefix":
            stem = stem.split("_", 1)[0]
        elif self.kind == "suffix":
            stem = stem.rsplit("_", 1)[-1]
        return stem or None

    def __repr__(self) -> str:
        return f"LabelRule({(self.pattern.pattern if self.pattern else self.kind)!r})"


# Characters a file name cannot carry everywhere: Windows forbids these, and '*', '?' and '[' are wildcards
# to shells and glob.
UNSAFE_IN_NAMES = frozenset('<>:"/\\|?*[]')


def name_carries(label: str) -> bool:
    """True when `label` can be a file name's prefix on every system: no '_' (the label's end), no space or
    control character, no character of `UNSAFE_IN_NAMES`. Letters of any script can (`0é`, `×`); `3+8=?`
    cannot, and goes in a labels.csv."""
    return bool(label) and all(c.isprintable() and not c.isspace() and c != "_" and c not in UNSAFE_IN_NAMES
                               for c in label)


def walk_files(folder: str) -> Iterator[str]:
    """Every regular file under `folder`, recursively, in a stable (sorted) order."""
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            if os.path.isfile(path):
                yield path


def is_image_name(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def list_images(folder: str) -> List[str]:
    """Image files under `folder` (by extension, recursively), sorted; a clear error for a missing folder."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Image folder not found: {folder!r}")
    return [path for path in walk_files(folder) if is_image_name(path)]


def collect_inputs(inputs: Sequence[str]) -> List[str]:
    """Files named directly plus the image files found under folders, in a stable order."""
    found = []
    for item in inputs:
        if os.path.isdir(item):
            found.extend(list_images(item))
        elif os.path.exists(item):
            found.append(item)
        else:
            raise FileNotFoundError(f"No such file or folder: {item!r}")
    if not found:
        raise ValueError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found in {', '.join(map(repr, inputs))}")
    return found


def normalise_relative(path: str) -> str:
    return os.path.normpath(path).replace(os.sep, "/")


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str):
    """Yields a temporary path beside `path` that replaces `path` when the block succeeds.

    The temporary name is `path`'s own behind a hidden prefix, so every suffix survives: Keras accepts
    only names that end in `.keras` or `.weights.h5`.

    A crash at any moment leaves either the old file or the new one, never a half-written file.
    """
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def staging_dir(destination: str) -> str:
    """A new empty folder beside `destination`, to be filled and then renamed into its place.

    `tempfile.mkdtemp` makes it readable by its owner alone; it gets the permissions of any new folder
    (0o777 less the umask), so a saved model stays readable by the other users of the machine.
    """
    parent = os.path.dirname(os.path.abspath(destination))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(destination)}.", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)
    return staging


def replace_folder(folder: str, write: Callable[[str], None]) -> str:
    """Runs `write(staging)` into a new folder beside `folder`, then swaps it into `folder`'s place.

    The old folder is renamed aside, the new one renamed in, and only then is the old one deleted: a failed
    `write` or a failed rename leaves the old folder as it was (put back if it had been moved), and a
    process killed between the two renames leaves it whole beside the new one as `.<name>.*.old`.
    Deleting the old folder first would lose both when the new one then fails to arrive.

    Returns:
        The absolute path of `folder`.
    """
    folder = os.path.abspath(folder)
    staging = staging_dir(folder)
    old = None
    try:
        write(staging)
        if os.path.lexists(folder):
            old = staging + ".old"
            os.replace(folder, old)
        os.replace(staging, folder)
    except BaseException:
        if old and os.path.lexists(old) and not os.path.lexists(folder):
            os.replace(old, folder)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if old:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def numbered_name(name: str, number: int) -> str:
    """`name` itself for 0, else `name` with `-<number>` before its extension: `a.png`, `a-1.png`, `a-2.png`."""
    if not number:
        return name
    stem, extension = os.path.splitext(name)
    return f"{stem}-{number}{extension}"


def claim_free_name(folder: str, name: str, claim: Callable[[str], bool], tries: int = 1_000_000) -> str:
    """The first of `name`, `name-1`, `name-2`... (`numbered_name`) that `claim` takes; never another file's name.

    Args:
        folder: where the name is wanted (for the error message).
        name: a file name with its extension.
        claim: takes a candidate name and returns True when it took it (wrote the file, or reserved the
            name), False when the name is taken.
        tries: how many numbers to try before giving up.

    Raises:
        FileExistsError: when `tries` names are all taken.
    """
    for number in range(tries):
        candidate = numbered_name(name, number)
        if claim(candidate):
            return candidate
    raise FileExistsError(f"No free name for {name!r} in {folder}: it and {tries - 1} numbered names "
                          "(-1, -2...) are taken")


def atomic_write_bytes(path: str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def read_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def atomic_write_json(path: str, value, **kwargs) -> None:
    kwargs = {"indent": 2, "sort_keys": True, "ensure_ascii": False, **kwargs}
    atomic_write_text(path, json.dumps(value, **kwargs) + "\n")


def atomic_copy(source: str, destination: str) -> None:
    with atomic_path(destination) as tmp:
        shutil.copy2(source, tmp)


def create_new(path: str, data: bytes) -> None:
    """Writes a new file whole; raises `FileExistsError` rather than replace an existing one."""
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.new-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
    try:
        os.link(tmp, path)  # atomic, and fails if `path` exists: never a partial file, never an overwrite
    finally:
        os.remove(tmp)


LOCK_FILE = ".lock"


@contextlib.contextmanager
def folder_in_use(folder: str, what: str = "training"):
    """Holds `folder`'s lock (`folder/.lock`, created with the folder) for one process's `what`; a second process
    asking for it meanwhile gets a `RuntimeError` naming the holder. The system drops the lock when its process
    ends, however it ends, so a killed run never leaves its folder locked."""
    import fcntl  # POSIX; imported here so that the rest of this module works everywhere
    import socket
    import time

    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, LOCK_FILE), "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise RuntimeError(f"{folder} is in use by another {what} ({holder}): wait for it to end, or use "
                               "another folder.") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"process {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def clear_folder(folder: str) -> None:
    """Removes everything in `folder` but its lock (see `folder_in_use`)."""
    for entry in os.listdir(folder) if os.path.isdir(folder) else ():
        path = os.path.join(folder, entry)
        if entry == LOCK_FILE:
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
