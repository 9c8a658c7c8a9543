"""Sequence tagging: masking (a padded batch tags each sentence as it would alone), softmax and
CRF heads overfitting a tiny corpus, BIO entities, and the CLI end to end."""

import json

import pytest
import torch

from rnnkit.cli import main
from rnnkit.data.conll import TaggedSentence
from rnnkit.tasks.common import collate
from rnnkit.tasks.tagger import TASK, TaggerConfig, TaggerData, resolve_data
from rnnkit.train import TrainConfig

NER = [
    ("I love New York", "O O B-loc I-loc"),
    ("Paris is nice", "B-loc O O"),
    ("Ada Lovelace wrote code", "B-per I-per O O"),
    ("we met Ada in Paris", "O O B-per O B-loc"),
    ("New York never sleeps", "B-loc I-loc O O"),
    ("call Alan Turing now", "O B-per I-per O"),
]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def ner(tmp_path):
    def write(name, rows):
        text = "\t\n".join(
            "".join(f"{w}\t{t}\n" for w, t in zip(s.split(), tags.split())) for s, tags in rows
        )  # sentences separated by a tab-only line, as in WNUT-17's training file
        path = tmp_path / name
        path.write_text(text)
        return path

    return write("train.conll", NER), write("dev.conll", NER[:2])


def conllu(rows):
    out = []
    for words, tags in rows:
        for i, (w, t) in enumerate(zip(words.split(), tags.split()), 1):
            out.append("\t".join([str(i), w, w, t, "_", "_", "0", "dep", "_", "_"]))
        out.append("")
    return "\n".join(out) + "\n"


POS = [
    ("the dog barked", "DET NOUN VERB"),
    ("a cat slept", "DET NOUN VERB"),
    ("the cat barked loudly", "DET NOUN VERB ADV"),
    ("dogs sleep", "NOUN VERB"),
]


def build(train, dev, **kw):
    configs = {
        "model": TaggerConfig(
            **{
                "embed_size": 8,
                "hidden_size": 8,
                "char_embed_size": 4,
                "char_hidden_size": 6,
                "dropout": 0.0,
                "word_dropout": 0.0,
                **kw,
            }
        ),  # fmt: skip
        "data": TaggerData(data=str(train), valid=str(dev)),
    }
    torch.manual_seed(0)
    return TASK.build(configs, TrainConfig(batch_size=4), torch.device("cpu"))


@pytest.mark.parametrize(
    "kw",
    [
        {"char_repr": "cnn", "crf": False},
        {"char_repr": "rnn", "crf": True},
        {"char_repr": "none", "crf": True, "cell": "gru", "num_layers": 2},
        {"char_repr": "cnn", "crf": False, "layer_norm": True},  # the loop, not the fused kernel
    ],
)
def test_padding_never_changes_a_tagging(ner, kw):
    model, _ = build(*ner, **kw)
    model.eval()
    with torch.no_grad(), torch.random.fork_rng():
        for p in model.parameters():  # random transitions, so the CRF really decodes
            p.add_(torch.randn_like(p) * 0.3)
    sentences = [["Paris"], ["we", "met", "Grace", "Hopper", "in", "Zurich"], ["New", "York"]]
    examples = [model.encode(s) for s in sentences]
    batch = collate(examples)
    with torch.no_grad():
        together = model.forward_batch(batch).logits
        paths, _ = model.decode_batch(batch)
        for i, ex in enumerate(examples):
            one = collate([ex])
            alone = model.forward_batch(one).logits
            n = len(sentences[i])
            assert torch.allclose(together[i, :n], alone[0], atol=1e-5), (i, kw)
            assert paths[i] == model.decode_batch(one)[0][0]
    assert [len(p) for p in paths] == [1, 6, 2]


@pytest.mark.parametrize("crf", [False, True])
def test_overfits_a_tiny_corpus(ner, crf):
    model, training = build(*ner, crf=crf)
    batch = collate(training.train)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    model.train()
    for _ in range(50):
        opt.zero_grad()
        loss = model.forward_batch(batch).loss
        loss.backward()
        opt.step()
    assert loss.item() < 0.1
    m = model.evaluate_examples(training.train)
    assert m["accuracy"] == 1.0 and m["f1"] == 1.0
    out = model.tag(["I love New York"])[0]
    assert out["tags"] == ["O", "O", "B-loc", "I-loc"]
    assert out["entities"] == [{"type": "loc", "start": 2, "end": 4, "text": "New York"}]


def test_crf_constraints_follow_the_tag_set(ner, tmp_path):
    model, _ = build(*ner, crf=True)
    assert model.bio and model.tags[0] == "O"
    i_loc, o = model.tags.index("I-loc"), model.tags.index("O")
    assert model.crf.transition_penalty[o, i_loc] < -1000
    free, _ = build(*ner, crf=True, constrain=False)
    assert (free.crf.transition_penalty == 0).all()
    bad = tmp_path / "bad.conll"
    bad.write_text("a\tO\nb\tI-loc\n\nc\tB-loc\n")
    with pytest.raises(ValueError, match=r"bad.conll:2: tag 'I-loc' follows 'O'"):
        build(bad, ner[1], crf=True)


def test_tag_set_and_vocabulary():
    d = TaggerData(lowercase=True)
    sents = [TaggedSentence(("The", "dog"), ("DET", "NOUN"), 1),
             TaggedSentence(("the", "Cat"), ("DET", "NOUN"), 4),
             TaggedSentence(("x",), ("X",), 7)]  # fmt: skip
    vocab = resolve_data(d, sents)
    assert d.tags == ["DET", "NOUN", "X"]  # by frequency, then name
    assert "the" in vocab and "The" not in vocab and "cat" in vocab
    assert {"T", "t", "C"} <= set(d.chars)


def test_cli_train_tag_evaluate(tmp_path, capsys):
    train = tmp_path / "train.conllu"
    train.write_text(conllu(POS))
    dev = tmp_path / "dev.conllu"
    dev.write_text(conllu(POS[:2]))
    run = tmp_path / "run"
    args = ["--embed-size", 8, "--hidden-size", 8, "--char-hidden-size", 4, "--no-progress"]
    code = main([str(a) for a in ["-q", "train", "tag", "--data", train, "--valid", dev,
                                  "--out", run, "--dry-run", "--crf", *args]])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    saved = json.loads((run / "config.json").read_text())
    assert saved["task"] == "tag" and sorted(saved["data"]["tags"]) == [
        "ADV",
        "DET",
        "NOUN",
        "VERB",
    ]
    code = main(["tag", str(run), "the dog slept", "a cat", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["tokens"] for r in rows] == [["the", "dog", "slept"], ["a", "cat"]]
    assert all(t in saved["data"]["tags"] for r in rows for t in r["tags"])
    assert "entities" not in rows[0]  # POS tags are not BIO
    code = main(["tag", str(run), "the dog"])
    out, _ = capsys.readouterr()
    assert code == 0 and out.count("/") == 2
    png = tmp_path / "tags.png"
    code = main(["evaluate", str(run), "--data", str(dev), "--json", "--confusion", str(png)])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    assert result["tokens"] == 6 and 0 <= result["accuracy"] <= 1
    assert png.read_bytes()[:4] == b"\x89PNG"
    broken = tmp_path / "broken.conllu"
    broken.write_text(conllu(POS[:1]).replace("\t2\t", "\t7\t", 0).replace("2\tdog", "3\tdog"))
    code = main(["evaluate", str(run), "--data", str(broken)])
    _, err = capsys.readouterr()
    assert code == 2 and f"{broken}:2: expected word ID 2, found 3" in err
    code = main(["classify", str(run), "text"])
    _, err = capsys.readouterr()
    assert code == 2 and "not a classify run" in err


def test_resume_continues_exactly(ner, tmp_path, capsys):
    """Three steps, stop, resume to six == six in one go (dropout and word dropout on)."""
    train, dev = ner
    common = ["-q", "train", "tag", "--data", train, "--valid", dev, "--embed-size", 8,
              "--hidden-size", 8, "--char-hidden-size", 4, "--batch-size", 4, "--eval-every", 3,
              "--dropout", 0.3, "--word-dropout", 0.2, "--crf", "--no-progress",
              "--schedule", "constant"]  # fmt: skip
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main([str(a) for a in [*common, "--out", whole, "--max-steps", 6]]) == 0
    assert main([str(a) for a in [*common, "--out", split, "--max-steps", 3]]) == 0
    assert main(["-q", "train", "tag", "--resume", str(split), "--max-steps", "6"]) == 0
    capsys.readouterr()

    def losses(run):
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        # evaluations, and the last training record (steps 4-6 averaged in both runs)
        return [(r["step"], r.get("loss"), r.get("val_loss")) for r in rows if r["step"] in (3, 6)
                and (r["kind"] == "eval" or r["step"] == 6)]  # fmt: skip

    assert losses(whole) == losses(split)
    from rnnkit.checkpoint import load_tensors

    a, b = load_tensors(whole / "model.safetensors"), load_tensors(split / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # resuming a finished run neither trains nor evaluates again
    before = (split / "metrics.jsonl").read_text()
    assert main(["-q", "train", "tag", "--resume", str(split), "--max-steps", "6"]) == 0
    assert (split / "metrics.jsonl").read_text() == before


def test_infer_answers_tag_requests(ner):
    from rnnkit.inference import TagRequest, TagResult

    model, _ = build(*ner)
    result = model.infer(TagRequest.from_json({"texts": ["I love New York", ["Paris", "rocks"]]}))
    assert result.lines() == model.tag(["I love New York", ["Paris", "rocks"]])
    assert TagResult.from_json(result.to_json()) == result
