"""Scoring colorizers against ground truth: the library behind ``colorcli eval``.

Each colour photo of a folder is reduced to its L, colorized by every model through the one
inference path (:class:`colorcli.inference.Colorizer`), and scored at full resolution against
the photo with :mod:`colorcli.metrics`. Beside models, a run can score the gray baseline (the
neutral image with the photo's own L, through the same pipeline with a zero-chroma backend) and
folders of predictions made by other tools, matched to the photos by file stem.

The ground truth's planes are prepared once per photo and shared by every system. Optionally
(``semantic``) an ImageNet EfficientNet-Lite0 classifies ground truth, gray and colorized
versions of the photos whose ImageNet class is known from their file name.

No typer or rich here: progress goes through a callback.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from colorcli import metrics
from colorcli.batch import collect_inputs
from colorcli.errors import ColorcliError
from colorcli.imageio import read_photo, to_uint8
from colorcli.inference import Colorizer, InferenceSettings, ZeroChroma
from colorcli.inference.backends import resolve_device
from colorcli.inference.render import rgb_to_l
from colorcli.weights import list_models

GRAY = "gray"
BASELINES = (GRAY,)
GROUND_TRUTH = "ground truth"
# `colorcli colorize` names its outputs <stem>_color.<ext>; a --pred-dir of those is matched too.
COLORIZE_SUFFIX = "_color"
CLASSIFIER_SIZE = 224
THUMB_SIZE = 128  # longest side of a contact-sheet cell, px

# Imagenette synsets -> ImageNet-1k class index (val/ file names carry the synset).
IMAGENETTE_CLASSES = {
    "n01440764": 0,  # tench
    "n02102040": 217,  # English springer
    "n02979186": 482,  # cassette player
    "n03000684": 491,  # chain saw
    "n03028079": 497,  # church
    "n03394916": 566,  # French horn
    "n03417042": 569,  # garbage truck
    "n03425413": 571,  # gas pump
    "n03445777": 574,  # golf ball
    "n03888257": 701,  # parachute
}
_SYNSET = re.compile(r"n\d{8}")

# on_progress(done, total): photos finished so far out of all photos of the run.
ProgressCallback = Callable[[int, int], None]


def imagenet_label(name: str) -> int | None:
    """ImageNet class index of a photo from the synset in its file name; None when unknown."""
    for synset in _SYNSET.findall(name):
        if synset in IMAGENETTE_CLASSES:
            return IMAGENETTE_CLASSES[synset]
    return None


# ---------------------------------------------------------------------------------------------
# results


@dataclass
class SemanticScore:
    """Top-1/top-5 hits of the ImageNet classifier over ``n`` labelled photos."""

    top1: int = 0
    top5: int = 0
    n: int = 0

    def add(self, top5: torch.Tensor, label: int) -> tuple[bool, bool]:
        hit1, hit5 = int(top5[0]) == label, label in top5.tolist()
        self.top1 += hit1
        self.top5 += hit5
        self.n += 1
        return hit1, hit5

    def as_dict(self) -> dict[str, float | int]:
        frac = (lambda k: k / self.n) if self.n else (lambda k: float("nan"))
        return {"top1": frac(self.top1), "top5": frac(self.top5), "images": self.n}


@dataclass
class SystemResult:
    """Scores of one system (a model, the gray baseline or a folder of predictions).

    ``rows`` maps a photo's file name to its metrics (keys of :data:`metrics.METRIC_LABELS`,
    plus ``top1``/``top5`` as 0/1 for labelled photos with ``semantic``); ``curve_sum`` is the
    sum over photos of the pixel-accuracy curve at thresholds 0..150.
    """

    name: str
    kind: str  # "model", "baseline" or "pred-dir"
    source: str  # weights file, baseline description or folder
    settings: str = ""  # a model's inference settings: size, temperature, tta, refine
    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    curve_sum: np.ndarray = field(default_factory=lambda: np.zeros(len(metrics.AUC_THRESHOLDS)))
    missing: list[str] = field(default_factory=list)  # photo names without a prediction
    unreadable: list[str] = field(default_factory=list)  # one-line reasons
    resized: list[str] = field(default_factory=list)  # "name: WxH -> WxH"
    semantic: SemanticScore = field(default_factory=SemanticScore)

    @property
    def curve(self) -> np.ndarray:
        """Mean pixel accuracy ``(151,)`` at thresholds 0..150 over the scored photos."""
        n = len(self.rows)
        return self.curve_sum / n if n else np.full_like(self.curve_sum, np.nan)

    def summary(self, *, semantic: bool) -> dict[str, float | int | str]:
        """Means of every metric over photos, plus ``cf_gap`` and the counts.

        ``delta_cf`` is the mean per-image |CF(pred) − CF(gt)|; ``cf_gap`` is
        |mean CF(pred) − mean CF(gt)|, which lets per-image over- and under-colouring cancel.
        """
        rows = [{k: v for k, v in r.items() if k not in ("top1", "top5")} for r in self.rows.values()]
        out: dict[str, float | int | str] = {"kind": self.kind, "source": self.source, "images": len(rows)}
        if self.settings:
            out["settings"] = self.settings
        means = metrics.summarise(rows)
        out.update(means)
        if means:
            out["cf_gap"] = abs(means["cf_pred"] - means["cf_gt"])
        out["missing"] = len(self.missing)
        out["unreadable"] = len(self.unreadable)
        out["resized"] = len(self.resized)
        if semantic:
            s = self.semantic.as_dict()
            out.update(top1=s["top1"], top5=s["top5"], semantic_images=s["images"])
        return out


@dataclass
class SheetEntry:
    """One contact-sheet row: a photo and one uint8 thumbnail (or None: missing) per column."""

    name: str
    cells: list[np.ndarray | None]
    delta_cf: float


@dataclass
class EvalResult:
    """Everything a run found; :mod:`colorcli.report` turns it into files and tables."""

    folder: Path
    threshold: float
    semantic: bool
    systems: list[SystemResult]
    against: str | None = None  # the system the others are compared with, photo by photo
    images: list[str] = field(default_factory=list)  # photos scored, in order
    failed: list[tuple[Path, str]] = field(default_factory=list)  # photos that could not be read
    labels: dict[str, int] = field(default_factory=dict)  # photo name -> ImageNet class
    reference: dict[str, SemanticScore] = field(default_factory=dict)  # ground truth, gray
    sheet_columns: list[str] = field(default_factory=list)
    sheet_first: list[SheetEntry] = field(default_factory=list)
    sheet_worst: list[SheetEntry] = field(default_factory=list)  # worst ΔCF first

    def summary(self) -> dict[str, dict[str, float | int | str]]:
        """``{system name: summary}`` in the order the systems were given."""
        return {s.name: s.summary(semantic=self.semantic) for s in self.systems}

    @functools.cached_property
    def paired(self) -> dict[str, dict[str, dict[str, float]]]:
        """Each other system against ``against``, on the photos both scored:
        ``{system: metrics.paired_differences(against's rows, its rows)}`` (empty with one system;
        computed once, after scoring)."""
        ref = next((s for s in self.systems if s.name == self.against), None)
        if ref is None:
            return {}
        return {s.name: metrics.paired_differences(ref.rows, s.rows) for s in self.systems if s is not ref}

    def notes(self) -> list[str]:
        """One-line remarks on predictions that were missing, unreadable or resized."""
        out = []
        for s in self.systems:
            if s.missing:
                out.append(f"{s.name}: {len(s.missing)} prediction(s) missing in {s.source} "
                           f"(e.g. for {s.missing[0]}); scored on {len(s.rows)} photo(s)")
            if s.unreadable:
                out.append(f"{s.name}: {len(s.unreadable)} prediction(s) unreadable (e.g. {s.unreadable[0]})")
            if s.resized:
                out.append(f"{s.name}: {len(s.resized)} prediction(s) resized to the ground truth's size "
                           f"(e.g. {s.resized[0]})")
        if self.semantic:
            n = len(self.images) - sum(1 for name in self.images if name in self.labels)
            if n:
                out.append(f"semantic: {n} photo(s) without a known ImageNet class left out")
        return out


# ---------------------------------------------------------------------------------------------
# systems


def gray_colorizer(size: int | None = None) -> Colorizer:
    """The gray baseline as a :class:`Colorizer` (same path, zero-chroma backend)."""
    return Colorizer(ZeroChroma(), InferenceSettings(size=size, tta=False, refine=False))


class _PredDir:
    """Predictions of another tool: files in one folder, matched to photos by stem."""

    def __init__(self, folder: Path) -> None:
        if not folder.is_dir():
            raise ColorcliError(f"--pred-dir {folder}: no such folder")
        self.folder = folder
        self.by_stem: dict[str, Path] = {}
        found, errors = collect_inputs([folder])
        if errors:
            raise ColorcliError(f"--pred-dir {errors[0][1]}")
        for p, _, _ in found:
            self.by_stem.setdefault(p.stem, p)

    def find(self, stem: str) -> Path | None:
        return self.by_stem.get(stem) or self.by_stem.get(stem + COLORIZE_SUFFIX)


def _resize(rgb: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear (antialiased) resize of float ``(H, W, 3)`` to ``(h, w, 3)``."""
    t = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
    t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return t[0].permute(1, 2, 0).clamp(0, 1).numpy()


class _Classifier:
    """The ImageNet EfficientNet-Lite0 (offline, from its wheel) for semantic interpretability."""

    def __init__(self, device: torch.device) -> None:
        from colorcli.models.effnet import EfficientNetLite0Classifier

        self.device = device
        self.model = EfficientNetLite0Classifier.pretrained().to(device).eval()

    @torch.inference_mode()
    def top5(self, images: list[np.ndarray]) -> torch.Tensor:
        """sRGB float ``(H, W, 3)`` images -> top-5 class indices ``(N, 5)``, best first."""
        batch = torch.cat([
            F.interpolate(
                torch.from_numpy(np.ascontiguousarray(im, dtype=np.float32)).permute(2, 0, 1)[None],
                size=(CLASSIFIER_SIZE, CLASSIFIER_SIZE), mode="bilinear", align_corners=False,
                antialias=True,
            )
            for im in images
        ]).clamp(0, 1)
        logits = self.model(batch.to(self.device))
        return logits.topk(5, dim=1).indices.cpu()


def _thumb(rgb: np.ndarray) -> np.ndarray:
    """uint8 thumbnail of float ``(H, W, 3)``, longest side :data:`THUMB_SIZE` (never enlarged)."""
    img = Image.fromarray(to_uint8(rgb), "RGB")
    img.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS)
    return np.asarray(img)


# ---------------------------------------------------------------------------------------------
# the run


def idle_cpu_threads() -> int:
    """Torch threads worth using now: the CPUs not already busy (1-minute load), at least 1.

    Evaluation works photo by photo on small tensors; when another job (a training run) keeps
    the cores busy, extra intra-op threads only wait for each other: on 2 busy cores 2 threads
    ran 5-7x slower than 1 here.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return torch.get_num_threads()
    return max(1, min(torch.get_num_threads(), round(cpus - load)))


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (None: leave as is), then restore."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def list_photos(folder: Path, *, limit: int | None = None) -> list[Path]:
    """Image files directly in ``folder``, sorted, at most ``limit``; an error if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ColorcliError(f"{folder}: no such folder")
    found, errors = collect_inputs([folder])
    if errors:
        raise ColorcliError(errors[0][1])
    files = [p for p, _, _ in found]
    if not files:
        raise ColorcliError(f"{folder}: no image files found")
    if limit is not None:
        if limit < 1:
            raise ColorcliError(f"--limit must be at least 1, got {limit}")
        files = files[:limit]
    return files


def evaluate(
    folder: Path,
    *,
    models: Iterable[str] = (),
    weights: Mapping[str, Path] | None = None,
    pred_dirs: Mapping[str, Path] | None = None,
    baseline: str | None = None,
    against: str | None = None,
    limit: int | None = None,
    size: int | None = None,
    temperature: float | None = None,
    tta: bool = True,
    refine: bool = True,
    threshold: float = metrics.DEFAULT_THRESHOLD,
    device: str = "auto",
    semantic: bool = False,
    sheet_count: int = 0,
    threads: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> EvalResult:
    """Score every system on the colour photos of ``folder``.

    ``models`` are registered names, loaded from ``weights[name]`` when given, else from their
    shipped weights; a name that only appears in ``weights`` is evaluated too, and one that is no
    registered model labels its file, which brings its own model (two files of one model side
    by side: ``weights={"old": a, "new": b}``). ``pred_dirs`` maps a name to a folder of
    finished predictions. ``baseline="gray"`` adds the neutral image with the photo's L.
    ``against`` names the system the others are compared with photo by photo
    (:attr:`EvalResult.paired`; default the gray baseline when scored, else the first system).
    ``tta`` and ``refine`` are the pipeline's switches for the models
    (:class:`colorcli.inference.Colorizer`). ``sheet_count`` keeps thumbnails of the first and the worst (by mean
    ΔCF over the colorizing systems) that many photos for the contact sheet.

    ``threads`` sets torch's CPU threads for the run (None: unchanged). A photo that cannot be
    read is recorded in ``failed`` and the rest still get scored.
    """
    with torch_threads(threads):
        return _evaluate(
            folder, models=models, weights=weights, pred_dirs=pred_dirs, baseline=baseline,
            against=against, limit=limit, size=size, temperature=temperature, tta=tta, refine=refine,
            threshold=threshold, device=device,
            semantic=semantic, sheet_count=sheet_count, on_progress=on_progress,
        )


def _evaluate(
    folder: Path,
    *,
    models: Iterable[str],
    weights: Mapping[str, Path] | None,
    pred_dirs: Mapping[str, Path] | None,
    baseline: str | None,
    against: str | None,
    limit: int | None,
    size: int | None,
    temperature: float | None,
    tta: bool,
    refine: bool,
    threshold: float,
    device: str,
    semantic: bool,
    sheet_count: int,
    on_progress: ProgressCallback | None,
) -> EvalResult:
    weights = dict(weights or {})
    pred_dirs = dict(pred_dirs or {})
    model_names = list(dict.fromkeys([*models, *weights]))
    if baseline is not None and baseline not in BASELINES:
        raise ColorcliError(f"unknown --baseline {baseline!r}; use {', '.join(BASELINES)}")
    if not model_names and not pred_dirs and baseline is None:
        raise ColorcliError("nothing to evaluate: give --model, --weights NAME=FILE, --pred-dir or --baseline gray")
    if threshold < 0 or not math.isfinite(threshold):
        raise ColorcliError(f"--threshold must be a non-negative number, got {threshold}")
    taken = set(model_names) | ({baseline} if baseline else set())
    for name in pred_dirs:
        if name in taken:
            raise ColorcliError(f"--pred-dir name {name!r} is already used by a model or baseline")
    names = [*([baseline] if baseline else []), *model_names, *pred_dirs]
    if against is None:
        against = GRAY if baseline == GRAY else names[0]
    elif against not in names:
        raise ColorcliError(f"--against {against!r} is not a system of this run ({', '.join(names)})")

    photos = list_photos(folder, limit=limit)
    gray = gray_colorizer(size)  # validates --size before any model is loaded
    runners: list[tuple[SystemResult, Colorizer | _PredDir]] = []
    if baseline == GRAY:
        runners.append((SystemResult(GRAY, "baseline", "neutral image with the photo's L"), gray))
    settings_in = InferenceSettings(size=size, temperature=temperature, tta=tta, refine=refine, device=device)
    registered = set(list_models(include_test=True))
    for name in model_names:
        # torch unless an .onnx file is named: eval scores the torch path by default
        arch = None if name in weights and name not in registered else name  # None: the file's own model
        col = Colorizer.from_name(arch, weights=weights.get(name), backend="auto" if name in weights else "torch",
                                  settings=settings_in)
        src = col.backend.source
        temp = col.temperature
        settings = " ".join([f"size={col.size}", *([f"temperature={temp:g}"] if temp is not None else []),
                             f"tta={'on' if col.tta else 'off'}", f"refine={'on' if col.refine else 'off'}"])
        runners.append((SystemResult(name, "model", str(src), settings=settings), col))
    for name, d in pred_dirs.items():
        runners.append((SystemResult(name, "pred-dir", str(d)), _PredDir(Path(d))))
    classifier = _Classifier(resolve_device(device)) if semantic else None

    # Contact sheet: gray | every system but the gray baseline | ground truth.
    sheet_systems = [s for s, _ in runners if s.kind != "baseline"]
    colorizing = sheet_systems or [s for s, _ in runners]
    result = EvalResult(
        folder=Path(folder), threshold=threshold, semantic=semantic, systems=[s for s, _ in runners], against=against,
        sheet_columns=[GRAY, *(s.name for s in sheet_systems), GROUND_TRUTH],
    )
    if semantic:
        result.reference = {GROUND_TRUTH: SemanticScore(), GRAY: SemanticScore()}
    worst: list[tuple[float, int, SheetEntry]] = []  # min-heap on ΔCF keeps the largest

    for i, path in enumerate(photos):
        try:
            gt = np.ascontiguousarray(read_photo(path).rgb, dtype=np.float32)
        except ColorcliError as exc:
            result.failed.append((path, str(exc)))
            if on_progress:
                on_progress(i + 1, len(photos))
            continue
        name = path.name
        result.images.append(name)
        label = imagenet_label(name)
        if label is not None:
            result.labels[name] = label
        gt_prep = metrics.prepare(gt)
        L = rgb_to_l(gt)  # once per photo; every model and the baseline colorize this L
        gray_rgb = gray.colorize_l(L)
        preds: dict[str, np.ndarray | None] = {}
        for system, runner in runners:
            if isinstance(runner, _PredDir):
                pred = _load_prediction(system, runner, path, gt.shape)
            else:
                pred = gray_rgb if runner is gray else runner.colorize_l(L)
            preds[system.name] = pred
            if pred is None:
                continue
            m, curve = metrics.compare(metrics.prepare(pred), gt_prep, threshold=threshold)
            system.rows[name] = m
            system.curve_sum += curve

        if classifier is not None and label is not None:
            names = [s.name for s, _ in runners if preds[s.name] is not None]
            tops = classifier.top5([gt, gray_rgb, *(preds[n] for n in names)])
            result.reference[GROUND_TRUTH].add(tops[0], label)
            result.reference[GRAY].add(tops[1], label)
            for n, top in zip(names, tops[2:]):
                system = next(s for s, _ in runners if s.name == n)
                hit1, hit5 = system.semantic.add(top, label)
                system.rows[name].update(top1=float(hit1), top5=float(hit5))

        if sheet_count > 0:
            scores = [s.rows[name]["delta_cf"] for s in colorizing if name in s.rows]
            dcf = float(np.mean(scores)) if scores else float("nan")
            keep_first = len(result.sheet_first) < sheet_count
            keep_worst = math.isfinite(dcf) and (len(worst) < sheet_count or dcf > worst[0][0])
            if keep_first or keep_worst:
                cells = [_thumb(gray_rgb)]
                cells += [None if preds[s.name] is None else _thumb(preds[s.name]) for s in sheet_systems]
                cells.append(_thumb(gt))
                entry = SheetEntry(name, cells, dcf)
                if keep_first:
                    result.sheet_first.append(entry)
                if keep_worst:
                    item = (dcf, i, entry)
                    if len(worst) < sheet_count:
                        heapq.heappush(worst, item)
                    else:
                        heapq.heapreplace(worst, item)
        if on_progress:
            on_progress(i + 1, len(photos))

    result.sheet_worst = [e for _, _, e in sorted(worst, key=lambda t: (-t[0], t[1]))]
    return result


def _load_prediction(
    system: SystemResult, pred_dir: _PredDir, photo: Path, shape: tuple[int, ...]
) -> np.ndarray | None:
    """The prediction for ``photo`` from ``pred_dir`` at the photo's size, or None (recorded)."""
    file = pred_dir.find(photo.stem)
    if file is None:
        system.missing.append(photo.name)
        return None
    try:
        pred = np.ascontiguousarray(read_photo(file).rgb, dtype=np.float32)
    except ColorcliError as exc:
        system.unreadable.append(str(exc))
        return None
    h, w = shape[:2]
    if pred.shape[:2] != (h, w):
        system.resized.append(f"{file.name}: {pred.shape[1]}x{pred.shape[0]} -> {w}x{h}")
        pred = _resize(pred, h, w)
    return pred


__all__ = [
    "BASELINES",
    "EvalResult",
    "GRAY",
    "GROUND_TRUTH",
    "IMAGENETTE_CLASSES",
    "SemanticScore",
    "SheetEntry",
    "SystemResult",
    "evaluate",
    "gray_colorizer",
    "idle_cpu_threads",
    "imagenet_label",
    "list_photos",
    "torch_threads",
]
