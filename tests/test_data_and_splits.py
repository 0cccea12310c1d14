import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion.data import load_dataset, load_image_folder
from diffusion.errors import UsageError
from diffusion.splits import ForgetSpec, make_splits, read_sample_ids


def test_digits_shape_and_range(digits):
    assert digits.images.shape == (1797, 1, 8, 8)
    assert digits.images.min() == -1.0 and digits.images.max() == 1.0
    assert digits.num_classes == 10 and set(digits.labels.tolist()) == set(range(10))


def test_splits_disjoint_stratified_deterministic(digits, splits):
    assert len(np.intersect1d(splits.members, splits.heldout)) == 0
    assert len(splits.members) + len(splits.heldout) == len(digits)
    labels = digits.labels.numpy()
    assert splits.member_fraction == 0.25  # the default: each member is seen twice as often as with half
    for c in range(10):
        n_member, n_class = (labels[splits.members] == c).sum(), (labels == c).sum()
        assert abs(int(n_member) - 0.25 * int(n_class)) <= 1
    again = make_splits(digits.labels, seed=0)
    assert np.array_equal(again.members, splits.members)
    other = make_splits(digits.labels, seed=1)
    assert not np.array_equal(other.members, splits.members)


def test_member_fraction_checked(digits):
    with pytest.raises(UsageError, match="member_fraction"):
        make_splits(digits.labels, seed=0, member_fraction=1.5)


def test_forget_spec_fingerprint_and_sets(digits, splits):
    spec = ForgetSpec(classes=(3,), label="ticket 42")
    assert spec.fingerprint() == ForgetSpec(classes=[3]).fingerprint()  # label does not count
    assert spec.fingerprint() != ForgetSpec(classes=(4,)).fingerprint()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.classes = (4,)
    forget = spec.forget_ids(digits.labels, splits)
    retain = spec.retain_ids(digits.labels, splits)
    heldout = spec.heldout_ids(digits.labels, splits)
    labels = digits.labels.numpy()
    assert (labels[forget] == 3).all() and (labels[retain] != 3).all() and (labels[heldout] == 3).all()
    assert len(np.intersect1d(forget, retain)) == 0
    assert len(forget) + len(retain) == len(splits.members)
    assert np.isin(heldout, splits.heldout).all()


def test_forget_spec_sample_ids(digits, splits):
    ids = tuple(int(i) for i in splits.members[:5])
    spec = ForgetSpec(sample_ids=ids)
    assert spec.forget_ids(digits.labels, splits).tolist() == sorted(ids)
    spec.validate(digits.labels, splits, 10)


@pytest.mark.parametrize(
    "spec, message",
    [
        (dict(classes=(10,)), "forget class 10 is out of range"),
        (dict(classes=tuple(range(10))), "cannot forget every class"),
        (dict(sample_ids=(5000,)), "forget sample id 5000 is out of range"),
    ],
)
def test_forget_spec_validation(digits, splits, spec, message):
    with pytest.raises(UsageError, match=message):
        ForgetSpec(**spec).validate(digits.labels, splits, 10)


def test_forget_spec_rejects_non_members_and_empty(digits, splits):
    with pytest.raises(UsageError, match="not a training member"):
        ForgetSpec(sample_ids=(int(splits.heldout[0]),)).validate(digits.labels, splits, 10)
    with pytest.raises(UsageError, match="empty"):
        ForgetSpec()


def test_read_sample_ids(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("1, 2\n3 # comment\n")
    assert read_sample_ids(str(path)) == (1, 2, 3)
    path.write_text("1, x\n")
    with pytest.raises(UsageError, match="non-integer"):
        read_sample_ids(str(path))
    path.write_text("# nothing\n")
    with pytest.raises(UsageError, match="no sample ids"):
        read_sample_ids(str(path))


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    data = load_image_folder(tmp_path, size=8)
    assert data.images.shape == (6, 1, 8, 8) and data.class_names == ("cat", "dog")
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert -1.0 <= data.images.min() and data.images.max() <= 1.0
    assert torch.equal(load_dataset(str(tmp_path), image_size=8).images, data.images)


def test_image_folder_errors(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_image_folder(tmp_path / "missing", size=8)
    with pytest.raises(UsageError, match="no class sub-folders"):
        load_image_folder(tmp_path, size=8)
