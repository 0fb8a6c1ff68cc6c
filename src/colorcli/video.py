"""Colorizing films: frames streamed through the one inference path, colour kept steady in time.

Each frame goes the way a photo goes (L -> network view -> chroma -> refine -> recombined with
the frame's own full-resolution L), with one step added: the network-resolution chroma is
blended with the colour of the frames before it (:class:`TemporalSmoother`), so the colour of a
still or slowly moving shot does not flicker from frame to frame, as it does when each frame is
colorized on its own (DeOldify #343, DDColor #35).

Decoding and encoding are PyAV's (FFmpeg's libraries, on PyPI as ``av``). Frames are streamed:
one decoded frame, its colour and one encoded frame are in memory at a time, whatever the
film's length. The output keeps the input's size, frame timestamps (so frame rate, frame count
and duration) and copies the audio stream's packets unchanged. It is written to a hidden temp
file beside the output and renamed at the end (:func:`colorcli.files.atomic_write`), so a
failure or Ctrl-C leaves nothing behind.

Torch-free: the colorizer is reached only through :class:`_Frames`, which calls the one
:class:`colorcli.inference.Colorizer`'s steps (any backend).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from colorcli.errors import ColorcliError, ImageReadError, ImageWriteError
from colorcli.files import atomic_write
from colorcli.imageio import MAX_PIXELS, _reason, to_uint8
from colorcli.inference.render import Chroma, guided_coefficients
from colorcli.motion import global_shift, shift_plane

# Folder walks pick these up as well as photos; a named file is judged by its content alone.
FILM_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".gif"})
# ISO base media brands of still images (HEIF/AVIF photos): not films.
_STILL_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avci"})
# Output container per input kind: QuickTime and Matroska keep theirs, the rest become MP4.
_CONTAINERS = {"mov": (".mov", "mov"), "mkv": (".mkv", "matroska"), "webm": (".mkv", "matroska")}
_DEFAULT_CONTAINER = (".mp4", "mp4")
# Audio codecs the MP4 muxer takes as they are; others (PCM from an AVI) are re-encoded to AAC.
_MP4_AUDIO = frozenset({"aac", "mp3", "mp2", "ac3", "eac3", "alac", "opus", "flac"})

DEFAULT_CODEC = "libx264"
# Audio packets held until the first video frame has been encoded (the muxer's header needs the
# video encoder's parameters): a bound, so a film whose video never decodes cannot fill memory.
_MAX_PENDING_AUDIO = 4096
# Encoders that take a constant rate factor: (highest value, default). 18 is x264's "visually
# lossless" point; the others are their encoders' own defaults.
_CRF_CODECS = {"libx264": (51, 18), "libx265": (51, 28), "libvpx-vp9": (63, 32),
               "libaom-av1": (63, 32), "libsvtav1": (63, 35)}

# Temporal smoothing, on the network-resolution chroma. Chosen on the synthetic clips of
# tests/test_video.py and the grainy pan of docs/make_film_strip.py (see README "Films"):
# each frame's chroma gets at least ALPHA_FLOOR of the weight (the state follows the network
# with a time constant of ~1/ALPHA_FLOOR frames where nothing moves), and the full weight where
# the network view's L changed by FULL_CHANGE or more (something moved there: its colour must
# follow at once instead of trailing behind it).
ALPHA_FLOOR = 0.15
FULL_CHANGE = 8.0  # L units (0..100) at network resolution
# A scene cut: the mean |dL| over the whole network view above this starts the state afresh,
# so no colour crosses a cut.
CUT_THRESHOLD = 12.0

# on_frame(frames done, frames expected or None)
FrameCallback = Callable[[int, "int | None"], None]


class FilmError(ImageReadError):
    """A film cannot be read or colorized (not a film, no video stream, damaged, truncated)."""


@dataclass(frozen=True)
class FilmSettings:
    """How films are encoded and which part of them is colorized."""

    codec: str = DEFAULT_CODEC  # an FFmpeg video encoder name; "h264" means libx264
    crf: int | None = None  # constant rate factor for x264/x265/vpx/av1; None: see _CRF_CODECS
    start: float = 0.0  # seconds into the film
    duration: float | None = None  # seconds from start; None: to the end
    temporal: bool = True  # smooth the colour over time (TemporalSmoother)

    def check(self) -> None:
        if self.start < 0 or not math.isfinite(self.start):
            raise ColorcliError(f"--start must be a number of seconds >= 0, got {self.start}")
        if self.duration is not None and not (self.duration > 0 and math.isfinite(self.duration)):
            raise ColorcliError(f"--duration must be a number of seconds > 0, got {self.duration}")
        av = _av()
        codec = self.encoder
        try:
            info = av.codec.Codec(codec, "w")
        except Exception:  # noqa: BLE001 - PyAV raises several kinds for an unknown name
            raise ColorcliError(f"--codec {self.codec!r}: no such video encoder in this FFmpeg build") from None
        if info.type != "video":
            raise ColorcliError(f"--codec {self.codec!r} is not a video encoder")
        if self.crf is not None:
            if codec not in _CRF_CODECS:
                raise ColorcliError(f"--crf does not apply to --codec {self.codec}; leave it out")
            top = _CRF_CODECS[codec][0]
            if not 0 <= self.crf <= top:
                raise ColorcliError(f"--crf for {codec} must be between 0 and {top}, got {self.crf}")

    @property
    def effective_crf(self) -> int | None:
        if self.crf is not None:
            return self.crf
        return _CRF_CODECS.get(self.encoder, (None, None))[1]

    @property
    def encoder(self) -> str:
        return {"h264": "libx264", "hevc": "libx265", "h265": "libx265", "vp9": "libvpx-vp9"}.get(
            self.codec, self.codec)


def _av() -> Any:
    try:
        import av
    except ImportError:  # pragma: no cover - a declared dependency
        raise ColorcliError("films need PyAV: pip install av") from None
    return av


# ---------------------------------------------------------------------------------------------
# telling films from photos


def sniff_film(path: Path) -> str | None:
    """The kind of film ``path`` holds by its first bytes ("mp4", "mov", "mkv", "webm", "avi",
    "gif" for an animated GIF), or None: a photo, or a file the photo reader will judge."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError:
        return None
    box = head[4:8]
    if box == b"ftyp":
        brand = head[8:12]
        if brand in _STILL_BRANDS:
            return None
        return "mov" if brand == b"qt  " else "mp4"
    if box in (b"moov", b"mdat", b"wide", b"free", b"skip"):  # QuickTime files before ftyp
        return "mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: Matroska or WebM
        return "webm" if b"webm" in head else "mkv"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith((b"GIF87a", b"GIF89a")) and _animated_gif(path):
        return "gif"
    return None


def _animated_gif(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return bool(getattr(img, "is_animated", False))  # looks for a second frame only
    except Exception:  # noqa: BLE001 - a broken GIF is the photo reader's to report
        return False


def output_suffix(kind: str) -> str:
    """Suffix of the output for a film of ``kind`` (see :func:`sniff_film`)."""
    return _CONTAINERS.get(kind, _DEFAULT_CONTAINER)[0]


def _muxer_for(path: Path) -> str:
    for suffix, muxer in (*_CONTAINERS.values(), _DEFAULT_CONTAINER):
        if path.suffix.lower() == suffix:
            return muxer
    return _DEFAULT_CONTAINER[1]


# ---------------------------------------------------------------------------------------------
# colour over time


class TemporalSmoother:
    """Blends each frame's network-resolution chroma with the colour of the frames before it.

    The camera's own motion comes first: the shift of the whole network view since the previous
    frame is found by phase correlation (:func:`global_shift`), and the colour state and the
    previous L are moved with it, so a pan keeps its colour on the things it shows instead of
    meeting them anew at every frame. Then the weight of the new frame is, per chroma pixel,
    ``clip(|dL| / full_change, floor, 1)`` with dL the change of the view's L at that pixel
    since the (shifted) previous frame: where nothing moved the colour is a running average (no
    flicker), where something moved it is the new frame's (colour follows motion, no trail). A
    mean |dL| above ``cut`` is a scene cut: the state starts again from the new frame, so no
    colour crosses the cut.
    """

    def __init__(self, *, floor: float = ALPHA_FLOOR, full_change: float = FULL_CHANGE,
                 cut: float = CUT_THRESHOLD, follow_camera: bool = True) -> None:
        self.floor, self.full_change, self.cut = floor, full_change, cut
        self.follow_camera = follow_camera
        self.cuts = 0
        self._state: np.ndarray | None = None
        self._prev_l: np.ndarray | None = None
        self._prev_view: np.ndarray | None = None

    def reset(self) -> None:
        self._state = self._prev_l = self._prev_view = None

    def __call__(self, L_net: np.ndarray, chroma: np.ndarray) -> np.ndarray:
        """Network view L ``(h, w)`` in [0, 100] and its chroma ``(2, h', w')`` -> the smoothed
        chroma ``(2, h', w')`` float32 (a new array)."""
        view = np.asarray(L_net, dtype=np.float32)
        L_small = _pool(view, chroma.shape[-2:])
        chroma = np.asarray(chroma, dtype=np.float32)
        if self._state is None or self._state.shape != chroma.shape or self._prev_view.shape != view.shape:
            self._state = chroma.copy()
        else:
            prev_l, state = self._prev_l, self._state
            if self.follow_camera:
                dy, dx = global_shift(self._prev_view, view)
                if dy or dx:  # view pixels -> the chroma grid's
                    sy, sx = dy * chroma.shape[-2] / view.shape[0], dx * chroma.shape[-1] / view.shape[1]
                    prev_l, state = shift_plane(prev_l, sy, sx), np.stack([shift_plane(c, sy, sx) for c in state])
            change = np.abs(L_small - prev_l)
            if float(change.mean()) > self.cut:
                self.cuts += 1
                self._state = chroma.copy()
            else:
                alpha = np.clip(change / self.full_change, self.floor, 1.0)
                state += alpha * (chroma - state)
                self._state = state
        self._prev_l, self._prev_view = L_small, view
        return self._state.copy()


def _pool(L: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``L`` ``(h, w)`` averaged down to ``shape`` (the chroma's grid: the view or 1/k of it)."""
    h, w = L.shape
    ch, cw = shape
    if (h, w) == (ch, cw):
        return L
    if h % ch == 0 and w % cw == 0:
        return L.reshape(ch, h // ch, cw, w // cw).mean(axis=(1, 3))
    ys = (np.arange(ch) * h) // ch
    xs = (np.arange(cw) * w) // cw
    return L[np.ix_(ys, xs)]


# ---------------------------------------------------------------------------------------------
# the colorizer, seen from a film


class _Frames:
    """The one point where film code meets the colorizer (:class:`colorcli.inference.Colorizer`,
    any backend): its own steps, with the temporal smoother between the network and refinement."""

    def __init__(self, colorizer: Any) -> None:
        self.colorizer = colorizer

    def colorize(self, rgb: np.ndarray, smoother: TemporalSmoother | None) -> np.ndarray:
        """One frame, sRGB float ``(H, W, 3)`` -> colorized sRGB float ``(H, W, 3)``; with a
        smoother, its chroma is blended with the frames before it before refinement."""
        col = self.colorizer
        L = col.rgb_to_l(rgb)
        L_net = col.network_input(L)
        chroma = col.predict_chroma(L_net)[0]
        if smoother is not None:
            chroma = smoother(L_net[0, 0], chroma)
        chroma = Chroma(np.ascontiguousarray(chroma, dtype=np.float32))
        if col.refine:
            return col.recombine(L, guided_coefficients(L_net[0, 0], chroma))
        return col.recombine(L, chroma)


# ---------------------------------------------------------------------------------------------
# films in, films out


def colorize_film(
    colorizer: Any,
    source: Path,
    target: Path,
    *,
    settings: FilmSettings = FilmSettings(),
    overwrite: bool = False,
    on_frame: FrameCallback | None = None,
) -> list[str]:
    """Colorize the film ``source`` into ``target`` (its suffix picks the container); returns
    notes. Raises :class:`FilmError` for a film that cannot be read, :class:`ImageWriteError`
    for an output that cannot be written; never leaves a partial output."""
    av = _av()
    settings.check()
    source, target = Path(source), Path(target)
    if not overwrite and target.exists():
        raise ImageWriteError(f"{target}: exists (use --overwrite to replace it)")
    try:
        inp = av.open(str(source), metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise FilmError(f"{source}: not a readable film ({_why(exc)})") from None
    with inp:
        if not inp.streams.video:
            what = "audio only" if inp.streams.audio else "no streams"
            raise FilmError(f"{source}: no video stream ({what})")
        notes: list[str] = []
        atomic_write(target, lambda tmp: notes.extend(
            _transcode(av, colorizer, inp, source, tmp, target, settings, on_frame)), overwrite=overwrite)
        return notes


def _transcode(av, colorizer, inp, source: Path, tmp: Path, target: Path, settings: FilmSettings,
               on_frame: FrameCallback | None) -> list[str]:
    notes: list[str] = []
    vin = inp.streams.video[0]
    ain = inp.streams.audio[0] if inp.streams.audio else None
    w, h = vin.codec_context.width, vin.codec_context.height
    if w < 2 or h < 2:
        raise FilmError(f"{source}: video stream has no usable frame size ({w}x{h})")
    if w * h > MAX_PIXELS:
        raise FilmError(f"{source}: {w}x{h} frames are over the {MAX_PIXELS // 1_000_000} MP limit")
    rate = vin.average_rate or vin.guessed_rate or Fraction(25)
    tb = vin.time_base or Fraction(1, int(round(rate)) or 25)
    start, duration = settings.start, settings.duration
    end = None if duration is None else start + duration
    trimmed = start > 0 or end is not None
    expected = _expected_frames(vin, rate, start, end)
    frames = _Frames(colorizer)
    smoother = TemporalSmoother() if settings.temporal else None

    out = av.open(str(tmp), "w", format=_muxer_for(target))
    try:
        vout = out.add_stream(settings.encoder, rate=rate)
        vout.width, vout.height = w, h
        # Output timestamps count frames at the input's rate: a constant-rate film keeps its
        # exact rate even from a millisecond container (Matroska); a variable-rate one (GIF)
        # lands on the nearest frame slot.
        out_tb = 1 / Fraction(rate)
        vout.time_base = out_tb
        vout.codec_context.time_base = out_tb
        vout.pix_fmt = _pix_fmt(vout, w, h)
        if vout.pix_fmt != "yuv420p" and "yuv420p" in _formats(vout):
            notes.append(f"odd frame size {w}x{h}: written as {vout.pix_fmt} (no chroma subsampling)")
        opts = {}
        if settings.effective_crf is not None:
            opts["crf"] = str(settings.effective_crf)
        vout.options = opts
        aout, reencode = _audio_stream(out, ain, target, notes)
        if start > 0:
            inp.seek(int(start / tb), stream=vin, backward=True, any_frame=False)
        done = 0
        started = False
        first_t = 0.0
        offset_s = 0.0
        last_pts = -1
        finished = False
        pending_audio: list = []  # audio packets seen before the first video frame fixed the offset
        streams = [vin] + ([ain] if ain is not None else [])

        def send_audio(packet) -> None:
            if packet.pts is None or packet.dts is None:
                return
            t = float(packet.pts * ain.time_base)
            if trimmed and (t < offset_s - 1e-9 or (end is not None and t >= end)):
                return
            if reencode:
                for frame in packet.decode():
                    frame.pts = None
                    for p in aout.encode(frame):
                        out.mux(p)
                return
            if trimmed:
                shift = int(round(offset_s / ain.time_base))
                packet.pts -= shift
                packet.dts -= shift
            packet.stream = aout
            out.mux(packet)

        try:
            for packet in inp.demux(*streams):
                if finished:
                    break
                if packet.stream.type == "audio":
                    if aout is None:
                        continue
                    if not started:
                        if packet.pts is not None:
                            if len(pending_audio) >= _MAX_PENDING_AUDIO:
                                raise FilmError(f"{source}: no video frame among the first "
                                                f"{_MAX_PENDING_AUDIO} audio packets")
                            pending_audio.append(packet)
                        continue
                    send_audio(packet)
                    continue
                for frame in packet.decode():
                    t = frame.time if frame.time is not None else done / float(rate)
                    if t < start - 1e-6:
                        continue
                    if end is not None and t >= end - 1e-6:
                        finished = True
                        break
                    if not started:
                        started = True
                        first_t = t
                        offset_s = t if trimmed else 0.0
                        for p in pending_audio:
                            send_audio(p)
                        pending_audio.clear()
                    pts = round((t - (first_t if trimmed else 0.0)) * rate)
                    if pts <= last_pts:
                        pts = last_pts + 1  # a damaged or timestamp-less stream: keep the order
                    last_pts = pts
                    rgb = frame.to_ndarray(format="rgb24", width=w, height=h)
                    colour = frames.colorize(rgb.astype(np.float32) / 255.0, smoother)
                    oframe = av.VideoFrame.from_ndarray(to_uint8(colour), format="rgb24")
                    oframe.pts = pts
                    oframe.time_base = out_tb
                    for p in vout.encode(oframe):
                        out.mux(p)
                    done += 1
                    if on_frame is not None:
                        on_frame(done, expected)
        except (av.FFmpegError, ValueError) as exc:
            raise FilmError(f"{source}: truncated or damaged after {done} frames ({_why(exc)})") from None
        if done == 0:
            where = f" after --start {start:g}s" if start > 0 else ""
            raise FilmError(f"{source}: no video frames could be decoded{where}")
        # Only a frame count the container states is trusted (a trimmed piece's count is
        # computed from the rate: one frame of slack).
        short = done < vin.frames if not trimmed else (expected is not None and done < expected - 1)
        if vin.frames and not finished and short:
            raise FilmError(f"{source}: ends after {done} of {vin.frames if not trimmed else expected} "
                            "frames (truncated or damaged)")
        for p in vout.encode():
            out.mux(p)
        if reencode:
            for p in aout.encode():
                out.mux(p)
    except av.FFmpegError as exc:
        raise ImageWriteError(f"{target}: cannot encode ({_why(exc)})") from None
    finally:
        try:
            out.close()
        except av.FFmpegError:
            pass
    if smoother is not None and smoother.cuts:
        notes.append(f"{smoother.cuts} scene cut(s)")
    return notes


def film_frames(path: Path) -> Iterator[np.ndarray]:
    """The frames of a film's first video stream, streamed, as sRGB float32 ``(H, W, 3)`` in
    [0, 1] (for measurements: flicker, strips)."""
    av = _av()
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise FilmError(f"{path}: not a readable film ({_why(exc)})") from None
    with container:
        if not container.streams.video:
            raise FilmError(f"{path}: no video stream")
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24").astype(np.float32) / 255.0


def _why(exc: BaseException) -> str:
    """FFmpeg's own words ("invalid data found when processing input"), without errno and path."""
    text = getattr(exc, "strerror", None)
    return text.lower() if isinstance(text, str) and text else _reason(exc)


def _expected_frames(vin, rate: Fraction, start: float, end: float | None) -> int | None:
    total = vin.frames or None
    if total is None and vin.duration is not None and vin.time_base:
        total = int(round(float(vin.duration * vin.time_base) * rate))
    if total is None:
        return None
    first = int(math.ceil(start * rate - 1e-6))
    last = total if end is None else min(total, int(math.ceil(end * rate - 1e-6)))
    return max(0, last - first)


def _formats(stream) -> list[str]:
    fmts = stream.codec_context.codec.video_formats or []
    return [f.name for f in fmts]


def _pix_fmt(stream, w: int, h: int) -> str:
    """yuv420p (what every player plays) unless the size is odd, where 4:2:0 cannot be coded."""
    fmts = _formats(stream)
    even = w % 2 == 0 and h % 2 == 0
    for name in (("yuv420p",) if even else ()) + ("yuv444p", "yuv420p", "rgb24"):
        if not fmts or name in fmts:
            return name
    return fmts[0]


def _audio_stream(out, ain, target: Path, notes: list[str]):
    """The output audio stream: the input's copied, or AAC where the container cannot hold it."""
    if ain is None:
        return None, False
    name = ain.codec_context.name
    if _muxer_for(target) == "mp4" and name not in _MP4_AUDIO:
        notes.append(f"audio re-encoded to AAC ({name} cannot go in MP4)")
        aout = out.add_stream("aac", rate=ain.codec_context.sample_rate or 48000)
        return aout, True
    return out.add_stream_from_template(ain), False


__all__ = [
    "ALPHA_FLOOR", "CUT_THRESHOLD", "FILM_SUFFIXES", "FULL_CHANGE", "FilmError", "FilmSettings",
    "TemporalSmoother", "colorize_film", "film_frames", "output_suffix", "sniff_film",
]
