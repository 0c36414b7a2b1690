"""MIMIC-CXR section extraction and the MedCoSS/MGCA report cleaning rules."""

from __future__ import annotations

import re
from dataclasses import dataclass

#: An all-caps section header at the start of a line, ending with a colon ("FINDINGS:").
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z &/()-]*[A-Z)])[ \t]*:", re.MULTILINE)
_BULLET = re.compile(r"[0-9]+\.")
_WORD = re.compile(r"\w+")

SECTION_CHOICES = ("findings+impression", "all")


def split_sections(text: str) -> dict[str, str]:
    """Sections of a MIMIC-CXR-style report by upper-case header name (``{"FINDINGS": "..."}``).

    Text before the first header is dropped; a header that appears twice has its texts joined.
    """
    sections: dict[str, str] = {}
    matches = list(_HEADER.finditer(text))
    for k, match in enumerate(matches):
        end = matches[k + 1].start() if k + 1 < len(matches) else len(text)
        name = " ".join(match.group(1).split())
        body = text[match.end():end].strip()
        sections[name] = f"{sections[name]} {body}".strip() if name in sections else body
    return sections


def findings_and_impression(text: str) -> tuple[str, str] | None:
    """``(findings, impression)`` of a report, or ``None`` when it has neither section.

    ``FINDINGS AND IMPRESSION:`` counts as findings; ``CONCLUSION:`` counts as impression.
    """
    findings: list[str] = []
    impression: list[str] = []
    for name, body in split_sections(text).items():
        if "FINDING" in name:
            findings.append(body)
        elif "IMPRESSION" in name or "CONCLUSION" in name:
            impression.append(body)
    if not findings and not impression:
        return None
    return " ".join(findings), " ".join(impression)


def select_text(text: str, sections: str) -> str:
    """The part of ``text`` to train on.

    ``"findings+impression"`` gives ``impression + " " + findings`` (MedCoSS order), or the whole
    text when the report has neither header (plain reports); ``"all"`` gives the whole text.
    """
    if sections == "findings+impression":
        parts = findings_and_impression(text)
        if parts is not None:
            findings, impression = parts
            return f"{impression} {findings}".strip()
    return text


@dataclass(frozen=True)
class Cleaned:
    """A cleaned report: the kept sentences joined by spaces and the MGCA token count."""

    text: str
    num_tokens: int  # every ``\\w+`` ASCII token, including those of dropped 1-token sentences


def clean_report(text: str) -> Cleaned:
    """Apply the MedCoSS/MGCA cleaning.

    Newlines become spaces; the text is split at numbered bullets (``\\d+\\.``) and at ``"."``;
    each sentence is lowercased and tokenised with ``\\w+``, non-ASCII characters are removed, and
    sentences of one token or fewer are dropped.

    Example:
        >>> clean_report("IMPRESSION: 1. No effusion. 2. Ok.").text
        'no effusion'
    """
    text = text.replace("\r", " ").replace("\n", " ")
    sentences = [s for point in _BULLET.split(text) for s in point.split(".")]
    kept: list[str] = []
    count = 0
    for sentence in sentences:
        sentence = sentence.replace("\ufffd\ufffd", " ")
        tokens = [t.encode("ascii", "ignore").decode("ascii") for t in _WORD.findall(sentence.lower())]
        tokens = [t for t in tokens if t]
        if len(tokens) > 1:
            kept.append(" ".join(tokens))
        count += len(tokens)
    return Cleaned(" ".join(kept), count)
