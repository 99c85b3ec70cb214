#!/usr/bin/env python3
"""Writes the hostile batch of bench/hostile.sh into DIR: one sub-folder per pipeline.

No imaging library needed: PNGs are built from zlib and CRC-32, the JPEGs are the shipped
samples with patched headers. Each folder name says what its files should do.
"""
import os
import struct
import sys
import zlib


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(w: int, h: int, row: bytes = b"", declared=None) -> bytes:
    """An RGB PNG of w x h whose rows are `row` (zeros by default); `declared` overrides the
    size written in IHDR (the body stays w x h)."""
    dw, dh = declared or (w, h)
    raw = (b"\x00" + (row or bytes(3 * w))) * h
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", dw, dh, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def patched_sof(jpeg: bytes, w: int, h: int) -> bytes:
    i = jpeg.index(b"\xff\xc0")
    return jpeg[: i + 5] + struct.pack(">HH", h, w) + jpeg[i + 9 :]


def crafted(jpeg: bytes) -> bytes:
    """Issue 8's file: SOI, RST0, an APP1 of length 0xFFFF holding a fake 64x64 SOF, then
    the real SOF patched to 65500 x 65500."""
    fake = b"\xff\xc0\x00\x11\x08\x00\x40\x00\x40\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    app1 = b"\xff\xe1\xff\xff" + fake + bytes(0xFFFF - 2 - len(fake))
    real = patched_sof(jpeg, 65500, 65500)
    return real[:2] + b"\xff\xd0" + app1 + real[2:]


def main() -> None:
    out, samples = sys.argv[1], sys.argv[2]
    coffee = open(os.path.join(samples, "coffee.jpg"), "rb").read()

    def put(folder: str, name: str, data: bytes) -> None:
        os.makedirs(os.path.join(out, folder), exist_ok=True)
        with open(os.path.join(out, folder, name), "wb") as f:
            f.write(data)

    # thumbnail:256 -- crafted headers (refused from the header), a real 100 MP PNG (a
    # decompression bomb of a few hundred KB that is a valid image: decoded under the
    # budget), good photos.
    put("thumb", "crafted-rst-app1.jpg", crafted(coffee))
    put("thumb", "sof-30000.jpg", patched_sof(coffee, 30000, 30000))
    put("thumb", "ihdr-lies.png", png(8, 8, declared=(12000, 9000)))
    put("thumb", "bomb-10000x10000.png", png(10000, 10000))
    for name in sorted(os.listdir(samples)):
        if name.endswith(".jpg"):
            put("thumb", name, open(os.path.join(samples, name), "rb").read())
    # resize:16384:16384:fill,blur:1 -- four 8x8 PNGs, each about 2.4 GB of work.
    for k in range(4):
        put("upscale", f"tiny{k}.png", png(8, 8, row=bytes([k * 40, 9, 9]) * 8))
    # rotate:45 -- 50000 x 999 would become 36062 x 36062: refused before decoding.
    put("rotate", "wide-50000x999.png", png(50000, 999))
    # 24 x blur:80 -- minutes of work on 3000 x 2000: stopped by the job time limit.
    put("slow", "slow-3000x2000.png", png(3000, 2000, row=bytes(range(256)) * (3 * 3000 // 256) + bytes(3 * 3000 % 256)))


if __name__ == "__main__":
    main()
