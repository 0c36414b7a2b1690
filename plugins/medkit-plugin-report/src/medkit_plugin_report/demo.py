"""A deterministic synthetic corpus of MIMIC-CXR-style chest radiograph reports (demo data)."""

from __future__ import annotations

import csv
import io
import os
import random
import shutil
import textwrap
from pathlib import Path

CLASS_NAMES = ("abnormal", "normal")  # sorted, as the reader orders label names

_EXAMS = ["CHEST (PA AND LAT)", "CHEST (PORTABLE AP)", "CHEST (PA AND LATERAL)", "CHEST (SINGLE VIEW)"]
_INDICATIONS = [
    "Shortness of breath.", "Cough and fever, evaluate for pneumonia.", "Chest pain.",
    "Preoperative evaluation.", "Status post line placement, assess position.", "Hypoxia.",
    "Follow-up of known effusion.", "Fall, evaluate for rib fracture.", "Dyspnea on exertion.",
    "Intubated patient, evaluate tube position.",
]
_COMPARISONS = ["None.", "Prior chest radiograph from the previous day.", "Chest CT from last month.",
                "Radiograph from two weeks earlier.", "Multiple prior radiographs."]

_NORMAL = {
    "lungs": ["The lungs are clear.", "Lungs are well expanded and clear.",
              "There is no focal consolidation.", "No focal airspace opacity is seen.",
              "The lungs are clear without focal consolidation."],
    "pleura": ["There is no pleural effusion or pneumothorax.", "No pleural effusion is seen.",
               "No pneumothorax is identified.", "Costophrenic angles are sharp."],
    "heart": ["The heart size is normal.", "Cardiac silhouette is within normal limits.",
              "Heart size is normal.", "The cardiomediastinal silhouette is unremarkable."],
    "mediastinum": ["Mediastinal and hilar contours are normal.", "The hilar contours are unremarkable.",
                    "The aorta is mildly tortuous."],
    "bones": ["No acute osseous abnormality.", "Osseous structures are intact.",
              "Degenerative changes of the thoracic spine are noted."],
}
_NORMAL_IMPRESSIONS = ["No acute cardiopulmonary process.", "No acute intrathoracic abnormality.",
                       "Normal chest radiograph.", "No evidence of pneumonia.",
                       "No radiographic evidence of acute disease."]

_SIDES = ["right", "left", "bilateral"]
_SIZES = ["small", "moderate", "large"]
_LOBES = ["right lower lobe", "left lower lobe", "right upper lobe", "left upper lobe", "right middle lobe",
          "lingula"]
_ABNORMAL = {  # finding template, impression template; {side} {size} {lobe} are filled in
    "effusion": ("There is a {size} {side} pleural effusion.", "{Size} {side} pleural effusion."),
    "pneumothorax": ("A {size} {side} apical pneumothorax is present.", "{Size} {side} pneumothorax."),
    "consolidation": ("There is focal consolidation in the {lobe}.",
                      "{Lobe} consolidation concerning for pneumonia."),
    "cardiomegaly": ("The cardiac silhouette is enlarged.", "Cardiomegaly."),
    "edema": ("There is {size} pulmonary vascular congestion with interstitial edema.",
              "{Size} pulmonary edema."),
    "atelectasis": ("Patchy opacity at the {side} base likely reflects atelectasis.",
                    "Bibasilar atelectasis."),
    "nodule": ("A 9 mm nodule projects over the {lobe}.", "Pulmonary nodule in the {lobe}, CT recommended."),
}
_ORGAN = {"effusion": "pleura", "pneumothorax": "pleura", "cardiomegaly": "heart", "consolidation": "lungs",
          "edema": "lungs", "atelectasis": "lungs", "nodule": "lungs"}  # normal phrases a finding contradicts
_DEVICES = [
    "An endotracheal tube terminates 4 cm above the carina.",
    "A right internal jugular central venous catheter ends in the mid superior vena cava.",
    "A nasogastric tube courses below the diaphragm with the tip in the stomach.",
    "A left-sided pacemaker has leads in the right atrium and right ventricle.",
    "Sternotomy wires are intact.",
]
_DEVICE_IMPRESSION = "Lines and tubes in standard position."


def _params(rng: random.Random) -> dict[str, str]:
    side, size, lobe = rng.choice(_SIDES), rng.choice(_SIZES), rng.choice(_LOBES)
    return {"side": side, "size": size, "lobe": lobe, "Size": size.capitalize(), "Lobe": lobe.capitalize()}


def _fill(template: str, params: dict[str, str]) -> str:
    if params["side"] == "bilateral":
        template = template.replace("a {size} {side}", "{size} {side}").replace("A {size} {side}", "{Size} {side}")
    return template.format(**params)


def _findings(rng: random.Random, abnormal: dict[str, dict[str, str]], devices: list[str]) -> str:
    sentences = list(devices)
    contradicted = {_ORGAN[a] for a in abnormal}
    for organ, phrases in _NORMAL.items():
        if rng.random() < 0.85 and organ not in contradicted:
            sentences.append(rng.choice(phrases))
    for name, params in abnormal.items():
        sentences.insert(rng.randrange(len(sentences) + 1), _fill(_ABNORMAL[name][0], params))
    return " ".join(sentences)


def make_report(rng: random.Random) -> tuple[str, str]:
    """One synthetic report and its class name (``"normal"`` or ``"abnormal"``)."""
    label = rng.choice(CLASS_NAMES)
    devices = rng.sample(_DEVICES, k=rng.choice([0, 0, 0, 1, 2]))
    names = rng.sample(sorted(_ABNORMAL), k=rng.choice([1, 1, 2, 3])) if label == "abnormal" else []
    abnormal = {name: _params(rng) for name in names}
    findings = _findings(rng, abnormal, devices)
    if abnormal:
        items = [_fill(_ABNORMAL[a][1], p) for a, p in abnormal.items()]
        if devices:
            items.append(_DEVICE_IMPRESSION)
    else:
        items = [rng.choice(_NORMAL_IMPRESSIONS)] + ([_DEVICE_IMPRESSION] if devices else [])
    impression = (" ".join(f"{k + 1}. {s}" for k, s in enumerate(items)) if len(items) > 1 and rng.random() < 0.6
                  else " ".join(items))
    wrap = (lambda s: "\n ".join(textwrap.wrap(s, 70)))
    text = (f"                                 FINAL REPORT\n"
            f" EXAMINATION:  {rng.choice(_EXAMS)}\n \n"
            f" INDICATION:  {rng.choice(_INDICATIONS)}\n \n"
            f" COMPARISON:  {rng.choice(_COMPARISONS)}\n \n"
            f" FINDINGS:\n \n {wrap(findings)}\n \n"
            f" IMPRESSION:\n \n {wrap(impression)}\n")
    return text, label


def make_reports(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` reports with labels, a pure function of ``seed``."""
    rng = random.Random(seed)
    return [make_report(rng) for _ in range(n)]


def write_demo(root: Path, n: int = 200, seed: int = 0) -> Path:
    """Write ``n`` reports as ``reports/s5xxxxxxx.txt`` plus ``labels.csv`` under ``root`` (idempotent).

    The folder is assembled next to ``root`` and renamed into place, so an interrupted write never
    leaves a half-written demo that later calls would accept.
    """
    root = Path(root)
    if (root / "labels.csv").is_file():
        return root
    tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "reports").mkdir(parents=True)
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(["id", "label"])
    for k, (text, label) in enumerate(make_reports(n, seed)):
        rel = f"reports/s{50000000 + k}.txt"
        (tmp / rel).write_text(text, encoding="utf-8")
        writer.writerow([rel, label])
    (tmp / "labels.csv").write_text(rows.getvalue(), encoding="utf-8")
    try:
        tmp.rename(root)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (root / "labels.csv").is_file():  # not a concurrent writer that won: a real failure
            raise
    return root
