import pytest

from segray.cli import config_from_args, parser
from segray.config import KAGGLE_DATASET
from segray.errors import RunExists
from segray.run import prepare_run_dir


def parse(*argv):
    return config_from_args(parser("test").parse_args(list(argv)))


def test_the_default_run_is_the_seeds_recipe_on_kaggle():
    config = parse()
    assert config.dataset == KAGGLE_DATASET
    assert config.models == ["unet", "resnet34_unet", "langsam"]
    train = config.train
    assert (train.image_size, train.batch_size, train.lr) == (256, 16, 1e-4)
    assert train.epochs == {"unet": 25, "resnet34_unet": 20}
    assert config.model_params["unet"]["base_width"] == 64
    assert config.model_params["resnet34_unet"]["encoder_weights"] == "imagenet"


def test_flags_override_the_preset():
    config = parse("--preset", "demo", "--unet-epochs", "3", "--image-size", "64", "--models", "unet, langsam",
                   "--langsam-sam", "/w/sam2", "--eval-batch-size", "unet=4", "--resnet-encoder-weights", "none")
    assert config.dataset.startswith("synthetic:")
    assert config.train.epochs["unet"] == 3 and config.train.epochs["resnet34_unet"] == 8
    assert config.models == ["unet", "langsam"]
    assert config.model_params["langsam"] == {"sam": "/w/sam2"}
    assert config.model_params["unet"]["image_size"] == 64
    assert config.eval.batch_size["unet"] == 4
    assert config.model_params["resnet34_unet"]["encoder_weights"] == "none"


def test_help_shows_real_defaults_and_never_none():
    """An option without a default says in its help what applies; argparse's "(default: None)"
    beside it would contradict that."""
    text = " ".join(parser("test").format_help().split())
    assert "default: None" not in text and "default: False" not in text
    assert "[default: all three]" in text
    assert "(default: seeds)" in text


def test_a_run_dir_is_refused_or_replaced_whole(tmp_path):
    run = tmp_path / "run"
    (run / "predictions").mkdir(parents=True)
    (run / "predictions" / "old.parquet").write_bytes(b"old rows")
    with pytest.raises(RunExists, match="--overwrite"):
        prepare_run_dir(str(run), overwrite=False)
    prepare_run_dir(str(run), overwrite=True)
    assert [p.name for p in run.iterdir()] == ["run.json"]
