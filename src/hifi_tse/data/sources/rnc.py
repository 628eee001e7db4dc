"""Rob Northen Computing (RNC) ProPack method 1 decompression, with both checksums verified.

Beneath a Steel Sky stores most of its speech clips packed this way. The format, as read
from ScummVM's player (``engines/sky/rnc_deco.cpp``) and checked against the installed game
data (every packed speech clip decodes with both checksums right):

* an 18-byte header: ``b"RNC\\x01"``, unpacked size (u32 big-endian), packed size (u32 BE),
  CRC-16 of the unpacked data (u16 BE), CRC-16 of the packed data (u16 BE), a "leeway" byte
  (only for in-place unpacking; unused here) and the number of blocks (u8);
* the packed data: 16-bit little-endian words read least significant bit first, a word
  fetched only when a bit is needed and none is left, with raw literal bytes placed between
  the words (at the read position of the next word). The first two bits are flags that the
  player ignores (so does this decoder; an encrypted file fails the unpacked checksum);
* per block: three Huffman tables (literal-run lengths, match distances, match lengths), each
  a 5-bit code count and 4-bit code lengths, codes assigned canonically (shorter first, then
  by symbol) and stored bit-reversed; a table with count 0 keeps the previous block's; then a
  16-bit token count. A token is a literal run (a length, then that many raw bytes) followed,
  except for a block's last token, by a match: distance ``value + 1`` and length
  ``value + 2`` bytes copied from the output (copies may overlap);
* a decoded symbol ``s`` stands for 0 or 1 itself, and for ``s >= 2`` for
  ``2 ** (s - 1)`` plus ``s - 1`` further bits;
* the checksums are CRC-16/ARC: reflected polynomial 0xA001, initial value 0, no final xor.
"""

from __future__ import annotations

import numpy as np

from hifi_tse.errors import UserError

SIGNATURE = b"RNC\x01"
HEADER_BYTES = 18
_BLOCKS_AT = 17  # header byte holding the number of blocks
CRC_POLY = 0xA001  # CRC-16/ARC, reflected form of 0x8005
FLAG_BITS = 2  # leading bits of the stream, ignored
COUNT_BITS = 5  # bits of a table's code count
LENGTH_BITS = 4  # bits of each code length
TOKEN_COUNT_BITS = 16  # bits of a block's token count
MAX_CODES = 16  # symbols a table can hold (a value needs at most 15 + 1 bits)
MIN_MATCH = 2  # a match's length is its value plus this
_WORD_BITS = 16
_CRC_CHUNK = 1024  # bytes per row of the vectorised CRC (see crc16)


class RncError(UserError):
    """An RNC buffer that is not method 1, is truncated, or fails a checksum."""


def _crc_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ CRC_POLY, table >> 1)
    return table.astype(np.uint16)


_CRC_TABLE = _crc_table()


def _zero_shift_tables(count: int) -> tuple[np.ndarray, np.ndarray]:
    """The CRC state after ``count`` zero bytes, as two 256-entry tables (low, high byte).

    CRC-16/ARC with initial value 0 is linear over GF(2) in its state, so the map is
    ``low[s & 0xFF] ^ high[s >> 8]``.
    """
    states = np.arange(256, dtype=np.uint16)
    out = []
    for start in (states, states << 8):
        s = start.astype(np.uint16)
        for _ in range(count):
            s = _CRC_TABLE[s & 0xFF] ^ (s >> 8)
        out.append(s)
    return out[0], out[1]


_SHIFT_LOW, _SHIFT_HIGH = _zero_shift_tables(_CRC_CHUNK)


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/ARC of ``data`` (reflected polynomial 0xA001, initial 0, no final xor).

    Vectorised: the data is cut into rows of ``_CRC_CHUNK`` bytes, every row's CRC is run at
    once column by column, and the rows are chained with the zero-byte shift (with initial
    value 0, leading zero bytes leave the CRC unchanged, so the data is zero-padded in front).
    """
    buf = np.frombuffer(bytes(data), dtype=np.uint8)
    if buf.size == 0:
        return 0
    rows = -(-buf.size // _CRC_CHUNK)
    padded = np.zeros(rows * _CRC_CHUNK, dtype=np.uint8)
    padded[padded.size - buf.size :] = buf
    block = padded.reshape(rows, _CRC_CHUNK)
    state = np.zeros(rows, dtype=np.uint16)
    for col in range(_CRC_CHUNK):
        state = _CRC_TABLE[(state ^ block[:, col]) & 0xFF] ^ (state >> 8)
    crc = 0
    for row_crc in state.tolist():
        crc = int(_SHIFT_LOW[crc & 0xFF] ^ _SHIFT_HIGH[crc >> 8]) ^ row_crc
    return crc


class _BitReader:
    """LSB-first reader over 16-bit little-endian words with raw bytes between them."""

    def __init__(self, data: bytes, start: int, end: int) -> None:
        self.data = data
        self.pos = start  # where the next word (or literal byte) is read
        self.end = end
        self.bits = 0  # unread bits of the current word, lowest first
        self.count = 0

    def _word(self, at: int) -> int:
        return int.from_bytes(self.data[at : at + 2].ljust(2, b"\0"), "little")

    def peek(self, n: int) -> int:
        """The next ``n <= 16`` bits without consuming them (zeros past the end)."""
        look = self.bits
        if self.count < n:
            look |= self._word(self.pos) << self.count
        return look & ((1 << n) - 1)

    def read(self, n: int) -> int:
        """Consume ``n <= 16`` bits."""
        if self.count < n:
            if self.pos >= self.end:
                raise RncError("RNC data truncated: the bit stream runs past the packed data")
            self.bits |= self._word(self.pos) << self.count
            self.pos += 2
            self.count += _WORD_BITS
        value = self.bits & ((1 << n) - 1)
        self.bits >>= n
        self.count -= n
        return value

    def raw(self, n: int) -> bytes:
        """``n`` literal bytes at the read position."""
        if self.pos + n > self.end:
            raise RncError("RNC data truncated: a literal run passes the packed data's end")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out


class _Huffman:
    """A decoding table: the next ``width`` bits index (symbol, code length)."""

    def __init__(self, lengths: list[int]) -> None:
        used = [(n, s) for s, n in enumerate(lengths) if n]
        if not used:
            raise RncError("RNC data corrupt: a Huffman table has no codes")
        self.width = max(n for n, _ in used)
        self.symbols = np.full(1 << self.width, -1, dtype=np.int16)
        self.lengths = np.zeros(1 << self.width, dtype=np.int8)
        code = 0  # canonical code, MSB-aligned in 16 bits
        entries = []
        for length, symbol in sorted(used):
            prefix = code >> (_WORD_BITS - length)
            reversed_code = int(f"{prefix:0{length}b}"[::-1], 2) if length else 0
            entries.append((reversed_code, length, symbol))
            code += 1 << (_WORD_BITS - length)
        # Filled longest first, so a shorter code wins any clash, as the player's first-match
        # search over codes sorted by length does.
        for reversed_code, length, symbol in reversed(entries):
            index = reversed_code + (np.arange(1 << (self.width - length)) << length)
            self.symbols[index] = symbol
            self.lengths[index] = length

    def value(self, reader: _BitReader) -> int:
        """Decode one symbol and its extra bits into a value."""
        index = reader.peek(self.width)
        symbol = int(self.symbols[index])
        if symbol < 0:
            raise RncError("RNC data corrupt: a bit pattern matches no Huffman code")
        reader.read(int(self.lengths[index]))
        if symbol < 2:
            return symbol
        return (1 << (symbol - 1)) | reader.read(symbol - 1)


def _read_table(reader: _BitReader, previous: _Huffman | None) -> _Huffman | None:
    count = reader.read(COUNT_BITS)
    if count == 0:
        return previous
    if count > MAX_CODES:
        raise RncError(f"RNC data corrupt: a Huffman table of {count} codes (at most 16)")
    return _Huffman([reader.read(LENGTH_BITS) for _ in range(count)])


def _copy_match(out: bytearray, distance: int, length: int) -> None:
    if distance > len(out):
        raise RncError(f"RNC data corrupt: a match {distance} bytes back in {len(out)} bytes")
    start = len(out) - distance
    if distance >= length:
        out += out[start : start + length]
    else:  # overlapping: the last `distance` bytes repeat
        pattern = bytes(out[start:])
        out += (pattern * (length // distance + 1))[:length]


def _header(data: bytes) -> tuple[int, int, int, int, int]:
    if len(data) < HEADER_BYTES or data[:4] != SIGNATURE:
        raise RncError(f"not RNC method-1 data (starts {data[:4]!r}, expected {SIGNATURE!r})")
    unpacked = int.from_bytes(data[4:8], "big")
    packed = int.from_bytes(data[8:12], "big")
    crc_unpacked = int.from_bytes(data[12:14], "big")
    crc_packed = int.from_bytes(data[14:16], "big")
    blocks = data[_BLOCKS_AT]
    if len(data) < HEADER_BYTES + packed:
        raise RncError(
            f"RNC data truncated: {len(data) - HEADER_BYTES} packed bytes, header says {packed}"
        )
    if blocks == 0:
        raise RncError("RNC data corrupt: header says 0 blocks")
    return unpacked, packed, crc_unpacked, crc_packed, blocks


def is_packed(data: bytes) -> bool:
    """Whether ``data`` starts with the RNC method-1 signature."""
    return bytes(data[: len(SIGNATURE)]) == SIGNATURE


def unpack(data: bytes) -> bytes:
    """Unpack one RNC method-1 buffer; raises :class:`RncError` (one line) when it is not RNC
    method 1, is truncated, or fails either CRC-16 checksum. Bytes after the packed data are
    ignored."""
    data = bytes(data)
    unpacked, packed, crc_unpacked, crc_packed, blocks = _header(data)
    end = HEADER_BYTES + packed
    if crc16(data[HEADER_BYTES:end]) != crc_packed:
        raise RncError("RNC packed-data checksum mismatch (corrupt or truncated)")
    reader = _BitReader(data, HEADER_BYTES, end)
    reader.read(FLAG_BITS)
    out = bytearray()
    raw = dist = length = None
    for _ in range(blocks):
        raw = _read_table(reader, raw)
        dist = _read_table(reader, dist)
        length = _read_table(reader, length)
        tokens = reader.read(TOKEN_COUNT_BITS)
        if tokens == 0 or raw is None:
            raise RncError("RNC data corrupt: a block without tokens or literal table")
        for token in range(tokens):
            run = raw.value(reader)
            if run:
                out += reader.raw(run)
            if token + 1 < tokens:
                if dist is None or length is None:
                    raise RncError("RNC data corrupt: a match before any match tables")
                _copy_match(out, dist.value(reader) + 1, length.value(reader) + MIN_MATCH)
            if len(out) > unpacked:
                raise RncError(f"RNC data corrupt: output passes the stated {unpacked} bytes")
    if len(out) != unpacked:
        raise RncError(f"RNC data corrupt: {len(out)} bytes unpacked, header says {unpacked}")
    if crc16(out) != crc_unpacked:
        raise RncError("RNC unpacked-data checksum mismatch")
    return bytes(out)
