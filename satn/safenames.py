"""File names derived from data (utterance ids, sweep names) that stay inside their folder.

An utterance id comes from a corpus or a manifest that satn does not control:
``../../x``, ``/etc/passwd`` or ``a/b`` must not choose where a file is written.
:func:`safe_name` keeps ordinary ids as they are (so artifacts stay readable) and
turns anything else into a plain name with a digest of the original, so two
different ids never share a file; writers keep ``{safe: original}`` beside the
files (:func:`write_index`) so the mapping can be read back.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path

from satn.errors import InputError

_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
INDEX = "index.json"


def is_plain(name: str) -> bool:
    """A name that is one path component, not hidden, not ``.``/``..``, at most 100 chars."""
    return bool(_PLAIN.fullmatch(name)) and ".." not in name


def safe_name(name: str) -> str:
    """``name`` when it is plain, else a plain name derived from it plus a digest."""
    if is_plain(name):
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    stem = _UNSAFE.sub("_", name).replace("..", "_").strip("._-")[:60] or "id"
    return f"{stem}-{digest}"


def safe_names(names: Iterable[str]) -> dict[str, str]:
    """``{safe: original}`` for ``names``; safe names are distinct for distinct originals."""
    out: dict[str, str] = {}
    for name in names:
        safe = safe_name(name)
        if out.get(safe, name) != name:  # a plain id equal to another id's safe form
            safe = f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:10]}"
        out[safe] = name
    return out


def write_index(folder: Path, mapping: dict[str, str]) -> Path:
    """Write ``{safe: original}`` as ``folder/index.json`` (the way back to the ids)."""
    path = folder / INDEX
    path.write_text(json.dumps(mapping, indent=1, sort_keys=True, ensure_ascii=False))
    return path


def check_name(name: str, what: str) -> str:
    """``name`` if it may name a folder (a sweep, an experiment directory), else InputError."""
    if not is_plain(name):
        raise InputError(f"{what} {name!r} must be one plain name: letters, digits, '.', '_' "
                         f"or '-', starting with a letter or digit, at most 100 characters")
    return name
