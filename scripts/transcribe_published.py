"""Transcribe the original study's published numbers from docs/original-study.md into
package data, exactly as the documentation gives them.

Reads the tables of the "Published results" section (the values of the original's
``results/full_data.csv``) and the model-name mapping, and writes

* ``src/medtransfer/results/data/full_data.csv``: the original's shape, 13 model rows ×
  92 columns (``Models``, the 89 value columns, ``Model Type``, ``Marker Size``) with the
  original's column names, each cell the text of the documentation (empty for —);
* ``src/medtransfer/results/data/models.csv``: ``full_data,original_cli,model_type``.

Run from the repository root: ``python scripts/transcribe_published.py [--check]``;
``--check`` compares instead of writing and exits 1 on any difference (a test runs it).
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
from pathlib import Path

DOC = Path("docs/original-study.md")
OUT = Path("src/medtransfer/results/data")
START = '<a id="published-results"></a>'
END = "`results/imagenet-top1.csv` (the `imagenet top1` column"

#: Few-shot table headers -> full_data.csv column (the uncertainty column adds " uncertainty").
FEW_SHOT = {
    "Shenzhen (2w)": "few shot shenzhencxr",
    "Montgomery (2w)": "few shot montgomerycxr",
    "BACH (2w)": "few shot bach",
    "iCh-AMD (2w)": "few shot iChallengeAMD",
    "iCh-PM (2w)": "few shot iChallengePM",
    "CheXpert (2w)": "few shot chexpert",
    "STOIC (2w)": "few shot stoic",
    "EyePACS (5w)": "few shot diabetic retinopathy (5way)",
    "ChestX (5w)": "few shot chestx (5way)",
    "CIFAR10 (2w)": "few shot cifar10 (2way)",
    "CIFAR10 (5w)": "few shot cifar10 (5way)",
}
#: Perceptual-distance groups in full_data.csv's column order.
PD_ORDER = ("alexnet", "vgg", "squeezenet", "average")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _tables(lines: list[str]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(caption, header, rows) of each markdown table; the caption is the last text line
    before the table (or the previous table's caption for a table that follows one)."""
    out = []
    caption = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = _cells(line)
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            out.append((caption, header, rows))
            continue
        if line.strip():
            caption = line.strip()
        i += 1
    return out


def _expand(text: str, sep_rule: str) -> list[str]:
    """``"supervised r50 / r18 / d121"`` -> three names; ``"swav, byol, pirl"`` -> three;
    ``"mimic-chexpert_lr_0.01 / _0.1 / _1.0"`` -> three (``sep_rule``: where a short part
    attaches: after the last space or ``=`` (full_data names) or the last ``_`` (CLI))."""
    text = re.sub(r"\s*\(.*?\)", "", text).strip()
    if ", " in text:
        return [p.strip() for p in text.split(",")]
    parts = [p.strip() for p in text.split(" / ")]
    first = parts[0]
    cut = max(first.rfind(c) for c in sep_rule) + 1
    names = [first]
    for part in parts[1:]:
        if part.startswith("_"):
            names.append(first[: first.rfind("_")] + part)
        elif " " in part or ("_" in part and sep_rule == "_"):
            names.append(part)
        else:
            names.append(first[:cut] + part)
    return names


def transcribe(doc: str) -> tuple[str, str]:
    """(full_data.csv text, models.csv text) from the documentation's text."""
    section = doc[doc.index(START) : doc.index(END)]
    lines = section.splitlines()
    mapping = []
    values: dict[str, dict[str, str]] = {}
    columns: dict[str, list[str]] = {"few": [], "top": [], "ad": [], "inv": []}
    pd_columns: dict[str, list[str]] = {net: [] for net in PD_ORDER}
    for caption, header, rows in _tables(lines):
        if header[0] == "`full_data.csv`":
            for row in rows:
                names = _expand(row[0], " =")
                clis = _expand(row[1], "_")
                if len(clis) != len(names):
                    raise SystemExit(f"model mapping row does not expand evenly: {row}")
                mapping += [(n, c, row[3]) for n, c in zip(names, clis, strict=True)]
            continue
        if header[0] != "model":
            continue
        for row in rows:
            model = row[0]
            cells = values.setdefault(model, {})
            for name, cell in zip(header[1:], row[1:], strict=True):
                cell = "" if cell == "—" else cell
                if caption.startswith("Few-shot accuracy"):
                    column = FEW_SHOT[name]
                    value, _, half = cell.partition(" ± ")
                    cells[column], cells[column + " uncertainty"] = value, half
                    group, names = "few", [column, column + " uncertainty"]
                elif caption.startswith("ImageNet top-1, linear"):
                    group, names, cells[name] = "top", [name], cell
                elif caption.startswith("Attentive diffusion"):
                    group, names = "ad", ["attentive diffusion " + name]
                    cells[names[0]] = cell
                elif caption.startswith("Invariance"):
                    group, names = "inv", ["invariance " + name]
                    cells[names[0]] = cell
                elif caption.startswith(("Average perceptual distance", "LPIPS with")):
                    found = re.search(r"`perceptual distance (\w+) <d>`", caption)
                    net = found.group(1) if found else "average"
                    group, names = net, [f"perceptual distance {net} {name}"]
                    cells[names[0]] = cell
                else:
                    raise SystemExit(f"unknown table after {caption!r}")
                target = pd_columns[group] if group in pd_columns else columns[group]
                for column in names:
                    if column not in target:
                        target.append(column)
    header = ["Models", *columns["few"], *columns["top"], *columns["ad"], *columns["inv"]]
    header += [c for net in PD_ORDER for c in pd_columns[net]]
    header += ["Model Type", "Marker Size"]
    types = {name: kind for name, _, kind in mapping}
    full = io.StringIO()
    writer = csv.writer(full, lineterminator="\n")
    writer.writerow(header)
    for model, cells in values.items():
        writer.writerow([model, *(cells.get(c, "") for c in header[1:-2]), types[model], "1"])
    models = io.StringIO()
    writer = csv.writer(models, lineterminator="\n")
    writer.writerow(["full_data", "original_cli", "model_type"])
    writer.writerows(mapping)
    return full.getvalue(), models.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root")
    args = parser.parse_args()
    full, models = transcribe((args.root / DOC).read_text(encoding="utf-8"))
    outputs = {args.root / OUT / "full_data.csv": full, args.root / OUT / "models.csv": models}
    if args.check:
        stale = [str(p) for p, text in outputs.items() if p.read_text(encoding="utf-8") != text]
        for path in stale:
            print(f"{path} differs from the transcription of {DOC}", file=sys.stderr)
        return 1 if stale else 0
    for path, text in outputs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
