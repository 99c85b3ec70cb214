#!/usr/bin/env python3
"""In-process libvips side of bench/compare.sh (the counterpart of pixq's kbench).

    vips_bench.py --scenario P1|P2|P3 [--rounds N] [--warmup K] [--size 1024]
                  [--brightness 10] [--contrast 1.2] FILE...

For each file, `rounds` times: load, process, encode to a memory buffer (the
output is discarded). Prints one line `images_per_sec=<float>` on stdout, the
same format as kbench, and details on stderr. Process start-up, Python and
pyvips import, and the untimed warm-up rounds are not counted.

Scenarios (kept in step with the kbench pipelines in compare.sh):
  P1  thumbnail: pyvips.Image.thumbnail(file, size) -- shrink-on-load, Lanczos3,
      longest side `size`, like vipsthumbnail -- then JPEG q85 4:2:0.
  P2  filter chain: colourspace b-w (1 band uchar), gaussblur sigma 2, sobel
      (uchar in -> uchar out in libvips 8.14), 8-bit grey PNG, zlib level 6,
      filter='all' (libpng's adaptive per-row filter choice; the libvips 8.14
      default is 'none').
  P3  full resolution: rot d90, linear(contrast, 128*(1-contrast)+brightness)
      with uchar=True (rounds and clips to 0..255), JPEG q85 4:2:0.

libvips is kept to one thread (VIPS_CONCURRENCY=1, set before pyvips is
imported) and its operation cache is turned off, so each round does the full
work again.
"""
import argparse
import os
import sys
import time

os.environ.setdefault("VIPS_CONCURRENCY", "1")
import pyvips  # noqa: E402  (must come after VIPS_CONCURRENCY is set)


def p1(path, a):
    im = pyvips.Image.thumbnail(path, a.size, height=a.size)
    return im.jpegsave_buffer(Q=85, subsample_mode="on", strip=True)


def p2(path, a):
    im = pyvips.Image.new_from_file(path, access="sequential")
    g = im.colourspace("b-w")
    if g.bands > 1:  # b-w of an image with alpha keeps the alpha band
        g = g.extract_band(0)
    e = g.gaussblur(2).sobel()
    if e.format != "uchar":
        e = e.cast("uchar")
    return e.pngsave_buffer(compression=6, filter="all", strip=True)


def p3(path, a):
    # rot needs random access, so no access="sequential" here
    im = pyvips.Image.new_from_file(path)
    c = a.contrast
    out = im.rot("d90").linear(c, 128.0 * (1.0 - c) + a.brightness, uchar=True)
    return out.jpegsave_buffer(Q=85, subsample_mode="on", strip=True)


SCENARIOS = {"P1": p1, "P2": p2, "P3": p3}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=0,
                    help="untimed rounds before the timed ones")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--brightness", type=float, default=10.0)
    ap.add_argument("--contrast", type=float, default=1.2)
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()

    pyvips.cache_set_max(0)
    pyvips.cache_set_max_mem(0)
    pyvips.cache_set_max_files(0)
    pyvips.concurrency_set(int(os.environ["VIPS_CONCURRENCY"]))

    fn = SCENARIOS[a.scenario]
    for _ in range(a.warmup):
        for f in a.files:
            fn(f, a)

    out_bytes = 0
    t0 = time.perf_counter()
    for _ in range(a.rounds):
        for f in a.files:
            out_bytes += len(fn(f, a))
    dt = time.perf_counter() - t0
    n = a.rounds * len(a.files)
    print(f"vips_bench: {a.scenario} libvips {pyvips.version(0)}.{pyvips.version(1)}."
          f"{pyvips.version(2)} threads={pyvips.concurrency_get()} images={n} "
          f"seconds={dt:.3f} avg_out_bytes={out_bytes // max(n, 1)}", file=sys.stderr)
    print(f"images_per_sec={n / dt:.4f}")


if __name__ == "__main__":
    main()
