"""Every location is a URI: a local path or `scheme://...`. One filesystem layer.

All reads and writes of our own files go through pyarrow.fs, the same layer Ray Data
and Ray Train use, so a stage that works on a local folder works on any filesystem
pyarrow resolves from a URI.
"""

from __future__ import annotations

import os
import posixpath

import pyarrow.fs as pafs


def is_local(uri: str) -> bool:
    """True for plain paths and file:// URIs."""
    return "://" not in uri or uri.startswith("file://")


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path inside it for `uri`; local paths are made absolute."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
    return pafs.FileSystem.from_uri(uri)


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI with "/" (local paths keep the OS separator)."""
    if "://" not in uri:
        return os.path.join(uri, *parts)
    return posixpath.join(uri, *parts)


def read_bytes(uri: str) -> bytes:
    fs, path = resolve(uri)
    with fs.open_input_stream(path) as f:
        return f.read()


def write_bytes(uri: str, data: bytes) -> None:
    fs, path = resolve(uri)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(data)


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def delete_dir(uri: str) -> None:
    """Remove a directory tree if it exists."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)


def list_files(uri: str) -> list[str]:
    """Base names of the files (not directories) directly under `uri`, sorted."""
    fs, path = resolve(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.File)


def list_dirs(uri: str) -> list[str]:
    """Base names of the directories directly under `uri`, sorted."""
    fs, path = resolve(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.Directory)
