"""`reasonpipe` with lingua's results recorded to, or replayed from, a table: a run's cost when language id is free.

    python bench/lang_replay.py record TABLE_DIR -- run MANIFEST [reasonpipe flags]
    python bench/lang_replay.py replay TABLE_DIR -- run MANIFEST [reasonpipe flags]

`record` runs as usual and appends every `LinguaDetector.detect` result to `TABLE_DIR/<pid>.tsv`, keyed like
`detect_cached` (a hash of the detector's signature and the text). `replay` loads those files before the run (local
workers are forked from the driver and share the table) and answers every `detect` from them without loading lingua;
a text that was not recorded raises KeyError, so a replayed run reads exactly the texts the recorded one did. A
replayed run pays for everything but language id (the detection texts are still extracted, the results still cached
on the documents): its time is a floor for any language identifier on the same stage list. `bench/scale.py
--free-language-id` uses it.
"""

from __future__ import annotations

import glob
import json
import os
import sys

import xxhash

from reasonpipe.filters import language
from reasonpipe.pipeline.cli import main

_detect = language.LinguaDetector.detect


def _key(detector, text: str) -> str:
    return xxhash.xxh3_64_hexdigest(f"{detector.signature}\0{text}")


def record(folder: str) -> None:
    def detect(self, text):
        result = _detect(self, text)
        with open(os.path.join(folder, f"{os.getpid()}.tsv"), "a") as f:  # per call: pool workers exit abruptly
            f.write(f"{_key(self, text)}\t{json.dumps(result)}\n")
        return result

    os.makedirs(folder, exist_ok=True)
    language.LinguaDetector.detect = detect


def replay(folder: str) -> None:
    table = {}
    for path in glob.glob(os.path.join(folder, "*.tsv")):
        with open(path) as f:
            for line in f:
                key, value = line.rstrip("\n").split("\t")
                table[key] = json.loads(value)
    if not table:
        raise SystemExit(f"lang_replay: no recorded results under {folder}")

    def detect(self, text):
        value = table[_key(self, text)]
        return None if value is None else (value[0], value[1])

    language.LinguaDetector.detect = detect


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[1] not in ("record", "replay") or sys.argv[3] != "--":
        raise SystemExit(__doc__)
    mode, folder, _, *argv = sys.argv[1:]
    (record if mode == "record" else replay)(folder)
    sys.exit(main(argv))
