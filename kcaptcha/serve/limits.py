"""`Limits`: every bound the service keeps on one request, on all requests together and on their connections.

Each limit turns abuse into a quick, cheap answer: 413 for a request that asks for too much (while its body
still arrives, where the body shows it), 503 with `Retry-After` while the service is full, 408 for a body
that does not arrive in time or arrives too slowly while others need the room, and a closed connection for
headers that do not arrive in time.
"""

import dataclasses

MiB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Limits:
    """The service's bounds (`bin/serve` has one flag for each).

    Per request:
        max_image_bytes: the most bytes in one image (413).
        max_request_bytes: the most bytes in one request body (413).
        max_image_pixels: the most pixels in one image, read from its header before any pixel is decoded.
        max_request_pixels: the most pixels in all the images of one request together.
        max_parts: the most multipart parts (files and text fields alike) or images in one request.
        request_timeout: seconds from a request's arrival to its answer; past them it is answered 503 and its
            remaining work is dropped.
        body_timeout: seconds for a request body to arrive once its headers have (408, connection closed).
        header_timeout: seconds for a request's headers to arrive; past them the connection is closed.
    All requests together:
        max_connections: the most open connections; past it, the one waiting longest (for its headers or
            body, or idle) is closed to make room for the new one.
        max_queue: the most images admitted per model and not yet answered (503 past it).
        max_concurrency: the most requests in progress (503 past it), counted once their body has arrived;
            /healthz, /readyz and /metrics are exempt.
        max_bytes_in_flight: the most request-body bytes held in memory at once (503 past it). Bodies over
            `SMALL_BODY_BYTES` may fill only 7/8 of it, so large uploads can never lock out small ones. When
            it is full, the slowest body arriving for over a second is cut (408) to make room.
    """

    max_image_bytes: int = 5 * MiB
    max_request_bytes: int = 16 * MiB
    max_image_pixels: int = 4096 * 4096
    max_request_pixels: int = 4096 * 4096
    max_parts: int = 64
    request_timeout: float = 10.0
    body_timeout: float = 20.0
    header_timeout: float = 10.0
    max_connections: int = 1024
    max_queue: int = 512
    max_concurrency: int = 256
    max_bytes_in_flight: int = 128 * MiB

    def __post_init__(self):
        bad = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
               if not getattr(self, field.name) > 0}
        if bad:
            raise ValueError(f"Every serving limit must be positive. Received: "
                             f"{', '.join(f'{name}={value}' for name, value in bad.items())}")
        if self.max_request_bytes < self.max_image_bytes:
            raise ValueError(f"max_request_bytes must be at least max_image_bytes. Received: max_request_bytes="
                             f"{self.max_request_bytes}, max_image_bytes={self.max_image_bytes}")
        if self.large_bodies_bytes < self.max_request_bytes:
            raise ValueError(f"7/8 of max_bytes_in_flight must hold one whole request. Received: "
                             f"max_bytes_in_flight={self.max_bytes_in_flight}, "
                             f"max_request_bytes={self.max_request_bytes}")

    @property
    def large_bodies_bytes(self) -> int:
        """The share of `max_bytes_in_flight` that bodies over `SMALL_BODY_BYTES` may fill together."""
        return self.max_bytes_in_flight * 7 // 8


SMALL_BODY_BYTES = MiB  # a body this small may use the last eighth of max_bytes_in_flight
RETRY_AFTER_SECONDS = 1
