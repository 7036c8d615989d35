"""S3 end to end against a real S3 HTTP endpoint on loopback (moto's server)."""

import itertools
import json
import os

import boto3
import pyarrow.fs as pafs
import pytest

from segray import storage
from segray.data.manifest import build_manifest
from segray.errors import DatasetError, RunError
from segray.results.read import read_rows
from segray.run import prepare_run_dir
from tests.conftest import free_port, job

_buckets = itertools.count()


@pytest.fixture
def bucket(s3_endpoint) -> str:
    name = f"segray-test-{next(_buckets)}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def upload(local_dir, uri: str) -> None:
    fs, path = storage.resolve(uri)
    pafs.copy_files(str(local_dir), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def test_benchmark_with_data_and_results_on_s3_matches_a_local_run(s3_run):
    assert s3_run.status == (0, 0)
    summary = json.loads(storage.read_bytes(f"{s3_run.run}/summary.json"))
    assert summary["status"] == "complete" and summary["rows"]["written"] == 12 * 6
    assert summary["training"]["unet"]["checkpoint"].startswith(f"{s3_run.run}/train/unet/")
    on_s3 = read_rows(f"{s3_run.run}/predictions")

    # The same checkpoint evaluated locally, on the local copy of the data, gives the same rows.
    local = read_rows(str(s3_run.local_runs / "local" / "predictions"))
    columns = ["image_id", "model", "status", "iou"]
    key = ["image_id", "model"]
    assert on_s3[columns].sort_values(key).reset_index(drop=True).equals(
        local[columns].sort_values(key).reset_index(drop=True)
    )


@pytest.mark.slow  # the client's retries take seconds
def test_an_unreachable_endpoint_names_the_uri_and_the_cause(s3_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(DatasetError, match="s3://anything/mads: cannot read the dataset"):
        build_manifest("s3://anything/mads")
    with pytest.raises(RunError, match="s3://anything/runs/x: cannot write the run there"):
        prepare_run_dir("s3://anything/runs/x", overwrite=False)


def test_empty_prefix_and_images_without_masks_are_refused(dataset_copy, bucket):
    with pytest.raises(DatasetError, match="no dataset found"):
        build_manifest(f"s3://{bucket}/empty")
    upload(dataset_copy / "images", f"s3://{bucket}/only-images/images")
    with pytest.raises(DatasetError, match="has images/ but no masks/"):
        build_manifest(f"s3://{bucket}/only-images")


@pytest.fixture(scope="module")
def s3_with_keys(tmp_path_factory):
    """A second S3 server (moto's, in its own process) that checks request signatures: its
    first four requests are free, and make an IAM user with a key, its policy and a bucket;
    every request after them needs that key. Yields (endpoint URL, key id, secret)."""
    import socket
    import subprocess
    import sys
    import time

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("moto's server did not start") from None
            time.sleep(0.1)
    anyone = {"endpoint_url": url, "region_name": "us-east-1", "aws_access_key_id": "x", "aws_secret_access_key": "y"}
    iam = boto3.client("iam", **anyone)
    iam.create_user(UserName="segray")
    key = iam.create_access_key(UserName="segray")["AccessKey"]
    everything = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.put_user_policy(UserName="segray", PolicyName="everything", PolicyDocument=json.dumps(everything))
    boto3.client("s3", **{**anyone, "aws_access_key_id": key["AccessKeyId"],
                          "aws_secret_access_key": key["SecretAccessKey"]}).create_bucket(Bucket="segray-keys")
    yield url, key["AccessKeyId"], key["SecretAccessKey"]
    server.terminate()
    server.wait()


def test_refused_credentials_stop_the_run_before_any_work_and_show_no_secret(s3_with_keys, dataset_copy, monkeypatch,
                                                                             capsys):
    url, key_id, secret = s3_with_keys
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    prepare_run_dir("s3://segray-keys/runs/allowed", overwrite=False)  # the right key is let in

    wrong = "wrong-secret-" + secret[::-1]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    argv = ["--preset", "demo", "--dataset", str(dataset_copy), "--models", "unet", "--output", "s3://segray-keys/runs",
            "--run-id", "refused"]
    assert job("benchmark")(argv) == 2
    err = capsys.readouterr().err
    assert "s3://segray-keys/runs/refused: cannot write the run there" in err
    assert "refused these credentials" in err, err
    assert wrong not in err and secret not in err
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    assert not storage.exists("s3://segray-keys/runs/refused")  # nothing was written
