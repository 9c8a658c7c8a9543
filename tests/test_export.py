"""ONNX export: every task model and cell variant against PyTorch, and the torch-free runner.

Parity is float32 onnxruntime vs the PyTorch model itself (whatever path it takes: torch's fused
kernel or rnnkit.fast) on random padded batches with mixed lengths, to 1e-5. The runner is checked
against the task models' own inference methods, and once in a subprocess where ``import torch``
raises.
"""

import importlib.util
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from rnnkit.data.vocab import Vocab  # noqa: E402
from rnnkit.export import ExportError, export_model, export_run  # noqa: E402
from rnnkit.tasks.classifier import Classifier, ClassifierConfig, ClassifierData  # noqa: E402
from rnnkit.tasks.forecaster import Forecaster, ForecasterConfig, ForecasterData  # noqa: E402
from rnnkit.tasks.language_model import LanguageModel, LanguageModelConfig  # noqa: E402
from rnnkit.tasks.seq2seq import Seq2Seq, Seq2SeqConfig, Seq2SeqData  # noqa: E402
from rnnkit.tasks.tagger import Tagger, TaggerConfig, TaggerData  # noqa: E402

TEXT = "the quick brown fox jumps over the lazy dog.\nand the cat sat on the mat!\n" * 3
WORDS = sorted(set(TEXT.split()))
TOL = 1e-5

# every cell variant: (cell, options)
VARIANTS = {
    "lstm": ("lstm", {}),
    "lstm-stacked": ("lstm", {"num_layers": 2}),
    "lstm-peephole": ("lstm", {"peephole": True}),
    "lstm-layernorm": ("lstm", {"layer_norm": True}),
    "gru": ("gru", {}),
    "gru-cho": ("gru", {"reset_after": False}),
    "gru-cho-layernorm": ("gru", {"reset_after": False, "layer_norm": True}),
    "gru-layernorm": ("gru", {"layer_norm": True, "num_layers": 2}),
    "rnn-tanh": ("rnn", {}),
    "rnn-relu-irnn": ("rnn", {"nonlinearity": "relu", "init": "identity"}),
    "rnn-layernorm": ("rnn", {"layer_norm": True}),
}


def runner_module(path):
    """The exported runner.py, imported as a plain file (not as part of rnnkit)."""
    spec = importlib.util.spec_from_file_location("exported_runner", path / "runner.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def runner_config(path) -> dict:
    return json.loads((path / "config.json").read_text())


def load_runner(path):
    return runner_module(path).load(path)


def lm(cell="lstm", **options) -> LanguageModel:
    torch.manual_seed(0)
    cfg = LanguageModelConfig(cell=cell, embed_size=8, hidden_size=12, dropout=0.0, **options)
    return LanguageModel(cfg, Vocab.build(TEXT)).eval()


def close(a, b, tol=TOL) -> bool:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max()) <= tol


# ---------------------------------------------------------------------------------------------
# Language models: every cell variant
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "variant,fused",
    [(v, None) for v in VARIANTS]
    + [(v, False) for v in ("lstm-stacked", "lstm-peephole", "gru-cho", "rnn-relu-irnn")],
)
def test_lm_graphs_match_pytorch_and_carry_state(tmp_path, variant, fused):
    """fused=None: onnxruntime's LSTM/GRU/RNN operators wherever ONNX defines the cell (layer
    norm always runs as a cell-by-cell Loop); fused=False: the Loop for every cell."""
    cell, options = VARIANTS[variant]
    model = lm(cell, **options)
    out = export_model(model, "lm", tmp_path / "x", fused=fused)
    assert runner_config(out)["fused_operators"] == (fused is None and "layer_norm" not in options)
    runner = load_runner(out)
    V = len(model.vocab)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(4, V, (3, 9), generator=g)
    lengths = torch.tensor([9, 4, 6])
    state = runner.zero_state(3)
    got = runner.run("lm_sequence", {"ids": ids.numpy(), "lengths": lengths.numpy(), **state})
    with torch.no_grad():
        for b in range(3):  # each row alone, to its own length
            ref = model(ids[b : b + 1, : lengths[b]])
            assert close(got["logits"][b, : lengths[b]], ref.logits[0])
            st = ref.state if isinstance(ref.state, tuple) else (ref.state,)
            for name, t in zip(runner.config["state"], st):
                assert close(got[name + "_out"][:, b], t[:, 0])
        # state carried across two calls == one call over the concatenation
        full = runner.run(
            "lm_sequence", {"ids": ids.numpy(), "lengths": np.array([9] * 3), **state}
        )
        first = runner.run("lm_sequence", {"ids": ids[:, :5].numpy(), "lengths": [5] * 3, **state})
        carried = {n: first[n + "_out"] for n in runner.config["state"]}
        second = runner.run(
            "lm_sequence", {"ids": ids[:, 5:].numpy(), "lengths": np.array([4] * 3), **carried}
        )
        assert close(np.concatenate([first["logits"], second["logits"]], 1), full["logits"])
        for n in runner.config["state"]:
            assert close(second[n + "_out"], full[n + "_out"])
        # the step graph walks the same path one token at a time
        st = state
        for t in range(9):
            step = runner.run("lm_step", {"ids": ids[:, t].numpy(), **st})
            st = {n: step[n + "_out"] for n in runner.config["state"]}
            assert close(step["logits"], full["logits"][:, t])


def test_lm_bidirectional_layers_match_pytorch(tmp_path):
    # no task LM is bidirectional; the layer itself is checked through a tagger below and here
    from rnnkit.export.recurrent import exportable_layer
    from rnnkit.layers import GRU, LSTM, RNN

    torch.manual_seed(0)
    for layer in (
        LSTM(5, 6, 2, batch_first=True, bidirectional=True, layer_norm=True),
        GRU(5, 6, 1, batch_first=True, bidirectional=True, reset_after=False),
        RNN(5, 6, 2, batch_first=True, bidirectional=True, nonlinearity="relu"),
        LSTM(5, 6, 1, batch_first=True, bidirectional=True, peephole=True),
    ):
        layer.eval()
        stack = exportable_layer(layer)
        x, lengths = torch.randn(3, 7, 5), torch.tensor([7, 2, 5])
        h = torch.randn(layer.num_layers * 2, 3, 6)
        c = torch.randn_like(h)
        with torch.no_grad():
            lstm = layer.mode == "LSTM"
            ref_y, ref_s = layer(x, (h, c) if lstm else h, lengths=lengths)
            y, h_n, c_n = stack(x, lengths, h, c if lstm else h)
        assert close(y, ref_y) and close(h_n, ref_s[0] if lstm else ref_s)


def test_seeded_generation_is_pytorchs_text(tmp_path, monkeypatch):
    """rnnkit's own generate (its filtering, its state handling) with only the final draw of
    torch.multinomial replaced by the runner's explicit inverse-CDF rule on the same uniforms."""
    model = lm("lstm", num_layers=2)
    out = export_model(model, "lm", tmp_path / "x")
    module = runner_module(out)
    runner = module.load(out)
    for kwargs in (
        {"temperature": 1.0},
        {"temperature": 0.8, "top_k": 5},
        {"temperature": 1.2, "top_p": 0.9},
        {"temperature": 0.0},
    ):
        uniforms = np.random.default_rng(7)

        def multinomial(probs, n, generator=None, uniforms=uniforms):
            return torch.tensor([module.draw(probs.numpy(), uniforms.random())])

        monkeypatch.setattr(torch, "multinomial", multinomial)
        ref = model.generate("the ", length=40, seed=0, **kwargs)
        monkeypatch.undo()
        assert runner.generate("the ", length=40, seed=7, **kwargs) == ref


def test_lm_score_and_complete_match(tmp_path):
    model = lm("gru", layer_norm=True)
    runner = load_runner(export_model(model, "lm", tmp_path / "x"))
    ref, got = model.score("the lazy cat"), runner.score("the lazy cat")
    assert got["tokens"] == ref["tokens"] and abs(got["log_prob"] - ref["log_prob"]) < 1e-4
    ref_c, got_c = model.complete("the qu", k=3), runner.complete("the qu", k=3)
    assert [c["word"] for c in got_c] == [c["word"] for c in ref_c]
    assert close([c["log_prob"] for c in got_c], [c["log_prob"] for c in ref_c], 1e-4)


# ---------------------------------------------------------------------------------------------
# Classifier and tagger
# ---------------------------------------------------------------------------------------------
def word_vocab() -> Vocab:
    return Vocab.build(WORDS, level="word")


@pytest.mark.parametrize(
    "cell,options",
    [
        ("lstm", {"pooling": "max"}),
        ("gru", {"pooling": "last", "num_layers": 2}),
        ("rnn", {"pooling": "mean", "layer_norm": True}),
        ("lstm", {"pooling": "attention", "bidirectional": False}),
        ("gru", {"pooling": "last", "char_repr": "cnn"}),
        ("lstm", {"pooling": "max", "char_repr": "rnn", "layer_norm": True}),
        ("lstm", {"pooling": "max", "char_repr": "rnn", "num_layers": 2}),
    ],
)
def test_classifier_matches_pytorch(tmp_path, cell, options):
    torch.manual_seed(0)
    cfg = ClassifierConfig(cell=cell, embed_size=8, hidden_size=6, dropout=0.0, **options)
    chars = sorted(set(TEXT.replace("\n", "").replace(" ", "")))
    data = ClassifierData(labels=["neg", "pos"], label_names="neg=bad", chars=chars)
    model = Classifier(cfg, data, word_vocab()).eval()
    runner = load_runner(export_model(model, "classify", tmp_path / "x"))
    texts = ["the quick fox", "a cat sat on the mat !", "dog", "the lazy brown dog jumps over"]
    ref, got = model.predict(texts), runner.classify(texts)
    for r, g in zip(ref, got):
        assert g["label"] == r["label"] and set(g["probabilities"]) == set(r["probabilities"])
        assert close(list(g["probabilities"].values()), list(r["probabilities"].values()))


def test_numeric_classifier_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    cfg = ClassifierConfig(cell="gru", hidden_size=6, dropout=0.0, pooling="mean")
    data = ClassifierData(labels=["a", "b", "c"], format="numeric", num_features=6, step_size=2)
    model = Classifier(cfg, data, None).eval()
    runner = load_runner(export_model(model, "classify", tmp_path / "x"))
    rows = [[0.1, 0.5, -1, 2, 0, 1], "1 2 3 4 5 6"]
    for r, g in zip(model.predict(rows), runner.classify(rows)):
        assert close(list(g["probabilities"].values()), list(r["probabilities"].values()))


@pytest.mark.parametrize("crf", [True, False])
def test_tagger_matches_pytorch_with_viterbi(tmp_path, crf):
    torch.manual_seed(0)
    tags = ["O", "B-ANIMAL", "I-ANIMAL"]
    chars = sorted(set(TEXT.replace("\n", "").replace(" ", "")))
    cfg = TaggerConfig(cell="lstm", embed_size=8, hidden_size=6, dropout=0.0, crf=crf)
    model = Tagger(cfg, TaggerData(tags=tags, chars=chars), word_vocab()).eval()
    if crf:
        with torch.no_grad():  # a chain with real preferences, so Viterbi differs from argmax
            model.crf.transitions.normal_(0, 2)
            model.crf.start.normal_(0, 1)
    runner = load_runner(export_model(model, "tag", tmp_path / "x"))
    sentences = ["the quick brown fox", "cat", "and the lazy dog sat on the mat ."]
    batch_ids = [model.encode(s.split()) for s in sentences]
    from rnnkit.tasks.common.batching import collate

    b = collate(batch_ids)
    with torch.no_grad():
        ref = model(b["inputs"], lengths=b["lengths"], chars=b["chars"]).logits
    feeds = {"inputs": b["inputs"].numpy(), "lengths": b["lengths"].numpy()}
    feeds["chars"] = b["chars"].numpy()
    em = runner.run("tagger", feeds)["emissions"]
    mask = b["mask"].numpy()
    assert close(em[mask], ref.numpy()[mask])
    assert runner.tag(sentences) == model.tag(sentences)


# ---------------------------------------------------------------------------------------------
# Sequence to sequence
# ---------------------------------------------------------------------------------------------
DIGITS = [str(d) for d in range(10)]


@pytest.mark.parametrize(
    "cell,attention,bidirectional",
    [
        ("gru", "additive", True),
        ("lstm", "general", False),
        ("lstm", "dot", True),
        ("gru", "none", True),
    ],
)
def test_seq2seq_greedy_and_beam_match_pytorch(tmp_path, cell, attention, bidirectional):
    torch.manual_seed(0)
    hidden = 8 if attention != "dot" else 8
    decoder = 16 if (attention != "dot" or bidirectional) else 8
    cfg = Seq2SeqConfig(
        cell=cell,
        embed_size=8,
        hidden_size=hidden,
        decoder_size=decoder,
        bidirectional=bidirectional,
        attention=attention,
        attention_size=8,
        output_size=8,
        dropout=0.0,
    )
    model = Seq2Seq(cfg, Seq2SeqData(source_vocab=DIGITS, target_vocab=DIGITS)).eval()
    runner = load_runner(export_model(model, "translate", tmp_path / "x"))
    texts = ["1 2 3 4", "9 8", "5 5 5 1 2 3 7 7"]
    for beam in (1, 3):
        ref = model.translate(texts, beam_size=beam, max_len=12, attention=True)
        got = runner.translate(texts, beam_size=beam, max_len=12, attention=True)
        for r, g in zip(ref, got):
            assert g["tokens"] == r["tokens"]
            assert abs(g["score"] - r["score"]) < 1e-4
            if r["attention"] is not None:
                assert close(g["attention"], r["attention"])


# ---------------------------------------------------------------------------------------------
# Forecaster
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options",
    [
        {"cell": "lstm", "head": "gaussian", "window_norm": "prefix"},
        {"cell": "gru", "head": "quantile", "window_norm": "running", "linear_lags": 3},
        {"cell": "rnn", "head": "point", "strategy": "direct", "num_layers": 2},
    ],
)
def test_forecaster_matches_pytorch(tmp_path, options):
    torch.manual_seed(0)
    cfg = ForecasterConfig(hidden_size=8, input_size=2, horizon=4, **options)
    model = Forecaster(cfg, ForecasterData(window=12, burn_in=3)).eval()
    with torch.no_grad():
        model.head.weight.normal_(0, 0.3)
        model.norm_mean.copy_(torch.tensor([1.0, -2.0], dtype=torch.float64))
        model.norm_std.copy_(torch.tensor([2.0, 0.5], dtype=torch.float64))
    runner = load_runner(export_model(model, "forecast", tmp_path / "x"))
    history = np.random.default_rng(0).normal(size=(2, 15, 2))
    ref = model.forecast(history, level=0.8)
    got = runner.forecast(history, level=0.8)
    for key in ("mean", "lower", "upper"):
        if ref[key] is None:
            assert got[key] is None
        else:
            assert close(got[key], ref[key], 1e-4)
    # the inference contract: the same ForecastResult as the model's infer
    from rnnkit.inference import ForecastRequest, TagRequest

    request = ForecastRequest(history[0].tolist(), level=0.8)
    want, have = model.infer(request).to_json(), runner.infer(request).to_json()
    assert have["level"] == want["level"]
    for key in ("mean", "lower", "upper"):
        if want[key] is None:
            assert have[key] is None
        else:
            assert close(np.asarray(have[key]), np.asarray(want[key]), 1e-4)
    with pytest.raises(ValueError, match="exported forecast model does not answer TagRequest"):
        runner.infer(TagRequest(["a b"]))


# ---------------------------------------------------------------------------------------------
# Captioner
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attention", ["additive", "none"])
def test_captioner_matches_pytorch(tmp_path, attention):
    from rnnkit.tasks.captioner import CaptionData, Captioner, CaptionerConfig

    torch.manual_seed(0)
    vocab = Vocab.build(WORDS, level="word")
    cfg = CaptionerConfig(
        encoder="small-cnn",
        cnn_width=4,
        attention=attention,
        embed_size=8,
        hidden_size=12,
        feature_size=8,
        attention_size=8,
        dropout=0.0,
    )
    model = Captioner(cfg, CaptionData(max_len=6), vocab).eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for m in model.cnn.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    runner = load_runner(export_model(model, "caption", tmp_path / "x"))
    pixels = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    for beam in (1, 3):
        ref = model.describe(model.prepare_images(pixels), beam_size=beam)
        got = runner.caption(pixels, beam_size=beam)
        for r, g in zip(ref, got):
            assert g["words"] == model.words(r.tokens)
            assert abs(g["score"] - r.score) < 1e-4


# ---------------------------------------------------------------------------------------------
# Run folders, errors, and the runner without torch
# ---------------------------------------------------------------------------------------------
def test_runner_folder_holds_its_package_and_the_portable_modules(tmp_path):
    """``onnx_runner/`` in the folder: the runner's modules and rnnkit.portable's, no name twice."""
    from rnnkit.export import PORTABLE, RUNNER_PACKAGE

    ours = {p.name for p in RUNNER_PACKAGE.glob("*.py")}
    portable = {p.name for p in PORTABLE.glob("*.py")} - {"__init__.py"}
    assert not ours & portable
    out = export_model(lm(), "lm", tmp_path / "x")
    assert {p.name for p in (out / "onnx_runner").glob("*.py")} == ours | portable
    assert (out / "runner.py").exists() and (out / "inference.py").exists()


def test_export_run_and_runner_without_torch(tmp_path):
    from rnnkit.cli import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT * 10, encoding="utf-8")
    run = tmp_path / "run"
    flags = ["--hidden-size", "12", "--embed-size", "8", "--bptt", "8", "--batch-size", "2"]
    code = main(
        [
            "-q",
            "train",
            "lm",
            "--data",
            str(corpus),
            "--out",
            str(run),
            "--dry-run",
            "--no-progress",
            *flags,
        ]
    )
    assert code == 0
    out = export_run(run, tmp_path / "exported")
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "lm" and set(config["graphs"]) == {"lm_step", "lm_sequence"}
    model = __import__("rnnkit").api.load(run)
    expected = model.score("the cat")["log_prob"]
    # a classifier beside it, for the classify verb
    torch.manual_seed(0)
    clf = Classifier(
        ClassifierConfig(hidden_size=6, embed_size=8, dropout=0.0),
        ClassifierData(labels=["x", "y"]),
        word_vocab(),
    ).eval()
    export_model(clf, "classify", tmp_path / "clf")
    script = textwrap.dedent(
        f"""
        import importlib.abc, json, sys
        class NoTorch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch.") or name.startswith("rnnkit"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, NoTorch())
        sys.path.insert(0, {str(out)!r})
        import runner
        m = runner.load({str(out)!r})
        text = m.generate("the ", length=20, temperature=0.9, top_k=5, seed=3)
        score = m.score("the cat")
        comp = m.complete("the qu", k=2)
        clf = runner.load({str(tmp_path / "clf")!r})
        labels = clf.classify(["the cat sat", "a dog"])
        # the inference contract, from the inference.py copied beside the runner
        from runner import contract
        request = contract.ScoreRequest.from_json({{"texts": ["the cat", "cat the"]}})
        scored = m.infer(request).lines()
        generated = m.infer(contract.GenerateRequest("the ", max_tokens=20, seed=3, stop=["zz"]))
        classified = clf.infer(contract.ClassifyRequest(["the cat sat"])).lines()
        assert "torch" not in sys.modules
        print(json.dumps({{"text": text, "score": score, "comp": comp, "labels": labels,
                          "scored": scored, "generated": generated.to_json(),
                          "classified": classified}}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(result["text"]) == 20
    assert abs(result["score"]["log_prob"] - expected) < 1e-4
    assert [r["label"] in ("x", "y") for r in result["labels"]] == [True, True]
    assert abs(result["scored"][0]["log_prob"] - expected) < 1e-4
    assert sorted(r["rank"] for r in result["scored"]) == [1, 2]
    assert result["generated"]["tokens"] == 20 and result["generated"]["prompt"] == "the "
    assert result["classified"][0]["label"] == result["labels"][0]["label"]
    cli = subprocess.run(
        [sys.executable, str(out / "runner.py"), str(out), "score", "the cat"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0 and abs(json.loads(cli.stdout)["log_prob"] - expected) < 1e-4


def test_unexportable_models_say_which_module_and_why(tmp_path):
    from rnnkit.layers import LSTM

    model = lm("lstm")
    model.rnn = LSTM(8, 12, batch_first=True, learn_init_state=True)
    with pytest.raises(ExportError, match="'rnn'.*learn_init_state"):
        export_model(model, "lm", tmp_path / "a")
    model.rnn = torch.nn.LSTM(8, 12, batch_first=True)
    with pytest.raises(ExportError, match="'rnn'.*not an rnnkit"):
        export_model(model, "lm", tmp_path / "b")
    with pytest.raises(ExportError, match="no ONNX export"):
        export_model(lm(), "diagnose", tmp_path / "c")
    with pytest.raises(ExportError, match="unknown export format"):
        export_run(tmp_path, tmp_path / "d", format="tflite")


def test_benchmark_quick_prints_ratios():
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "export.py"
    done = subprocess.run(
        [sys.executable, str(script), "--quick", "--cells", "lstm", "gru-ln"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "×eager" in lines[1]
    for case in ("lstm: generate", "lstm: score", "gru-ln: generate", "classify 20"):
        row = next(line for line in lines if line.startswith(case))
        assert float(row.split()[-1]) > 0


@pytest.mark.skipif(
    not __import__("rnnkit.image_encoders", fromlist=["x"]).pretrained_available(),
    reason="the EfficientNet-Lite0 packages (rnnkit[caption]) are not installed",
)
def test_pretrained_image_encoder_exports(tmp_path):
    """The frozen EfficientNet-Lite0 goes into the image-encoder graph; its features are rounded
    to float16 as rnnkit caches them, so keys agree to a float16 step, not to 1e-5."""
    from rnnkit.tasks.captioner import CaptionData, Captioner, CaptionerConfig

    torch.manual_seed(0)
    cfg = CaptionerConfig(
        encoder="efficientnet-lite0", embed_size=8, hidden_size=12, feature_size=8, dropout=0.0
    )
    model = Captioner(cfg, CaptionData(max_len=4), Vocab.build(WORDS, level="word")).eval()
    runner = load_runner(export_model(model, "caption", tmp_path / "x"))
    pixels = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    got = runner.run("image_encoder", {"pixels": pixels})
    with torch.no_grad():
        keys, state = model.start(model.grid(model.prepare_images(pixels)))
    assert close(got["keys"], keys, 2e-3) and close(got["h"], state.h, 2e-3)


def _cli(capsys, *argv) -> tuple[int, str, str]:
    from rnnkit.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_export_then_inference_verbs_on_the_folder(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT * 10, encoding="utf-8")
    run, out = tmp_path / "run", tmp_path / "onnx"
    flags = ["--hidden-size", "12", "--embed-size", "8", "--bptt", "8", "--batch-size", "2"]
    assert (
        _cli(
            capsys,
            "-q",
            "train",
            "lm",
            "--data",
            corpus,
            "--out",
            run,
            "--dry-run",
            "--no-progress",
            *flags,
        )[0]
        == 0
    )
    code, text, err = _cli(capsys, "export", run, "--format", "onnx", "--out", out, "--json")
    assert code == 0, err
    assert json.loads(text)["graphs"] == {
        "lm_step": "lm_step.onnx",
        "lm_sequence": "lm_sequence.onnx",
    }
    for verb, args in (("score", ["the cat", "a dog"]), ("complete", ["the qu"])):
        ref = _cli(capsys, verb, run, *args, "--json")
        got = _cli(capsys, verb, out, *args, "--json")
        assert got[0] == ref[0] == 0, got[2]
        for r, g in zip(ref[1].splitlines(), got[1].splitlines()):
            r, g = json.loads(r), json.loads(g)
            assert set(r) == set(g)
            if verb == "score":
                assert abs(r["log_prob"] - g["log_prob"]) < 1e-4 and r["rank"] == g["rank"]
            else:
                assert [c["word"] for c in r["completions"]] == [
                    c["word"] for c in g["completions"]
                ]
    code, text, _ = _cli(
        capsys, "generate", out, "--prompt", "the ", "--length", "12", "--seed", "1", "--json"
    )
    assert code == 0 and len(json.loads(text)["text"]) == 12
    # a classifier, a tagger and a translator exported from their models
    torch.manual_seed(0)
    clf = Classifier(
        ClassifierConfig(hidden_size=6, embed_size=8, dropout=0.0),
        ClassifierData(labels=["x", "y"]),
        word_vocab(),
    ).eval()
    export_model(clf, "classify", tmp_path / "clf")
    code, text, err = _cli(capsys, "classify", tmp_path / "clf", "the cat sat", "--json")
    assert code == 0, err
    assert json.loads(text)["probabilities"] == pytest.approx(
        clf.predict(["the cat sat"])[0]["probabilities"], abs=1e-5
    )
    tagger = Tagger(
        TaggerConfig(embed_size=8, hidden_size=6, dropout=0.0, char_repr="none", crf=True),
        TaggerData(tags=["O", "B-X", "I-X"]),
        word_vocab(),
    ).eval()
    export_model(tagger, "tag", tmp_path / "tagger")
    code, text, err = _cli(capsys, "tag", tmp_path / "tagger", "the lazy dog", "--json")
    assert code == 0 and json.loads(text) == tagger.tag(["the lazy dog"])[0], err
    s2s = Seq2Seq(
        Seq2SeqConfig(
            embed_size=8,
            hidden_size=8,
            decoder_size=16,
            attention_size=8,
            output_size=8,
            dropout=0.0,
        ),
        Seq2SeqData(source_vocab=DIGITS, target_vocab=DIGITS),
    ).eval()
    export_model(s2s, "translate", tmp_path / "s2s")
    code, text, err = _cli(capsys, "translate", tmp_path / "s2s", "1 2 3", "--beam", "2", "--json")
    assert code == 0, err
    assert json.loads(text)["tokens"] == s2s.translate(["1 2 3"], beam_size=2)[0]["tokens"]
    # a folder of another task is a usage error naming it
    code, _, err = _cli(capsys, "tag", tmp_path / "clf", "the cat")
    assert code == 2 and "not a tag run" in err
