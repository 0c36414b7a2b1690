"""The one label rule: ``-1`` or empty is unlabelled, other labels are class names or integers >= 0."""

from __future__ import annotations

import re
from typing import Any, Sequence

from medkit.api.errors import DataError

#: The label value of an unlabelled sample, in every dataset.
UNLABELLED = -1
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def parse_label(value: Any, where: str) -> str | None:
    """One raw label as its canonical text, or ``None`` when the sample is unlabelled.

    ``None``, ``""`` and ``-1`` mean unlabelled. A number must be a non-negative integer (``2`` and
    ``2.0`` both give ``"2"``); anything else that is not a number is a class name (stripped).

    Raises:
        DataError: naming ``where`` (the file and row) for a negative label other than ``-1`` or a
            non-integer number such as ``3.5``.
    """
    if value is None:
        return None
    text = str(value).strip()
    if text == "":
        return None
    if not _NUMBER.match(text):
        return text
    number = float(text)
    if number == UNLABELLED:
        return None
    if number < 0 or number != int(number):
        raise DataError(f"{where}: label {text!r} is not a class: labels are class names, integers >= 0, "
                        f"or -1 / empty for an unlabelled sample; fix the value")
    return str(int(number))


def encode_labels(values: Sequence[str | None]) -> tuple[list[int], list[str]]:
    """Class indices and names of labels already passed through :func:`parse_label`.

    When every present label is an integer, it keeps its value and the names are ``"0".."K-1"``;
    otherwise the names are the sorted distinct labels. Unlabelled samples get :data:`UNLABELLED`.
    """
    present = sorted({v for v in values if v is not None})
    if present and all(v.isdigit() for v in present):
        names = [str(k) for k in range(max(int(v) for v in present) + 1)]
        return [UNLABELLED if v is None else int(v) for v in values], names
    index = {name: k for k, name in enumerate(present)}
    return [UNLABELLED if v is None else index[v] for v in values], present


def encode_raw(values: Sequence[Any], where: Sequence[str]) -> tuple[list[int], list[str]]:
    """:func:`parse_label` on every raw value (``where[i]`` names its file and row), then
    :func:`encode_labels`."""
    return encode_labels([parse_label(v, w) for v, w in zip(values, where)])


def refuse_conflicts(rows: Sequence[tuple[str, str | None, str]]) -> None:
    """Refuse one image listed twice with different labels, naming both rows.

    Args:
        rows: ``(key, parsed label, where)`` per row: ``key`` the image (path or id) the row labels,
            ``where`` the file and line (``labels.csv line 4``). The same label twice is accepted.

    Raises:
        DataError: ``"<first where> and <second where> both list <key> with different labels ..."``.
    """
    first: dict[str, tuple[str | None, str]] = {}
    for key, label, where in rows:
        if key not in first:
            first[key] = (label, where)
            continue
        label0, where0 = first[key]
        if label0 != label:
            raise DataError(f"{where0} and {where} both list {key!r}, with different labels "
                            f"({label0 if label0 is not None else 'unlabelled'!r} and "
                            f"{label if label is not None else 'unlabelled'!r}); keep one row per image")
