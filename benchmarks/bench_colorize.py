"""End-to-end colorize speed and peak memory: torch vs onnxruntime (fp32 and int8), every model,
vs the IO floor.

For each photo size (megapixels) and each model with weights (the flagship ``mcl`` falls back to
random-init weights with a note: speed does not depend on weight values), one fresh subprocess
per configuration reads a grayscale JPEG, colorizes it and writes the result, ``--repeats``
times after one warm-up run; the table gives the median seconds per image and the child's peak
RSS (``ru_maxrss`` from ``os.wait4``). The IO floor is the same loop without the network:
decode, RGB -> L, L + zero chroma -> sRGB, encode; measured in the same run for each backend's
pixel code (``colorcli.inference.render``, numpy, shared by both backends).

Children are pinned to ``--cores`` CPU cores (default 2) with that many threads. Where CUDA is
available (torch with a GPU; onnxruntime-gpu for the onnx backend) every configuration also
runs with ``--device cuda``, so the same script reports GPU figures on a GPU machine.

The ``int8`` backend is onnxruntime on the file ``colorcli export --int8`` writes
(:func:`colorcli.quantize.export_int8`), calibrated on ``--calibrate DIR`` (default: the
repository's ``examples/`` photos; calibration sets the int8 ranges, not the amount of work).

    python benchmarks/bench_colorize.py            # 0.25, 1, 4, 12 MP, 3 repeats
    python benchmarks/bench_colorize.py --quick    # 0.25 and 1 MP, 1 repeat: a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLAGSHIP = "mcl"
TARGETS = {  # from the issue; checked in the summary under the table
    "1mp_seconds": 0.25,
    "1mp_floor_ratio": 2.0,
    "12mp_seconds": 2.0,
    "12mp_rss_mb": 1500,
    "onnx_speedup": 1.3,
}
# --old-src DIR adds "old torch" rows: the torch path before the one-Colorizer redesign
# (``colorcli.pipeline`` of commit d8a228d, e.g. ``git archive d8a228d | tar -x -C DIR``), run
# in the same session, so the speed-up over it is measured side by side.


# ---------------------------------------------------------------------------------------------
# child: one configuration, timed in a fresh process


def _child(cfg: dict) -> dict:
    import numpy as np

    cores = cfg["cores"]
    if cores and hasattr(os, "sched_setaffinity"):
        avail = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, avail[:cores])

    kind, device = cfg["kind"], cfg["device"]
    if kind == "old_torch":  # colorcli as it was before the redesign (PYTHONPATH set by the parent)
        import torch

        torch.set_num_threads(cores or torch.get_num_threads())
        from colorcli import pipeline

        colorizer = pipeline.Colorizer.from_name(cfg["model"], weights=Path(cfg["weights"]), device=device,
                                                 tta=not cfg["plain"], refine=not cfg["plain"])
        colorizer.rgb_to_l = pipeline.rgb_to_l
        work = colorizer.colorize_rgb
        return _timed(cfg, colorizer, work, kind)
    if kind.endswith("torch"):
        import torch

        torch.set_num_threads(cores or torch.get_num_threads())
    from colorcli.inference import Colorizer, InferenceSettings, render

    settings = InferenceSettings(device=device, threads=cores or None, tta=not cfg["plain"], refine=not cfg["plain"])
    if kind in ("torch", "onnx", "int8"):
        colorizer = Colorizer.from_name(cfg["model"], weights=Path(cfg[{"torch": "weights"}.get(kind, kind)]),
                                        backend="torch" if kind == "torch" else "onnx", settings=settings)
        work = colorizer.colorize_rgb
    else:  # the IO floor: the same pixel steps without a network (shared by both backends)
        def work(rgb):
            L = render.rgb_to_l(rgb, threads=cores or 1)
            h, w = L.shape
            zero = render.Chroma(np.zeros((2, max(1, h // 4), max(1, w // 4)), np.float32))
            return render.recombine(L, zero, threads=cores or 1)
    return _timed(cfg, colorizer if kind in ("torch", "onnx", "int8") else None, work, kind)


def _timed(cfg: dict, colorizer, work, kind: str) -> dict:
    from colorcli.imageio import read_photo, write_image

    out = Path(cfg["out"])
    times, cpu = [], []
    for i in range(cfg["repeats"] + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        photo = read_photo(Path(cfg["image"]))
        rgb = work(photo.rgb)
        write_image(out, rgb, alpha=photo.alpha, bit_depth=photo.bit_depth, icc_profile=photo.icc_profile,
                    exif=photo.exif, overwrite=True)
        del photo, rgb
        if i:  # the first run loads kernels, sessions and caches: a warm-up
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    res = {"times": times, "cpu": cpu}
    if colorizer is not None:
        # The network alone, on this photo's network-size input (after its own warm-up above).
        photo = read_photo(Path(cfg["image"]))
        x = colorizer.network_input(colorizer.rgb_to_l(photo.rgb))
        net = []
        for _ in range(max(3, cfg["repeats"])):
            t0 = time.perf_counter()
            colorizer.predict_chroma(x)
            net.append(time.perf_counter() - t0)
        res["net"] = net
    return res


def run_child(cfg: dict, env: dict | None = None) -> dict:
    """Run one configuration in a fresh interpreter; its own peak RSS comes from wait4."""
    with tempfile.TemporaryFile("w+") as errfile:
        # stderr to a file, so a chatty child never blocks on a full pipe while we read stdout;
        # Popen.wait() would reap the child and lose its rusage, so wait4 does the waiting.
        proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(cfg)],
                                stdout=subprocess.PIPE, stderr=errfile, text=True, env=env)
        stdout = proc.stdout.read()
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        errfile.seek(0)
        stderr = errfile.read()
    if proc.returncode != 0:
        lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
        return {"error": (lines[-1] if lines else f"exit {proc.returncode}")[:160]}
    res = json.loads(stdout.strip().splitlines()[-1])
    res["rss_mb"] = usage.ru_maxrss / 1024  # Linux: kilobytes
    return res


# ---------------------------------------------------------------------------------------------
# parent: inputs, models, the table


def make_photo(path: Path, megapixels: float, seed: int = 0, aspect: float = 4 / 3) -> tuple[int, int]:
    """A grayscale JPEG of about ``megapixels`` (width / height = ``aspect``): smooth shapes plus
    film-grain noise."""
    import numpy as np
    from PIL import Image

    w = int(round(math.sqrt(megapixels * 1e6 * aspect)))
    h = int(round(w / aspect))
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = (128 + 60 * np.sin(x / w * 9) * np.cos(y / h * 7) + 40 * np.sin((x + 2 * y) / (w + h) * 25)
           + rng.normal(0, 8, (h, w)).astype(np.float32))
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)
    return w, h


def prepare_models(names: list[str], work: Path, notes: list[str], *, calibrate: Path | None = None) -> list[dict]:
    """Weights (or the flagship's random-init fallback) and an ONNX export for each model; with
    ``calibrate`` (a folder of photos) also its int8 export."""
    import torch

    from colorcli.export import export_model
    from colorcli.models import create_model
    from colorcli.weights import default_weights_path, load_weights, save_weights

    models = []
    for name in names:
        weights = default_weights_path(name)
        if weights is None:
            if name != FLAGSHIP:
                notes.append(f"{name}: skipped, no shipped weights")
                continue
            torch.manual_seed(0)
            model = create_model(name, pretrained=False)
            weights = save_weights(model, work / f"{name}-random.safetensors",
                                   training={"note": "random init, benchmark only"})
            notes.append(f"{name}: no shipped weights, random-init weights used (speed does not depend on weight values)")
        model = load_weights(weights, expect_arch=name)
        onnx = work / f"{name}.onnx"
        report = export_model(model, onnx, weights_path=weights, overwrite=True)  # scratch folder
        worst = max(d for _, d in report.parity)
        entry = {"name": name, "weights": str(weights), "onnx": str(onnx), "parity": worst}
        if calibrate is not None:
            from colorcli.quantize import export_int8

            q = export_int8(name, work / f"{name}-int8.onnx", calibrate=calibrate, weights=weights, overwrite=True)
            entry.update(int8=str(q.path), int8_diff=q.mean_abs_diff, int8_photos=q.calibrated_on)
        models.append(entry)
    return models


def _prepare(cfg: dict) -> dict:
    from colorcli.models import list_models

    work = Path(cfg["work"])
    names = cfg["names"] or [FLAGSHIP] + [n for n in list_models() if n != FLAGSHIP]
    notes: list[str] = []
    calibrate = Path(cfg["calibrate"]) if cfg.get("calibrate") else None
    models = prepare_models(names, work, notes, calibrate=calibrate)
    images = []
    for mp in cfg["sizes"]:
        p = work / f"photo-{mp:g}mp.jpg"
        images.append((mp, str(p), *make_photo(p, mp, aspect=cfg.get("aspect", 4 / 3))))
    return {"models": models, "notes": notes, "images": images, "devices": ["cpu"] + cuda_devices()}


def cuda_devices() -> list[str]:
    devices = []
    try:
        import torch

        if torch.cuda.is_available():
            devices.append("cuda")
    except ImportError:
        pass
    return devices


def fmt_row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="0.25 and 1 MP, 1 repeat (a smoke run)")
    ap.add_argument("--sizes", type=str, default=None, help="megapixels, comma-separated (default 0.25,1,4,12)")
    ap.add_argument("--aspect", type=float, default=4 / 3,
                    help="width / height of the test photos (default 4/3; --sizes 0.262144 --aspect 1 is 512x512)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per configuration (default 3)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every configuration this many times in turn, pooling the timings (default 1)")
    ap.add_argument("--cores", type=int, default=2, help="CPU cores (and threads) per child; 0: all")
    ap.add_argument("--models", type=str, default=None, help="comma-separated (default: flagship + all others)")
    ap.add_argument("--backends", type=str, default="torch,onnx,int8",
                    help="comma-separated, of torch, onnx (fp32 export), int8 (export --int8)")
    ap.add_argument("--calibrate", type=Path, default=Path(__file__).resolve().parents[1] / "examples",
                    help="photos to calibrate the int8 export on (default: the repository's examples/)")
    ap.add_argument("--format", choices=("jpg", "png"), default="jpg", help="output format")
    ap.add_argument("--plain", action="store_true",
                    help="colorize as with --no-tta --no-refine (default: colorize's defaults, both on)")
    ap.add_argument("--old-src", type=Path, default=None,
                    help="a checkout of colorcli before the redesign (commit d8a228d): adds its torch path as 'old torch'")
    ap.add_argument("--old-weights", type=str, action="append", default=[], metavar="NAME=FILE",
                    help="weights the old path loads for NAME (default: the same file as the new path); "
                         "for files whose config has settings the old code does not know, e.g. "
                         "`git show 747fcc7:weights/mcl.safetensors` (same network, no neutral gate)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep inputs and exports here")
    ap.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--prepare", type=str, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return
    if args.prepare:
        print(json.dumps(_prepare(json.loads(args.prepare))))
        return

    sizes = [float(s) for s in (args.sizes or ("0.25,1" if args.quick else "0.25,1,4,12")).split(",")]
    repeats = args.repeats or (1 if args.quick else 3)
    names = args.models.split(",") if args.models else None
    backends = args.backends.split(",")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="colorcli-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    load0 = os.getloadavg()
    t_start = time.time()
    # Models, exports and photos are made in a child: a process's peak RSS starts from its
    # parent's at fork, so this process must stay small for the children's figures to be theirs.
    prep = subprocess.run([sys.executable, __file__, "--prepare", json.dumps(
        {"names": names, "work": str(work), "sizes": sizes, "aspect": args.aspect,
         "calibrate": str(args.calibrate) if "int8" in backends else None})], stdout=subprocess.PIPE, text=True)
    if prep.returncode != 0:
        sys.exit("preparing models and photos failed (see above)")
    prepared = json.loads(prep.stdout.strip().splitlines()[-1])
    models, devices, notes = prepared["models"], prepared["devices"], prepared["notes"]
    if not models:
        sys.exit("no model to benchmark")
    images = {float(mp): (Path(p), w, h) for mp, p, w, h in prepared["images"]}

    old_weights = dict(spec.split("=", 1) for spec in args.old_weights)
    flagship = next(m for m in models if m["name"] == FLAGSHIP) if any(m["name"] == FLAGSHIP for m in models) else models[0]
    rows = []  # (mp, device, model, backend, result)
    for mp in sizes:
        path, w, h = images[mp]
        for device in devices:
            configs = [("IO floor", "-", {"kind": "floor", "onnx": flagship["onnx"]})]
            for m in models:
                if args.old_src is not None:
                    configs.append((m["name"], "old torch", {"kind": "old_torch", "model": m["name"],
                                                             "weights": old_weights.get(m["name"], m["weights"])}))
                for b in backends:
                    configs.append((m["name"], b, {"kind": b, "model": m["name"], "weights": m["weights"], "onnx": m["onnx"],
                                                   "int8": m.get("int8")}))
            # --rounds: every configuration runs once per round, in turn, and its timings are
            # pooled: a machine whose speed drifts (other tenants, clocks) slows every row alike,
            # so the ratios between rows hold better than with one configuration after another.
            pooled: dict[int, dict] = {}
            for rnd in range(args.rounds):
                for i, (label, backend, cfg) in enumerate(configs):
                    cfg = {**cfg, "device": device, "image": str(path), "repeats": repeats, "cores": args.cores,
                           "plain": args.plain,
                           "out": str(work / f"out-{os.getpid()}.{args.format}")}
                    env = None
                    if backend == "old torch":
                        env = {**os.environ, "PYTHONPATH": str(args.old_src.resolve() / "src")}
                    res = run_child(cfg, env)
                    print(f"  round {rnd + 1}: {mp:g} MP {device} {label} {backend}: "
                          + (res["error"] if "error" in res else f"{statistics.median(res['times']):.3f} s"),
                          file=sys.stderr, flush=True)
                    have = pooled.setdefault(i, res)
                    if have is res or "error" in have:
                        continue
                    if "error" in res:
                        pooled[i] = res
                        continue
                    for key in ("times", "cpu", "net"):
                        if key in res:
                            have[key] = have[key] + res[key]
                    have["rss_mb"] = max(have["rss_mb"], res["rss_mb"])
            for i, (label, backend, _) in enumerate(configs):
                rows.append((mp, device, label, backend, pooled[i]))

    # ---- table
    # One floor per size: both backends share the pixel code.
    floor = {(mp, d, b): statistics.median(r["times"]) for mp, d, lab, _, r in rows
             if lab == "IO floor" and "times" in r for b in backends}
    # CPU s: CPU time of all the child's threads per image; less disturbed by other load than
    # wall time, and about (wall s x cores) on an idle machine when all cores are busy.
    # net s: the network alone (median), on the network-size input of that photo (two passes
    # with mirror averaging).
    header = ["MP", "device", "model", "backend", "s/image", "min s", "CPU s", "x floor", "net s", "peak RSS MB"]
    table = []
    for mp, d, lab, b, r in rows:
        if "error" in r:
            table.append([f"{mp:g}", d, lab, b, "error", "", "", "", "", r["error"]])
            continue
        med = statistics.median(r["times"])
        ratio = "" if lab == "IO floor" or (mp, d, b) not in floor else f"{med / floor[(mp, d, b)]:.2f}"
        table.append([f"{mp:g}", d, lab, b, f"{med:.3f}", f"{min(r['times']):.3f}",
                      f"{statistics.median(r['cpu']):.3f}", ratio,
                      f"{statistics.median(r['net']):.3f}" if "net" in r else "", f"{r['rss_mb']:.0f}"])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *table)]
    print(f"colorcli end-to-end colorize: {args.cores or 'all'} CPU core(s), {repeats} timed run(s) after 1 warm-up"
          + (f", x {args.rounds} interleaved rounds" if args.rounds > 1 else "") + ", "
          f"grayscale JPEG in, {args.format} out, "
          + ("--no-tta --no-refine" if args.plain else "mirror averaging and refinement on (the defaults)"))
    print(fmt_row(header, widths))
    print(fmt_row(["-" * w for w in widths], widths))
    for row in table:
        print(fmt_row(row, widths))

    # ---- targets (flagship, CPU)
    def med(mp, d, lab, b):
        for r in rows:
            if r[:4] == (mp, d, lab, b) and "times" in r[4]:
                return statistics.median(r[4]["times"]), r[4]["rss_mb"], statistics.median(r[4].get("net", [0]))
        return None

    print()
    print(f"targets, flagship {flagship['name']} on the CPU:")
    for b in backends:
        one = med(1.0, "cpu", flagship["name"], b)
        if one and (1.0, "cpu", b) in floor:
            ok = one[0] <= TARGETS["1mp_seconds"] and one[0] <= TARGETS["1mp_floor_ratio"] * floor[(1.0, "cpu", b)]
            print(f"  1 MP {b}: {one[0]:.3f} s (<= {TARGETS['1mp_seconds']} s), {one[0] / floor[(1.0, 'cpu', b)]:.2f}x "
                  f"floor (<= {TARGETS['1mp_floor_ratio']}x): {'met' if ok else 'NOT met'}")
        big = med(12.0, "cpu", flagship["name"], b)
        if big:
            ok = big[0] <= TARGETS["12mp_seconds"] and big[1] <= TARGETS["12mp_rss_mb"]
            print(f"  12 MP {b}: {big[0]:.3f} s (<= {TARGETS['12mp_seconds']} s), {big[1]:.0f} MB peak "
                  f"(<= {TARGETS['12mp_rss_mb']} MB): {'met' if ok else 'NOT met'}")
    for mp in sizes:
        old = med(mp, "cpu", flagship["name"], "old torch")
        for b in backends:
            new = med(mp, "cpu", flagship["name"], b)
            if old and new:
                x = old[0] / new[0]
                print(f"  {mp:g} MP {b} vs the old torch path: {x:.2f}x faster end to end "
                      f"(>= {TARGETS['onnx_speedup']}x): {'met' if x >= TARGETS['onnx_speedup'] else 'NOT met'}")
        t, o = med(mp, "cpu", flagship["name"], "torch"), med(mp, "cpu", flagship["name"], "onnx")
        if t and o:
            s, n = t[0] / o[0], t[2] / o[2]
            print(f"  {mp:g} MP onnxruntime vs torch: {s:.2f}x faster end to end, {n:.2f}x the network alone "
                  f"(>= {TARGETS['onnx_speedup']}x): {'met' if s >= TARGETS['onnx_speedup'] else 'NOT met'} end to end, "
                  f"{'met' if n >= TARGETS['onnx_speedup'] else 'NOT met'} network")
        o, q = med(mp, "cpu", flagship["name"], "onnx"), med(mp, "cpu", flagship["name"], "int8")
        if o and q:
            print(f"  {mp:g} MP int8 vs fp32 onnx: {o[0] / q[0]:.2f}x faster end to end, {o[2] / q[2]:.2f}x the network alone")
    for m in models:
        print(f"  {m['name']}: ONNX parity max |Δchroma| {m['parity']:.1e}"
              + (f"; int8 mean |Δchroma| against fp32 {m['int8_diff']:.2f} on its {m['int8_photos']} calibration photos"
                 if "int8" in m else ""))
    import resource

    parent_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    notes.append(f"peak RSS of a child counts from this script's own {parent_mb:.0f} MB at fork")
    load1 = os.getloadavg()
    print()
    for n in notes:
        print(f"note: {n}")
    print(f"note: load average {load0[0]:.2f} at start, {load1[0]:.2f} at end on {os.cpu_count()} CPU(s); "
          f"figures taken while other processes use the CPU are slower than on an idle machine")
    print(f"note: {time.time() - t_start:.0f} s in all; inputs and exports in {work}")


if __name__ == "__main__":
    main()
