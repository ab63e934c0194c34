"""Dataset file parsing: format sniffing, line-accurate syntax errors, record normalisation."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.samples import Message
from service.ingest.errors import IngestError
from service.ingest.formats import ParsedSample, content_hash, detect_format, iter_records, iter_samples
from service.ingest.limits import IngestLimits
from tests.datagen import build_records, llava_record, openai_record, write_records


def _parse(path: Path, limits: IngestLimits = IngestLimits()) -> list[ParsedSample]:
    return list(iter_samples(path, limits))


def _write(tmp_path: Path, text: str | bytes, name: str = "data") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def _error(tmp_path: Path, text: str | bytes, limits: IngestLimits = IngestLimits()) -> IngestError:
    with pytest.raises(IngestError) as info:
        _parse(_write(tmp_path, text), limits)
    return info.value


def _conv(*turns: tuple[str, str]) -> list[dict[str, str]]:
    return [{"from": r, "value": v} for r, v in turns]


def test_llava_json_array_is_normalised_with_lines(tmp_path):
    records, _ = build_records(3, multi_image=True)
    path = write_records(tmp_path / "d.json", records, "json")
    samples = _parse(path)
    assert [s.key for s in samples] == ["s0000", "s0001", "s0002"]
    assert samples[0].messages == [
        Message("user", "<image>\nWhat is shown in this picture?"),
        Message("assistant", "A traditional building with a curved roof. (sample 0)"),
    ]
    assert samples[1].image_names == ["images/0001_0.png", "images/0001_1.png"]
    assert samples[1].record == records[1]
    text_lines = path.read_text().splitlines()
    for s in samples:  # each sample's line is where its object opens
        assert text_lines[s.line - 1].strip() == "{"
    assert [s.index for s in samples] == [1, 2, 3]


def test_jsonl_skips_blank_lines_and_counts_lines(tmp_path):
    a = llava_record("a", "q?", "yes")
    b = llava_record(7, "q2?", "no", ["x.jpg"])
    path = _write(tmp_path, "\ufeff" + json.dumps(a) + "\n\n  \n" + json.dumps(b) + "\n")
    samples = _parse(path)
    assert [(s.key, s.line, s.index) for s in samples] == [("a", 1, 1), ("7", 4, 2)]
    assert samples[1].messages[0] == Message("user", "<image>\nq2?")


def test_openai_messages_with_image_parts(tmp_path):
    rec = {
        "id": "o1",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": "a.jpg"},
                    {"type": "image_url", "image_url": {"url": "b.png"}},
                    {"type": "text", "text": "Compare them."},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "Same cat."}]},
        ],
    }
    (s,) = _parse(_write(tmp_path, json.dumps(rec)))
    assert s.image_names == ["a.jpg", "b.png"]
    assert s.messages == [
        Message("system", "Be brief."),
        Message("user", "<image>\n<image>\nCompare them."),
        Message("assistant", "Same cat."),
    ]


def test_openai_top_level_images_use_tokens_and_roles_aliases(tmp_path):
    rec = {
        "images": ["p.png"],
        "messages": [
            {"role": "developer", "content": "sys"},
            {"role": "user", "content": "look"},
            {"role": "assistant", "content": "ok"},
        ],
    }
    (s,) = _parse(_write(tmp_path, json.dumps(rec)))
    assert s.key == "1"  # no id: keyed by 1-based position
    assert s.messages[0].role == "system"
    assert s.messages[1] == Message("user", "<image>\nlook")  # missing token prepended
    assert s.placed_image_tokens == 1  # and counted, for the upload's warning


def test_llava_and_openai_spellings_hash_alike(tmp_path):
    a = llava_record("x", "What?", "That.", ["i.jpg"])
    b = openai_record("y", "What?", "That.", ["other/name.jpg"])
    sa, sb = _parse(_write(tmp_path, json.dumps(a) + "\n" + json.dumps(b) + "\n"))
    assert sa.messages == sb.messages
    assert content_hash(sa, ["f" * 64]) == content_hash(sb, ["f" * 64])
    assert content_hash(sa, ["f" * 64]) != content_hash(sb, ["e" * 64])  # image bytes count
    c = llava_record("z", "What?", "That!", ["i.jpg"])
    (sc,) = _parse(_write(tmp_path, json.dumps(c), "c"))
    assert content_hash(sc, ["f" * 64]) != content_hash(sa, ["f" * 64])  # text counts
    with pytest.raises(ValueError):
        content_hash(sa, [])


def test_multi_image_tokens_are_prepended_when_missing(tmp_path):
    rec = {"id": 1, "image": ["a.jpg", "b.jpg", "c.jpg"], "conversations": _conv(("human", "<image> vs"), ("gpt", "x"))}
    (s,) = _parse(_write(tmp_path, json.dumps([rec])))
    assert s.messages[0].content == "<image>\n<image>\n<image> vs"
    assert s.image_names == ["a.jpg", "b.jpg", "c.jpg"]
    assert s.placed_image_tokens == 2


def test_text_only_and_user_assistant_spellings(tmp_path):
    rec = {"id": "t", "conversations": _conv(("system", "s"), ("User", "hi"), ("assistant", "hello"))}
    (s,) = _parse(_write(tmp_path, json.dumps([rec])))
    assert [m.role for m in s.messages] == ["system", "user", "assistant"]
    assert s.image_names == []


def test_malformed_json_array_names_line_and_column(tmp_path):
    text = '[\n {"id": 1, "conversations": []},\n {"id": 2 "conversations": []}\n]'
    err = _error(tmp_path, text)
    assert (err.code, err.status, err.line) == ("malformed_json", 400, 3)
    assert "line 3, column 11" in err.detail


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('[{"conversations": 1},\n]', 2, "trailing comma"),
        ('[\n{"a": 1}', 2, "ends inside"),
        ('[{"a": 1}]\n\n{"b": 2}', 3, "extra data"),
        ('[{"a": NaN}]', 1, "NaN"),
        ('[{"a": 1} {"b": 2}]', 1, "expected ','"),
    ],
)
def test_malformed_json_array_variants(tmp_path, text, line, words):
    err = _error(tmp_path, text)
    assert err.code == "malformed_json" and err.line == line and words in err.detail


def test_malformed_jsonl_names_the_line(tmp_path):
    good = json.dumps(llava_record("a", "q", "a"))
    err = _error(tmp_path, f"{good}\n{good[:-1]}\n{good}\n")
    assert (err.code, err.status, err.line) == ("malformed_json", 400, 2)
    assert err.detail.startswith("line 2, column")


def test_encoding_and_format_sniffing(tmp_path):
    assert detect_format(_write(tmp_path, "  \n\t[]", "a")) == "json"
    assert detect_format(_write(tmp_path, '\n{"x": 1}', "b")) == "jsonl"
    assert detect_format(_write(tmp_path, "   ", "c")) is None
    err = _error(tmp_path, "\n\nid,conversations\n")
    assert (err.code, err.status, err.line) == ("unsupported_format", 400, 3)
    assert _error(tmp_path, "\ufeff[]".encode("utf-16")).code == "bad_encoding"
    good = json.dumps(llava_record("a", "q", "a")).encode()
    bad = _error(tmp_path, good + b'\n{"id": "\xff"}\n')
    assert (bad.code, bad.line) == ("bad_encoding", 2)


def test_record_without_conversations(tmp_path):
    err = _error(tmp_path, json.dumps([{"id": "abc", "image": "x.jpg", "text": "hi"}]))
    assert (err.code, err.status, err.sample_id, err.line) == ("missing_conversations", 422, "abc", 1)
    assert "'abc'" in err.detail and "conversations" in err.detail


def test_unknown_role_names_sample_and_turn(tmp_path):
    rec = {"id": "r1", "conversations": _conv(("human", "a"), ("gpt", "b"), ("robot", "c"))}
    err = _error(tmp_path, json.dumps(rec))
    assert (err.code, err.sample_id, err.field) == ("unknown_role", "r1", "conversations[2].from")
    assert "'robot'" in err.detail and "conversations[2]" in err.detail


@pytest.mark.parametrize(
    ("rec", "code", "field"),
    [
        ({"conversations": []}, "invalid_conversations", "conversations"),
        ({"conversations": ["hi"]}, "invalid_turn", "conversations[0]"),
        ({"conversations": [{"value": "x"}]}, "invalid_turn", "conversations[0].from"),
        ({"conversations": [{"from": "gpt", "value": None}]}, "invalid_turn", "conversations[0].value"),
        ({"conversations": _conv(("human", "q"), ("gpt", "  "))}, "missing_assistant_turn", "conversations"),
        ({"conversations": _conv(("human", "q"))}, "missing_assistant_turn", "conversations"),
        ({"conversations": _conv(("human", "<image> q"), ("gpt", "a"))}, "image_token_mismatch", "conversations"),
        ({"image": "a.jpg", "conversations": _conv(("human", "q"), ("gpt", "<image>"))}, "image_token_mismatch", "conversations[1]"),
        ({"image": "a.jpg", "conversations": _conv(("gpt", "a"))}, "image_token_mismatch", "conversations"),
        ({"image": "http://x/a.jpg", "conversations": _conv(("human", "q"), ("gpt", "a"))}, "invalid_image_ref", "image"),
        ({"image": ["a.jpg", 3], "conversations": _conv(("human", "q"), ("gpt", "a"))}, "invalid_image_ref", "image[1]"),
        ({"image": "a", "images": ["b"], "conversations": _conv(("gpt", "a"))}, "invalid_image_ref", "images"),
        ({"conversations": _conv(("human", "q\u0000"), ("gpt", "a"))}, "invalid_record", "conversations[0].value"),
        ({"conversations": _conv(("gpt", "a")), "messages": []}, "invalid_record", None),
        ({"messages": [{"role": "tool", "content": "x"}]}, "unknown_role", "messages[0].role"),
        ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "invalid_turn", "messages[0].content[0]"),
        ({"messages": [{"role": "assistant", "content": None}]}, "invalid_turn", "messages[0].content"),
        ({"id": True, "conversations": _conv(("gpt", "a"))}, "invalid_sample_id", "id"),
        ({"id": " ", "conversations": _conv(("gpt", "a"))}, "invalid_sample_id", "id"),
    ],
)
def test_invalid_records(tmp_path, rec, code, field):
    err = _error(tmp_path, json.dumps([rec]))
    assert (err.code, err.field, err.status, err.line) == (code, field, 422, 1)


def test_non_object_record_and_limits(tmp_path):
    good = json.dumps(llava_record("a", "q", "a"))
    err = _error(tmp_path, f"{good}\n[1, 2]\n")
    assert (err.code, err.line) == ("invalid_record", 2) and "JSON array" in err.detail
    err = _error(tmp_path, json.dumps([llava_record("a", "q", "a")] * 2), IngestLimits(max_samples=1))
    assert (err.code, err.status) == ("too_many_samples", 413)
    err = _error(tmp_path, "[]" + " " * 100, IngestLimits(max_dataset_bytes=50))
    assert (err.code, err.status) == ("dataset_too_large", 413)
    rec = llava_record("a", "q", "a", [f"{i}.jpg" for i in range(3)])
    assert _error(tmp_path, json.dumps(rec), IngestLimits(max_images_per_sample=2)).code == "too_many_images"


def test_limits_validate_their_fields():
    with pytest.raises(ValueError, match="max_members.*0"):
        IngestLimits(max_members=0)
    with pytest.raises(ValueError, match="max_image_pixels"):
        IngestLimits(max_image_pixels=True)  # type: ignore[arg-type]


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(
    records=st.lists(st.dictionaries(st.text(max_size=4), _values, max_size=3), max_size=6),
    indent=st.sampled_from([None, 0, 1, 3]),
)
def test_json_array_reader_matches_json_loads(tmp_path_factory, records, indent):
    """The element-wise array reader returns what json.loads does, with each element's start line."""
    text = json.dumps(records, indent=indent)
    path = tmp_path_factory.mktemp("h") / "d.json"
    path.write_text(text)
    got = list(iter_records(path))
    assert [v for _, _, v in got] == json.loads(text)
    # Slow reference for lines: re-serialise the prefix up to each element and count newlines.
    decoder, pos, expected = json.JSONDecoder(), 1, []
    for _ in records:
        while text[pos] in " \t\r\n,":
            pos += 1
        expected.append(text.count("\n", 0, pos) + 1)
        pos = decoder.raw_decode(text, pos)[1]
    assert [line for _, line, _ in got] == expected


def test_nul_and_lone_surrogates_rejected_but_escaped_pairs_accepted(tmp_path):
    ok = '{"id": "e", "conversations": [{"from": "human", "value": "\\ud83d\\ude00 \\\\u0000"}, {"from": "gpt", "value": "a"}]}'
    (s,) = _parse(_write(tmp_path, ok))
    assert s.messages[0].content == "\U0001f600 \\u0000"  # an emoji pair and a literal backslash-u
    lone = ok.replace("\\ud83d\\ude00", "\\ud83d")
    err = _error(tmp_path, lone + "\n")
    assert (err.code, err.field) == ("invalid_record", "conversations[0].value")
    nul_key = '{"id": "n", "x\\u0000": 1, "conversations": [{"from": "gpt", "value": "a"}]}'
    assert _error(tmp_path, nul_key).code == "invalid_record"


def _element_lines(text: str, n: int) -> list[int]:
    """An independent oracle: each top-level element's start line, by re-decoding the prefix."""
    decoder, pos, lines = json.JSONDecoder(), text.index("[") + 1, []
    for _ in range(n):
        while text[pos] in " \t\r\n,":
            pos += 1
        lines.append(text.count("\n", 0, pos) + 1)
        pos = decoder.raw_decode(text, pos)[1]
    return lines


@settings(max_examples=80, deadline=None)
@given(
    records=st.lists(st.dictionaries(st.text(max_size=4), _values, max_size=3) | _values
                     | st.floats(allow_nan=False, allow_infinity=False) | st.integers(-10**30, 10**30), max_size=6),
    indent=st.sampled_from([None, 0, 2]),
    chunk=st.sampled_from([1, 2, 3, 5, 64]),
)
def test_streaming_array_reader_is_unchanged_by_chunk_boundaries(tmp_path_factory, records, indent, chunk):
    """Tiny read chunks cut numbers ("1." of "1.5e-07"), literals, escapes and multi-byte
    characters: the values are json.loads' and the lines an independent oracle's."""
    import service.ingest.readers.jsonl as json_reader  # the JSON parser behind formats.iter_records

    text = json.dumps(records, indent=indent, ensure_ascii=False)
    path = tmp_path_factory.mktemp("c") / "d.json"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    old, json_reader._READ_CHUNK = json_reader._READ_CHUNK, chunk
    try:
        got = list(iter_records(path))
    finally:
        json_reader._READ_CHUNK = old
    assert [v for _, _, v in got] == json.loads(text)
    assert [line for _, line, _ in got] == _element_lines(text, len(records))


@pytest.mark.parametrize("chunk", [1, 4, 1 << 20])
def test_array_errors_name_the_same_place_at_any_chunk_size(tmp_path, monkeypatch, chunk):
    import service.ingest.readers.jsonl as json_reader  # the JSON parser behind formats.iter_records

    monkeypatch.setattr(json_reader, "_READ_CHUNK", chunk)
    err = _error(tmp_path, '[\n {"id": 1, "conversations": []},\n {"id": 2 "conversations": []}\n]')
    assert (err.code, err.line) == ("malformed_json", 3) and "line 3, column 11" in err.detail
    err = _error(tmp_path, '[{"a": 12345}, {"a": 678} {"b": 2}]')
    assert (err.code, err.line) == ("malformed_json", 1) and "column 27: invalid JSON: expected ','" in err.detail
    err = _error(tmp_path, '[{"a": "é\u00e9x"},\n {"a": 1},\n  {"b" 2}]')
    assert "line 3, column 8" in err.detail
    err = _error(tmp_path, b'[{"a": 1},\n{"a": "\xff"}]')
    assert (err.code, err.line) == ("bad_encoding", 2)
    # a syntax error after a bad record still outranks it (the whole array is checked first)
    err = _error(tmp_path, '[{"id": 1, "conversations": 5},\n{"a": 1} x]')
    assert (err.code, err.line) == ("malformed_json", 2)
    # and invalid UTF-8 anywhere outranks a syntax error before it, as a whole-file read did
    err = _error(tmp_path, b'[{"a": 1} x,\n' + b'{"b": 2},\n' * 50 + b'{"c": "\xff"}]')
    assert (err.code, err.line) == ("bad_encoding", 52)


def test_a_syntax_error_in_a_large_array_is_named_not_taken_for_a_large_sample(tmp_path):
    """The reader reads more only when the window may have cut the sample: a real syntax error
    with megabytes after it is still a 400 at its own line and column."""
    good = json.dumps(llava_record("g", "q", "a"))
    text = "[" + good + ",\n" + '{"id": "bad" "x": 1},\n' + ",\n".join([good] * 3000) + "]"
    err = _error(tmp_path, text, IngestLimits(max_record_bytes=200))
    with pytest.raises(json.JSONDecodeError) as want:
        json.loads(text)
    assert (err.code, err.line, want.value.lineno) == ("malformed_json", 2, 2)
    assert f"line 2, column {want.value.colno}: invalid JSON: {want.value.msg}" in err.detail


def test_one_sample_over_the_record_limit_is_refused_in_both_formats(tmp_path):
    big = llava_record("big", "q", "x" * 5000)
    small = llava_record("s", "q", "a")
    limits = IngestLimits(max_record_bytes=2000)
    for text, line in ((json.dumps([small, big, small], indent=1), None), (f"{json.dumps(small)}\n{json.dumps(big)}\n", 2)):
        err = _error(tmp_path, text, limits)
        assert (err.code, err.status) == ("record_too_large", 413) and "sample #2" in err.detail
        assert line is None or err.line == line
    assert len(_parse(_write(tmp_path, json.dumps([small, big])), IngestLimits())) == 2


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_record_limit_is_exact(tmp_path, fmt):
    rec = json.dumps(llava_record("a", "q", "answer"))
    text = (lambda r: f"[{r}]") if fmt == "json" else (lambda r: f"\ufeff{r}\r\n{r}\n")
    assert _parse(_write(tmp_path, text(rec)), IngestLimits(max_record_bytes=len(rec)))
    err = _error(tmp_path, text(rec), IngestLimits(max_record_bytes=len(rec) - 1))
    assert err.code == "record_too_large" and err.line == 1


def test_a_jsonl_line_cut_by_the_read_is_too_large_even_if_it_ends_in_carriage_returns(tmp_path):
    rec = json.dumps(llava_record("a", "q", "answer"))
    limit = len(rec) + 2
    err = _error(tmp_path, rec + "\r" * 8 + '{"id": 2}\n', IngestLimits(max_record_bytes=limit))
    assert (err.code, err.line) == ("record_too_large", 1)


def test_a_large_json_array_is_parsed_in_memory_of_one_sample(tmp_path):
    import tracemalloc

    records = [llava_record(str(i), f"question {i} " * 20, f"answer {i} " * 40) for i in range(30_000)]
    path = _write(tmp_path, json.dumps(records))
    del records
    size = path.stat().st_size
    tracemalloc.start()
    try:
        n = sum(1 for _ in iter_records(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n == 30_000 and size > 20 * 2**20
    assert peak < 8 * 2**20, (peak, size)  # a 1 MiB read chunk and its window, not the file
