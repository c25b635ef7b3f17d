"""magray backup verify and list: every damage is detected and named; listing reads the
manifests."""

from __future__ import annotations

import json
import os

import pytest

from archives import entry, fill, manifest_of, read_members, reseal, seal, tar_bytes
from magray import IntegrityError
from magray.backup.verify import verify

# -- verification -------------------------------------------------------------------------


def _positions(size: int) -> list[int]:
    """Every byte of the first and last 600, and every 7th byte between."""
    return sorted(set(range(min(600, size))) | set(range(max(0, size - 600), size))
                  | set(range(0, size, 7)))


def test_every_single_byte_flip_is_detected(archive, tmp_path):
    good = archive.read_bytes()
    bad = tmp_path / "bad.tar.zst"
    bad.write_bytes(good)
    fd = os.open(bad, os.O_RDWR)
    checked = 0
    try:
        for position in _positions(len(good)):
            for bit in (0x01, 0x80):
                os.pwrite(fd, bytes([good[position] ^ bit]), position)
                with pytest.raises(IntegrityError, match="failed verification|trailer|zstd"):
                    verify(bad)
                checked += 1
            os.pwrite(fd, good[position:position + 1], position)
    finally:
        os.close(fd)
    assert checked > 1000 and verify(bad).records == 38


def test_every_truncation_is_detected(archive, tmp_path):
    good = archive.read_bytes()
    bad = tmp_path / "short.tar.zst"
    bad.write_bytes(good)
    for length in sorted(set(range(0, len(good), 97)) | {1, 47, 48, len(good) - 1},
                         reverse=True):
        os.truncate(bad, length)
        with pytest.raises(IntegrityError):
            verify(bad)


def test_verify_cli_names_the_failed_check(archive, tmp_path, cli):
    ok = cli("backup", "verify", str(archive))
    assert ok.code == 0 and ok.out.startswith(f"ok: {archive}")
    good = archive.read_bytes()
    trailer = tmp_path / "trailer.tar.zst"
    trailer.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    result = cli("backup", "verify", str(trailer))
    assert result.code == 3 and "archive checksum" in result.err and result.out == ""
    short = tmp_path / "short.tar.zst"
    short.write_bytes(good[: len(good) // 2])
    result = cli("backup", "verify", str(short))
    assert result.code == 3 and "truncated" in result.err
    assert result.err.count("\n") == 1 and result.err.startswith("error: ")


def test_verify_refuses_what_is_not_a_regular_file(tmp_path, cli):
    fifo = tmp_path / "pipe.tar.zst"
    os.mkfifo(fifo)
    assert cli("backup", "verify", str(fifo)).code == 2  # refused, not opened (no hang)
    assert cli("backup", "verify", str(tmp_path)).code == 2
    assert cli("backup", "verify", str(tmp_path / "missing.tar.zst")).code == 1


def test_member_hash_mismatch_is_named(archive, tmp_path):
    forged = reseal(archive, tmp_path / "forged.tar.zst")  # valid container, ...
    manifest = manifest_of(forged)
    manifest["members"][0]["sha256"] = "0" * 64          # ... but a wrong member hash
    members = read_members(archive)[1:]
    seal(tar_bytes([entry("manifest.json", json.dumps(manifest).encode())] + members), forged)
    with pytest.raises(IntegrityError, match="member 'data/magray.db': SHA-256"):
        verify(forged)


# -- listing ------------------------------------------------------------------------------


def test_list_shows_time_size_counts_and_unreadable_files(fake_memory, cli, home, monkeypatch):
    fill(fake_memory, 4)
    for day in ("2025-01-02", "2025-01-01"):
        monkeypatch.setenv("MAGRAY_NOW", f"{day}T10:00:00+00:00")
        fake_memory.backup()
    (home / "backups" / "junk.tar.zst").write_bytes(b"not an archive")
    listing = fake_memory.backups()
    assert [a.created_at[:10] for a in listing.archives] == ["2025-01-01", "2025-01-02"]
    assert [p.name for p, _ in listing.unreadable] == ["junk.tar.zst"]
    result = cli("backup", "list", "--json")
    data = json.loads(result.out)
    assert [a["records"] for a in data["archives"]] == [12, 12]
    assert data["archives"][0]["counts"] == {"interact": 4, "insights": 5, "assets": 3}
    assert data["unreadable"][0]["path"].endswith("junk.tar.zst")
    plain = cli("backup", "list")
    lines = plain.out.splitlines()
    assert len(lines) == 2 and lines[0].split("\t")[2] == "12"
    assert "unreadable" in plain.err
