"""Word-level language models: <unk>/<eos> handling, perplexity, dropout modes, next words."""

import argparse
import logging
import math

import pytest
import torch
import torch.nn.functional as F

from rnnkit.data.vocab import Vocab
from rnnkit.tasks.language_model import (
    TASK,
    LanguageModel,
    LanguageModelConfig,
    LanguageModelData,
    WindowLanguageModel,
    tokenize_text,
)
from rnnkit.train import TrainConfig

CORPUS = "the cat sat on the mat\nthe dog sat on the log\na cat and a dog\n" * 4


def _vocab():
    return Vocab.build(tokenize_text(CORPUS, "word"), level="word")


def test_tokenize_marks_line_ends_with_eos():
    assert tokenize_text("a b\nc\n", "word") == ["a", "b", "<eos>", "c", "<eos>"]
    assert tokenize_text("ab\n", "char") == ["a", "b", "\n"]


def test_unknown_words_map_to_unk_with_a_warning(caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("rnnkit"), "propagate", True)  # the CLI may have cut it
    vocab = _vocab()
    model = LanguageModel(LanguageModelConfig(embed_size=8, hidden_size=8), vocab)
    with caplog.at_level(logging.WARNING, logger="rnnkit"):
        ids = model.encode("the zebra sat\n")
    assert ids == [vocab.stoi["the"], vocab.unk_id, vocab.stoi["sat"], vocab.eos_id]
    assert "zebra" in caplog.text


def test_data_dir_reader_and_vocab_limits(tmp_path):
    (tmp_path / "ptb.train.txt").write_text(CORPUS)
    (tmp_path / "ptb.valid.txt").write_text("the cat sat on a log\n")
    configs = {
        "model": LanguageModelConfig(embed_size=8, hidden_size=8),
        "data": LanguageModelData(data_dir=str(tmp_path), level="word", bptt=4, max_vocab=8),
    }
    model, training = TASK.build(configs, TrainConfig(batch_size=2), torch.device("cpu"))
    assert len(model.vocab) == 8  # 4 specials + the 4 most frequent words
    assert model.vocab.eos_id in training.train_ids.tolist()
    assert model.vocab.unk_id in training.valid_ids.tolist()


def test_perplexity_is_exp_of_mean_token_loss_by_hand():
    torch.manual_seed(0)
    vocab = _vocab()
    model = LanguageModel(LanguageModelConfig(embed_size=8, hidden_size=8, dropout=0.0), vocab)
    ids = vocab.encode(tokenize_text(CORPUS, "word"))
    result = model.evaluate_ids(ids, chunk=7)  # chunked, state carried
    with torch.no_grad():  # by hand: one pass over the whole stream
        logits = model(torch.tensor([ids[:-1]])).logits[0]
        nll = F.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none")
    assert math.isclose(result["loss"], float(nll.mean()), rel_tol=1e-5)
    assert math.isclose(result["perplexity"], math.exp(float(nll.mean())), rel_tol=1e-5)


def _dropout_masks(dropout_mode: str):
    torch.manual_seed(1)
    vocab = _vocab()
    cfg = LanguageModelConfig(embed_size=8, hidden_size=8, dropout=0.5, dropout_mode=dropout_mode)
    model = LanguageModel(cfg, vocab)
    x = torch.ones(3, 6, 8)
    model.train()
    train_out = model._feature_dropout(x)
    model.eval()
    return train_out, model


def test_variational_dropout_keeps_one_mask_per_sequence():
    out, model = _dropout_masks("variational")
    assert torch.equal(out, out[:, :1].expand_as(out))  # the same units dropped at every step
    assert not torch.equal(out[0], out[1])  # but a different mask for each sequence
    ids = torch.tensor([[1, 4, 5, 6]])
    assert torch.equal(model(ids).logits, model(ids).logits)  # off in eval mode


def test_standard_dropout_draws_a_new_mask_every_step():
    out, model = _dropout_masks("standard")
    assert not torch.equal(out[:, 0], out[:, 1])
    ids = torch.tensor([[1, 4, 5, 6]])
    assert torch.equal(model(ids).logits, model(ids).logits)


def test_embedding_dropout_drops_whole_word_vectors():
    torch.manual_seed(2)
    model = LanguageModel(
        LanguageModelConfig(embed_size=8, hidden_size=8, embed_dropout=0.5, dropout=0.0), _vocab()
    ).train()
    emb = torch.ones(2, 50, 8)
    out = model._embedding_dropout(emb)
    rows = out.abs().sum(-1)
    assert set(rows.unique().tolist()) == {0.0, 16.0}  # a word is either all dropped or all kept


def test_next_words_are_distinct_and_match_the_softmax():
    torch.manual_seed(3)
    vocab = _vocab()
    model = LanguageModel(LanguageModelConfig(embed_size=8, hidden_size=8), vocab).eval()
    result = model.next_words("the cat sat on the", k=4)
    words = [r["word"] for r in result]
    assert len(set(words)) == 4 and not set(words) & set(vocab.specials)
    assert sum(r["probability"] for r in result) <= 1 + 1e-9
    with torch.no_grad():
        ids = model.encode("\nthe cat sat on the")
        probs = torch.softmax(model(torch.tensor([ids])).logits[0, -1], -1)
    for r in result:
        assert math.isclose(r["probability"], float(probs[vocab.stoi[r["word"]]]), rel_tol=1e-5)
    assert result == sorted(result, key=lambda r: -r["probability"])


def test_window_model_sees_exactly_n_previous_tokens():
    torch.manual_seed(4)
    vocab = _vocab()
    cfg = LanguageModelConfig(model="window", window=3, embed_size=4, hidden_size=8, dropout=0.0)
    model = WindowLanguageModel(cfg, vocab).eval()
    ids = torch.tensor([vocab.encode(tokenize_text(CORPUS, "word"))[:12]])
    full = model(ids).logits
    # streaming in two pieces with the carried state gives the same predictions
    a = model(ids[:, :5])
    b = model(ids[:, 5:], a.state)
    torch.testing.assert_close(torch.cat([a.logits, b.logits], 1), full)
    # changing a token 3+ positions back cannot change a prediction
    changed = ids.clone()
    changed[0, 2] = vocab.stoi["log"]
    assert torch.equal(model(changed).logits[0, 5:], full[0, 5:])
    assert not torch.equal(model(changed).logits[0, 2:5], full[0, 2:5])


def test_word_generation_renders_eos_as_line_breaks():
    torch.manual_seed(5)
    model = LanguageModel(LanguageModelConfig(embed_size=8, hidden_size=8), _vocab()).eval()
    text = model.generate("the", 30, seed=1)
    assert "<eos>" not in text and "<pad>" not in text
    assert all(w in model.vocab for w in text.split())


def test_time_sum_reduction_scales_loss_by_steps():
    vocab = _vocab()
    torch.manual_seed(6)
    mean_model = LanguageModel(LanguageModelConfig(embed_size=8, hidden_size=8, dropout=0), vocab)
    sum_model = LanguageModel(
        LanguageModelConfig(embed_size=8, hidden_size=8, dropout=0, time_reduction="sum"), vocab
    )
    sum_model.load_state_dict(mean_model.state_dict())
    x, y = torch.randint(4, len(vocab), (2, 5)), torch.randint(4, len(vocab), (2, 5))
    with torch.no_grad():
        ratio = float(sum_model(x, None, y).loss / mean_model(x, None, y).loss)
    assert math.isclose(ratio, 5.0, rel_tol=1e-6)


@pytest.mark.parametrize("beta", [0.0, 10.0])
def test_norm_stabilizer_adds_to_the_training_loss(beta):
    vocab = _vocab()
    torch.manual_seed(7)
    model = LanguageModel(
        LanguageModelConfig(embed_size=8, hidden_size=8, dropout=0, norm_stabilizer=beta), vocab
    ).train()
    plain = LanguageModel(
        LanguageModelConfig(embed_size=8, hidden_size=8, dropout=0), vocab
    ).train()
    plain.load_state_dict(model.state_dict())
    x, y = torch.randint(4, len(vocab), (2, 5)), torch.randint(4, len(vocab), (2, 5))
    diff = float((model(x, None, y).loss - plain(x, None, y).loss).detach())
    assert (diff > 0) if beta else diff == 0


def test_ptb_recipes_resolve_and_epoch_recipes_have_no_time_limit():
    """Every PTB recipe is a valid config; the epoch-bound ones say ``minutes = "none"`` (TOML
    has no null) so the lm task's 8-minute default does not cut them short."""
    from pathlib import Path

    from rnnkit.config import read_config_file, resolve
    from rnnkit.tasks.language_model import TASK
    from rnnkit.train import TrainConfig

    recipes = Path(__file__).resolve().parent.parent / "recipes"
    sections = {**TASK.sections, "train": TrainConfig}
    for name in ("ptb_small", "ptb_medium", "ptb_window", "ptb_regularized"):
        path = recipes / f"{name}.toml"
        read_config_file(path, sections)  # unknown keys would raise
        cfg = resolve(argparse.Namespace(), sections, path, TASK.defaults)["train"]
        assert cfg.minutes == (60 if name == "ptb_regularized" else None), name
        assert cfg.epochs is not None or cfg.minutes is not None
