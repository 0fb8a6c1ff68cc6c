"""Films: synthetic clips made here with PyAV (a still scene, a slow pan, a hard cut, with and
without audio), colorized through the one inference path; flicker, cuts, motion, bad files."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from colorcli import metrics
from colorcli.batch import plan_jobs, run_jobs
from colorcli.cli import app
from colorcli.errors import ColorcliError
from colorcli.inference import Colorizer, InferenceSettings
from colorcli.video import FilmSettings, TemporalSmoother, colorize_film, film_frames, sniff_film

W, H, RATE, N = 64, 48, 24, 20
AUDIO_RATE = 8000


# ---------------------------------------------------------------------------------------------
# clips


def _scene(w: int, h: int, seed: int) -> np.ndarray:
    """A smooth gray 'photo' (uint8, (h, w)) with some structure for the network to see."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    v = 0.5 + 0.25 * np.sin(x / 7 + rng.random() * 6) + 0.2 * np.cos(y / 5 + rng.random() * 6)
    return np.round(np.clip(v, 0, 1) * 255).astype(np.uint8)


def still_frames() -> list[np.ndarray]:
    return [_scene(W, H, 1)] * N


def pan_frames() -> list[np.ndarray]:
    """A window moving 1 px per frame across a wider photo (slow pan)."""
    wide = _scene(W + N, H, 2)
    return [wide[:, i : i + W] for i in range(N)]


def cut_frames() -> list[np.ndarray]:
    """Scene A (dark left half) for 10 frames, then B: same right half, bright left half."""
    right = _scene(W // 2, H, 3) // 2 + 40  # mid-dark, identical across the cut
    a = np.concatenate([np.full((H, W // 2), 30, np.uint8), right], axis=1)
    b = np.concatenate([np.full((H, W // 2), 235, np.uint8), right], axis=1)
    return [a] * (N // 2) + [b] * (N - N // 2)


def write_clip(path: Path, frames: list[np.ndarray], *, audio: bool = False, rate: int = RATE,
               options: dict | None = None, fmt: str | None = None) -> Path:
    """Gray uint8 frames -> an H.264 film (near-lossless), with a sine-wave AAC track if asked."""
    with av.open(str(path), "w", format=fmt or "mp4", options=options or {}) as c:
        vs = c.add_stream("libx264", rate=rate)
        vs.width, vs.height, vs.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        vs.options = {"crf": "8"}
        if audio:
            aus = c.add_stream("aac", rate=AUDIO_RATE)
            aus.layout = "mono"
        _encode_gray(c, vs, frames)
        if audio:
            _write_audio(c, aus, len(frames) / rate)
    return path


def _encode_gray(c, vs, frames: list[np.ndarray]) -> None:
    """Encode gray uint8 frames into stream ``vs`` of container ``c``, one pts each, and flush."""
    for i, g in enumerate(frames):
        f = av.VideoFrame.from_ndarray(np.repeat(g[..., None], 3, axis=2), format="rgb24")
        f.pts = i
        for p in vs.encode(f):
            c.mux(p)
    for p in vs.encode():
        c.mux(p)


def _write_audio(c, aus, seconds: float) -> None:
    total, s = int(AUDIO_RATE * seconds), 0
    while s < total:
        k = min(1024, total - s)
        samples = (0.3 * np.sin(np.arange(s, s + k) * 0.05)).astype(np.float32)[None]
        fr = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        fr.sample_rate, fr.pts = AUDIO_RATE, s
        s += k
        for p in aus.encode(fr):
            c.mux(p)
    for p in aus.encode():
        c.mux(p)


def probe(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        a = c.streams.audio[0] if c.streams.audio else None
        frames = sum(1 for _ in c.decode(video=0))
        return {"frames": frames, "size": (v.codec_context.width, v.codec_context.height),
                "rate": v.average_rate, "audio": None if a is None else a.codec_context.name,
                "audio_packets": None if a is None else _count_packets(path, "audio")}


def _count_packets(path: Path, kind: str) -> int:
    with av.open(str(path)) as c:
        s = c.streams.audio[0] if kind == "audio" else c.streams.video[0]
        return sum(1 for p in c.demux(s) if p.size)


# ---------------------------------------------------------------------------------------------
# colorizers: fake networks behind the one pipeline, so tiny clips give meaningful numbers


class _FnBackend:
    """A fake network: ``fn(L (B, 1, h, w)) -> chroma (B, 2, h, w)``, numpy in and out."""

    chroma_space, temperature, source = "lab", None, "test function"

    def __init__(self, fn, default_size: int = 32) -> None:
        self.fn, self.default_size = fn, default_size

    def predict(self, L: np.ndarray) -> np.ndarray:
        return np.asarray(self.fn(L), dtype=np.float32)


def noisy_colorizer(seed: int = 0, sigma: float = 12.0) -> Colorizer:
    """Colour from L plus fresh blotchy noise at every call (a 4x4 grid of random shifts,
    upsampled): the colour patches that wander from frame to frame in per-frame colorization."""
    gen = torch.Generator().manual_seed(seed)

    def backend(L: np.ndarray) -> np.ndarray:
        L = torch.from_numpy(np.ascontiguousarray(L))
        base = torch.cat([(L - 50) * 0.6 + 10, (50 - L) * 0.4 + 25], dim=1)
        noise = sigma * torch.randn((L.shape[0], 2, 4, 4), generator=gen)
        return (base + torch.nn.functional.interpolate(noise, size=L.shape[-2:], mode="bilinear")).numpy()

    return Colorizer(_FnBackend(backend))


def tint_colorizer() -> Colorizer:
    """Colour of the whole frame set by its mean L: dark scenes red, bright scenes green."""

    def backend(L: np.ndarray) -> np.ndarray:
        a = np.broadcast_to(np.where(L.mean(axis=(1, 2, 3), keepdims=True) < 50, 40.0, -40.0), L.shape)
        return np.concatenate([a, np.zeros_like(L)], axis=1)

    return Colorizer(_FnBackend(backend))


def lightness_colorizer() -> Colorizer:
    """Bright pixels red, dark pixels green: colour that should move with what moves."""

    def backend(L: np.ndarray) -> np.ndarray:
        a = np.where(L > 50, 45.0, -35.0)
        return np.concatenate([a, np.zeros_like(L)], axis=1)

    return Colorizer(_FnBackend(backend), InferenceSettings(refine=False))


def ab_of(rgb: np.ndarray) -> np.ndarray:
    return metrics._lab(rgb)[..., 1:]


# ---------------------------------------------------------------------------------------------
# the output is the same film, in colour


@pytest.mark.parametrize("frames", [still_frames, pan_frames, cut_frames])
@pytest.mark.parametrize("audio", [False, True])
def test_output_keeps_frames_size_rate_and_audio(tmp_path, frames, audio):
    src = write_clip(tmp_path / "clip.mp4", frames(), audio=audio)
    out = tmp_path / "clip_color.mp4"
    colorize_film(noisy_colorizer(), src, out)
    got, want = probe(out), probe(src)
    assert got["frames"] == want["frames"] == N
    assert got["size"] == (W, H)
    assert got["rate"] == want["rate"] == RATE
    assert got["audio"] == want["audio"]  # copied, not re-encoded: same codec, same packets
    assert got["audio_packets"] == want["audio_packets"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # In colour: the output has chroma where the input was gray.
    first = next(film_frames(out))
    assert float(np.abs(ab_of(first)).mean()) > 5


def test_start_and_duration_take_a_piece(tmp_path):
    src = write_clip(tmp_path / "clip.mp4", pan_frames(), audio=True)
    out = tmp_path / "piece.mp4"
    colorize_film(noisy_colorizer(), src, out, settings=FilmSettings(start=0.25, duration=0.5))
    info = probe(out)
    assert info["frames"] == 12  # frames 6..17 at 24 fps
    assert info["audio"] == "aac"
    with av.open(str(out)) as c:
        assert float(c.duration / av.time_base) == pytest.approx(0.5, abs=0.1)


# ---------------------------------------------------------------------------------------------
# colour over time


def _flicker(path: Path) -> float:
    return metrics.flicker(film_frames(path))


@pytest.mark.parametrize("frames", [still_frames, pan_frames])
def test_temporal_flicker_is_at_most_half_of_per_frame(tmp_path, frames):
    src = write_clip(tmp_path / "clip.mp4", frames())
    per_frame, smooth = tmp_path / "per_frame.mp4", tmp_path / "smooth.mp4"
    colorize_film(noisy_colorizer(), src, per_frame, settings=FilmSettings(temporal=False))
    colorize_film(noisy_colorizer(), src, smooth, settings=FilmSettings(temporal=True))
    f_per, f_smooth = _flicker(per_frame), _flicker(smooth)
    assert f_per > 2  # the fake network does flicker, so the comparison means something
    print(f"flicker per-frame {f_per:.2f}, temporal {f_smooth:.2f}")
    assert f_smooth <= 0.5 * f_per, (f_smooth, f_per)


def test_first_frame_after_a_cut_has_no_colour_from_before(tmp_path):
    src = write_clip(tmp_path / "cut.mp4", cut_frames())
    smooth, per_frame = tmp_path / "smooth.mp4", tmp_path / "per_frame.mp4"
    colorize_film(tint_colorizer(), src, smooth)
    colorize_film(tint_colorizer(), src, per_frame, settings=FilmSettings(temporal=False))
    a_smooth = [float(ab_of(f)[:, W // 2 + 4 :, 0].mean()) for f in film_frames(smooth)]
    a_per = [float(ab_of(f)[:, W // 2 + 4 :, 0].mean()) for f in film_frames(per_frame)]
    # The right half is the same picture on both sides of the cut: only a reset can turn it.
    assert a_smooth[N // 2 - 1] > 20  # red before the cut
    assert a_smooth[N // 2] < -20  # green at once after it
    assert a_smooth[N // 2] == pytest.approx(a_per[N // 2], abs=3)


def test_without_cut_detection_colour_would_cross_the_cut():
    """What the reset prevents: the gate alone keeps the unchanged half's old colour."""
    L_a = np.concatenate([np.full((32, 16), 12.0), np.full((32, 16), 40.0)], axis=1)
    L_b = np.concatenate([np.full((32, 16), 92.0), np.full((32, 16), 40.0)], axis=1)
    red, green = np.full((2, 32, 32), 40.0), np.full((2, 32, 32), -40.0)
    for cut, want in ((float("inf"), 28.0), (12.0, -40.0)):
        s = TemporalSmoother(cut=cut)
        s(L_a, red)
        out = s(L_b, green)
        assert out[0, :, 16:].mean() == pytest.approx(want, abs=0.5)


def test_colour_follows_motion(tmp_path):
    """A bright square moving 4 px a frame: red where it is, no red trail where it was."""
    frames = []
    for i in range(12):
        g = np.full((H, W), 40, np.uint8)
        g[16:32, 4 + 4 * i : 20 + 4 * i] = 220
        frames.append(g)
    out = tmp_path / "moving_color.mp4"
    colorize_film(lightness_colorizer(), write_clip(tmp_path / "moving.mp4", frames), out)
    for i, rgb in enumerate(film_frames(out)):
        if i < 4:
            continue
        a = ab_of(rgb)[..., 0]
        x = 4 + 4 * i
        assert a[20:28, x + 4 : x + 12].mean() > 25, i  # inside the square now
        assert a[20:28, x - 12 : x - 4].mean() < -15, i  # where it was two to three frames ago


# ---------------------------------------------------------------------------------------------
# files, batches, errors


def test_sniffing_is_by_content(tmp_path, make_photo):
    from PIL import Image

    film = write_clip(tmp_path / "film.jpg", still_frames()[:3])  # a film with a photo's name
    Image.fromarray(make_photo(40, 40, 1)).save(tmp_path / "photo.png")
    os.rename(tmp_path / "photo.png", tmp_path / "photo.mp4")  # a photo with a film's name
    gif = tmp_path / "anim.gif"
    imgs = [Image.fromarray(g) for g in pan_frames()[:4]]
    imgs[0].save(gif, save_all=True, append_images=imgs[1:], duration=100, loop=0)
    Image.fromarray(make_photo(20, 20, 2)).save(tmp_path / "still.gif")
    assert sniff_film(film) == "mp4"
    assert sniff_film(tmp_path / "photo.mp4") is None
    assert sniff_film(gif) == "gif"
    assert sniff_film(tmp_path / "still.gif") is None
    plan = plan_jobs([tmp_path], None)
    targets = {j.source.name: (j.target.name, j.film) for j in plan.jobs}
    assert targets == {"film.jpg": ("film_color.mp4", True), "photo.mp4": ("photo_color.png", False),
                       "anim.gif": ("anim_color.mp4", True), "still.gif": ("still_color.png", False)}


def test_animated_gif_and_matroska(tmp_path):
    from PIL import Image

    gif = tmp_path / "anim.gif"
    imgs = [Image.fromarray(g) for g in pan_frames()[:6]]
    imgs[0].save(gif, save_all=True, append_images=imgs[1:], duration=100, loop=0)
    out = tmp_path / "anim_color.mp4"
    colorize_film(noisy_colorizer(), gif, out)
    assert probe(out)["frames"] == 6
    assert probe(out)["size"] == (W, H)
    mkv = write_clip(tmp_path / "clip.mkv", still_frames()[:5], audio=True, fmt="matroska")
    plan = plan_jobs([mkv], None)
    assert plan.jobs[0].target.name == "clip_color.mkv"
    res = run_jobs(noisy_colorizer(), plan.jobs)
    assert res.done == [tmp_path / "clip_color.mkv"]
    assert probe(res.done[0])["frames"] == 5 and probe(res.done[0])["audio"] == "aac"


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w", format="mp4") as c:
        aus = c.add_stream("aac", rate=AUDIO_RATE)
        aus.layout = "mono"
        _write_audio(c, aus, 0.5)
    return path


def test_bad_films_one_line_each_and_the_batch_goes_on(tmp_path, tiny_weights, photo_dir):
    d = photo_dir
    good = write_clip(d / "good.mp4", pan_frames()[:6], audio=True)
    data = good.read_bytes()
    (d / "broken.mp4").write_bytes(data[:32] + bytes(range(256)) * 8)
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])  # index at the end: cut off
    fast = write_clip(tmp_path / "fast.mp4", pan_frames(), options={"movflags": "+faststart"})
    fdata = fast.read_bytes()
    (d / "cut_short.mp4").write_bytes(fdata[: len(fdata) * 2 // 3])  # index first, frames cut
    _audio_only(d / "song.m4a")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["colorize", str(d), str(d / "song.m4a"), "-o", str(out),
                                   "--model", "test_mcl", "--weights", str(tiny_weights), "--suffix", "_color"])
    assert res.exit_code == 1, res.output
    failed = [line for line in res.stderr.splitlines() if line.startswith("failed:")]
    assert len(failed) == 4, failed
    text = "\n".join(failed)
    assert f"failed: {d / 'broken.mp4'}: not a readable film" in text
    assert f"failed: {d / 'truncated.mp4'}: not a readable film" in text
    cut_line = next(line for line in failed if "cut_short.mp4" in line)
    assert cut_line.startswith(f"failed: {d / 'cut_short.mp4'}: ") and "truncated or damaged" in cut_line
    assert f"failed: {d / 'song.m4a'}: no video stream (audio only)" in text
    assert "done 4, skipped 0, failed 4" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a_color.png", "b_color.png", "c_color.png",
                                                     "good_color.mp4"]
    assert probe(out / "good_color.mp4")["frames"] == 6
    assert str(out / "good_color.mp4") in res.stdout.splitlines()


def test_ctrl_c_leaves_nothing(tmp_path):
    src = write_clip(tmp_path / "clip.mp4", still_frames(), audio=True)
    out = tmp_path / "out"
    out.mkdir()

    def stop(done, total):
        assert total == N
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        colorize_film(noisy_colorizer(), src, out / "clip_color.mp4", on_frame=stop)
    assert list(out.iterdir()) == []
    plan = plan_jobs([src], out)
    res = run_jobs(noisy_colorizer(), plan.jobs, on_frames=lambda job, done, total: stop(done, total))
    assert res.interrupted and res.not_started == [src] and list(out.iterdir()) == []


def test_existing_output_is_kept_and_settings_are_checked(tmp_path):
    src = write_clip(tmp_path / "clip.mp4", still_frames()[:3])
    out = tmp_path / "clip_color.mp4"
    out.write_bytes(b"keep me")
    with pytest.raises(Exception, match="exists"):
        colorize_film(noisy_colorizer(), src, out)
    assert out.read_bytes() == b"keep me"
    colorize_film(noisy_colorizer(), src, out, overwrite=True)
    assert probe(out)["frames"] == 3
    for bad, msg in ((FilmSettings(codec="nope"), "no such video encoder"),
                     (FilmSettings(crf=99), "between 0 and 51"),
                     (FilmSettings(codec="mpeg4", crf=20), "does not apply"),
                     (FilmSettings(duration=0), "--duration")):
        with pytest.raises(ColorcliError, match=msg):
            bad.check()
    res = CliRunner().invoke(app, ["colorize", str(src), "--codec", "nope", "--overwrite"])
    assert res.exit_code == 2 and "no such video encoder" in res.stderr


def test_other_codec_and_odd_size(tmp_path):
    frames = [g[:47, :63] for g in still_frames()[:4]]
    src = tmp_path / "odd.mkv"
    with av.open(str(src), "w", format="matroska") as c:  # ffv1: lossless, odd sizes allowed
        vs = c.add_stream("ffv1", rate=RATE)
        vs.width, vs.height, vs.pix_fmt = 63, 47, "yuv444p"
        _encode_gray(c, vs, frames)
    out = tmp_path / "odd_color.mkv"
    notes = colorize_film(noisy_colorizer(), src, out)
    assert probe(out)["size"] == (63, 47) and probe(out)["frames"] == 4
    assert any("odd frame size" in n for n in notes)
    out2 = tmp_path / "mpeg4.mp4"
    colorize_film(noisy_colorizer(), src, out2, settings=FilmSettings(codec="mpeg4"))
    assert probe(out2)["frames"] == 4
    assert probe(out2)["rate"] == Fraction(RATE)


# ---------------------------------------------------------------------------------------------
# the camera's motion


def _texture(h: int, w: int, seed: int) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return (gaussian_filter(np.random.default_rng(seed).random((h, w)), 3) * 400 - 150).astype(np.float32)


@pytest.mark.parametrize("shift", [(0.0, 2.0), (0.0, -3.0), (1.5, 0.5), (-4.0, 3.0)])
def test_global_shift_finds_the_pan(shift):
    from scipy.ndimage import shift as nd_shift

    from colorcli.motion import global_shift

    scene = _texture(240, 320, 5)
    a = scene[40:200, 48:272]
    b = nd_shift(scene, shift, order=3)[40:200, 48:272]
    dy, dx = global_shift(a, b)
    assert dy == pytest.approx(shift[0], abs=0.3) and dx == pytest.approx(shift[1], abs=0.3)


def test_global_shift_is_zero_for_a_still_shot_and_for_a_cut():
    from colorcli.motion import global_shift

    a = _texture(160, 224, 6)
    grain = np.random.default_rng(0).normal(0, 2, a.shape).astype(np.float32)
    assert global_shift(a, a + grain) == (0.0, 0.0)
    assert global_shift(a, _texture(160, 224, 7)) == (0.0, 0.0)


def test_smoothing_follows_the_camera_on_a_pan():
    # The network sees a texture panning 2 px a frame; its chroma is the scene's true colour
    # (tied to the scene) plus fresh noise. Following the camera, the smoothed colour stays on
    # the scene and is closer to the truth than each frame's; without it, the pan makes
    # every pixel change and the state keeps being reset to the noisy frame.
    scene = _texture(160, 224 + 2 * 16, 8)
    truth = np.stack([scene * 0.3, -scene * 0.2])  # colour at full view resolution
    rng = np.random.default_rng(1)
    errors = {}
    for follow in (True, False):
        smoother = TemporalSmoother(follow_camera=follow)
        errs = []
        for i in range(16):
            view = scene[:, 2 * i : 2 * i + 224]
            true_c = truth[:, ::4, 2 * i : 2 * i + 224 : 4]
            noisy = true_c + rng.normal(0, 8, true_c.shape).astype(np.float32)
            out = smoother(view, noisy)
            if i >= 6:
                errs.append(np.abs(out - true_c)[:, 2:-2, 2:-2].mean())
        errors[follow] = float(np.mean(errs))
    noise = 8 * np.sqrt(2 / np.pi)  # mean |N(0, 8)|: a frame on its own
    assert errors[True] < 0.6 * noise
    assert errors[True] < 0.75 * errors[False]
