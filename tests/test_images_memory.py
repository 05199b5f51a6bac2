"""Memory per upload is bounded before decoding: an image whose decode would take more than
MAX_DECODE_BYTES is refused from its header alone, and the bytes-per-pixel table that decides it is an
upper bound of what decoding takes (measured in a fresh process: its peak RSS over the baseline)."""

import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from inversion.errors import ImageError
from inversion.images import MAX_DECODE_BYTES, WORKING_BYTES, load_image


def png_header_only(width: int, height: int, bit_depth: int, colour_type: int) -> bytes:
    """A PNG that declares its size and mode and holds no pixels: PIL reads the header, nothing more."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_a_49_megapixel_16_bit_png_is_refused_before_decoding():
    data = png_header_only(7000, 7000, 16, 0)  # 16-bit greyscale, the 111 KB upload
    assert Image.open(__import__("io").BytesIO(data)).mode == "I;16"
    with pytest.raises(ImageError, match=r"7000x7000 in mode I;16: reading it takes about \d+ MB, more than the 512 MB"):
        load_image(data, name="the upload")
    # the same pixels in 8-bit RGB fit the pixel cap but not the byte budget either, and say so
    with pytest.raises(ImageError, match="mode RGB"):
        load_image(png_header_only(7000, 7000, 8, 2), name="the upload")
    side = int((MAX_DECODE_BYTES / WORKING_BYTES["RGB"]) ** 0.5) - 8  # just inside the budget: not refused for size
    with pytest.raises(ImageError, match="damaged or truncated"):  # (it has no pixels, so it fails later, not for its size)
        load_image(png_header_only(side, side, 8, 2), name="the upload")


MEASURE = """
import os, resource, sys
from inversion.images import load_image  # imported once; each measurement runs in a forked child
for path in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        load_image(path)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024, flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
"""


def test_the_bytes_per_pixel_table_bounds_what_decoding_takes(tmp_path):
    rng = np.random.default_rng(0)
    h = w = 1400  # 2 MP: large enough that the decode dominates the measurement
    modes = ["RGB", "RGBA", "I;16", "P"]
    paths = []
    for mode in modes:
        if mode == "I;16":
            img = Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
        else:
            img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode)
        paths.append(str(tmp_path / f"{len(paths)}.png"))
        img.save(paths[-1])
    out = subprocess.run([sys.executable, "-c", MEASURE, *paths], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    peaks = [int(v) for v in out.stdout.split()]
    assert len(peaks) == len(modes)
    for mode, peak in zip(modes, peaks):
        assert 0 < peak <= WORKING_BYTES[mode] * h * w, (mode, peak / (h * w))
