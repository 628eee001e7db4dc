"""RNC ProPack method-1 decoder: round trips through a small test-side packer, checksums,
truncation, and (where the game is installed) a real Beneath a Steel Sky clip.

The packer below writes the format as the decoder's docstring states it (LSB-first 16-bit
words fetched only when a bit is needed, literal bytes between them, canonical Huffman codes
stored bit-reversed), with tables the test chooses and a greedy LZ77 parse. Its CRC is a
bitwise reference implementation, independent of the decoder's table-driven one.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from hifi_tse.data.sources import rnc
from hifi_tse.data.sources.base import search_prefixes

FLAT = [4] * 16  # a complete code: 16 symbols of 4 bits
# A complete code whose short codes are not the first symbols (canonical order matters).
SKEWED = [4, 4, 2, 3, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5]
MAX_VALUE = (1 << 15) - 1  # symbol 15 is the largest: values below 2 ** 15


def crc16_reference(data: bytes) -> int:
    """CRC-16/ARC, one bit at a time."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


class BitWriter:
    """Writes bits LSB first into 16-bit LE words reserved when their first bit is written;
    raw bytes go at the end of the output (between words)."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.word_at = 0
        self.used = 16  # bits used in the current word (16: none open)

    def bit(self, b: int) -> None:
        if self.used == 16:
            self.word_at, self.used = len(self.out), 0
            self.out += b"\0\0"
        if b:
            self.out[self.word_at + self.used // 8] |= 1 << (self.used % 8)
        self.used += 1

    def bits(self, value: int, n: int) -> None:
        for k in range(n):
            self.bit(value >> k & 1)

    def raw(self, data: bytes) -> None:
        self.out += data


def canonical_codes(lengths: list[int]) -> dict[int, tuple[int, int]]:
    """Symbol → (code, length), codes assigned shortest first, then by symbol."""
    codes, code = {}, 0
    for length in range(1, 17):
        for symbol, n in enumerate(lengths):
            if n == length:
                codes[symbol] = (code >> (16 - length), length)
                code += 1 << (16 - length)
    return codes


def write_value(w: BitWriter, codes: dict[int, tuple[int, int]], value: int) -> None:
    symbol = value if value < 2 else value.bit_length()
    code, length = codes[symbol]
    for k in range(length - 1, -1, -1):  # the code's first bit is its most significant
        w.bit(code >> k & 1)
    if symbol >= 2:
        w.bits(value - (1 << (symbol - 1)), symbol - 1)


def greedy_tokens(data: bytes, window: int = 4096) -> list[tuple[bytes, tuple[int, int] | None]]:
    """(literal run, (distance, length) or None) tokens of a greedy LZ77 parse."""
    tokens, run, i = [], bytearray(), 0
    while i < len(data):
        best = (0, 0)
        for start in range(max(0, i - window), i):
            n = 0
            while i + n < len(data) and data[start + n] == data[i + n] and n < 300:
                n += 1  # data[start + n] may run into the match itself: overlapping copy
            if n > best[1]:
                best = (i - start, n)
        if best[1] >= 3:
            tokens.append((bytes(run), best))
            run, i = bytearray(), i + best[1]
        else:
            run.append(data[i])
            i += 1
    tokens.append((bytes(run), None))
    return tokens


def pack(
    data: bytes,
    tokens: list[tuple[bytes, tuple[int, int] | None]],
    blocks: list[int],
    tables: list[tuple[list[int] | None, list[int] | None, list[int] | None]],
) -> bytes:
    """An RNC method-1 buffer: ``blocks`` token counts (summing to ``len(tokens)``), each
    block with its (literal, distance, length) code lengths (None: keep the previous)."""
    w, at = BitWriter(), 0
    w.bits(0, 2)
    codes: list[dict[int, tuple[int, int]]] = [{}, {}, {}]
    for count, block_tables in zip(blocks, tables):
        for k, lengths in enumerate(block_tables):
            if lengths is None:
                w.bits(0, 5)
                continue
            w.bits(len(lengths), 5)
            for n in lengths:
                w.bits(n, 4)
            codes[k] = canonical_codes(lengths)
        w.bits(count, 16)
        for j, (run, match) in enumerate(tokens[at : at + count]):
            write_value(w, codes[0], len(run))
            w.raw(run)
            if j + 1 < count:
                assert match is not None, "a block's inner token needs a match"
                write_value(w, codes[1], match[0] - 1)
                write_value(w, codes[2], match[1] - 2)
        at += count
    body = bytes(w.out)
    header = b"RNC\x01" + len(data).to_bytes(4, "big") + len(body).to_bytes(4, "big")
    header += crc16_reference(data).to_bytes(2, "big") + crc16_reference(body).to_bytes(2, "big")
    return header + bytes([0, len(blocks)]) + body


def pack_literals(data: bytes) -> bytes:
    """``data`` packed as one literal run (flat tables)."""
    return pack(data, [(data, None)], [1], [(FLAT, FLAT, FLAT)])


def repetitive(seed: int = 0) -> bytes:
    rng = random.Random(seed)
    words = [b"steel ", b"sky ", b"beneath ", b"a ", b"foster ", b"joey "]
    text = b"".join(rng.choice(words) for _ in range(200))
    return text + b"z" * 40 + bytes(rng.randrange(256) for _ in range(100))


@pytest.mark.parametrize("size", [0, 1, 7, 1023, 1024, 1025, 5000])
def test_crc16_matches_the_bitwise_reference(size: int) -> None:
    data = bytes(random.Random(size).randrange(256) for _ in range(size))
    assert rnc.crc16(data) == crc16_reference(data)


def test_literal_run_round_trips() -> None:
    data = bytes(random.Random(1).randrange(256) for _ in range(300))
    assert rnc.unpack(pack_literals(data)) == data


def test_matches_over_two_blocks_round_trip() -> None:
    data = repetitive()
    tokens = greedy_tokens(data)
    assert sum(m is not None for _, m in tokens) > 20  # the parse really has matches
    assert any(m is not None and m[0] < m[1] for _, m in tokens)  # and an overlapping copy
    split = len(tokens) // 2
    run, match = tokens[split - 1]
    # Block 1 ends on a token without a match; its match opens block 2 (empty literal run).
    tokens = tokens[: split - 1] + [(run, None), (b"", match)] + tokens[split:]
    packed = pack(data, tokens, [split, len(tokens) - split],
                  [(FLAT, SKEWED, FLAT), (SKEWED, None, SKEWED)])  # fmt: skip
    assert len(packed) < len(data)
    assert rnc.unpack(packed) == data


def test_a_flipped_byte_fails_the_checksum() -> None:
    packed = bytearray(pack_literals(b"hello, steel sky" * 8))
    packed[rnc.HEADER_BYTES + 5] ^= 0x10
    with pytest.raises(rnc.RncError, match="packed-data checksum"):
        rnc.unpack(bytes(packed))


def test_a_wrong_unpacked_checksum_is_caught() -> None:
    packed = bytearray(pack_literals(b"hello, steel sky" * 8))
    packed[12] ^= 0x01  # the stated CRC of the unpacked data
    with pytest.raises(rnc.RncError, match="unpacked-data checksum"):
        rnc.unpack(bytes(packed))


def test_truncated_and_foreign_data_raise_one_line() -> None:
    packed = pack_literals(b"abc" * 50)
    with pytest.raises(rnc.RncError, match="truncated") as info:
        rnc.unpack(packed[:-10])
    assert "\n" not in str(info.value)
    with pytest.raises(rnc.RncError, match="not RNC method-1"):
        rnc.unpack(b"RIFF" + packed[4:])
    assert rnc.is_packed(packed) and not rnc.is_packed(b"RNC\x02")


def test_a_real_steel_sky_clip_decodes_with_checksums_verified() -> None:
    from hifi_tse.data.sources import steel_sky

    root = steel_sky.find(search_prefixes(Path(__file__).resolve().parents[1] / "data/real-voices"))
    if root is None:
        pytest.skip("beneath-a-steel-sky is not installed (make real-voices)")
    index = steel_sky.read_index(str(root / steel_sky.INDEX_NAME))
    entry = index[steel_sky.speech_numbers(root)[0]]
    with open(root / steel_sky.DISK_NAME, "rb") as f:
        f.seek(entry.offset)
        raw = f.read(entry.size)
    packed = raw[steel_sky.FILE_HEADER_BYTES :]
    assert rnc.is_packed(packed)
    audio = rnc.unpack(packed)  # raises on either checksum
    assert len(audio) == int.from_bytes(packed[4:8], "big") > 1000
