"""The sample contract shared by ingest, the feature engine, training and evaluation.

Every accepted input format (LLaVA `conversations`, OpenAI-style `messages`) is normalised at
ingest into this one shape, so the engine never sees format quirks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

IMAGE_TOKEN = "<image>"
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    role: str  # one of ROLES
    content: str  # text; each IMAGE_TOKEN marks where the next image goes

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"Message.role must be one of {ROLES}, got {self.role!r}")


@dataclass(frozen=True)
class EngineSample:
    """One training sample as the engine consumes it.

    Args:
        id: the SQL sample id (or any stable integer id outside the service).
        messages: the conversation; assistant turns are the supervised response.
        images: image files in the order of the IMAGE_TOKEN occurrences in `messages`.
    """

    id: int
    messages: tuple[Message, ...]
    images: tuple[Path, ...] = field(default=())

    @property
    def has_images(self) -> bool:
        return len(self.images) > 0

    def __post_init__(self) -> None:
        n_tokens = sum(m.content.count(IMAGE_TOKEN) for m in self.messages)
        if n_tokens != len(self.images):
            raise ValueError(
                f"sample {self.id}: {n_tokens} {IMAGE_TOKEN} placeholders but {len(self.images)} images"
            )
        if not any(m.role == "assistant" for m in self.messages):
            raise ValueError(f"sample {self.id}: no assistant turn to supervise")
