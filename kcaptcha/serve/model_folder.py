"""`ModelFolder`: serves every model folder of a directory, and picks up new, replaced and removed ones.

Every `interval` seconds it looks at each sub-folder: the folder itself (its identity and time) and the name,
size and time of each file in it. A folder that changed is loaded once it has looked the same for one
interval, so a folder still being copied is left alone. The new model is loaded beside the served one,
reads a warm-up image and starts its batching worker; only then does it replace the served one, in one step
on the event loop, and requests already on the old one are answered by it. A folder that fails to load is
reported (the log, `/v1/models`, `/readyz`) and never served, and the model it would replace stays served;
it is tried again when it changes. A folder gone for one interval stops being served. Names that start with
`.` or `_` are skipped: copy a model there, then rename it, for a change the folder sees in one step.
"""

import asyncio
import datetime
import logging
import os
from typing import Callable, Dict, Optional, Tuple

import numpy as np
from PIL import Image

from kcaptcha.serve.service import RecognitionService, check_model_name

logger = logging.getLogger("kcaptcha.serve")
Signature = Tuple  # what a look sees of one folder; a change in it is a change of the model


def signature(model_dir: str) -> Optional[Signature]:
    """The folder's device, inode and modification time, and (name, size, mtime) of each entry in it; None
    when the folder has gone."""
    try:
        folder = os.stat(model_dir)
        with os.scandir(model_dir) as entries:
            found = []
            for entry in entries:
                stat = entry.stat()
                found.append((entry.name, stat.st_size, stat.st_mtime_ns))
    except OSError:
        return None
    return (folder.st_dev, folder.st_ino, folder.st_mtime_ns, tuple(sorted(found)))


def warm_up_image(recognizer) -> Image.Image:
    """A noisy grey image of the model's input size: read once, through decoding, before a model is served."""
    pixels = np.random.default_rng(0).integers(96, 160, (recognizer.height, recognizer.width), dtype=np.uint8)
    return Image.fromarray(pixels, "L")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class ModelFolder:
    """The sub-folders of `path`, each served under its folder name.

    Args:
        path: the directory of model folders (it may be empty).
        load: model folder -> Recognizer (raises for a folder that is not a loadable model).
        interval: seconds between two looks.
    """

    def __init__(self, path: str, load: Callable[[str], object], interval: float = 2.0):
        if interval <= 0:
            raise ValueError(f"The models folder's poll interval must be positive. Received: {interval!r}")
        if not os.path.isdir(path):
            raise FileNotFoundError(f"Models folder not found: {path!r}. Give a folder that holds model folders "
                                    "(it may be empty)")
        self.path, self.load, self.interval = os.path.abspath(path), load, interval
        self.folders: Dict[str, dict] = {}  # name -> its state, as /v1/models reports it
        self._seen: Dict[str, Signature] = {}  # what the previous look saw
        self._tried: Dict[str, Signature] = {}  # the version last loaded (or failed), per name
        self.checked_at: Optional[str] = None

    def report(self) -> dict:
        """The folder and the state of each model folder in it: served, waiting, loading or failed."""
        return {"path": self.path, "interval_s": self.interval, "checked_at": self.checked_at,
                "folders": {name: dict(state) for name, state in sorted(self.folders.items())}}

    def look(self) -> Dict[str, Signature]:
        """{name: signature} of the model folders in `path` now (none while it does not exist)."""
        try:
            names = [entry.name for entry in os.scandir(self.path)
                     if entry.is_dir() and not entry.name.startswith((".", "_"))]
        except OSError:
            return {}
        found = {name: signature(os.path.join(self.path, name)) for name in names}
        return {name: sig for name, sig in found.items() if sig is not None}

    async def watch(self, service: RecognitionService) -> None:
        """Follows the folder's changes every `interval` s until cancelled (after a first `check(settle=False)`,
        which loads what the folder holds)."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check(service)
            except Exception:  # a bug here must not stop the watching, nor the service
                logger.exception("Could not check the models folder %s", self.path)

    async def check(self, service: RecognitionService, settle: bool = True) -> None:
        """One look: removes the models whose folder has gone, loads the new and changed ones.

        Args:
            settle: load a changed folder only when it looked the same at the previous look.
        """
        now = await asyncio.to_thread(self.look)
        self.checked_at = _now()
        for name in list(self.folders):
            if name not in now and (name not in self._seen or not settle):
                self._forget(service, name)
        for name in sorted(now):
            sig = now[name]
            if sig == self._tried.get(name):
                continue
            if settle and sig != self._seen.get(name):
                self._set(name, "waiting", "changed since the last look; loaded once it stays the same for "
                                           f"{self.interval:g} s")
                continue
            await self._load(service, name, sig)
        self._seen = now

    def _forget(self, service: RecognitionService, name: str) -> None:
        state = self.folders.pop(name)
        self._tried.pop(name, None)
        if state.get("served"):
            service.remove(name)
            logger.info("Model %s: its folder has gone from %s; not served any more", name, self.path)

    async def _load(self, service: RecognitionService, name: str, sig: Signature) -> None:
        model_dir = os.path.join(self.path, name)
        self._tried[name] = sig
        replacing = self.folders.get(name, {}).get("served", False)
        self._set(name, "loading", "")
        try:
            if name in service.models and not replacing:
                raise ValueError(f"the name {name!r} is taken by a model of --models; rename the folder")
            check_model_name(name)
            model = await asyncio.to_thread(self._prepare, service, name, model_dir)
        except Exception as error:
            detail = str(error) if isinstance(error, (ValueError, OSError)) else f"{type(error).__name__}: {error}"
            self._set(name, "failed", detail, served=replacing)
            logger.warning("Model folder %s failed to load%s: %s", model_dir,
                           "; the previous version stays served" if replacing else "", detail)
            return
        if signature(model_dir) != sig:  # it changed while loading: what was read may be half old, half new
            model.batcher.close()
            self._tried.pop(name, None)
            self._set(name, "waiting", "changed while it was loading; loaded once it stays the same",
                      served=replacing)
            return
        service.install(name, model)
        self._set(name, "served", "", served=True, model=model.recognizer.metadata.get("name"),
                  loaded_at=_now())
        logger.info("Model %s %s from %s (%s)", name, "replaced" if replacing else "served", model_dir,
                    model.recognizer.backend)

    def _prepare(self, service: RecognitionService, name: str, model_dir: str):
        """Loads the model, reads the warm-up image with it and starts its worker (in a thread)."""
        recognizer = self.load(model_dir)
        recognizer.predict(warm_up_image(recognizer))  # preprocessing, the model and decoding, once
        return service.prepare(name, recognizer)

    def _set(self, name: str, status: str, detail: str, served: Optional[bool] = None, **extra) -> None:
        state = self.folders.get(name, {})
        if served is None:
            served = state.get("served", False)
        keep = {key: state[key] for key in ("model", "loaded_at") if key in state and served}
        self.folders[name] = {"status": status, "served": served, "detail": detail, "since": _now(),
                              **keep, **extra}
