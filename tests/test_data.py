import warnings

import numpy as np
import pytest
import torch

from helpers import make_cifar, make_folder, make_mnist, write_idx
from imagegen.config import DataConfig
from imagegen.data import BatchSampler, load_dataset, to_float, to_uint8
from imagegen.errors import ImagegenError


def test_digits_is_embedded_and_resized():
    ds = load_dataset(DataConfig(name="digits"))
    assert ds.images.shape == (1500, 1, 16, 16) and ds.images.dtype == torch.uint8
    assert ds.info.num_classes == 10 and ds.info.size == 16
    test = load_dataset(DataConfig(name="digits", image_size=8), "test")
    assert test.images.shape == (297, 1, 8, 8)
    # at 8x8 nothing is resampled: the pixels are the original 17 grey levels scaled to 0..255
    assert len(np.unique(test.images.numpy())) <= 17
    assert test.images.max() == 255
    rgb = load_dataset(DataConfig(name="digits", channels=3), "test")  # data.channels is honoured, not ignored
    assert rgb.images.shape == (297, 3, 16, 16) and rgb.info.channels == 3
    assert torch.equal(rgb.images[:, 0], rgb.images[:, 2])
    with pytest.raises(ImagegenError, match="data.channels must be 1 or 3"):
        load_dataset(DataConfig(name="digits", channels=2))


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_like_idx_files(tmp_path, name, folder, gz):
    truth = make_mnist(tmp_path, folder, gz=gz)
    ds = load_dataset(DataConfig(name=name, root=str(tmp_path), download=False), "test")
    assert ds.images.shape == (32, 1, 28, 28)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(truth["test"][0]))
    assert torch.equal(ds.labels, torch.from_numpy(truth["test"][1].astype(np.int64)))
    assert not ds.binarize and ds.info.bits == 8


def test_gz_source_is_never_written_to(tmp_path):
    make_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    before = sorted(p.name for p in raw.iterdir())
    raw.chmod(0o555)
    try:
        load_dataset(DataConfig(name="mnist", root=str(tmp_path), download=False))
    finally:
        raw.chmod(0o755)
    assert sorted(p.name for p in raw.iterdir()) == before


def test_binarized_mnist_is_dynamic_and_fixed_for_eval(tmp_path):
    make_mnist(tmp_path)
    ds = load_dataset(DataConfig(name="binarized-mnist", root=str(tmp_path), download=False))
    assert ds.binarize and ds.info.bits == 1
    idx = torch.arange(16)
    a, b = ds.batch(idx).x, ds.batch(idx).x
    assert set(a.unique().tolist()) <= {-1.0, 1.0}
    assert not torch.equal(a, b)  # resampled every time
    fixed1, fixed2 = ds.fixed_binarization(3), ds.fixed_binarization(3)
    assert torch.equal(fixed1.images, fixed2.images) and not fixed1.binarize
    # the binarisation follows the intensities: bright pixels are on more often
    p = ds.images.float() / 255
    on = (fixed1.images > 0).float()
    assert on[p > 0.9].mean() > 0.8 and on[p < 0.1].mean() < 0.2


def test_missing_dataset_names_paths_and_option(tmp_path):
    with pytest.raises(ImagegenError) as e:
        load_dataset(DataConfig(name="mnist", root=str(tmp_path), download=False))
    msg = str(e.value)
    assert "train-images-idx3-ubyte" in msg and "--data-root" in msg and "IMAGEGEN_DATA" in msg


def test_corrupt_idx_is_a_clear_error(tmp_path):
    make_mnist(tmp_path, gz=False)
    p = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(ImagegenError, match="truncated or corrupt"):
        load_dataset(DataConfig(name="mnist", root=str(tmp_path), download=False))
    write_idx(p, np.zeros((2, 28, 28)), gz=False)  # 2 images but 64 labels
    with pytest.raises(ImagegenError, match="do not belong together"):
        load_dataset(DataConfig(name="mnist", root=str(tmp_path), download=False))


def test_cifar_pickle_batches(tmp_path):
    truth = make_cifar(tmp_path)
    train = load_dataset(DataConfig(name="cifar10", root=str(tmp_path), download=False))
    test = load_dataset(DataConfig(name="cifar10", root=str(tmp_path), download=False), "test")
    assert train.images.shape == (40, 3, 32, 32) and test.images.shape == (8, 3, 32, 32)
    assert torch.equal(test.images, torch.from_numpy(truth["test_batch"][0]))
    assert test.labels.tolist() == truth["test_batch"][1]
    grey = load_dataset(DataConfig(name="cifar10", root=str(tmp_path), download=False, channels=1,
                                   image_size=16), "test")
    assert grey.images.shape == (8, 1, 16, 16) and grey.info.channels == 1


def test_cifar_batch_with_code_is_refused(tmp_path):
    import pickle

    make_cifar(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(ImagegenError, match="not a readable CIFAR-10 batch"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path), download=False), "test")


def test_image_folder_labels_modes_and_corrupt_files(tmp_path):
    make_folder(tmp_path / "imgs", ("cat", "dog"), per_class=3)
    from PIL import Image

    Image.new("RGBA", (30, 20), (255, 0, 0, 128)).save(tmp_path / "imgs" / "cat" / "rgba.png")
    Image.new("P", (20, 20)).save(tmp_path / "imgs" / "dog" / "palette.png")
    Image.new("CMYK", (20, 20), (0, 255, 0, 0)).save(tmp_path / "imgs" / "dog" / "cmyk.jpg")
    Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16)).save(tmp_path / "imgs" / "dog" / "deep.png")
    (tmp_path / "imgs" / "cat" / "broken.png").write_bytes(b"not an image at all")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ds = load_dataset(DataConfig(name=f"folder:{tmp_path / 'imgs'}", image_size=16))
    assert any("skipped 1 unreadable" in str(x.message) and "broken.png" in str(x.message) for x in w)
    assert ds.images.shape == (10, 3, 16, 16)
    assert ds.info.class_names == ("cat", "dog") and ds.info.num_classes == 2
    assert sorted(ds.labels.tolist()) == [0] * 4 + [1] * 6
    # cached: a second load gives the same tensor without re-decoding
    again = load_dataset(DataConfig(name=f"folder:{tmp_path / 'imgs'}", image_size=16))
    assert torch.equal(again.images, ds.images)
    grey = load_dataset(DataConfig(name=f"folder:{tmp_path / 'imgs'}", image_size=8, channels=1))
    assert grey.images.shape == (10, 1, 8, 8)


def test_folder_split_subfolders_and_grey_detection(tmp_path):
    make_folder(tmp_path / "d" / "train", ("a",), per_class=2, mode="L")
    make_folder(tmp_path / "d" / "test", ("a",), per_class=1, mode="L")
    ds = load_dataset(DataConfig(name=f"folder:{tmp_path / 'd'}", image_size=8), "test")
    assert ds.images.shape == (1, 1, 8, 8)


def test_empty_or_unreadable_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImagegenError, match="no images"):
        load_dataset(DataConfig(name=f"folder:{tmp_path / 'empty'}"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"junk")
    with pytest.raises(ImagegenError, match="could be read"):
        load_dataset(DataConfig(name=f"folder:{tmp_path / 'bad'}"))
    with pytest.raises(ImagegenError, match="does not exist"):
        load_dataset(DataConfig(name=f"folder:{tmp_path / 'nope'}"))
    with pytest.raises(ImagegenError, match="unknown dataset"):
        load_dataset(DataConfig(name="imagenet"))


def test_quantisation_round_trip():
    u8 = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    assert torch.equal(to_uint8(to_float(u8)), u8)
    assert to_float(u8).min() == -1 and to_float(u8).max() == 1


def test_batch_sampler_resumes_and_shards():
    s = BatchSampler(100, 10, seed=3)
    seq = [s.next() for _ in range(25)]
    s2 = BatchSampler(100, 10, seed=3)
    for _ in range(13):
        s2.next()
    s3 = BatchSampler(100, 10, seed=3)
    s3.load_state_dict(s2.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(seq[13:], [s3.next() for _ in range(12)]))
    # one epoch covers every index once
    assert sorted(torch.cat(seq[:10]).tolist()) == list(range(100))
    r0, r1 = BatchSampler(100, 5, 0, rank=0, world=2), BatchSampler(100, 5, 0, rank=1, world=2)
    a, b = r0.next(), r1.next()
    assert len(a) == len(b) == 5 and not set(a.tolist()) & set(b.tolist())
