"""Turning an :class:`~colorcli.evaluate.EvalResult` into tables and report files.

``table(result)`` gives the headers and formatted cells that both the CLI's rich table and the
Markdown report print, so the two never disagree. ``write_report`` writes, into one folder:

- ``per_image.csv``: one row per (photo, system) with every metric;
- ``summary.json``: means per system, ``delta_cf`` and ``cf_gap`` labelled, accuracy curves, and
  each system's paired differences from the reference system (``paired``);
- ``summary.md``: both tables in Markdown;
- ``contact_sheet.png``: gray | each system | ground truth, for the first and the worst photos;
- ``accuracy_curve.png``: pixel accuracy over ab thresholds 0..150 per system (Pillow only).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from colorcli.files import atomic_write_bytes

if TYPE_CHECKING:  # evaluation needs torch; comparison_sheet (the light install's compare) does not
    from colorcli.evaluate import EvalResult

FILES = {
    "csv": "per_image.csv",
    "json": "summary.json",
    "markdown": "summary.md",
    "sheet": "contact_sheet.png",
    "plot": "accuracy_curve.png",
}

CF_LABELS = {
    "delta_cf": "ΔCF: mean over photos of |CF(pred) − CF(gt)|",
    "cf_gap": "CF gap: |mean CF(pred) − mean CF(gt)| over photos",
}

# Distinct, colour-blind-friendly line colours (Okabe-Ito), then a gray for the rest.
_PALETTE = [(0, 114, 178), (213, 94, 0), (0, 158, 115), (204, 121, 167), (230, 159, 0),
            (86, 180, 233), (240, 228, 66), (0, 0, 0)]


# ---------------------------------------------------------------------------------------------
# tables


def _columns(result: EvalResult) -> list[tuple[str, str, str]]:
    """(summary key, header, format) of the table's metric columns."""
    t = f"{result.threshold:g}"
    cols = [
        ("images", "photos", "d"),
        ("ab_l2", "ab L2", ".2f"),
        ("pixel_acc", f"acc@{t}", ".4f"),
        ("auc", "AuC", ".4f"),
        ("psnr", "PSNR", ".2f"),
        ("ssim", "SSIM", ".4f"),
        ("cf_pred", "CF pred", ".2f"),
        ("cf_gt", "CF gt", ".2f"),
        ("delta_cf", "ΔCF mean|·|", ".2f"),
        ("cf_gap", "CF gap", ".2f"),
        ("sat_diff", "sat diff", ".4f"),
        ("bin_acc_u", "U acc", ".4f"),
        ("bin_acc_v", "V acc", ".4f"),
    ]
    if result.semantic:
        cols += [("top1", "top-1", ".4f"), ("top5", "top-5", ".4f")]
    if any(s.kind == "pred-dir" for s in result.systems):
        cols.append(("missing", "missing", "d"))
    return cols


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, fmt)


def table(result: EvalResult) -> tuple[list[str], list[list[str]]]:
    """Headers and rows (formatted strings) of the summary table, one row per system.

    With ``semantic``, rows for the ground truth (and the gray input when the gray baseline is
    not a system) carry only their top-1/top-5, so a model's numbers have their reference.
    """
    from colorcli.evaluate import GRAY, GROUND_TRUTH

    cols = _columns(result)
    headers = ["system", *(h for _, h, _ in cols)]
    rows = []
    for name, s in result.summary().items():
        rows.append([name, *(_cell(s.get(k), f) for k, _, f in cols)])
    if result.semantic:
        refs = [(GROUND_TRUTH, result.reference[GROUND_TRUTH])]
        if all(s.name != GRAY for s in result.systems):
            refs.append((f"{GRAY} (input)", result.reference[GRAY]))
        for label, score in refs:
            d = score.as_dict()
            d["images"] = len(result.images)
            rows.append([label, *(_cell(d.get(k), f) for k, _, f in cols)])
    return headers, rows


def _signed(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x:+.2f}"


def paired_title(result: EvalResult) -> str:
    return (f"each system minus {result.against}, on the photos both scored: "
            "mean difference [95 % paired bootstrap interval]")


# Below this many paired photos the percentile bootstrap's interval is rough (too narrow, as a
# rule), and the note says so.
PAIRED_FEW_PHOTOS = 30


def paired_note(result: EvalResult) -> str:
    from colorcli import metrics

    note = (f"An interval that spans 0 is a tie at this sample size. Bootstrap: {metrics.PAIRED_RESAMPLES:,} "
            f"resamples of the photos (seed {metrics.PAIRED_SEED}), percentile interval.")
    fewest = min((figs["psnr"]["photos"] for figs in result.paired.values()), default=PAIRED_FEW_PHOTOS)
    if fewest < PAIRED_FEW_PHOTOS:
        note += (f" Only {fewest} photos are paired: with fewer than {PAIRED_FEW_PHOTOS} the interval is rough "
                 "(usually too narrow); score more photos before trusting it.")
    return note


def paired_table(result: EvalResult) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the paired comparison (:attr:`EvalResult.paired`), one row per system
    other than the reference; no rows with a single system."""
    from colorcli import metrics

    headers = ["system", "photos", *(metrics.PAIRED_FIGURES[k].split(",")[0] for k in metrics.PAIRED_FIGURES),
               "higher PSNR on"]
    rows = []
    for name, figs in result.paired.items():
        cells = [f"{_signed(f['diff'])} [{_signed(f['low'])}, {_signed(f['high'])}]" for f in figs.values()]
        wins = figs["psnr"]["wins"]
        rows.append([name, str(figs["psnr"]["photos"]), *cells, "-" if not math.isfinite(wins) else f"{wins:.0%}"])
    return headers, rows


def _markdown_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """Lines of a Markdown table: first column left, the others right-aligned."""
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731 - "ΔCF mean|·|" must not split a cell
    return [
        "| " + " | ".join(esc(h) for h in headers) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|",
        *("| " + " | ".join(esc(c) for c in row) + " |" for row in rows),
    ]


def markdown(result: EvalResult) -> str:
    """The summary table in Markdown, with what each colourfulness column means."""
    lines = [
        f"# colorcli eval: {result.folder}",
        "",
        f"{len(result.images)} photo(s) scored, {len(result.failed)} unreadable; "
        f"pixel accuracy threshold {result.threshold:g} (ab units).",
        "",
        *_markdown_table(*table(result)),
    ]
    lines += ["", f"- {CF_LABELS['delta_cf']}", f"- {CF_LABELS['cf_gap']}",
              "- AuC: mean over thresholds 0..150 of the fraction of pixels with ab distance ≤ threshold"]
    if result.semantic:
        lines.append("- top-1/top-5: ImageNet EfficientNet-Lite0 on photos with a known Imagenette class")
    headers, rows = paired_table(result)
    if rows:
        lines += ["", f"## Paired: {paired_title(result)}", "", *_markdown_table(headers, rows), "", paired_note(result)]
    notes = result.notes() + [reason for _, reason in result.failed]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# files


def _json_safe(x: Any) -> Any:
    """NaN and infinities become null: strict JSON has no such numbers."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def summary_json(result: EvalResult) -> dict[str, Any]:
    """The summary as plain JSON-able data."""
    from colorcli import metrics

    data: dict[str, Any] = {
        "folder": str(result.folder),
        "photos": len(result.images),
        "failed": [{"file": str(p), "reason": r} for p, r in result.failed],
        "threshold": result.threshold,
        "metric_labels": {**metrics.METRIC_LABELS, **CF_LABELS},
        "systems": result.summary(),
        "accuracy_curve": {
            "thresholds": metrics.AUC_THRESHOLDS.tolist(),
            **{s.name: s.curve.tolist() for s in result.systems},
        },
        "notes": result.notes(),
    }
    if len(result.systems) > 1:
        data["paired"] = {"against": result.against, "note": paired_note(result),
                          "labels": metrics.PAIRED_FIGURES, "systems": result.paired}
    if result.semantic:
        data["semantic_reference"] = {k: v.as_dict() for k, v in result.reference.items()}
    return _json_safe(data)


def per_image_csv(result: EvalResult) -> str:
    """One row per (photo, system) scored; metrics in full precision."""
    from colorcli import metrics

    keys = list(metrics.METRIC_LABELS)
    if result.semantic:
        keys += ["top1", "top5"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "system", "imagenet_class", *keys])
    for name in result.images:
        label = result.labels.get(name)
        for s in result.systems:
            row = s.rows.get(name)
            if row is not None:
                w.writerow([name, s.name, "" if label is None else label,
                            *("" if row.get(k) is None else repr(float(row[k])) for k in keys)])
    return buf.getvalue()


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def write_report(result: EvalResult, out_dir: Path) -> dict[str, Path]:
    """Write every report file into ``out_dir`` (created); returns ``{kind: path}``."""
    out_dir = Path(out_dir)
    paths = {k: out_dir / v for k, v in FILES.items()}
    atomic_write_bytes(paths["csv"], per_image_csv(result).encode("utf-8"))
    text = json.dumps(summary_json(result), indent=2, ensure_ascii=False, allow_nan=False)
    atomic_write_bytes(paths["json"], (text + "\n").encode("utf-8"))
    atomic_write_bytes(paths["markdown"], markdown(result).encode("utf-8"))
    atomic_write_bytes(paths["sheet"], _png(contact_sheet(result)))
    atomic_write_bytes(paths["plot"], _png(accuracy_plot(result)))
    return paths


# ---------------------------------------------------------------------------------------------
# pictures


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    # Pillow's embedded scalable font needs FreeType; the bitmap fallback is always there.
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    return x1 - x0, y1 - y0


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """``text`` cut with an ellipsis to fit ``width`` px."""
    if _text_size(draw, text, font)[0] <= width:
        return text
    while text and _text_size(draw, text + "…", font)[0] > width:
        text = text[:-1]
    return text + "…"


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int, lines: int) -> list[str]:
    """``text`` broken anywhere into at most ``lines`` lines of ``width`` px (file names have
    few spaces); the last line is cut with an ellipsis if it still does not fit."""
    out: list[str] = []
    while text and len(out) < lines - 1:
        n = len(text)
        while n > 1 and _text_size(draw, text[:n], font)[0] > width:
            n -= 1
        out.append(text[:n])
        text = text[n:]
    if text:
        out.append(_fit(draw, text, font, width))
    return out


def contact_sheet(result: EvalResult) -> Image.Image:
    """gray | each system | ground truth, one row per photo: the first N, then the worst N by ΔCF.

    ΔCF here is a photo's |CF(pred) − CF(gt)| averaged over the colorizing systems.
    """
    from colorcli.evaluate import GRAY, GROUND_TRUTH

    cell, pad, label_w, head_h, section_h = 128, 6, 190, 24, 28
    font, small = _font(13), _font(11)
    cols = result.sheet_columns or [GRAY, GROUND_TRUTH]
    sections = [(f"first {len(result.sheet_first)} photos", result.sheet_first),
                (f"worst {len(result.sheet_worst)} by dCF (mean over systems)", result.sheet_worst)]
    n_rows = sum(len(rows) for _, rows in sections)
    width = label_w + len(cols) * (cell + pad) + pad
    height = head_h + len(sections) * section_h + n_rows * (cell + pad) + pad
    img = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(img)
    for j, name in enumerate(cols):
        x = label_w + j * (cell + pad)
        d.text((x, 5), _fit(d, name, font, cell), fill=(0, 0, 0), font=font)
    y = head_h
    for title, rows in sections:
        d.text((pad, y + 7), title if rows else f"{title}: none", fill=(60, 60, 60), font=font)
        d.line([(pad, y + section_h - 3), (width - pad, y + section_h - 3)], fill=(200, 200, 200))
        y += section_h
        for entry in rows:
            ty = y + 4
            for line in _wrap(d, entry.name, small, label_w - 2 * pad, 4):
                d.text((pad, ty), line, fill=(0, 0, 0), font=small)
                ty += 15
            if math.isfinite(entry.delta_cf):
                d.text((pad, ty + 4), f"dCF {entry.delta_cf:.1f}", fill=(90, 90, 90), font=small)
            for j, thumb in enumerate(entry.cells):
                x = label_w + j * (cell + pad)
                if thumb is None:
                    d.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(235, 235, 235), outline=(180, 180, 180))
                    d.text((x + 8, y + cell // 2 - 7), "missing", fill=(120, 120, 120), font=font)
                    continue
                th, tw = thumb.shape[:2]
                img.paste(Image.fromarray(thumb, "RGB"), (x + (cell - tw) // 2, y + (cell - th) // 2))
            y += cell + pad
    return img


def accuracy_plot(result: EvalResult, *, width: int = 820, height: int = 520) -> Image.Image:
    """Pixel accuracy (fraction of pixels with ab distance ≤ t) against t = 0..150, per system."""
    from colorcli import metrics

    img = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(img)
    font, small = _font(13), _font(11)
    left, right, top, bottom = 70, 200, 40, 60
    x0, x1, y0, y1 = left, width - right, top, height - bottom  # plot box; y grows downwards
    tmax = float(metrics.AUC_THRESHOLDS[-1])
    px = lambda t: x0 + (x1 - x0) * t / tmax  # noqa: E731
    py = lambda a: y1 - (y1 - y0) * a  # noqa: E731

    title = "Pixel accuracy vs ab threshold"
    d.text(((x0 + x1 - _text_size(d, title, font)[0]) / 2, 12), title, fill=(0, 0, 0), font=font)
    for t in range(0, int(tmax) + 1, 25):  # x ticks and grid
        d.line([(px(t), y0), (px(t), y1)], fill=(232, 232, 232))
        d.line([(px(t), y1), (px(t), y1 + 5)], fill=(0, 0, 0))
        w, _ = _text_size(d, str(t), small)
        d.text((px(t) - w / 2, y1 + 8), str(t), fill=(0, 0, 0), font=small)
    for k in range(0, 11, 2):  # y ticks and grid, 0..1 by 0.2
        a = k / 10
        d.line([(x0, py(a)), (x1, py(a))], fill=(232, 232, 232))
        d.line([(x0 - 5, py(a)), (x0, py(a))], fill=(0, 0, 0))
        label = f"{a:.1f}"
        w, h = _text_size(d, label, small)
        d.text((x0 - 8 - w, py(a) - h / 2 - 2), label, fill=(0, 0, 0), font=small)
    d.rectangle([x0, y0, x1, y1], outline=(0, 0, 0))
    xlabel = "ab distance threshold (Lab units)"
    d.text(((x0 + x1 - _text_size(d, xlabel, font)[0]) / 2, y1 + 28), xlabel, fill=(0, 0, 0), font=font)
    ylabel = "fraction of pixels within threshold"
    lw, lh = _text_size(d, ylabel, font)
    lab_img = Image.new("RGB", (lw + 4, lh + 6), (255, 255, 255))
    ImageDraw.Draw(lab_img).text((2, 0), ylabel, fill=(0, 0, 0), font=font)
    lab_img = lab_img.rotate(90, expand=True)
    img.paste(lab_img, (8, int((y0 + y1 - lab_img.height) / 2)))
    # The threshold used for the table's pixel accuracy, for reference.
    if 0 <= result.threshold <= tmax:
        xt = px(result.threshold)
        for yy in range(y0, y1, 8):
            d.line([(xt, yy), (xt, min(yy + 4, y1))], fill=(150, 150, 150))

    ts = metrics.AUC_THRESHOLDS
    ly = y0 + 4
    for i, s in enumerate(result.systems):
        colour = _PALETTE[i] if i < len(_PALETTE) else (128, 128, 128)
        curve = s.curve
        if np.all(np.isfinite(curve)):
            d.line([(px(t), py(a)) for t, a in zip(ts, curve)], fill=colour, width=2)
        auc = float(np.mean(curve)) if np.all(np.isfinite(curve)) else float("nan")
        d.line([(x1 + 14, ly + 7), (x1 + 36, ly + 7)], fill=colour, width=3)
        d.text((x1 + 42, ly), _fit(d, s.name, small, right - 50), fill=(0, 0, 0), font=small)
        d.text((x1 + 42, ly + 14), "AuC -" if not math.isfinite(auc) else f"AuC {auc:.3f}",
               fill=(90, 90, 90), font=small)
        ly += 34
    return img


__all__ = [
    "CF_LABELS", "FILES", "accuracy_plot", "contact_sheet", "markdown", "per_image_csv",
    "summary_json", "table", "write_report",
]


def comparison_sheet(columns: list[str], rows: list[tuple[str, list[np.ndarray]]], *, cell: int = 256) -> Image.Image:
    """Photos side by side: one row per photo (its name above), one column per entry of
    ``columns`` (the input, then each model). Cells are uint8 RGB arrays no larger than
    ``cell`` on their long side; a row is as tall as its tallest cell."""
    pad, head_h, name_h = 8, 26, 20
    font, small = _font(15), _font(12)
    width = pad + len(columns) * (cell + pad)
    heights = [max((c.shape[0] for c in cells), default=cell) for _, cells in rows]
    height = head_h + sum(name_h + h + pad for h in heights) + pad
    img = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(img)
    for j, name in enumerate(columns):
        d.text((pad + j * (cell + pad), 6), _fit(d, name, font, cell), fill=(0, 0, 0), font=font)
    y = head_h
    for (name, cells), h in zip(rows, heights):
        d.text((pad, y + 3), _fit(d, name, small, width - 2 * pad), fill=(70, 70, 70), font=small)
        y += name_h
        for j, thumb in enumerate(cells):
            th, tw = thumb.shape[:2]
            img.paste(Image.fromarray(thumb, "RGB"), (pad + j * (cell + pad) + (cell - tw) // 2, y + (h - th) // 2))
        y += h + pad
    return img
