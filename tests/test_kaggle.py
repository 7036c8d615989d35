"""The `kaggle:` source: the real kaggle client against a fake Kaggle service on loopback,
safe extraction, the cache and the error messages. No Ray.

Only the Kaggle service is faked. The client is pointed at it the way the package allows:
`KAGGLE_API_ENVIRONMENT=LOCALHOST` makes it call `http://localhost/api/v1/...`, and the
standard `http_proxy` variable (which requests honours) routes those calls to the fake on
a random port of 127.0.0.1, so nothing leaves the machine and port 80 is never needed.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import stat
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from segray.data.kaggle import MARKER, download_kaggle, safe_extract
from segray.data.manifest import MADS_FOLDER, build_manifest
from segray.errors import DatasetError
from tests.conftest import DATA

SLUG = "tapakah68/segmentation-full-body-mads-dataset"
USERNAME, KEY = "segray-test-user", "s3cr3t-kaggle-key-0123456789abcdef"
DOWNLOAD_PATH = "/api/v1/datasets.DatasetApiService/DownloadDataset"
# 20 real rows spread over every category (the real file is sorted by category).
ROWS = pd.read_csv(DATA / "mads_df.csv", index_col=0).iloc[::60].reset_index(drop=True)


def png(value: int, ext: str = ".png") -> bytes:
    ok, data = cv2.imencode(ext, np.full((8, 6, 3), value, np.uint8))
    assert ok
    return data.tobytes()


def mads_zip() -> bytes:
    """The Kaggle archive's layout, with 20 of the real names and tiny real images."""
    buffer = io.BytesIO()
    inner = f"{MADS_FOLDER}/{MADS_FOLDER}"
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for folder in (f"{MADS_FOLDER}/", f"{inner}/", f"{inner}/images/", f"{inner}/masks/", f"{inner}/collages/"):
            archive.writestr(folder, b"")
        for i, row in ROWS.iterrows():
            archive.writestr(f"{inner}/{row['images']}", png(40 + i))
            archive.writestr(f"{inner}/{row['masks']}", png(255 * (i % 2)))
            archive.writestr(f"{inner}/{row['collages']}", png(40 + i, ".jpg"))
        archive.writestr(f"{MADS_FOLDER}/df.csv", ROWS.to_csv())
    return buffer.getvalue()


class FakeKaggle(ThreadingHTTPServer):
    """Kaggle's dataset download as the client sees it: `POST .../DownloadDataset` with
    basic auth answers a redirect to the archive in storage; `GET` of it serves the zip.
    Set `status` to make the API answer that HTTP error instead."""

    daemon_threads = True

    def __init__(self, archives: dict[str, bytes]):
        super().__init__(("127.0.0.1", 0), FakeKaggleHandler)
        self.archives = archives
        self.requests: list[str] = []
        self.status: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class FakeKaggleHandler(BaseHTTPRequestHandler):
    timeout = 10  # seconds per connection: a stuck client cannot hold the test

    def do_POST(self):
        self.server.requests.append(f"POST {self.path}")
        url = urlsplit(self.path)  # through a proxy, the request line holds the full URL
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        slug = f"{body.get('ownerSlug')}/{body.get('datasetSlug')}"
        expected_auth = "Basic " + base64.b64encode(f"{USERNAME}:{KEY}".encode()).decode()
        if url.netloc != "localhost" or url.path != DOWNLOAD_PATH:
            self.reply_error(404, "no such endpoint")
        elif self.headers.get("Authorization") != expected_auth:
            self.reply_error(401, "Unauthenticated")
        elif self.server.status:
            self.reply_error(self.server.status, "forced by the test")
        elif slug not in self.server.archives:
            self.reply_error(404, "Dataset not found")
        else:
            self.send_response(302)
            self.send_header("Location", f"http://storage.kaggle.test/archives/{slug}.zip")
            self.send_header("Content-Length", "0")
            self.end_headers()

    def do_GET(self):
        self.server.requests.append(f"GET {self.path}")
        url = urlsplit(self.path)
        slug = url.path.removeprefix("/archives/").removesuffix(".zip")
        if url.netloc != "storage.kaggle.test" or slug not in self.server.archives:
            return self.reply_error(404, "not found")
        data = self.server.archives[slug]
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def reply_error(self, status: int, message: str) -> None:
        data = json.dumps({"code": status, "message": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def no_kaggle_env(tmp_path, monkeypatch):
    """No credentials, HOME and the kaggle config in tmp (the user's are never read or
    written), no proxy, and no kaggle module loaded yet."""
    for name in list(os.environ):
        if name.startswith("KAGGLE_") or name.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / "kaggle-config"))
    # KaggleApi reads KAGGLE_CONFIG_DIR and KAGGLE_API_ENVIRONMENT when its module is
    # imported: drop a copy loaded earlier so this test's settings apply, and the copy
    # loaded here afterwards (monkeypatch then restores the earlier one).
    for module in kaggle_modules():
        monkeypatch.delitem(sys.modules, module)
    yield home
    for module in kaggle_modules():
        del sys.modules[module]


def kaggle_modules() -> list[str]:
    return [name for name in sys.modules if name == "kaggle" or name.startswith("kaggle.")]


@pytest.fixture
def fake_kaggle(no_kaggle_env, monkeypatch):
    """The fake service, serving the MADS-like zip, with the client pointed at it."""
    server = FakeKaggle({SLUG: mads_zip()})
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
    monkeypatch.setenv("http_proxy", server.url)
    monkeypatch.setenv("KAGGLE_USERNAME", USERNAME)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def assert_clean(error: pytest.ExceptionInfo, capsys) -> None:
    """The message never shows the secret, and the client printed nothing to our stdout."""
    out, err = capsys.readouterr()
    assert KEY not in str(error.value) and KEY not in out and KEY not in err
    assert out == ""


def test_download_extracts_the_archive_and_the_manifest_reads_it(fake_kaggle, tmp_path, capsys):
    cache = tmp_path / "cache"
    root = download_kaggle(SLUG, str(cache))

    assert root == cache / "kaggle" / SLUG
    assert (root / MARKER).is_file()
    assert (root / MADS_FOLDER / "df.csv").is_file()
    assert fake_kaggle.requests == [
        f"POST http://localhost{DOWNLOAD_PATH}",
        f"GET http://storage.kaggle.test/archives/{SLUG}.zip",
    ]
    assert os.listdir(root.parent) == [root.name]  # no temporary folder or zip left behind
    assert capsys.readouterr().out == ""

    # Cached: no request at all, the same folder.
    manifest = build_manifest(f"kaggle:{SLUG}", cache_dir=str(cache))
    assert len(fake_kaggle.requests) == 2

    table = manifest.table
    names = sorted(os.path.basename(p) for p in ROWS["images"])
    _, val = train_test_split(names, test_size=0.2, random_state=42)
    assert manifest.root == str(root / MADS_FOLDER / MADS_FOLDER)
    assert len(table) == 20 and sorted(table["image_id"]) == names
    assert set(table.loc[table["split"] == "val", "image_id"]) == set(val)
    assert (table["split"] == "val").sum() == 4
    assert list(table["category"]) == [name.split("_")[0] for name in table["image_id"]]
    assert set(table["category"]) == {"HipHop", "Jazz", "Kata", "Sports", "Taichi"}
    assert not any(manifest.problems.counts().values())
    assert all(os.path.isfile(uri) for uri in table["mask_uri"])


def test_overlapping_runs_download_once_and_share_the_copy(fake_kaggle, tmp_path):
    """Two runs starting together (a scheduled run overlapping the previous one): the
    second waits for the first's download and uses it; neither replaces the other's folder."""
    cache = tmp_path / "cache"
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(download_kaggle(SLUG, str(cache)))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert results == [cache / "kaggle" / SLUG] * 2
    assert len(fake_kaggle.requests) == 2  # one POST and one GET: a single download
    assert (results[0] / MARKER).is_file()


def test_a_cached_dataset_needs_no_credentials_network_or_client(no_kaggle_env, tmp_path):
    root = tmp_path / "cache" / "kaggle" / SLUG
    root.mkdir(parents=True)
    (root / MARKER).write_text("")
    assert download_kaggle(SLUG, str(tmp_path / "cache")) == root
    assert "kaggle" not in sys.modules


def test_without_credentials_the_error_names_the_fix(no_kaggle_env, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KAGGLE_KEY", KEY)  # a key without user name is not enough
    with pytest.raises(DatasetError) as error:
        build_manifest(f"kaggle:{SLUG}", cache_dir=str(tmp_path / "cache"))
    message = str(error.value)
    for fix in ("no Kaggle credentials", SLUG, "KAGGLE_USERNAME", "KAGGLE_KEY", "chmod 600",
                str(no_kaggle_env / "kaggle-config" / "kaggle.json"), "kaggle.com/settings/api", "--dataset PATH"):
        assert fix in message
    assert "kaggle" not in sys.modules  # checked before the client is imported
    assert not (tmp_path / "cache").exists()
    assert_clean(error, capsys)


@pytest.mark.parametrize(
    "status, message",
    [
        (401, "Kaggle refused the credentials in KAGGLE_USERNAME and KAGGLE_KEY \\(HTTP 401\\).*kaggle.com/settings/api"),
        (403, "Kaggle denied access \\(HTTP 403\\).*accept the dataset's rules"),
        (404, "no such dataset on Kaggle \\(HTTP 404\\)"),
        (500, "Kaggle answered HTTP 500; retry later"),
    ],
)
def test_http_errors_say_what_and_how_to_fix(fake_kaggle, tmp_path, status, message, capsys):
    fake_kaggle.status = status
    with pytest.raises(DatasetError, match=f"kaggle:{SLUG}: {message}") as error:
        download_kaggle(SLUG, str(tmp_path / "cache"))
    assert "--dataset PATH" in str(error.value)
    assert os.listdir(tmp_path / "cache" / "kaggle" / "tapakah68") == []  # nothing left behind
    assert_clean(error, capsys)


def test_a_wrong_key_is_refused_without_showing_it(fake_kaggle, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KAGGLE_KEY", "wrong-" + KEY)
    with pytest.raises(DatasetError, match="HTTP 401") as error:
        download_kaggle(SLUG, str(tmp_path / "cache"))
    assert "wrong-" not in str(error.value)
    assert fake_kaggle.requests == [f"POST http://localhost{DOWNLOAD_PATH}"]
    assert_clean(error, capsys)


def test_an_unknown_dataset_is_a_404(fake_kaggle, tmp_path, capsys):
    with pytest.raises(DatasetError, match="kaggle:someone/no-such-set: no such dataset") as error:
        download_kaggle("someone/no-such-set", str(tmp_path / "cache"))
    assert_clean(error, capsys)


def test_an_unreachable_service_names_the_network(fake_kaggle, tmp_path, monkeypatch, capsys):
    with socket.socket() as free:  # a loopback port with nothing listening
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    monkeypatch.setenv("http_proxy", f"http://proxyuser:{KEY}@127.0.0.1:{port}")
    with pytest.raises(DatasetError, match=f"kaggle:{SLUG}: could not reach Kaggle \\(ProxyError\\)") as error:
        download_kaggle(SLUG, str(tmp_path / "cache"))
    assert_clean(error, capsys)


def test_a_truncated_download_leaves_nothing_behind(fake_kaggle, tmp_path, capsys):
    fake_kaggle.archives[SLUG] = fake_kaggle.archives[SLUG][:-200]
    expected = f"kaggle:{SLUG}: the downloaded archive is unusable; retry. .*/{SLUG.split('/')[1]}.zip: not a complete zip"
    with pytest.raises(DatasetError, match=expected) as error:
        download_kaggle(SLUG, str(tmp_path / "cache"))
    assert os.listdir(tmp_path / "cache" / "kaggle" / "tapakah68") == []
    assert_clean(error, capsys)


def test_bad_slugs_are_refused(tmp_path):
    for slug in ("no-owner", "a/b/c", "../x", "owner/.."):
        with pytest.raises(DatasetError, match="expected kaggle:OWNER/SLUG"):
            download_kaggle(slug, str(tmp_path))


def write_zip(path: Path, entries: list[zipfile.ZipInfo]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ok/image.png", png(9))
        for entry in entries:
            archive.writestr(entry, b"evil")
    return path


def symlink_entry(name: str, target: str) -> zipfile.ZipInfo:
    entry = zipfile.ZipInfo(name)
    entry.create_system = 3  # Unix: the mode bits are in the high word of external_attr
    entry.external_attr = (stat.S_IFLNK | 0o777) << 16
    return entry


@pytest.mark.parametrize(
    "entry, why",
    [
        (zipfile.ZipInfo("/tmp/segray-evil.png"), "absolute path"),
        (zipfile.ZipInfo("C:/evil.png"), "drive letter"),
        (zipfile.ZipInfo("../evil.png"), "'..' component"),
        (zipfile.ZipInfo("ok/../../evil.png"), "'..' component"),
        (zipfile.ZipInfo("..\\evil.png"), "'..' component"),
        (symlink_entry("ok/link", "/etc/passwd"), "symbolic link"),
    ],
)
def test_unsafe_entries_are_refused_before_anything_is_written(tmp_path, entry, why):
    archive = write_zip(tmp_path / "evil.zip", [entry])
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    dest = sandbox / "out"
    with pytest.raises(DatasetError, match="refusing unsafe entry") as error:
        safe_extract(archive, dest)
    assert repr(entry.filename) in str(error.value) and why in str(error.value)
    assert str(archive) in str(error.value)
    assert not dest.exists()
    assert os.listdir(sandbox) == [] and sorted(os.listdir(tmp_path)) == ["evil.zip", "sandbox"]
    assert not Path("/tmp/segray-evil.png").exists()


def test_a_corrupt_entry_is_named_and_nothing_is_left(tmp_path):
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as out:
        out.writestr("a/first.png", png(1))
        out.writestr("a/second.bin", b"0123456789" * 50)
    data = archive.read_bytes()
    start = data.index(b"0123456789")
    archive.write_bytes(data[:start] + b"X" + data[start + 1 :])  # CRC no longer matches
    dest = tmp_path / "out"
    with pytest.raises(DatasetError, match="corrupt entry 'a/second.bin'"):
        safe_extract(archive, dest)
    assert not dest.exists()


def test_a_truncated_archive_is_detected(tmp_path):
    archive = tmp_path / "cut.zip"
    archive.write_bytes(mads_zip()[:5000])
    with pytest.raises(DatasetError, match=f"{archive}: not a complete zip archive"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
