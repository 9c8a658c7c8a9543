"""Image captioning: the decoder (attention and pooled init), decoding, BLEU and the CLI."""

import io
import json
import tarfile

import numpy as np
import pytest
import torch

from rnnkit.data.vocab import Vocab
from rnnkit.tasks.captioner import (
    CaptionData,
    Captioner,
    CaptionerConfig,
    CaptionSplit,
    caption_bleu,
    caption_tokens,
    collate,
    image_batches,
)

pytest.importorskip("PIL")
pytest.importorskip("sacrebleu")
from PIL import Image  # noqa: E402

CAPTIONS = [
    "a dog runs on the grass",
    "two children play in the water",
    "a man rides a red bike",
    "a woman in a blue dress walks",
    "a black dog jumps over a fence",
    "people stand on a snowy hill",
    "a boy kicks a ball",
    "a girl in pink swings",
    "a brown dog swims in a lake",
    "a climber scales a rock wall",
]

pretrained = pytest.mark.skipif(
    not __import__("rnnkit.image_encoders", fromlist=["x"]).pretrained_available(),
    reason="the EfficientNet-Lite0 packages (rnnkit[caption]) are not installed",
)


def small_model(attention: str, vocab: Vocab, **kw) -> Captioner:
    cfg = CaptionerConfig(
        attention=attention,
        embed_size=32,
        hidden_size=64,
        feature_size=32,
        attention_size=32,
        dropout=0.0,
        **kw,
    )
    return Captioner(cfg, CaptionData(max_len=12), vocab)


def feature_split(model: Captioner, seed: int = 0) -> CaptionSplit:
    g = torch.Generator().manual_seed(seed)
    # fixed fake features: one random vector per image plus variation across the 49 positions
    base = torch.rand(len(CAPTIONS), 1, 1280, generator=g)
    feats = (base + 0.5 * torch.rand(len(CAPTIONS), 49, 1280, generator=g)).half()
    ids = [model.encode_caption(c) for c in CAPTIONS]
    refs = [[" ".join(caption_tokens(c))] for c in CAPTIONS]
    return CaptionSplit([f"{i}.jpg" for i in range(10)], feats, list(range(10)), ids, refs)


def vocab() -> Vocab:
    return Vocab.build([caption_tokens(c) for c in CAPTIONS], level="word")


def test_caption_tokens_drop_punctuation_and_case():
    assert caption_tokens("A Dog , runs in the entry way .") == [
        "a",
        "dog",
        "runs",
        "in",
        "the",
        "entry",
        "way",
    ]
    assert caption_tokens("t-shirt & 3 dogs") == ["t-shirt", "3", "dogs"]


def test_bleu_of_references_against_themselves_is_100():
    refs = [[c, c.upper()] for c in CAPTIONS]
    scores = caption_bleu(CAPTIONS, refs)
    assert scores == pytest.approx({"bleu1": 100, "bleu2": 100, "bleu3": 100, "bleu4": 100})
    assert caption_bleu(["a cat"] * 10, refs)["bleu4"] < 5


def test_image_batches_keep_captions_of_an_image_together():
    image_of = [k for k in range(7) for _ in range(5)]
    batches = image_batches(image_of, 10, np.random.default_rng(0))
    assert sorted(j for b in batches for j in b) == list(range(35))
    assert all(len({image_of[j] for j in b}) == 2 for b in batches[:-1])


def test_attention_weights_over_49_positions_sum_to_one():
    torch.manual_seed(0)
    model = small_model("additive", vocab())
    split = feature_split(model)
    v = model.vocab
    batch = collate(split, list(range(10)), v.pad_id, v.bos_id, v.eos_id)
    out = model(
        batch["inputs"],
        targets=batch["targets"],
        images=batch["images"],
        image_index=batch["image_index"],
        lengths=batch["lengths"],
    )
    alphas = out.state  # (B, T, 49)
    B, T = batch["inputs"].shape
    assert alphas.shape == (B, T, 49)
    real = torch.arange(T) < batch["lengths"].unsqueeze(1)
    assert torch.allclose(alphas[real].sum(-1), torch.ones(int(real.sum())), atol=1e-5)
    assert (alphas[~real] == 0).all()
    assert (alphas >= 0).all()
    # forward's loss is the training loss, and padded logits are zero
    loss, n = model.training_loss(batch)
    assert torch.allclose(out.loss, loss) and n == int(batch["lengths"].sum())
    assert out.logits.shape == (B, T, len(v)) and (out.logits[~real] == 0).all()
    # decoding gives one 49-way distribution per generated word
    hyp = model.describe(split.images[:2], beam_size=1, max_len=5)[0]
    assert hyp.attention.shape == (len(hyp.tokens), 49)
    assert torch.allclose(hyp.attention.sum(-1), torch.ones(len(hyp.tokens)), atol=1e-5)


@pytest.mark.parametrize("attention", ["additive", "none"])
def test_decoder_overfits_ten_image_caption_pairs(attention):
    torch.manual_seed(0)
    model = small_model(attention, vocab(), doubly_stochastic=0.0)
    split = feature_split(model)
    v = model.vocab
    batch = collate(split, list(range(10)), v.pad_id, v.bos_id, v.eos_id)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(150):
        loss, _ = model.training_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    greedy = [" ".join(model.words(h.tokens)) for h in model.describe(split.images)]
    assert greedy == CAPTIONS
    beam = [" ".join(model.words(h.tokens)) for h in model.describe(split.images, beam_size=3)]
    assert beam == CAPTIONS
    assert model.evaluate_split(split)["bleu4"] == pytest.approx(100.0)


# ---------------------------------------------------------------------------------------------
# command line, end to end on a tiny tar
# ---------------------------------------------------------------------------------------------
def _jpeg(seed: int, size: int = 64) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture()
def tiny_data(tmp_path):
    """A 6-image train tar and a 2-image validation tar, 2 captions per image."""
    out = {}
    for split, names in (("train", range(6)), ("valid", range(6, 8))):
        tar_path = tmp_path / f"{split}.tar"
        lines = []
        with tarfile.open(tar_path, "w") as tar:
            for k in names:
                data = _jpeg(k)
                info = tarfile.TarInfo(f"{k}.jpg")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                for j in range(2):
                    lines.append(f"{k}.jpg#{j}\t{CAPTIONS[(k + j) % 10]} .")
        cap_path = tmp_path / f"{split}.txt"
        cap_path.write_text("\n".join(lines) + "\n", "utf-8")
        out[split] = (tar_path, cap_path)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(_jpeg(42, 100))
    out["photo"] = photo
    return out


def _train_args(tiny_data, tmp_path, *extra):
    (ti, tc), (vi, vc) = tiny_data["train"], tiny_data["valid"]
    return [
        "-q", "train", "caption", "--images", ti, "--captions", tc, "--valid-images", vi,
        "--valid-captions", vc, "--feature-cache", tmp_path / "cache", "--min-freq", "1",
        "--embed-size", "16", "--hidden-size", "32", "--feature-size", "16",
        "--attention-size", "16", "--batch-size", "4", "--no-progress", "--dry-run",
        "--threads", "1", *extra,
    ]  # fmt: skip


def _cli(capsys, *argv):
    from rnnkit.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "encoder", ["small-cnn", pytest.param("efficientnet-lite0", marks=pretrained)]
)
def test_cli_dry_run_then_caption(tiny_data, tmp_path, capsys, encoder):
    run = tmp_path / "run"
    args = _train_args(tiny_data, tmp_path, "--encoder", encoder, "--cnn-width", "4", "--out", run)
    code, _, err = _cli(capsys, *args)
    assert code == 0, err
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [m for m in metrics if m["kind"] == "eval"]
    assert evals and {"val_loss", "val_bleu1", "val_bleu4"} <= set(evals[-1])
    assert (run / "vocab.json").exists()
    if encoder == "efficientnet-lite0":  # the frozen encoder is not saved with the run
        from safetensors import safe_open

        with safe_open(str(run / "model.safetensors"), "pt") as f:
            assert not any("extractor" in k or "_blocks" in k for k in f.keys())
        assert list((tmp_path / "cache").rglob("*.npy"))  # features were cached

    png = tmp_path / "att.png"
    photo = tiny_data["photo"]
    member = f"{tiny_data['valid'][0]}:6.jpg"  # straight from the tar
    code, out, err = _cli(
        capsys, "caption", run, photo, member, "--beam", "2", "--json", "--attention-png", png
    )
    assert code == 0, err
    results = [json.loads(line) for line in out.splitlines()]
    assert [r["image"] for r in results] == [str(photo), member]
    assert all(isinstance(r["caption"], str) and r["beam"] == 2 for r in results)
    assert png.exists() and (tmp_path / "att-2.png").exists()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    code, out, _ = _cli(capsys, "caption", run, photo)
    assert code == 0 and out.startswith(f"{photo}: ")


def test_cli_pooled_init_model_and_corrupt_image(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    args = _train_args(
        tiny_data, tmp_path, "--encoder", "small-cnn", "--cnn-width", "4", "--attention", "none"
    )
    code, _, err = _cli(capsys, *args, "--out", run)
    assert code == 0, err
    code, out, err = _cli(capsys, "caption", run, tiny_data["photo"], "--json")
    assert code == 0 and json.loads(out)["caption"] is not None
    code, _, err = _cli(capsys, "caption", run, tiny_data["photo"], "--attention-png", "x.png")
    assert code == 2 and "attention" in err

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    code, _, err = _cli(capsys, "caption", run, bad)
    assert code == 2
    assert err.strip().count("\n") == 0 and f"{bad}: not a readable image" in err


def test_corrupt_jpeg_in_training_tar_names_the_member(tiny_data, tmp_path, capsys):
    ti, tc = tiny_data["train"]
    with tarfile.open(ti, "a") as tar:
        data = _jpeg(99)[:150]  # truncated JPEG
        info = tarfile.TarInfo("99.jpg")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with open(tc, "a", encoding="utf-8") as f:
        f.write("99.jpg#0\ta dog .\n")
    code, _, err = _cli(capsys, *_train_args(tiny_data, tmp_path, "--encoder", "small-cnn"))
    assert code == 2
    assert f"{ti}:99.jpg: not a readable image" in err and err.strip().count("\n") == 0


def test_missing_image_is_an_error_naming_the_caption_line(tiny_data, tmp_path, capsys):
    ti, tc = tiny_data["train"]
    with open(tc, "a", encoding="utf-8") as f:
        f.write("nowhere.jpg#0\ta dog .\n")
    code, _, err = _cli(capsys, *_train_args(tiny_data, tmp_path, "--encoder", "small-cnn"))
    assert code == 2 and f"{tc}:13: image 'nowhere.jpg' is not in" in err


def test_cli_resume_continues_the_run(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    args = [
        a for a in _train_args(tiny_data, tmp_path, "--encoder", "small-cnn") if a != "--dry-run"
    ]
    args += ["--cnn-width", "4", "--max-steps", "2", "--eval-every", "2", "--out", run]
    code, _, err = _cli(capsys, *args)
    assert code == 0, err
    code, _, err = _cli(
        capsys, "-q", "train", "caption", "--resume", run, "--max-steps", "4", "--no-progress"
    )
    assert code == 0, err
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 4
