"""Every location is a URI: a local path or `s3://bucket/prefix`. One filesystem layer.

All reads and writes go through pyarrow.fs: Ray Data's writers and Ray Train's
`storage_filesystem` take pyarrow filesystems as they are, so our own files, the
Parquet rows and the checkpoints share one configuration and need no second library.

S3 credentials come from the standard AWS chain. An S3-compatible store (MinIO, Ceph,
R2) is reached through `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` (the jobs' option
`--s3-endpoint-url` sets the latter): pyarrow ignores those variables itself, so we pass
the endpoint on.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import posixpath
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

import pyarrow.fs as pafs

ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def is_local(uri: str) -> bool:
    """True for plain paths and file:// URIs."""
    return "://" not in uri or uri.startswith("file://")


# Tries per S3 request (throttling, 5xx, no connection); AWS's standard backoff spreads five
# over about 9 s here (pyarrow's default, 3, over 2 s; 8 would take 46 s, which an endpoint
# that is simply wrong would cost every call). Ray Data retries a failed write task on top
# (DataContext.retried_io_errors).
S3_ATTEMPTS = 5


def s3_endpoint() -> str | None:
    """The S3 endpoint override from the environment, if any."""
    return next((os.environ[v] for v in ENDPOINT_VARIABLES if os.environ.get(v)), None)


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path inside it for `uri`; local paths are made absolute. On S3
    each request is tried up to S3_ATTEMPTS times, with AWS's standard backoff, when S3
    throttles (503 SlowDown) or fails (5xx)."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
    if not uri.startswith("s3://"):
        return pafs.FileSystem.from_uri(uri)
    path = uri.removeprefix("s3://").rstrip("/")
    options = {"retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=S3_ATTEMPTS), "connect_timeout": 5}
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    endpoint = s3_endpoint()
    if endpoint:
        url = urlparse(endpoint)
        options.update(endpoint_override=url.netloc, scheme=url.scheme or "https", region=region or "us-east-1")
    else:
        options["region"] = bucket_region(path.split("/")[0]) or region or "us-east-1"
    return pafs.S3FileSystem(**options), path


@functools.cache
def bucket_region(bucket: str) -> str | None:
    """The AWS region a bucket lives in (asked once per process), whatever AWS_REGION says:
    a bucket in another region than the cluster's is read where it is. None when AWS does
    not say (no network, or no such bucket: the request that follows names the problem)."""
    try:
        return pafs.resolve_s3_region(bucket)
    except OSError:
        return None


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
    """Write a whole file. Locally through a temporary file renamed over it, so that a
    reader, a full disk or an interrupt mid-write never leaves half a file (an S3 PUT is
    whole by itself)."""
    fs, path = resolve(uri)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    if not isinstance(fs, pafs.LocalFileSystem):
        with fs.open_output_stream(path) as f:
            f.write(data)
        return
    temporary = f"{path}.{os.getpid()}-{threading.get_ident()}.tmp"
    try:
        with open(temporary, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def delete_dir(uri: str) -> None:
    """Remove a directory tree if it exists."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)


def list_files(uri: str, recursive: bool = False) -> list[str]:
    """The files (not directories) under `uri`, sorted: base names of those directly under
    it, or with `recursive` the "/"-separated paths relative to `uri` of every file in its tree."""
    return sorted(file_sizes(uri, recursive))


def list_dirs(uri: str) -> list[str]:
    """Base names of the directories directly under `uri`, sorted."""
    fs, path = resolve(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.Directory)


# How S3 says it does not accept the request's credentials (pyarrow's codes, then S3's own).
REFUSED_CREDENTIALS = ("SIGNATURE_DOES_NOT_MATCH", "INVALID_ACCESS_KEY_ID", "ACCESS_DENIED", "EXPIRED_TOKEN",
                       "SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "ExpiredToken")


def describe(error: OSError) -> str:
    """One line for an error from pyarrow's filesystems (its S3 messages span lines); when S3
    refused the credentials, it says so and which settings supply them (never their values)."""
    text = " ".join(str(error).split()) or type(error).__name__
    if any(code in text for code in REFUSED_CREDENTIALS):
        text += (" -- the S3 endpoint refused these credentials: check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY "
                 "and AWS_SESSION_TOKEN, or AWS_PROFILE, and the key's permissions on this bucket")
    return text


@contextmanager
def local_copy(uri: str) -> Iterator[str]:
    """In the block, a local directory with the contents of `uri`: the path itself when it
    is local, else a temporary copy, removed when the block ends (checkpoints on S3 are
    read this way, once, when a model actor or replica starts)."""
    if is_local(uri):
        yield resolve(uri)[1]
        return
    fs, path = resolve(uri)
    with tempfile.TemporaryDirectory(prefix="segray-") as local:
        pafs.copy_files(path, local, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        yield local


def file_sizes(uri: str, recursive: bool = False) -> dict[str, int]:
    """Size in bytes of each file directly under `uri`, by base name, or with `recursive` of
    every file in its tree, by its "/"-separated path relative to `uri`. One listing per
    tree on S3; locally one per folder (`_local_tree`)."""
    fs, path = resolve(uri)
    if recursive and is_local(uri):
        infos = _local_tree(fs, path)
    else:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=recursive))
    return {posixpath.relpath(i.path, path): i.size for i in infos if i.type == pafs.FileType.File}


def _local_tree(fs: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
    """Every entry of a local tree, each real folder listed once. pyarrow's own recursive
    listing follows links to folders without a guard: here a link to an ancestor repeated
    the tree 40 levels deep, and two such links would never end."""
    infos, todo, seen = [], [path], set()
    while todo:
        folder = todo.pop()
        real = os.path.realpath(folder)
        if real in seen:
            continue
        seen.add(real)
        for info in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)):
            infos.append(info)
            if info.type == pafs.FileType.Directory:
                todo.append(info.path)
    return infos


def copy_file(source: str, destination: str) -> None:
    """Copy one file between any two URIs (local or S3)."""
    source_fs, source_path = resolve(source)
    destination_fs, destination_path = resolve(destination)
    destination_fs.create_dir(posixpath.dirname(destination_path), recursive=True)
    pafs.copy_files(source_path, destination_path, source_filesystem=source_fs,
                    destination_filesystem=destination_fs)


def write_new(uri: str, data: bytes) -> None:
    """Create `uri` holding `data`, atomically refusing if it exists (FileExistsError).

    pyarrow has no create-if-absent, so this uses the stores' own: O_EXCL locally, and on
    S3 a conditional PUT (`If-None-Match: *`, honoured by AWS S3 and moto; not by every
    S3-compatible store)."""
    if is_local(uri):
        path = resolve(uri)[1]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(descriptor, "wb") as f:
            f.write(data)
        return
    _conditional("put_object", uri, FileExistsError, Body=data, IfNoneMatch="*")


class ChangedMeanwhile(OSError):
    """A conditional write or delete found the file changed (or gone) since it was read."""


def read_tagged(uri: str) -> tuple[bytes, str]:
    """The file's bytes and a tag that changes with every write of it: its ETag on S3, the
    bytes' SHA-256 locally. `replace_if` and `delete_if` take the tag back. FileNotFoundError
    when there is none."""
    if is_local(uri):
        data = read_bytes(uri)
        return data, hashlib.sha256(data).hexdigest()
    from botocore.exceptions import ClientError

    bucket, key = _bucket_key(uri)
    try:
        answer = _client().get_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise FileNotFoundError(uri) from error
        raise OSError(f"{uri}: {error}") from error
    return answer["Body"].read(), answer["ETag"]


def replace_if(uri: str, tag: str, data: bytes) -> None:
    """Compare and swap: replace `uri` with `data` if it is still as read with `tag`
    (`read_tagged`), else raise ChangedMeanwhile. On S3 a PUT with `If-Match: ETag`;
    locally, under an exclusive `flock` of a guard file beside it, which every conditional
    writer of the file takes, then an atomic rename."""
    if not is_local(uri):
        _conditional("put_object", uri, ChangedMeanwhile, Body=data, IfMatch=tag)
        return
    path = resolve(uri)[1]
    with _guard(path):
        _check_tag(path, tag)
        temporary = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(temporary, "wb") as f:
            f.write(data)
        os.replace(temporary, path)


def delete_if(uri: str, tag: str) -> None:
    """Delete `uri` if it is still as read with `tag`, else raise ChangedMeanwhile."""
    if not is_local(uri):
        _conditional("delete_object", uri, ChangedMeanwhile, IfMatch=tag)
        return
    path = resolve(uri)[1]
    with _guard(path):
        _check_tag(path, tag)
        os.remove(path)


@contextmanager
def _guard(path: str) -> Iterator[None]:
    with open(f"{path}.guard", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)


def _check_tag(path: str, tag: str) -> None:
    try:
        with open(path, "rb") as f:
            now = hashlib.sha256(f.read()).hexdigest()
    except FileNotFoundError:
        raise ChangedMeanwhile(f"{path} is gone") from None
    if now != tag:
        raise ChangedMeanwhile(f"{path} changed since it was read")


def _bucket_key(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri}: conditional writes are supported on local paths and s3:// only")
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _client():  # noqa: ANN202 - boto3's client has no importable type
    """An S3 client with the credentials and endpoint of the environment now: boto3's default
    session would keep the first ones it read (pyarrow, too, reads them per filesystem)."""
    import boto3

    return boto3.session.Session().client("s3", endpoint_url=s3_endpoint())


def _conditional(method: str, uri: str, refused: type[OSError], **arguments: object) -> None:
    """S3's `method` on `uri` with a precondition; a failed one raises `refused`."""
    from botocore.exceptions import ClientError

    bucket, key = _bucket_key(uri)
    try:
        getattr(_client(), method)(Bucket=bucket, Key=key, **arguments)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code")
        if code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404"):
            raise refused(f"{uri}: {code}") from error
        raise OSError(f"{uri}: {error}") from error


def delete_file(uri: str) -> None:
    """Remove one file if it exists."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type == pafs.FileType.File:
        fs.delete_file(path)
