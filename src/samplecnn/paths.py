"""File names as text: one reversible spelling for every name a POSIX file system allows.

POSIX file names are bytes; Python hands names that are not valid UTF-8 around as `str`
with lone surrogates (`os.fsdecode`), which no UTF-8 output (JSON, CSV, Parquet, a
terminal line) can hold. Everything samplecnn writes about a file names it with
`escape_path`:

- bytes that are not valid UTF-8, and control characters (newline, tab, ...), become
  `\\xHH` (two lower-case hex digits);
- a backslash becomes `\\\\`;
- everything else is the name itself.

`unescape_path` reverses it exactly (`os.fsencode(unescape_path(escape_path(p))) ==
os.fsencode(p)`), so a record's `path` can be fed back to open the file. Names without
backslashes or odd bytes, which is nearly all of them, are written unchanged.
"""
from __future__ import annotations

import os
import re

__all__ = ["escape_path", "unescape_path", "path_key"]

_ESCAPE = re.compile(r"\\(\\|x[0-9a-fA-F]{2})")


def escape_path(path: str | bytes | os.PathLike) -> str:
    """The text form of a file name (see the module docstring); always one line."""
    text = os.fsencode(path).decode("utf-8", errors="surrogateescape")
    out = []
    for ch in text:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:  # an undecodable byte, as surrogateescape spells it
            out.append(f"\\x{o - 0xDC00:02x}")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif ch == "\\":
            out.append("\\\\")
        else:
            out.append(ch)
    return "".join(out)


def unescape_path(text: str) -> str:
    """The file name `escape_path` wrote `text` for, as Python's `str` for it."""
    raw = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(text):
        raw += text[pos:m.start()].encode("utf-8")
        token = m.group(1)
        raw += b"\\" if token == "\\" else bytes([int(token[1:], 16)])
        pos = m.end()
    raw += text[pos:].encode("utf-8")
    return os.fsdecode(bytes(raw))


def path_key(path: str | os.PathLike) -> str:
    """What identifies a file across runs and working directories: its absolute,
    normalised path (symlinks are not resolved: a link and its target are two inputs)."""
    return os.path.normpath(os.path.abspath(os.fspath(path)))


def unique_name(base: str, taken: set[str], sep: str = "_") -> str:
    """`base`, or `base{sep}2`, `base{sep}3`, ... : the first not in `taken`, which it is
    added to (taggram file stems, beets field names: one name per input, in order)."""
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}{sep}{n}"
    taken.add(name)
    return name
