"""The backup container: a ustar tar stream in one zstd frame, sealed by a checksum trailer.

An archive file is, byte for byte:

1. one zstd frame, written with its content checksum, holding a POSIX ustar tar stream of
   regular files only;
2. a 48-byte zstd *skippable frame*: magic ``0x184D2A5E`` and length ``40`` (both
   little-endian u32), the tag ``MGRYSUM1``, and the SHA-256 of every byte before it.

Standard tools read it (``tar --zstd -tvf A``; zstd decoders skip skippable frames). The
trailer makes any change to any byte detectable, including ones zstd itself tolerates.

Reading is strict and streaming: headers are parsed here rather than by ``tarfile``, so that
links, devices, directories, pax and GNU extension headers, odd names and sizes are refused
before a byte of their data is used, and memory stays bounded whatever the input claims.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from ..errors import InputError, IntegrityError, MagrayError, NotFoundError

BLOCK = 512
TRAILER = struct.Struct("<II8s32s")
TRAILER_MAGIC = 0x184D2A5E  # in the zstd skippable-frame range 0x184D2A50..5F
TRAILER_TAG = b"MGRYSUM1"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
MAX_TAIL = 64 * 1024  # zero padding tolerated after the tar end-of-archive marker
CHUNK = 1 << 20

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)

_TYPES = {b"1": "a hard link", b"2": "a symbolic link", b"3": "a character device",
          b"4": "a block device", b"5": "a directory", b"6": "a FIFO",
          b"7": "a contiguous file", b"x": "a pax extended header",
          b"g": "a pax global header", b"L": "a GNU long-name header",
          b"K": "a GNU long-link header", b"S": "a sparse file"}


@dataclass(frozen=True)
class Entry:
    """One member of the tar stream, as its header describes it."""

    name: str
    size: int


# -- writing ------------------------------------------------------------------------------


class _HashingWriter(io.RawIOBase):
    """Passes bytes to a file, hashing and counting them on the way."""

    def __init__(self, sink: BinaryIO):
        self.sink = sink
        self.sha = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.sha.update(data)
        self.sink.write(data)
        return len(data)


class _CountingReader:
    def __init__(self, source: BinaryIO, advance: Callable[[int], None]):
        self.source, self.advance = source, advance

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.advance(len(data))
        return data


def write(sink: BinaryIO, members: Iterable[tuple[str, bytes | Path]], *, mtime: int,
          level: int = 3, progress: Progress | None = None) -> None:
    """Write an archive of ``(name, bytes or file path)`` members, in order, to ``sink``."""
    members = list(members)
    sizes = [len(m) if isinstance(m, bytes) else m.stat().st_size for _, m in members]
    total, done = sum(sizes), 0

    def advance(count: int) -> None:
        nonlocal done
        done += count
        if progress and count:
            progress(done, total)

    import zstandard

    hashed = _HashingWriter(sink)
    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
    with compressor.stream_writer(hashed, closefd=False) as compressed:
        with tarfile.open(fileobj=compressed, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
            for (name, source), size in zip(members, sizes):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = size, mtime, 0o600
                info.uname = info.gname = ""
                if isinstance(source, bytes):
                    tar.addfile(info, _CountingReader(io.BytesIO(source), advance))
                else:
                    with open(source, "rb") as handle:
                        tar.addfile(info, _CountingReader(handle, advance))
    sink.write(TRAILER.pack(TRAILER_MAGIC, 40, TRAILER_TAG, hashed.sha.digest()))


# -- reading ------------------------------------------------------------------------------


class _Body:
    """The compressed part of an archive file: read once, hashed as it is read."""

    def __init__(self, handle: BinaryIO, length: int, progress: Progress | None):
        self.handle, self.length, self.left = handle, length, length
        self.sha = hashlib.sha256()
        self.progress = progress

    def read(self, size: int = -1) -> bytes:
        size = self.left if size is None or size < 0 else min(size, self.left)
        data = self.handle.read(size) if size else b""
        self.sha.update(data)
        self.left -= len(data)
        if self.progress and data:
            self.progress(self.length - self.left, self.length)
        if size and not data:
            self.left = 0  # the file shrank under us; the checksum will say so
        return data

    def drain(self) -> None:
        while self.left and self.read(CHUNK):
            pass


class Reader:
    """Reads one archive strictly, front to back. Every problem is an ``IntegrityError``
    whose message starts with the name of the failed check."""

    def __init__(self, path: Path, progress: Progress | None = None):
        self.path = path
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the open
                raise InputError(f"{path} is not a regular file")
            self._handle = open(path, "rb")
        except FileNotFoundError:
            raise NotFoundError(f"{path}: no such archive") from None
        except OSError as exc:
            raise MagrayError(f"{path}: cannot read: {exc.strerror}") from None
        try:
            self._open(progress)
        except BaseException:
            self._handle.close()
            raise

    def _open(self, progress: Progress | None) -> None:
        info = os.fstat(self._handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise IntegrityError("archive: not a regular file")
        if info.st_size < TRAILER.size + len(ZSTD_MAGIC):
            raise IntegrityError(f"archive checksum trailer: missing ({info.st_size} bytes is "
                                 "too short for an archive; truncated?)")
        self._handle.seek(info.st_size - TRAILER.size)
        magic, length, tag, self._digest = TRAILER.unpack(self._handle.read(TRAILER.size))
        if magic != TRAILER_MAGIC or length != 40 or tag != TRAILER_TAG:
            raise IntegrityError("archive checksum trailer: missing or damaged "
                                 "(a truncated or altered archive, or not a magray backup)")
        self._handle.seek(0)
        head = self._handle.read(18)
        import zstandard

        if not head.startswith(ZSTD_MAGIC):
            raise IntegrityError("zstd frame: the archive does not start with a zstd frame")
        try:
            has_checksum = zstandard.get_frame_parameters(head).has_checksum
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"zstd frame: bad frame header: {exc}") from None
        if not has_checksum:
            raise IntegrityError("zstd frame: written without a content checksum")
        self._handle.seek(0)
        self._body = _Body(self._handle, info.st_size - TRAILER.size, progress)
        self._zstd = zstandard.ZstdDecompressor().stream_reader(
            self._body, read_size=1 << 17, read_across_frames=True)
        self._zstd_error = zstandard.ZstdError

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the decompressed stream ----------------------------------------------------------

    def _read(self, size: int) -> bytes:
        try:
            return self._zstd.read(size)
        except self._zstd_error as exc:
            raise IntegrityError(f"zstd frame: {exc}") from None

    def _exact(self, size: int, what: str) -> bytes:
        parts, need = [], size
        while need:
            chunk = self._read(min(need, CHUNK))
            if not chunk:
                raise IntegrityError(f"truncated: the archive ends inside {what}")
            parts.append(chunk)
            need -= len(chunk)
        return b"".join(parts)

    def entries(self) -> Iterator[tuple[Entry, Iterator[bytes]]]:
        """Each member with an iterator over its data; what the caller leaves unread is
        skipped (and still checked) before the next header is parsed."""
        while True:
            block = self._exact(BLOCK, "a tar header")
            if not block.strip(b"\0"):
                self._end()
                return
            entry = parse_header(block)
            data = self._data(entry)
            yield entry, data
            for _ in data:
                pass
            padding = self._exact(-entry.size % BLOCK, f"the padding after '{entry.name}'")
            if padding.strip(b"\0"):
                raise IntegrityError(f"tar: non-zero padding after '{entry.name}'")

    def _data(self, entry: Entry) -> Iterator[bytes]:
        left = entry.size
        while left:
            chunk = self._exact(min(left, CHUNK), f"the data of '{entry.name}'")
            left -= len(chunk)
            yield chunk

    def _end(self) -> None:
        if self._exact(BLOCK, "the tar end-of-archive marker").strip(b"\0"):
            raise IntegrityError("tar: a header block follows an empty block")
        tail = 0
        while chunk := self._read(CHUNK):
            tail += len(chunk)
            if tail > MAX_TAIL or chunk.strip(b"\0"):
                raise IntegrityError("tar: data after the end-of-archive marker")

    def finish(self) -> None:
        """After ``entries`` is exhausted: the whole file must match its trailer checksum."""
        self.check_intact()

    def check_intact(self) -> None:
        """Hash what is left of the compressed stream and compare with the trailer."""
        self._body.drain()
        if self._body.sha.digest() != self._digest:
            raise IntegrityError("archive checksum: the SHA-256 of the compressed stream "
                                 "does not match the trailer (the file was altered or damaged)")


def parse_header(block: bytes) -> Entry:
    """A ustar header for a regular file, or an IntegrityError saying why it is refused."""
    stored = _octal(block[148:156], "header checksum")
    if stored != sum(block[:148]) + 256 + sum(block[156:]):
        raise IntegrityError("tar: header checksum mismatch")
    ustar = block[257:265] == b"ustar\x0000"
    try:
        name = block[0:100].split(b"\0", 1)[0].decode("ascii")
        prefix = block[345:500].split(b"\0", 1)[0].decode("ascii") if ustar else ""
    except UnicodeDecodeError:
        raise IntegrityError("refused member: a name that is not plain ASCII") from None
    name = f"{prefix}/{name}" if prefix else name
    kind = block[156:157]
    if kind not in (b"0", b"\0"):
        what = _TYPES.get(kind, f"of tar type {kind!r}")
        raise IntegrityError(f"refused member '{_shown(name)}': {what}, not a regular file")
    if not ustar:
        raise IntegrityError(f"tar: '{_shown(name)}' does not have a POSIX ustar header")
    check_name(name)
    return Entry(name, _octal(block[124:136], f"size of '{name}'"))


def check_name(name: str) -> None:
    """Refuse names that could point anywhere but at a file inside the staging directory."""
    shown = _shown(name)
    if not name:
        raise IntegrityError("refused member: an empty name")
    if any(ord(c) < 32 or ord(c) == 127 for c in name) or "\\" in name:
        raise IntegrityError(f"refused member '{shown}': control characters or backslashes")
    if name.startswith("/"):
        raise IntegrityError(f"refused member '{shown}': an absolute path")
    parts = name.split("/")
    if ".." in parts:
        raise IntegrityError(f"refused member '{shown}': a '..' component")
    if "" in parts or "." in parts:
        raise IntegrityError(f"refused member '{shown}': an empty or '.' path component")


def _octal(field: bytes, what: str) -> int:
    digits = field.replace(b"\0", b" ").strip()
    if not digits or any(c not in b"01234567" for c in digits):
        raise IntegrityError(f"tar: bad {what} field")
    return int(digits, 8)


def _shown(name: str) -> str:
    return name if len(name) <= 200 else name[:200] + "..."
