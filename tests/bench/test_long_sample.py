"""`bench/long_sample.py`'s dataset: ordinary records plus long answers of exactly the asked length."""
import json

from bench.long_sample import long_text, write_with_long
from service.ingest.formats import iter_records


def test_long_answers_have_the_asked_length_and_ingest_as_records(tmp_path):
    assert len(long_text(16_000, seed=0)) == 16_000 and long_text(50, seed=1) != long_text(50, seed=2)
    path = tmp_path / "d.jsonl"
    write_with_long(path, 30, long=2, chars=16_000)
    records = [v for _, _, v in iter_records(path)]
    answers = [r["conversations"][1]["value"] for r in records]
    assert len(records) == 32 and [len(a) for a in answers[-2:]] == [16_000, 16_000]
    assert max(len(a) for a in answers[:-2]) < 1000
    assert len({json.dumps(r) for r in records}) > 28
