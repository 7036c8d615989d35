"""Security: no code runs from a checkpoint, no read leaves the dataset folder,
no credential reaches an output, no shell is built from strings.

Zip extraction (absolute paths, `..`, links, truncation) is tested in tests/test_kaggle.py.
"""

from __future__ import annotations

import ast
import io
import os
import pickle
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import torch

from segray import storage
from segray.data.manifest import build_manifest
from segray.models.checkpoint import OPTIMIZER_FILE, load_network, load_optimizer_state, save_checkpoint
from segray.models.networks import build_network
from segray.redact import redact
from segray.settings import dump, load

REPO = Path(__file__).parents[1]


class Payload:
    """Unpickling this creates the directory `marker`: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.makedirs, (self.marker,)


def save_payload(path: Path, marker: Path) -> None:
    torch.save({"state": {}, "param_groups": [], "payload": Payload(marker)}, path)
    torch.load(path, weights_only=False)  # the payload is live: an unsafe load runs it...
    assert marker.is_dir()
    marker.rmdir()  # ...so a safe load must be what keeps it from running below


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """A real checkpoint of a narrow UNet, with its optimizer state."""
    network = build_network("unet", {"base_width": 4})
    optimizer = torch.optim.Adam(network.parameters())
    network(torch.zeros(1, 3, 32, 32)).mean().backward()
    optimizer.step()
    directory = tmp_path / "checkpoint"
    save_checkpoint(str(directory), network, {"model": "unet", "params": {"base_width": 4}, "image_size": 32},
                    optimizer)
    return directory


def test_an_optimizer_state_carrying_a_payload_is_refused(checkpoint, tmp_path):
    assert load_optimizer_state(str(checkpoint))["state"]  # the real state loads
    marker = tmp_path / "payload-ran"
    save_payload(checkpoint / OPTIMIZER_FILE, marker)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_optimizer_state(str(checkpoint))
    assert not marker.exists()


def test_pickled_weights_are_never_loaded(checkpoint, tmp_path):
    marker = tmp_path / "payload-ran"
    (checkpoint / "model.safetensors").unlink()
    save_payload(checkpoint / "pytorch_model.bin", marker)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_network(str(checkpoint))
    (checkpoint / "model.safetensors").write_bytes((checkpoint / "pytorch_model.bin").read_bytes())
    with pytest.raises(Exception, match="header"):  # a pickle under the safetensors name is no safetensors
        load_network(str(checkpoint))
    only_pickle = tmp_path / "only-pickle"
    only_pickle.mkdir()
    (only_pickle / "pytorch_model.bin").write_bytes((checkpoint / "pytorch_model.bin").read_bytes())
    with pytest.raises(FileNotFoundError, match="weights are read from model.safetensors only"):
        load_network(str(only_pickle))
    assert not marker.exists()


def test_a_resnet_encoder_file_is_loaded_as_weights_only(tmp_path):
    from segray.models.resnet_unet import EncoderWeightsUnavailable

    encoder, marker = tmp_path / "resnet34.pth", tmp_path / "payload-ran"
    save_payload(encoder, marker)
    with pytest.raises(EncoderWeightsUnavailable, match="Weights only load failed"):
        build_network("resnet34_unet", {"encoder_weights": str(encoder)})
    assert not marker.exists()


# ---------------------------------------------------------------------------- paths


def test_links_out_of_the_dataset_folder_are_named_and_never_read(dataset_copy, tmp_path, monkeypatch):
    outside = tmp_path / "outside"
    outside.mkdir()
    names = sorted(os.listdir(dataset_copy / "images"))
    (outside / "secret.png").write_bytes((dataset_copy / "images" / names[0]).read_bytes())
    (outside / "df.csv").write_text("images,masks\nsecret.png,secret.png\n")
    (dataset_copy / "images" / "link-out.png").symlink_to(outside / "secret.png")
    os.remove(dataset_copy / "masks" / names[1])
    (dataset_copy / "masks" / names[1]).symlink_to(outside / "secret.png")
    (dataset_copy / "extra").mkdir()
    os.rename(dataset_copy / "images" / names[2], dataset_copy / "extra" / names[2])
    (dataset_copy / "images" / names[2]).symlink_to(Path("..") / "extra" / names[2])  # stays inside: fine
    (dataset_copy / "df.csv").symlink_to(outside / "df.csv")

    reads = []
    read_bytes = storage.read_bytes
    monkeypatch.setattr(storage, "read_bytes", lambda uri: reads.append(uri) or read_bytes(uri))
    manifest = build_manifest(str(dataset_copy))

    problems = manifest.problems
    assert sorted(problems.links_outside_root) == sorted(
        [str(dataset_copy / "images" / "link-out.png"), str(dataset_copy / "masks" / names[1]),
         str(dataset_copy / "df.csv")]
    )
    table = manifest.table.set_index("image_id")
    assert "link-out.png" not in table.index
    assert pd.isna(table.loc[names[1], "mask_uri"])  # its row will say "missing mask"
    assert table.loc[names[2], "image_uri"] == str(dataset_copy / "images" / names[2])
    assert problems.listed_but_missing == []  # the linked df.csv was not read
    root = os.path.realpath(dataset_copy)
    uris = [*table["image_uri"], *table["mask_uri"].dropna(), *reads]
    assert all(os.path.realpath(uri).startswith(root + os.sep) for uri in uris)


def test_df_csv_entries_with_dot_dot_are_never_opened(dataset_copy, tmp_path, monkeypatch):
    names = sorted(os.listdir(dataset_copy / "images"))
    (tmp_path / "outside.png").write_bytes(b"must not be read")
    (dataset_copy / "df.csv").write_text(
        f"images,masks\nimages/{names[0]},masks/{names[0]}\n../outside.png,../../../etc/passwd\n"
    )
    reads = []
    read_bytes = storage.read_bytes
    monkeypatch.setattr(storage, "read_bytes", lambda uri: reads.append(uri) or read_bytes(uri))
    manifest = build_manifest(str(dataset_copy))
    assert manifest.problems.listed_but_missing == ["../../../etc/passwd", "../outside.png"]
    assert reads == [str(dataset_copy / "df.csv")]


# ---------------------------------------------------------------------------- secrets


def secret_leaks(name: str, data: bytes, secrets: list[str]) -> list[str]:
    """`name: secret` for each secret found in a file's bytes or, for Parquet, its values."""
    found = [s for s in secrets if s.encode() in data]
    if name.endswith(".parquet"):
        table = pq.read_table(io.BytesIO(data))
        text = repr(table.to_pylist()) + repr(table.schema.metadata)
        found += [s for s in secrets if s in text]
    return [f"{name}: {s}" for s in sorted(set(found))]


def test_secret_leaks_finds_a_secret_in_raw_and_parquet_bytes():
    import pyarrow as pa

    buffer = io.BytesIO()
    pq.write_table(pa.table({"error": ["key=CANARY-1234 " * 50]}), buffer, compression="gzip",
                   write_statistics=False, use_dictionary=False)
    assert b"CANARY-1234" not in buffer.getvalue()  # compressed away: only the decoded values show it
    assert secret_leaks("rows.parquet", buffer.getvalue(), ["CANARY-1234"]) == ["rows.parquet: CANARY-1234"]
    assert secret_leaks("log.txt", b"x CANARY-1234 y", ["CANARY-1234", "other"]) == ["log.txt: CANARY-1234"]


@pytest.mark.parametrize(("uri", "shown"), [
    ("https://user:tok3n@mlflow.example:5000/x", "https://user:***@mlflow.example:5000/x"),
    ("postgresql://me:pw@db/mlflow", "postgresql://me:***@db/mlflow"),
    ("s3://b/k?X-Amz-Signature=abc&X-Amz-Credential=AKIA%2Fx&part=1", "s3://b/k?X-Amz-Signature=***&X-Amz-Credential=***&part=1"),
    ("https://host/api?token=zzz#top", "https://host/api?token=***#top"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("error at https://u:p@h (refused)", "error at https://u:***@h (refused)"),
])
def test_a_uri_is_shown_with_its_password_and_tokens_masked(uri, shown):
    assert redact(uri) == shown


def test_the_settings_a_run_keeps_and_prints_mask_the_tracking_password(capsys):
    config = load("benchmark", ["--tracking.uri", "https://u:CANARY-p@h"])
    assert config.tracking.uri == "https://u:CANARY-p@h"  # the job itself uses it
    assert config.to_dict()["tracking"]["uri"] == "https://u:***@h"
    assert "CANARY-p" not in dump(config, "benchmark")


def test_no_credential_reaches_logs_outputs_or_s3(ray_session, s3_run):
    """The session's S3 benchmark and its local evaluation ran with canary secrets in the
    environment: none is in a file they wrote (on S3 or locally), what they printed or logged,
    or Ray's logs."""
    assert s3_run.status == (0, 0)
    files = {}
    fs, path = storage.resolve(f"s3://{s3_run.bucket}/runs")
    for info in fs.get_file_info(pafs.FileSelector(path, recursive=True)):
        if info.type == pafs.FileType.File:
            files[f"s3://{info.path}"] = storage.read_bytes(f"s3://{info.path}")
    for file in s3_run.local_runs.rglob("*"):
        if file.is_file():
            files[str(file)] = file.read_bytes()
    files.update({name: text.encode() for name, text in s3_run.said.items()})
    assert "INFO" in s3_run.said["log records"]  # logged at INFO (-v)
    # Ray's own logs of this session: the workers' output and the runtime environment.
    ray_logs = Path("/tmp/ray") / ray_session.get_runtime_context().get_session_name() / "logs"
    assert ray_logs.is_dir()
    for file in ray_logs.rglob("*"):
        if file.is_file():
            files[str(file)] = file.read_bytes()

    assert any(name.endswith(".parquet") for name in files) and any("summary.json" in name for name in files)
    assert any(name.endswith("model.safetensors") for name in files)
    assert [leak for name, data in files.items() for leak in secret_leaks(name, data, s3_run.secrets)] == []
    # The tracking URI is shown, and kept, with its password masked.
    assert "http://segray:***@127.0.0.1:" in s3_run.said["stdout"]
    assert "segray:***@" in storage.read_bytes(f"s3://{s3_run.bucket}/runs/s3/settings.yaml").decode()


# ---------------------------------------------------------------------------- shell


def shell_calls(source: str, filename: str) -> list[str]:
    """Calls that would hand a string to a shell: shell=True anywhere, os.system, os.popen,
    the os.exec*/spawn* family, subprocess.getoutput/getstatusoutput, and subprocess calls
    whose command is not a list or tuple display."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        where = f"{filename}:{node.lineno}"
        name = ast.unparse(node.func)
        if any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
               for k in node.keywords):
            found.append(f"{where}: shell= in {name}")
        if name in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput") or (
            name.startswith(("os.exec", "os.spawn", "os.posix_spawn"))
        ):
            found.append(f"{where}: {name}")
        if name.startswith("subprocess.") and name.split(".")[1] in ("run", "call", "check_call", "check_output",
                                                                     "Popen"):
            command = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "args"), None)
            if not isinstance(command, ast.List | ast.Tuple):
                found.append(f"{where}: {name} with a command that is not a list")
    return found


def test_shell_calls_finds_every_kind_of_shell_use():
    source = (
        "import os, subprocess\n"
        "subprocess.run(['git', 'status'])\n"
        "subprocess.run(f'git {x}', shell=True)\n"
        "subprocess.check_output('ls ' + path)\n"
        "os.system('rm -rf ' + path)\n"
        "os.popen(cmd)\n"
        "subprocess.Popen(args=command)\n"
    )
    assert [line.split(":")[1] for line in shell_calls(source, "x.py")] == ["3", "3", "4", "5", "6", "7"]


def test_no_shell_is_built_from_strings():
    files = [p for folder in ("segray", "jobs", "bench") for p in sorted((REPO / folder).rglob("*.py"))]
    assert len(files) > 10
    assert [call for file in files for call in shell_calls(file.read_text(), str(file.relative_to(REPO)))] == []
