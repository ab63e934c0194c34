"""Normalise one record (LLaVA `conversations` or OpenAI-style `messages`) into Messages.

The normal form is `core.samples.Message` turns whose text carries one IMAGE_TOKEN per
image, in image order, plus the image names as the record spells them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.samples import IMAGE_TOKEN, Message
from core.skills import skill_problem
from core.text import join_path, json_leaves, text_problem

from .errors import DatasetError
from .limits import IngestLimits
from .location import Location

# human/gpt are LLaVA's spellings; user/assistant the chat ones; developer is OpenAI's newer system.
ROLE_ALIASES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "developer": "system",
}


@dataclass(frozen=True)
class Where:
    """Where a record sits, for error details."""

    key: str
    loc: Location
    has_id: bool

    def label(self) -> str:
        if self.has_id:
            return f"sample {self.key!r} ({self.loc.label()})"
        return f"sample #{self.key} ({self.loc.label()}, no 'id', keyed by its position)"

    def error(self, code: str, message: str, field: str | None = None, member: str | None = None) -> DatasetError:
        at = f", field {field!r}" if field else ""
        return DatasetError(
            code, f"{self.label()}{at}: {message}", sample_id=self.key, field=field, member=member, **self.loc.fields()
        )


def normalise_record(
    record: dict[str, Any], where: Where, limits: IngestLimits, *, check_chars: bool = True
) -> tuple[list[Message], list[str], int]:
    """Return (messages, image names, IMAGE_TOKENs placed) of a record, or raise DatasetError naming the field.

    The last is how many tokens the record's text lacked and were placed before its first user
    turn (LLaVA's convention); the API reports records with any as a warning.
    """
    if check_chars:
        check_strings(record, where)
    has_conv, has_msgs = "conversations" in record, "messages" in record
    if has_conv and has_msgs:
        raise where.error("invalid_record", "has both 'conversations' and 'messages'; keep one")
    if has_conv:
        turns, images, field = _llava_turns(record, where), _record_images(record, where), "conversations"
    elif has_msgs:
        turns, part_images, field = _openai_turns(record, where)
        images = _record_images(record, where)
        if part_images and images:
            raise where.error("invalid_image_ref", "has image parts in 'messages' and a top-level image list; use one")
        images = part_images or images
    else:
        raise where.error(
            "missing_conversations",
            "has neither 'conversations' (LLaVA) nor 'messages' (OpenAI-style)",
            field="conversations",
        )
    if len(images) > limits.max_images_per_sample:
        raise where.error(
            "too_many_images", f"has {len(images)} images, over the limit of {limits.max_images_per_sample}"
        )
    messages, placed = _place_image_tokens(turns, len(images), where, field)
    if not any(m.role == "assistant" and m.content.strip() for m in messages):
        raise where.error("missing_assistant_turn", "needs at least one assistant turn with non-empty text", field=field)
    return messages, images, placed


def record_skill(record: dict[str, Any], where: Where) -> str | None:
    """The record's own `skill` (stripped), None when it has none."""
    value = record.get("skill")
    if value is None:
        return None
    if (problem := skill_problem(value)) is not None:
        raise where.error("invalid_skill", f"'skill' {problem}", field="skill")
    return value.strip()


def check_strings(value: Any, where: Where, path: str = "") -> None:
    """Reject NUL characters and unpaired surrogates anywhere in the record (SQL JSON cannot store them)."""
    for at, leaf, is_key in json_leaves(value, path):
        if isinstance(leaf, str) and (problem := text_problem(leaf)) is not None:
            raise where.error("invalid_record", problem, field=(join_path(at, leaf) if is_key else at) or None)


def _role(raw: Any, where: Where, field: str) -> str:
    if not isinstance(raw, str):
        raise where.error("invalid_turn", f"role must be a string, got {raw!r}", field=field)
    role = ROLE_ALIASES.get(raw.strip().lower())
    if role is None:
        raise where.error(
            "unknown_role",
            f"unknown role {raw!r}; expected one of human/user, gpt/assistant, system",
            field=field,
        )
    return role


def _turn_list(record: dict[str, Any], name: str, where: Where) -> list[Any]:
    turns = record[name]
    if not isinstance(turns, list) or not turns:
        raise where.error("invalid_conversations", f"'{name}' must be a non-empty list of turns", field=name)
    return turns


def _llava_turns(record: dict[str, Any], where: Where) -> list[tuple[str, str]]:
    out = []
    for i, turn in enumerate(_turn_list(record, "conversations", where)):
        field = f"conversations[{i}]"
        if not isinstance(turn, dict):
            raise where.error("invalid_turn", "each turn must be an object {from, value}", field=field)
        if "from" not in turn:
            raise where.error("invalid_turn", "turn has no 'from' (human, gpt or system)", field=f"{field}.from")
        role = _role(turn["from"], where, f"{field}.from")
        value = turn.get("value")
        if not isinstance(value, str):
            raise where.error("invalid_turn", f"'value' must be a string, got {value!r}", field=f"{field}.value")
        out.append((role, value))
    return out


def _openai_turns(record: dict[str, Any], where: Where) -> tuple[list[tuple[str, str]], list[str], str]:
    out, images = [], []
    for i, msg in enumerate(_turn_list(record, "messages", where)):
        field = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise where.error("invalid_turn", "each message must be an object {role, content}", field=field)
        if "role" not in msg:
            raise where.error("invalid_turn", "message has no 'role'", field=f"{field}.role")
        role = _role(msg["role"], where, f"{field}.role")
        text, names = _openai_content(msg.get("content"), where, f"{field}.content")
        out.append((role, text))
        images.extend(names)
    return out, images, "messages"


def _openai_content(content: Any, where: Where, field: str) -> tuple[str, list[str]]:
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise where.error("invalid_turn", "'content' must be a string or a list of parts", field=field)
    pieces, images = [], []
    for j, part in enumerate(content):
        pf = f"{field}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise where.error("invalid_turn", "a text part needs a string 'text'", field=f"{pf}.text")
            pieces.append(text)
        elif kind == "image":
            # OpenAI has no bare image part; the HF chat-template spellings are image, url and path.
            ref = next((part[k] for k in ("image", "url", "path") if k in part), None)
            images.append(check_image_ref(ref, where, f"{pf}.image"))
            pieces.append(IMAGE_TOKEN)
        elif kind == "image_url":
            iu = part.get("image_url")
            ref = iu.get("url") if isinstance(iu, dict) else iu
            images.append(check_image_ref(ref, where, f"{pf}.image_url.url"))
            pieces.append(IMAGE_TOKEN)
        else:
            raise where.error(
                "invalid_turn", f"unsupported content part {kind!r}; expected text, image or image_url", field=pf
            )
    # Same layout as LLaVA's "<image>\nquestion", so both formats give the same content hash.
    return "\n".join(pieces), images


def _record_images(record: dict[str, Any], where: Where) -> list[str]:
    present = [k for k in ("image", "images") if record.get(k) is not None]
    if len(present) > 1:
        raise where.error("invalid_image_ref", "has both 'image' and 'images'; use one", field="images")
    if not present:
        return []
    name = present[0]
    value = record[name]
    if isinstance(value, str):
        return [check_image_ref(value, where, name)]
    if isinstance(value, list):
        return [check_image_ref(v, where, f"{name}[{i}]") for i, v in enumerate(value)]
    raise where.error("invalid_image_ref", "must be an image name or a list of image names", field=name)


def check_image_ref(ref: Any, where: Where, field: str) -> str:
    """An image reference must name a file of the images archive."""
    if not isinstance(ref, str) or not ref.strip():
        raise where.error("invalid_image_ref", f"image reference must be a non-empty string, got {ref!r}", field=field)
    lowered = ref.lower()
    if lowered.startswith(("http://", "https://", "data:", "file:")):
        raise where.error(
            "invalid_image_ref",
            f"image {ref[:80]!r} is a URL; images are not downloaded: put the file in the images "
            "archive and reference it by its path there",
            field=field,
            member=ref[:300],
        )
    return ref


def _place_image_tokens(
    turns: list[tuple[str, str]], n_images: int, where: Where, field: str
) -> tuple[list[Message], int]:
    """Check IMAGE_TOKEN counts against the images; prepend missing tokens to the first user turn.

    Returns the messages and how many tokens were prepended."""
    n_tokens = 0
    for i, (role, text) in enumerate(turns):
        count = text.count(IMAGE_TOKEN)
        if count and role != "user":
            raise where.error(
                "image_token_mismatch", f"{IMAGE_TOKEN} may only appear in user turns, found in a {role} turn",
                field=f"{field}[{i}]",
            )
        n_tokens += count
    if n_tokens > n_images:
        raise where.error(
            "image_token_mismatch", f"has {n_tokens} {IMAGE_TOKEN} tokens but only {n_images} image(s)", field=field
        )
    if n_tokens < n_images:
        # LLaVA convention: a sample whose text omits the placeholder gets it before the first question.
        first_user = next((i for i, (role, _) in enumerate(turns) if role == "user"), None)
        if first_user is None:
            raise where.error("image_token_mismatch", "has images but no user turn to attach them to", field=field)
        role, text = turns[first_user]
        turns = list(turns)
        turns[first_user] = (role, (IMAGE_TOKEN + "\n") * (n_images - n_tokens) + text)
    return [Message(role, text) for role, text in turns], n_images - n_tokens
