"""`kaggle:OWNER/SLUG`: download a Kaggle dataset once, extract it safely, keep it cached.

The archive is fetched with the official `kaggle` client and extracted under
`CACHE_DIR/kaggle/OWNER/SLUG/`. The client is imported only when a download is needed and
credentials exist: at import it authenticates, prints help to stdout and, without
credentials, exits the process (SystemExit). Every failure becomes a `DatasetError` that
names the dataset, the cause and the fix.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import re
import shutil
import stat
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

from segray.errors import DatasetError

logger = logging.getLogger(__name__)

TOKEN_PAGE = "https://www.kaggle.com/settings/api"
# Written last, after the extracted folder is in place: its presence means "complete".
MARKER = ".segray-complete"
# Kaggle user names and dataset slugs; also keeps the cache path inside CACHE_DIR/kaggle.
SLUG_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def download_kaggle(slug: str, cache_dir: str) -> Path:
    """The folder the dataset `OWNER/SLUG` is extracted to, downloading it on first use.

    A cached copy (marker present) is returned without credentials, network or client.
    """
    owner, name = _split_slug(slug)
    target = Path(cache_dir) / "kaggle" / owner / name
    if (target / MARKER).is_file():
        return target

    credentials = find_credentials()
    if credentials is None:
        raise DatasetError(f"kaggle:{slug}: no Kaggle credentials found. {_credentials_fix()}")

    target.parent.mkdir(parents=True, exist_ok=True)
    with _download_lock(Path(cache_dir) / "kaggle" / ".locks" / f"{owner}--{name}.lock"):
        if not (target / MARKER).is_file():  # another run may have finished it while we waited
            _download_and_extract(slug, credentials, target)
    return target


@contextlib.contextmanager
def _download_lock(path: Path):
    """One download per dataset at a time on this host: a run that overlaps another (a
    scheduled run, a second job) waits for it, then uses its copy instead of replacing
    the folder the first one is reading."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _download_and_extract(slug: str, credentials: str, target: Path) -> None:
    """Download the archive, extract it safely and move it to `target`, marker last."""
    name = target.name
    # Download and extract beside the target (same file system, so the rename is atomic);
    # a failure anywhere leaves only this temporary folder, which is removed.
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=target.parent) as work:
        archive = _download(slug, credentials, Path(work))
        extracted = Path(work) / "extracted"
        try:
            safe_extract(archive, extracted)
        except DatasetError as error:
            raise DatasetError(f"kaggle:{slug}: the downloaded archive is unusable; retry. {error}") from None
        # A target without marker is an earlier run that stopped before finishing.
        shutil.rmtree(target, ignore_errors=True)
        extracted.rename(target)
    (target / MARKER).write_text(f"kaggle:{slug}\n")


def _split_slug(slug: str) -> tuple[str, str]:
    parts = slug.split("/")
    if len(parts) != 2 or not all(SLUG_PART.fullmatch(part) for part in parts):
        raise DatasetError(
            f"kaggle:{slug}: expected kaggle:OWNER/SLUG, e.g. kaggle:tapakah68/segmentation-full-body-mads-dataset"
        )
    return parts[0], parts[1]


def kaggle_config_dir() -> Path:
    """Where the kaggle client reads `kaggle.json` (the rule of `KaggleApi.config_dir`)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    legacy = Path.home() / ".kaggle"
    if sys.platform.startswith("linux") and not legacy.exists():
        return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"
    return legacy


def find_credentials() -> str | None:
    """Where the kaggle client would find credentials (a name, never the secret), or None."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME and KAGGLE_KEY"
    token_dir = Path.home() / ".kaggle"  # access tokens and `kaggle auth login` live here
    files = [kaggle_config_dir() / "kaggle.json"]
    files += [token_dir / "access_token", token_dir / "access_token.txt", token_dir / "credentials.json"]
    return next((str(path) for path in files if path.is_file()), None)


def _credentials_fix() -> str:
    return (
        f"Create an API token at {TOKEN_PAGE}, then export KAGGLE_API_TOKEN (or KAGGLE_USERNAME "
        f"and KAGGLE_KEY), or save kaggle.json as {kaggle_config_dir() / 'kaggle.json'} and "
        "chmod 600 it. Or download and unzip the dataset yourself and pass the folder as --dataset PATH."
    )


def _download(slug: str, credentials: str, dest: Path) -> Path:
    """Fetch the dataset's zip into `dest` with the official client; return the archive."""
    # The client prints (help, dataset URL, warnings) to stdout: keep that out of ours.
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            from kaggle.api.kaggle_api_extended import KaggleApi

            api = KaggleApi()
            api.authenticate()
            api.dataset_download_files(slug, path=str(dest), quiet=True, unzip=False)
    except SystemExit:
        raise DatasetError(
            f"kaggle:{slug}: the Kaggle client did not accept the credentials in {credentials}. {_credentials_fix()}"
        ) from None
    except Exception as error:
        raise DatasetError(f"kaggle:{slug}: {_describe(error, credentials)}") from None
    finally:
        if printed.getvalue():
            logger.debug("kaggle client output: %s", printed.getvalue())

    archive = dest / f"{slug.split('/')[1]}.zip"
    if not archive.is_file():
        raise DatasetError(f"kaggle:{slug}: the download finished but {archive.name} is missing")
    return archive


def _describe(error: Exception, credentials: str) -> str:
    """One line of cause and fix. HTTP and network errors are described by status code and
    exception type only: their text holds URLs (a proxy URL may carry a password)."""
    import requests  # the kaggle client's own dependency, loaded with it

    fallback = "Or download and unzip the dataset yourself and pass the folder as --dataset PATH."
    if isinstance(error, requests.HTTPError) and error.response is not None:
        status = error.response.status_code
        if status == 401:
            return f"Kaggle refused the credentials in {credentials} (HTTP 401). {_credentials_fix()}"
        if status == 403:
            return (
                f"Kaggle denied access (HTTP 403) with the credentials in {credentials}: accept the "
                f"dataset's rules on its Kaggle page, or check the token at {TOKEN_PAGE}. {fallback}"
            )
        if status == 404:
            return f"no such dataset on Kaggle (HTTP 404): check OWNER/SLUG on kaggle.com/datasets. {fallback}"
        return f"Kaggle answered HTTP {status}; retry later. {fallback}"
    if isinstance(error, requests.RequestException):
        return f"could not reach Kaggle ({type(error).__name__}): check the network or proxy settings. {fallback}"
    if isinstance(error, OSError):
        return f"could not write the download ({error}): check free disk space."
    first_line = str(error).splitlines()[0] if str(error) else ""
    return f"the download failed ({type(error).__name__}: {first_line}). {fallback}"


def safe_extract(zip_path: Path, dest: Path) -> None:
    """Extract `zip_path` into `dest` (which must not exist), refusing unsafe entries.

    Every entry is checked before anything is written: no absolute path, drive letter,
    `..` component (zip slip) or symlink. Reading each entry checks its CRC, so a
    truncated or corrupt archive fails. On any failure `dest` is removed.
    """
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as error:
        raise DatasetError(f"{zip_path}: not a complete zip archive (truncated or corrupt: {error})") from None
    with archive:
        members = archive.infolist()
        for member in members:
            _check_entry(zip_path, member)
        dest.mkdir(parents=True)
        try:
            for member in members:
                try:
                    archive.extract(member, dest)
                except (zipfile.BadZipFile, zlib.error, EOFError) as error:
                    raise DatasetError(f"{zip_path}: corrupt entry {member.filename!r} ({error})") from None
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise


def _check_entry(zip_path: Path, member: zipfile.ZipInfo) -> None:
    name = member.filename
    if name.startswith(("/", "\\")):
        why = "absolute path"
    elif re.match(r"[A-Za-z]:", name):
        why = "drive letter"
    elif ".." in re.split(r"[/\\]", name):
        why = "'..' component"
    elif stat.S_ISLNK(member.external_attr >> 16):
        why = "symbolic link"
    else:
        return
    raise DatasetError(f"{zip_path}: refusing unsafe entry {name!r} ({why}); the archive was not extracted")
