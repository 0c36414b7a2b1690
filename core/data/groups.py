"""Split keys: the patient, study or case of every sample, and the duplicate images that join groups.

The held-out split keeps whole *groups* on one side. A sample's group key is the most specific
grouping known for its file, in this order:

1. a patient column of a CSV at the data root (``trainer.patient_column``, else the first of
   :data:`PATIENT_COLUMNS` found), keyed by the file's relative path (``path``) or name (``id``);
2. the folder at ``trainer.group_folder_level`` (0 = the first folder under the root), when set;
3. the DICOM PatientID, else its StudyInstanceUID;
4. the TCGA case id (``TCGA-XX-XXXX``) in the file's name or folders (TCGA slides, TCIA series);
5. the sample's source (the image, volume or report itself), as before.

Identical images never end up on both sides: files that share a DICOM SOPInstanceUID (the same
image in another encoding or under another name), a SeriesInstanceUID (the same series copied),
or the same bytes are *duplicates*, and their groups are joined (union-find) before splitting.
Bytes are hashed (sha256 of the file) only for files without a DICOM identity (a copied DICOM file
keeps its SOPInstanceUID) whose size another such file shares, since identical files have equal
sizes: files are read once more only where copies can exist. Decoded
pixels are not hashed: that needs decoding every image while indexing (seconds per JPEG 2000
radiograph), and the same image in two encodings is caught by its SOPInstanceUID already.
"""

from __future__ import annotations

import hashlib
import logging
import re
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from medkit.api.errors import DataError

log = logging.getLogger(__name__)

#: Patient columns looked for (case-insensitive) in the CSVs at a data root, first match wins.
PATIENT_COLUMNS = ("patient_id", "PatientID", "patient", "subject_id", "subject", "case_id")
#: A TCGA barcode's case part: project (2) and participant (4): ``TCGA-A2-A0T2``.
TCGA_CASE = re.compile(r"(?<![A-Za-z0-9])(TCGA-[A-Za-z0-9]{2}-[A-Za-z0-9]{4})(?![A-Za-z0-9])")
#: Key kinds, most specific grouping first; ``source`` is the fallback (the sample's own source).
KINDS = ("patient", "folder", "study", "case", "source")
_DICOM_TAGS = ["PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]


@dataclass(frozen=True)
class GroupOptions:
    """How group keys are found (``trainer.patient_column``, ``trainer.group_folder_level``).

    Attributes:
        patient_column: the CSV column naming the patient; ``None``: the first of
            :data:`PATIENT_COLUMNS` a CSV at the data root has.
        folder_level: the folder level naming the patient (0 = first); ``None``: not used.
    """

    patient_column: str | None = None
    folder_level: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_trainer(cls, section: Any) -> GroupOptions:
        """The options of a run's ``trainer`` section (a mapping or the typed config object)."""
        values = dict(section) if isinstance(section, Mapping) else vars(section)
        column, level = values.get("patient_column"), values.get("group_folder_level")
        return cls(str(column) if column else None, None if level is None else int(level))


@dataclass
class Unit:
    """One file (or DICOM series) that samples are read from: what its keys are derived from."""

    rel: str
    paths: tuple[str, ...]
    source: str
    folder: bool = False  # ``rel`` names a folder (a DICOM series), not a file
    dicom: dict[str, str] | None = None  # PatientID, StudyInstanceUID... when known from indexing


@dataclass
class SampleKeys:
    """Per sample: the group key the split hashes, its kind, and what was joined.

    Attributes:
        keys: the sample's own key (before duplicates joined groups), e.g. ``patient:123``.
        groups: the key of its joined group (the smallest key of the group): what the split hashes.
        kinds: the kind of ``keys[i]`` (one of :data:`KINDS`).
        identities: per sample, its file's identity keys (``sop:``, ``series:``, ``sha256:``).
        duplicates: ``{"files", "identities", "keys"}`` of every set of files that share identities.
    """

    keys: list[str]
    groups: list[str]
    kinds: list[str]
    identities: list[tuple[str, ...]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)

    def kind_counts(self) -> dict[str, int]:
        """How many distinct keys of each kind were used."""
        seen = {k: kind for k, kind in zip(self.keys, self.kinds)}
        out: dict[str, int] = {}
        for kind in seen.values():
            out[kind] = out.get(kind, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: KINDS.index(kv[0]) if kv[0] in KINDS else len(KINDS)))


# -- the files behind a dataset's samples --------------------------------------------------------
def _as_path(value: Any) -> Path | None:
    if isinstance(value, (list, tuple)) and value:
        value = value[0]
    if isinstance(value, (str, Path)) and len(str(value)) < 4096 and "\n" not in str(value):
        try:
            path = Path(value)
            return path if path.exists() else None
        except OSError:
            return None
    return None


def units_of(dataset: Any) -> tuple[list[int], list[Unit]] | None:
    """``(unit index of every sample, units)`` for the dataset kinds medkit knows (2D entries,
    windowed volumes, fine-tuning items); ``None`` for any other dataset (its sources are used)."""
    sources = [str(s) for s in (getattr(dataset, "sources", None) or dataset.ids)]
    index: dict[str, int] = {}
    units: list[Unit] = []

    def add(key: str, make: Any) -> int:
        if key not in index:
            index[key] = len(units)
            units.append(make())
        return index[key]

    from medkit.data.items import ItemDataset
    from medkit.data.modality2d import Image2DDataset
    from medkit.data.windows import WindowDataset

    if isinstance(dataset, Image2DDataset) and len(dataset.entries) == len(sources):
        of = [add(e.rel, lambda e=e, s=s: Unit(e.rel, (str(e.path),), s, dicom=_entry_uids(e)))
              for e, s in zip(dataset.entries, sources)]
    elif isinstance(dataset, WindowDataset):
        by_id = {v.id: v for v in dataset.volumes}
        if not all(s in by_id for s in sources):
            return None
        of = [add(s, lambda v=by_id[s]: Unit(v.id, tuple(v.paths), v.id, folder=v.kind == "series",
                                             dicom=_volume_uids(v))) for s in sources]
    elif isinstance(dataset, ItemDataset) and len(dataset.items) == len(sources):
        of = []
        for it, s in zip(dataset.items, sources):
            path = _as_path(it.source)
            of.append(add(it.id, lambda it=it, s=s, p=path: Unit(it.id, (str(p),) if p else (), s,
                                                                   folder=bool(p and p.is_dir()))))
    else:
        return None
    return of, units


def _volume_uids(vol: Any) -> dict[str, str] | None:
    if vol.kind == "nifti":
        return None
    uids = {"PatientID": vol.patient, "StudyInstanceUID": vol.study, "SeriesInstanceUID": vol.series}
    return {k: str(v) for k, v in uids.items() if v}


def _entry_uids(entry: Any) -> dict[str, str] | None:
    """A 2D entry's DICOM identifiers read while indexing (``Entry2D.dicom``), ``None`` if unknown."""
    known = getattr(entry, "dicom", None)
    return None if known is None else {k: str(v) for k, v in known.items() if v}


def _is_dicom(path: Path) -> bool:
    from medkit.data.volumes import is_dicom_file

    return path.is_file() and (path.suffix.lower() in (".dcm", ".dicom") or is_dicom_file(path))


def dicom_uids(path: Path) -> dict[str, str]:
    """PatientID, StudyInstanceUID, SeriesInstanceUID and SOPInstanceUID of a DICOM file (header
    only; pydicom's warnings about malformed values stay quiet here: indexing reports them)."""
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=_DICOM_TAGS)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types; the modality read the file already
        log.debug("%s: no DICOM identifiers read (%s)", path, exc)
        return {}
    return {t: str(ds.get(t, "") or "").strip() for t in _DICOM_TAGS if str(ds.get(t, "") or "").strip()}


def _dicom_of(unit: Unit) -> dict[str, str]:
    """The DICOM identifiers of a unit: a file's own, or a series' (from indexing, else its first slice)."""
    if unit.dicom is not None and (len(unit.paths) != 1 or "SOPInstanceUID" in unit.dicom):
        return unit.dicom
    path = Path(unit.paths[0]) if unit.paths else None
    if path is not None and path.is_dir():
        path = next((p for p in sorted(path.iterdir()) if _is_dicom(p)), None)
    if path is None or not _is_dicom(path):
        return dict(unit.dicom or {})
    found = dicom_uids(path)
    if len(unit.paths) != 1 or unit.folder:
        found.pop("SOPInstanceUID", None)  # one slice's instance is not the series' identity
    return {**(unit.dicom or {}), **found}


# -- the patient column ----------------------------------------------------------------------------
def patient_tables(root: Path, options: GroupOptions) -> list[Any]:
    """Tables (:class:`medkit.data.tables.Table`) of patient ids from the CSVs directly under
    ``root`` that have a patient column and a ``path``/``id`` column.

    Raises:
        DataError: ``options.patient_column`` is set but no CSV at ``root`` has that column.
    """
    from medkit.data.tables import read_table

    columns = (options.patient_column,) if options.patient_column else PATIENT_COLUMNS
    tables = []
    for csv_path in sorted(root.glob("*.csv")) if root.is_dir() else []:
        try:
            table = read_table(csv_path, columns, optional=True)
        except DataError as exc:  # a patient column without path/id column, or an unreadable CSV
            log.debug("%s: not a patient table (%s)", csv_path, exc)
            continue
        if table is not None:
            tables.append(table)
    if options.patient_column and not tables:
        raise DataError(f"{root}: trainer.patient_column={options.patient_column!r}, but no CSV in this folder "
                        f"has that column next to a 'path' or 'id' column; fix the column name or unset it")
    return tables


# -- keys ------------------------------------------------------------------------------------------
def _key_of(unit: Unit, tables: Sequence[Any], options: GroupOptions, uids: dict[str, str]) -> tuple[str, str]:
    for table in tables:
        value = table.get(unit.rel)
        if value:
            return f"patient:{value}", "patient"
    if options.folder_level is not None:
        parts = unit.rel.split("/")
        folders = parts if unit.folder else parts[:-1]
        if len(folders) > options.folder_level:
            return "folder:" + "/".join(folders[:options.folder_level + 1]), "folder"
    if uids.get("PatientID"):
        return f"patient:{uids['PatientID']}", "patient"
    if uids.get("StudyInstanceUID"):
        return f"study:{uids['StudyInstanceUID']}", "study"
    match = TCGA_CASE.search(unit.rel) or next(filter(None, (TCGA_CASE.search(Path(p).name)
                                                             for p in unit.paths[:1])), None)
    if match:
        return f"case:{match.group(1).upper()}", "case"
    return unit.source, "source"


def file_sha256(path: Path) -> str:
    """sha256 of the file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _content_ids(units: Sequence[Unit], among: Iterable[int]) -> dict[int, str]:
    """``unit -> sha256:<hex>`` for the single files (of the units ``among``) whose size another one shares."""
    by_size: dict[int, list[int]] = defaultdict(list)
    for u in among:
        unit = units[u]
        if len(unit.paths) == 1 and not unit.folder and Path(unit.paths[0]).is_file():
            by_size[Path(unit.paths[0]).stat().st_size].append(u)
    out: dict[int, str] = {}
    for members in by_size.values():
        if len(members) > 1:
            for u in members:
                out[u] = "sha256:" + file_sha256(Path(units[u].paths[0]))
    return out


def join(keys: Sequence[str], identities: Sequence[Iterable[str]], files: Sequence[str]
         ) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Union-find over group ``keys``: keys whose files share an identity are joined.

    Args:
        keys: the group key of each file. identities: each file's identity keys. files: each
            file's name (for the report).

    Returns:
        (key → its group's key, the smallest key of the group; the duplicates: every set of two or
        more files that share identities, with those identities and the files' keys).
    """
    parent = {k: k for k in keys}

    def find(k: str) -> str:
        while parent[k] != k:
            parent[k] = parent[parent[k]]  # path halving
            k = parent[k]
        return k

    holders: dict[str, list[int]] = defaultdict(list)
    for f, ids in enumerate(identities):
        for ident in ids:
            holders[ident].append(f)
    found: dict[tuple[str, ...], dict[str, Any]] = {}
    for ident, fs in sorted(holders.items()):
        if len(fs) < 2:
            continue
        group_keys = sorted({keys[f] for f in fs})
        roots = sorted({find(k) for k in group_keys})
        for r in roots[1:]:
            parent[r] = roots[0]  # the smallest key stays the root: a group's name never depends on order
        names = tuple(sorted(files[f] for f in fs))
        entry = found.setdefault(names, {"files": list(names), "identities": [], "keys": group_keys})
        entry["identities"].append(ident)
    return {k: find(k) for k in keys}, list(found.values())


def sample_keys(dataset: Any, root: Path | None, options: GroupOptions | None = None) -> SampleKeys:
    """The group key of every sample of ``dataset`` (read from ``root``), duplicates joined.

    A dataset may state its keys itself (prepared data: ``group_keys``, ``group_kinds``,
    ``groups`` and ``duplicates``, recorded when it was prepared); a dataset medkit cannot look
    into keeps its sources (kind ``source``).
    """
    options = options or GroupOptions()
    stated = getattr(dataset, "group_keys", None)
    if stated is not None:
        n = len(stated)
        return SampleKeys([str(k) for k in stated], [str(g) for g in dataset.groups],
                          [str(k) for k in dataset.group_kinds], [()] * n, list(getattr(dataset, "duplicates", [])))
    found = units_of(dataset)
    if found is None:
        from medkit.data.split import sources_of

        keys = sources_of(dataset)
        return SampleKeys(keys, list(keys), ["source"] * len(keys), [()] * len(keys))
    of, units = found
    tables = patient_tables(Path(root), options) if root is not None else []
    unit_keys, unit_kinds, unit_ids = [], [], []
    for unit in units:
        uids = _dicom_of(unit)
        key, kind = _key_of(unit, tables, options, uids)
        ids = [f"sop:{uids['SOPInstanceUID']}"] if "SOPInstanceUID" in uids else []
        ids += [f"series:{uids['SeriesInstanceUID']}"] if unit.folder and "SeriesInstanceUID" in uids else []
        unit_keys.append(key)
        unit_kinds.append(kind)
        unit_ids.append(tuple(ids))
    # a copy of a DICOM file has its SOPInstanceUID: only files without an identity are hashed
    content = _content_ids(units, [u for u, ids in enumerate(unit_ids) if not ids])
    unit_ids = [ids + ((content[u],) if u in content else ()) for u, ids in enumerate(unit_ids)]
    joined, dups = join(unit_keys, unit_ids, [u.rel for u in units])
    return SampleKeys([unit_keys[u] for u in of], [joined[unit_keys[u]] for u in of], [unit_kinds[u] for u in of],
                      [unit_ids[u] for u in of], dups)


# -- prepared data -----------------------------------------------------------------------------------
def split_keys_record(dataset: Any, data: Path, options: GroupOptions) -> dict[str, Any]:
    """What ``medkit prepare`` records of a folder's split keys: the options, the duplicates, and
    ``[key, kind, group]`` by sample id (a prepared folder may no longer have the files)."""
    root = getattr(dataset, "root", None) or (data.parent if data.is_file() else data)
    keys = sample_keys(dataset, Path(root), options)
    return {"options": options.as_dict(), "duplicates": keys.duplicates,
            "by_id": {str(i): [k, kind, g] for i, k, kind, g in zip(dataset.ids, keys.keys, keys.kinds, keys.groups)}}


def manifest_keys(record: dict[str, Any] | None, ids: Sequence[str]) -> dict[str, Any]:
    """The manifest fields of the samples ``ids`` kept (``{}`` when the plan recorded no keys)."""
    record = record or {}
    by_id = record.get("by_id")
    if not by_id or not all(i in by_id for i in ids):
        return {}
    return {"group_keys": [by_id[i][0] for i in ids], "group_kinds": [by_id[i][1] for i in ids],
            "groups": [by_id[i][2] for i in ids],
            "split_keys": {"options": record["options"], "duplicates": record["duplicates"]}}
