"""Regenerate text_1d's shipped resources: the demo-like report corpus and the default vocabulary.

Developer tool, not a test (run it by hand after changing the report plugin's demo templates)::

    python plugins/medkit-plugin-tokenizers/tests/make_text_corpus.py

It needs ``medkit-plugin-report`` installed (for its report generator and cleaning), writes
``src/medkit_plugin_tokenizers/data/report_corpus.txt`` (one cleaned report per line, < 200 KB)
and trains ``data/default_vocab.txt`` from it with :func:`train_tokenizer`. HF's trainer breaks
ties in hash order, so the vocabulary is trained once here and shipped, never at run time.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "src" / "medkit_plugin_tokenizers" / "data"
NUM_REPORTS = 600
SEED = 20240101  # not the demo's seed 0: the corpus is demo-like, not the demo itself
VOCAB_SIZE = 2000


def corpus_lines(n: int = NUM_REPORTS, seed: int = SEED) -> list[str]:
    """Cleaned impression + findings text of ``n`` generated reports (what the report modality yields)."""
    from medkit_plugin_report.cleaning import clean_report, select_text
    from medkit_plugin_report.demo import make_reports

    return [clean_report(select_text(text, "findings+impression")).text for text, _ in make_reports(n, seed)]


def main() -> int:
    from medkit_plugin_tokenizers.text import train_tokenizer

    DATA.mkdir(parents=True, exist_ok=True)
    lines = corpus_lines()
    corpus = "".join(f"{line}\n" for line in lines)
    if len(corpus.encode()) >= 200_000:
        raise SystemExit(f"corpus is {len(corpus.encode())} bytes; keep it under 200 KB")
    (DATA / "report_corpus.txt").write_text(corpus, encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        train_tokenizer(lines, VOCAB_SIZE, tmp)
        (DATA / "default_vocab.txt").write_text((Path(tmp) / "vocab.txt").read_text(encoding="utf-8"),
                                                encoding="utf-8")
    print(f"wrote {DATA / 'report_corpus.txt'} ({len(lines)} reports, {len(corpus.encode())} bytes) "
          f"and {DATA / 'default_vocab.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
