"""`Leases`: which reviewer holds which image of a review folder, and until when.

An image handed to a reviewer is leased to them for `seconds`; only they may decide it. Past its expiry it
may be handed to the next reviewer who asks, and then only that one may decide it; until it is handed on,
the first reviewer still may (a slow decision is not thrown away for nothing). A reviewer holds one lease
at a time. The leases live in the folder (`.review-leases.json`, read and written under the folder's label
lock, `kcaptcha.data.labels.locked`), so the server processes of `bin/serve --workers=N`, and a restarted
server, agree on them.
"""

import dataclasses
import json
import logging
import os
import time
from typing import Callable, Dict, Iterable

from kcaptcha import files

FILE = ".review-leases.json"
logger = logging.getLogger("kcaptcha.serve")


@dataclasses.dataclass(frozen=True)
class Lease:
    reviewer: str
    until: float  # seconds since the epoch, the same clock in every process


class Leases:
    """The leases of `folder`; call every method with the folder's label lock held.

    Args:
        folder: the review folder.
        seconds: how long an image handed to a reviewer is kept from the others.
        clock: seconds since the epoch (tests pass their own).
    """

    def __init__(self, folder: str, seconds: float, clock: Callable[[], float] = time.time):
        self.path, self.seconds, self.clock = os.path.join(folder, FILE), seconds, clock

    def read(self) -> Dict[str, Lease]:
        """{filename: lease}; none for a missing or damaged file (the worst case: an image handed twice)."""
        if not os.path.exists(self.path):
            return {}
        try:
            return {name: Lease(str(lease["reviewer"]), float(lease["until"]))
                    for name, lease in files.read_json(self.path).items()}
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            logger.warning("Ignoring the damaged review leases in %s: %s", self.path, error)
            return {}

    def write(self, leases: Dict[str, Lease]) -> None:
        text = json.dumps({name: dataclasses.asdict(lease) for name, lease in sorted(leases.items())}, indent=1)
        with files.atomic_path(self.path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")  # no fsync: leases lost in a crash cost nothing, and a decision waits on it

    def free(self, leases: Dict[str, Lease], filename: str, reviewer: str) -> bool:
        """Whether `filename` may be handed to `reviewer`: not leased, leased to them, or its lease expired."""
        lease = leases.get(filename)
        return lease is None or lease.reviewer == reviewer or lease.until <= self.clock()

    def hand(self, leases: Dict[str, Lease], filename: str, reviewer: str,
             waiting: Iterable[str]) -> Dict[str, Lease]:
        """`leases` with `filename` leased to `reviewer` from now (their other lease given up), and only the
        leases of the `waiting` (undecided) images kept."""
        waiting = set(waiting)
        kept = {name: lease for name, lease in leases.items() if name in waiting and lease.reviewer != reviewer}
        kept[filename] = Lease(reviewer, self.clock() + self.seconds)
        return kept

    def refusal(self, leases: Dict[str, Lease], filename: str, reviewer: str) -> str:
        """Why `reviewer` may not decide `filename`, or '' when it is leased to them."""
        lease = leases.get(filename)
        if lease is not None and lease.reviewer == reviewer:
            return ""
        if lease is None:
            return (f"{filename!r} was not handed to reviewer {reviewer!r}: ask /review/next for an image to "
                    "decide, or send \"override\": true")
        left = lease.until - self.clock()
        if left > 0:
            return (f"{filename!r} is handed to reviewer {lease.reviewer!r} for another {left:.0f} s; only they may "
                    "decide it unless you send \"override\": true")
        return (f"{filename!r} was handed on to reviewer {lease.reviewer!r}: ask /review/next for an image to "
                "decide, or send \"override\": true")
