"""The synthetic MADS-like data set: determinism, shapes, names, distractors, files."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from segray.data.synthetic import (
    CATEGORIES,
    HEIGHT,
    WIDTH,
    render_distractor_mask,
    render_sample,
    sample_name,
    write_synthetic,
)

NAME_PATTERN = re.compile(r"^(HipHop|Jazz|Kata|Sports|Taichi)_\1\d_C[0-2]_\d{5}\.png$")
N_SAMPLES = 100


@pytest.fixture(scope="module")
def samples() -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """The first N_SAMPLES samples of seed 0, rendered once for the whole module."""
    return [render_sample(index) for index in range(N_SAMPLES)]


def test_render_is_deterministic():
    image, mask, distractor = render_sample(7, seed=3)
    again = render_sample(7, seed=3)
    np.testing.assert_array_equal(image, again[0])
    np.testing.assert_array_equal(mask, again[1])
    assert distractor == again[2]


def test_seed_and_index_change_the_image():
    image = render_sample(7, seed=3)[0]
    assert not np.array_equal(image, render_sample(7, seed=4)[0])
    assert not np.array_equal(image, render_sample(8, seed=3)[0])


def test_shapes_dtypes_and_mask_values(samples):
    for image, mask, distractor in samples:
        assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8
        assert mask.shape == (HEIGHT, WIDTH) and mask.dtype == np.uint8
        assert set(np.unique(mask)) == {0, 255}
        assert 0.005 < (mask > 0).mean() < 0.5  # a person, neither a speck nor the whole frame
        assert isinstance(distractor, bool)
        assert image.std() > 10  # a scene, not a flat colour


def test_person_is_not_separable_by_colour(samples):
    """A per-colour classifier (P(person | colour) from 70 samples, 16 levels per channel)
    finds the person poorly in 30 others: it takes shape, not colour, to segment."""
    levels = 16

    def codes(image):
        q = image.astype(np.int64) // (256 // levels)
        return (q[..., 0] * levels + q[..., 1]) * levels + q[..., 2]

    person, background = np.ones(levels**3), np.ones(levels**3)
    for image, mask, _ in samples[:70]:
        c = codes(image)
        person += np.bincount(c[mask > 0], minlength=levels**3)
        background += np.bincount(c[mask == 0], minlength=levels**3)
    posterior = person / (person + background)
    ious = []
    for image, mask, _ in samples[70:]:
        predicted, truth = posterior[codes(image)] > 0.25, mask > 0
        ious.append((predicted & truth).sum() / (predicted | truth).sum())
    assert np.mean(ious) < 0.5


def test_distractor_frequency(samples):
    rate = np.mean([distractor for _, _, distractor in samples])
    assert 0.15 <= rate <= 0.45


def test_distractor_is_not_in_the_mask(samples):
    with_distractor = 0
    for index, (_, mask, distractor) in enumerate(samples):
        silhouette = render_distractor_mask(index)
        if not distractor:
            assert silhouette is None
            continue
        with_distractor += 1
        assert silhouette.shape == (HEIGHT, WIDTH) and set(np.unique(silhouette)) <= {0, 255}
        on_mannequin = silhouette > 0
        assert on_mannequin.sum() > 500
        # The person may hide a little of it, but the mannequin itself is never in the mask.
        assert (mask[on_mannequin] == 0).mean() > 0.5
    assert with_distractor > 0


def test_names_match_mads_pattern_and_are_deterministic():
    for seed in (0, 1, 12345):
        for index in (0, 1, 2, 99, 12_345, 99_999):
            name = sample_name(index, seed)
            assert NAME_PATTERN.match(name), name
            assert name.split("_")[0] in CATEGORIES
            assert int(name[-9:-4]) % 5 == 0
            assert sample_name(index, seed) == name
    assert [sample_name(i, 0) for i in range(10)] != [sample_name(i, 1) for i in range(10)]


def test_names_are_unique_over_100k():
    names = [sample_name(index, 0) for index in range(100_000)]
    assert len(set(names)) == len(names)
    assert {name.split("_")[0] for name in names} == set(CATEGORIES)


def test_name_index_out_of_range():
    with pytest.raises(ValueError):
        sample_name(-1)
    with pytest.raises(ValueError):
        sample_name(900_000)


def test_write_synthetic(tmp_path):
    root = write_synthetic(tmp_path / "a", 4, seed=2)
    assert root == tmp_path / "a"
    names = sorted(sample_name(index, 2) for index in range(4))
    assert sorted(p.name for p in (root / "images").iterdir()) == names  # no temp files left over
    assert sorted(p.name for p in (root / "masks").iterdir()) == names
    assert json.loads((root / ".complete").read_text()) == {"n": 4, "seed": 2}

    for index in range(4):
        image, mask, _ = render_sample(index, seed=2)
        with Image.open(root / "images" / sample_name(index, 2)) as png:
            assert png.mode == "RGB"
            np.testing.assert_array_equal(np.asarray(png), image)  # RGB order survived cv2's BGR
        with Image.open(root / "masks" / sample_name(index, 2)) as png:
            assert png.mode == "L"
            np.testing.assert_array_equal(np.asarray(png), mask)


def test_write_synthetic_is_a_noop_when_complete(tmp_path):
    root = write_synthetic(tmp_path, 3)
    (root / "images" / sample_name(0)).unlink()  # would be rewritten if the call did any work
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert write_synthetic(tmp_path, 3) == root
    assert not (root / "images" / sample_name(0)).exists()
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before


def test_write_synthetic_resumes_an_interrupted_run(tmp_path):
    root = write_synthetic(tmp_path, 3)
    lost = root / "masks" / sample_name(1)
    expected = lost.read_bytes()
    kept = root / "images" / sample_name(2)
    kept_mtime = kept.stat().st_mtime_ns
    lost.unlink()
    (root / ".complete").unlink()  # as if it had crashed before finishing

    write_synthetic(tmp_path, 3)
    assert lost.read_bytes() == expected
    assert kept.stat().st_mtime_ns == kept_mtime  # existing files are skipped
    assert (root / ".complete").exists()


def test_write_synthetic_is_byte_identical_across_runs(tmp_path):
    first, second = write_synthetic(tmp_path / "x", 3, seed=5), write_synthetic(tmp_path / "y", 3, seed=5)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) == 7  # 3 images, 3 masks, the marker
    for relative in files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes()


def test_write_synthetic_refuses_another_seed(tmp_path):
    write_synthetic(tmp_path, 2, seed=0)
    with pytest.raises(ValueError):
        write_synthetic(tmp_path, 2, seed=1)
