"""Training data: a compact on-disk cache of colour photos, decoded once into memory.

``prepare`` walks folders of colour photos, skips grayscale and near-grayscale ones, centre-crops
and resizes each to ``size`` x ``size`` and stores it as JPEG bytes in one ``.npz`` file, with the
ab-bin counts that set the class-rebalancing prior. JPEG keeps the cache of the ~11.6k shared
photos at 128 px under 60 MiB (raw uint8 would be ~570 MiB); ``CachedImages`` decodes the whole
cache once when training starts, so epochs themselves do no image decoding.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from colorcli import color
from colorcli.errors import ColorcliError, TrainingError
from colorcli.files import atomic_write_stream
from colorcli.imageio import read_rgb

CACHE_VERSION = 1
MAX_CACHE_SIZE = 1024  # largest crop side a cache may declare (bounds the memory it takes)
# Longest side a calibration photo is measured at (PhotoFiles): the view the network sees is far
# smaller, and each photo is recombined at full resolution 17 times (colorcli.calibrate).
PHOTO_MAX_SIDE = 1024
GRAY_CHROMA = 4.0  # mean Lab chroma below which a photo counts as (near-)grayscale


def find_images(folders: Iterable[Path], *, recursive: bool = True) -> list[Path]:
    """Image files (by suffix) under ``folders`` (the batch's finder), sorted for reproducibility."""
    from colorcli.batch import collect_inputs

    found, errors = collect_inputs(folders, recursive=recursive)
    if errors:
        raise TrainingError(errors[0][1])
    return sorted(p for p, _, _ in found)


@dataclass
class PrepareResult:
    path: Path
    kept: int
    skipped_gray: int
    failed: list[tuple[Path, str]]
    bytes: int


def _pooled_ab(rgb8: np.ndarray) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` -> the ab of its 4 x 4 block means ``(1, 2, H/4, W/4)``."""
    x = torch.from_numpy(np.asarray(rgb8, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    return color.rgb_to_lab(F.avg_pool2d(x, 4))[:, 1:]


def _looks_gray(ab: torch.Tensor) -> bool:
    return color.chroma(ab).mean().item() < GRAY_CHROMA


def prepare(
    folders: list[Path],
    out: Path,
    *,
    size: int = 128,
    quality: int = 82,
    progress: Callable[[int, int], None] | None = None,
) -> PrepareResult:
    """Build the training cache ``out`` (.npz) from colour photos in ``folders``."""
    files = find_images(folders)
    if not files:
        raise TrainingError(f"no images found in {', '.join(map(str, folders))}")
    centres = torch.from_numpy(color.gamut_bins())
    counts = np.zeros(len(centres), dtype=np.int64)
    blobs: list[bytes] = []
    names: list[str] = []
    skipped = 0
    failed: list[tuple[Path, str]] = []
    for i, path in enumerate(files):
        if progress:
            progress(i, len(files))
        try:
            img = read_rgb(path)
        except ColorcliError as exc:
            failed.append((path, str(exc)))
            continue
        img = ImageOps.fit(img, (size, size), Image.Resampling.BICUBIC)
        ab = _pooled_ab(np.asarray(img))
        if _looks_gray(ab):
            skipped += 1
            continue
        idx = color.ab_to_bin_index(ab, centres).flatten()
        counts += np.bincount(idx.numpy(), minlength=len(centres))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
        blobs.append(buf.getvalue())
        names.append(str(path))
    if progress:
        progress(len(files), len(files))
    if not blobs:
        raise TrainingError("every input was grayscale or unreadable: nothing to train on")
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    meta = {
        "version": CACHE_VERSION,
        "size": size,
        "quality": quality,
        "sources": [str(Path(f).resolve()) for f in folders],
        "gray_chroma": GRAY_CHROMA,
    }
    out = Path(out)

    def write(fh) -> None:
        np.savez(
            fh,
            data=np.frombuffer(b"".join(blobs), dtype=np.uint8),
            offsets=offsets,
            names=np.array(names),
            bin_counts=counts,
            meta=np.array(json.dumps(meta)),
        )

    atomic_write_stream(out, write)  # a full disk: one-line error, no partial cache left
    return PrepareResult(out, len(blobs), skipped, failed, out.stat().st_size)


class CachedImages:
    """Prepared caches decoded into one uint8 array ``(N, S, S, 3)`` in memory.

    Several caches (of one crop size) are concatenated in the order given; a cache named twice
    is in it twice, which is how a source is weighed more (``--data wide.npz --data train.npz
    --data train.npz``). ``bin_counts`` (the colour prior) sums them the same way.
    """

    def __init__(self, paths: Path | Sequence[Path]) -> None:
        paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
        if not paths:
            raise TrainingError("no training cache given")
        decoded: dict[Path, tuple[np.ndarray, np.ndarray, dict]] = {}
        for path in dict.fromkeys(paths):
            decoded[path] = _decode_cache(path)
        sizes = {p: meta["size"] for p, (_, _, meta) in decoded.items()}
        if len(set(sizes.values())) > 1:
            raise TrainingError("training caches of different crop sizes cannot be mixed: "
                                + ", ".join(f"{p} ({s} px)" for p, s in sizes.items()))
        parts = [decoded[p][0] for p in paths]
        self.images = parts[0] if len(parts) == 1 else np.concatenate(parts)
        self.bin_counts = sum(decoded[p][1] for p in paths)
        self.meta = decoded[paths[0]][2]
        self.paths = paths
        self.path = paths[0]

    def __len__(self) -> int:
        return len(self.images)


class PhotoFiles:
    """The photos of folders, read one at a time as they are, at their own shape (no crop):
    what ``train --calibrate-only`` colorizes, as ``colorize`` would see them. A photo whose long
    side is over ``max_side`` is reduced to it (aspect kept), which bounds the cost of a folder of
    large scans; the shared photos (at most 192 px) are read at their own size.
    ``folder_index``: the folder each comes from (a folder named twice: one index)."""

    bin_counts = None  # no colour prior: nothing is trained on the bins

    def __init__(self, folders: Sequence[Path], *, max_side: int = PHOTO_MAX_SIDE) -> None:
        self.max_side = max_side
        unique = list(dict.fromkeys(Path(f) for f in folders))
        found = {f: find_images([f]) for f in unique}
        empty = [str(f) for f, files in found.items() if not files]
        if empty:
            raise TrainingError(f"no images found in {', '.join(empty)}")
        self.paths = [p for f in folders for p in found[Path(f)]]
        self.folder_index = np.repeat(np.array([unique.index(Path(f)) for f in folders], dtype=np.int16),
                                      [len(found[Path(f)]) for f in folders])

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, i: int, *, keep_gray: bool = False) -> np.ndarray | None:
        """Photo ``i`` as uint8 ``(H, W, 3)``, or None when it is (near-)grayscale (as
        :func:`prepare` skips them) unless ``keep_gray``; a :class:`ColorcliError` naming the
        file when unreadable."""
        img = read_rgb(self.paths[i])
        if max(img.size) > self.max_side:
            img.thumbnail((self.max_side, self.max_side), Image.Resampling.LANCZOS)
        rgb = np.asarray(img)
        return None if not keep_gray and _looks_gray(_pooled_ab(rgb)) else rgb


def _decode_cache(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """One cache file: its photos decoded, its colour-bin counts and its metadata.

    What it may make us allocate is bounded by the file itself: ``prepare`` stores the arrays
    uncompressed, so a member that inflates (a zip bomb) is refused before it is read, the
    photo offsets must tile the data exactly, and every photo must be a ``size`` x ``size`` image
    (checked from its header, before it is decoded)."""
    try:
        with zipfile.ZipFile(path) as zf:
            inflated = [i.filename for i in zf.infolist() if i.file_size > i.compress_size + 1024]
        if inflated:
            raise ValueError(f"compressed member {inflated[0]} (colorcli writes caches uncompressed)")
        z = np.load(path, allow_pickle=False)
        data, offsets = z["data"], z["offsets"]
        meta = json.loads(str(z["meta"]))
        bin_counts = z["bin_counts"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise TrainingError(f"{path}: not a colorcli training cache ({exc})") from None
    if meta.get("version") != CACHE_VERSION:
        raise TrainingError(f"{path}: cache version {meta.get('version')} unsupported")
    s, n = meta.get("size"), len(offsets) - 1
    tiles = (offsets.ndim == 1 and data.ndim == 1 and n >= 1 and offsets[0] == 0
             and offsets[-1] == len(data) and bool(np.all(np.diff(offsets) > 0)))
    if not isinstance(s, int) or not 8 <= s <= MAX_CACHE_SIZE or not tiles:
        raise TrainingError(f"{path}: not a colorcli training cache (crop size {s!r}, {n} photos, "
                            f"offsets {'tile' if tiles else 'do not tile'} the data)")
    images = np.empty((n, s, s, 3), dtype=np.uint8)
    for i in range(n):
        blob = data[offsets[i] : offsets[i + 1]].tobytes()
        try:
            with Image.open(io.BytesIO(blob)) as im:
                if im.size != (s, s):
                    raise ValueError(f"{im.size[0]}x{im.size[1]}, not {s}x{s}")
                images[i] = np.asarray(im.convert("RGB"))
        except (OSError, ValueError) as exc:
            raise TrainingError(f"{path}: photo {i} of the cache is unreadable ({exc})") from None
    return images, bin_counts, meta


def augment_batch(
    images: np.ndarray, *, size: int, generator: torch.Generator, min_scale: float = 0.5,
    keep: slice | None = None,
) -> torch.Tensor:
    """Random resized crop (area ``min_scale``..1, aspect 3/4..4/3) + horizontal flip.

    ``images`` uint8 ``(B, S, S, 3)`` -> sRGB float ``(B, 3, size, size)`` in [0, 1]. ``keep``
    crops only those rows, drawing the random numbers of the whole batch all the same: each
    process of a distributed run takes its rows of one global batch, cropped exactly as a single
    process would crop them.
    """
    r = torch.rand(len(images), 5, generator=generator)
    if keep is not None:
        images, r = images[keep], r[keep]
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
    b, _, s, _ = x.shape
    out = torch.empty(b, 3, size, size)
    for i in range(b):
        area = min_scale + (1 - min_scale) * r[i, 0].item()
        aspect = float(np.exp(np.log(3 / 4) + (np.log(4 / 3) - np.log(3 / 4)) * r[i, 1].item()))
        ch = int(round(s * min(1.0, np.sqrt(area / aspect))))
        cw = int(round(s * min(1.0, np.sqrt(area * aspect))))
        y0 = int(r[i, 2].item() * (s - ch + 1))
        x0 = int(r[i, 3].item() * (s - cw + 1))
        crop = x[i : i + 1, :, y0 : y0 + ch, x0 : x0 + cw]
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        if r[i, 4].item() < 0.5:
            crop = crop.flip(-1)
        out[i] = crop[0]
    return out.clamp_(0, 1)


def iterate_batches(
    n: int, batch_size: int, *, generator: torch.Generator, drop_last: bool = True
) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        yield order[i : i + batch_size]


def load_folder_rgb(folder: Path, *, limit: int | None = None) -> list[tuple[str, np.ndarray]]:
    """Every colour photo in ``folder`` as uint8 ``(H, W, 3)`` arrays (for validation)."""
    out = []
    for path in find_images([folder])[:limit]:
        try:
            out.append((path.name, np.asarray(read_rgb(path))))
        except ColorcliError:
            continue
    return out
