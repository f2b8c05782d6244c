"""Precision and recall of `airollout scan` on the example services of `airollout_testbed.ai_corpus`.

A found site counts as right only when its file, line, provider, model and guard all match what the example
declares beside the call. Prints the figures per language and overall; the target is 100% on the corpus.

    .venv/bin/python benchmarks/scan_accuracy.py
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path

from airollout.instrument.scanning import scan
from airollout_testbed.ai_corpus import EXAMPLES, ExpectedSite, expected_sites, write_corpus


def main() -> None:
    counts: Counter[tuple[str, str]] = Counter()
    with tempfile.TemporaryDirectory() as directory:
        roots = write_corpus(Path(directory))
        started = time.perf_counter()
        for example in EXAMPLES:
            found = {
                ExpectedSite(s.path, s.line, s.provider, s.model, s.guarded) for s in scan(roots[example.name]).sites
            }
            expected = expected_sites(example)
            for language in (example.language, "all"):
                counts[language, "right"] += len(found & expected)
                counts[language, "found"] += len(found)
                counts[language, "expected"] += len(expected)
            for site in sorted(found - expected, key=str):
                print(f"  wrong or extra: {example.name} {site}")
            for site in sorted(expected - found, key=str):
                print(f"  missed:         {example.name} {site}")
        elapsed = time.perf_counter() - started
    print(f"{'language':<12}{'expected':>10}{'found':>8}{'precision':>11}{'recall':>9}")
    for language in ("python", "typescript", "javascript", "all"):
        right, found, expected = (counts[language, key] for key in ("right", "found", "expected"))
        precision = right / found if found else 1.0
        recall = right / expected if expected else 1.0
        print(f"{language:<12}{expected:>10}{found:>8}{precision:>10.1%}{recall:>9.1%}")
    print(f"{len(EXAMPLES)} example services scanned in {elapsed:.2f} s")


if __name__ == "__main__":
    main()
