"""Text-only datasets for the service benchmarks: JSON Lines of conversations with planted copies."""
from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = ("time year people way day man thing woman life child world school state family student group "
         "country problem hand part place case week company system program question work government number "
         "night point home water room mother area money story fact month lot right study book eye job word "
         "business issue side kind head house service friend father power hour game line end member law car "
         "city community name president team minute idea kid body information back parent face others level "
         "office door health person art war history party result change morning reason research girl guy").split()


def write_dataset(path: Path, n: int, seed: int, answer_words: tuple[int, int] = (12, 40)) -> int:
    """n text-only records in JSON Lines: 5% exact copies and 5% one-word edits of earlier ones."""
    rng = random.Random(seed)
    texts: list[tuple[str, str]] = []
    with open(path, "w") as f:
        for i in range(n):
            r = rng.random()
            if texts and r < 0.05:
                q, a = texts[rng.randrange(len(texts))]
            elif texts and r < 0.10:
                q, a = texts[rng.randrange(len(texts))]
                words = a.split()
                words[rng.randrange(len(words))] = rng.choice(WORDS)
                a = " ".join(words)
            else:
                q = " ".join(rng.choices(WORDS, k=rng.randint(6, 16))) + "?"
                a = " ".join(rng.choices(WORDS, k=rng.randint(*answer_words))) + "."
                texts.append((q, a))
            f.write(json.dumps({"id": f"s{i}", "conversations": [{"from": "human", "value": q},
                                                                 {"from": "gpt", "value": a}]}) + "\n")
    return path.stat().st_size


def write_dataset_of_size(path: Path, nbytes: int, seed: int, fmt: str = "jsonl") -> int:
    """A file of about `nbytes` (records of ~1 KB, under the 2M-sample limit), JSON Lines or a
    JSON array (the same records, `[`, `,` and `]` around them)."""
    per = 1000
    size = write_dataset(path, max(1, nbytes // per), seed, answer_words=(140, 160))
    if fmt == "json":
        tmp = path.with_suffix(".tmp")
        with open(path) as src, open(tmp, "w") as dst:
            dst.write("[\n")
            for i, line in enumerate(src):
                dst.write(("," if i else "") + line)
            dst.write("]\n")
        tmp.replace(path)
        size = path.stat().st_size
    return size
