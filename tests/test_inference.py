"""The inference contract: JSON round trips, field-naming errors, and task models answering it."""

import json

import pytest
import torch

from rnnkit import inference as inf
from rnnkit.data.vocab import Vocab
from rnnkit.decoding import concat_states
from rnnkit.tasks.language_model import LanguageModel, LanguageModelConfig, sample_next

TEXT = "the cat sat on the mat.\nthe dog sat on the log.\n" * 4

EXAMPLES = [
    inf.GenerateRequest(prompt="the ", max_tokens=5, temperature=0.5, top_k=3, seed=1, stop=["."]),
    inf.GenerateResult("the ", "cat", 0.5, 3, None, 1, 3, "length"),
    inf.ScoreRequest(["the cat"]),
    inf.ScoreResult(
        [
            dict(
                text="a",
                log_prob=-1.0,
                tokens=1,
                nats_per_token=1.0,
                bits_per_token=1.44,
                perplexity=2.7,
                rank=1,
            )
        ]
    ),
    inf.CompleteRequest("the ca", k=2),
    inf.CompleteResult("the ca", [{"word": "cat", "probability": 0.5}]),
    inf.EvaluateRequest(data="valid.txt"),
    inf.EvaluateResult({"data": "valid.txt", "loss": 1.0}),
    inf.ClassifyRequest(["good film", [0.5, 1.0]]),
    inf.ClassifyResult(
        [
            {
                "input": "good",
                "label": "pos",
                "probability": 0.9,
                "probabilities": {"pos": 0.9, "neg": 0.1},
            }
        ]
    ),
    inf.TagRequest(["John lives here", ["a", "b"]]),
    inf.TagResult([{"tokens": ["Paris"], "tags": ["B-LOC"], "entities": []}]),
    inf.TranslateRequest(["il pleut"], beam_size=2, max_len=9, attention=True),
    inf.TranslateResult(
        [{"source": "x", "translation": "y", "tokens": ["y"], "score": -1.0, "log_prob": -1.0}]
    ),
    inf.CaptionRequest(["a.png"], beam_size=2),
    inf.CaptionResult(
        [{"image": "a.png", "caption": "a dog", "words": ["a", "dog"], "score": -2.0}]
    ),
    inf.ForecastRequest([[1.0], [2.0]], horizon=3, level=None),
    inf.ForecastResult([[1.0]], None, None, None),
    inf.MusicRequest(tunes=2, key="D", meter="6/8", seed=4),
    inf.MusicResult([{"number": 1, "abc": "X:1\nK:D\nabc|", "ended": "eos"}]),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_json_round_trip_is_the_identity(message):
    data = json.loads(json.dumps(message.to_json()))
    again = type(message).from_json(data)
    assert again == message
    assert again.to_json() == message.to_json()


@pytest.mark.parametrize(
    "cls, data, field",
    [
        (inf.GenerateRequest, {"max_tokens": "ten"}, "max_tokens"),
        (inf.GenerateRequest, {"max_tokens": -1}, "max_tokens"),
        (inf.GenerateRequest, {"temperature": True}, "temperature"),
        (inf.GenerateRequest, {"top_p": 1.5}, "top_p"),
        (inf.GenerateRequest, {"stop": "x"}, "stop"),
        (inf.GenerateRequest, {"lenght": 3}, "lenght"),
        (inf.ScoreRequest, {}, "texts"),
        (inf.CompleteRequest, {"text": "a", "k": 0}, "k"),
        (inf.TranslateRequest, {"texts": ["a"], "beam_size": 0}, "beam_size"),
        (inf.CaptionRequest, {"images": "a.png"}, "images"),
        (inf.ForecastRequest, {"history": [[1.0]], "level": 1.5}, "level"),
        (inf.MusicRequest, {"tunes": 0}, "tunes"),
        (
            inf.GenerateResult,
            {
                "prompt": "",
                "text": "",
                "temperature": 1.0,
                "top_k": None,
                "top_p": None,
                "seed": None,
                "tokens": 0,
                "finish_reason": "done",
            },
            "finish_reason",
        ),
    ],
)
def test_bad_json_names_the_field(cls, data, field):
    with pytest.raises(ValueError, match=field):
        cls.from_json(data)


def _lm(seed=0) -> LanguageModel:
    torch.manual_seed(seed)
    cfg = LanguageModelConfig(cell="lstm", embed_size=8, hidden_size=16, num_layers=2, dropout=0.0)
    return LanguageModel(cfg, Vocab.build(TEXT)).eval()


def test_generate_request_matches_generate():
    model = _lm()
    req = inf.GenerateRequest.from_json({"prompt": "the ", "max_tokens": 12, "seed": 3})
    result = model.infer(req)
    assert result.text == model.generate("the ", 12, temperature=0.8, seed=3)
    assert result.tokens == 12 and result.finish_reason == "length"
    assert set(result.to_json()) >= {"prompt", "text", "temperature", "top_k", "top_p", "seed"}


def test_generate_stops_at_a_stop_string():
    model = _lm()
    full = model.generate("the ", 40, temperature=1.0, seed=5)
    stop = full[3:5]
    result = model.infer(inf.GenerateRequest("the ", 40, 1.0, seed=5, stop=[stop]))
    assert result.finish_reason == "stop"
    assert result.text == full[: full.find(stop)]


def test_score_and_complete_requests_match_the_methods():
    model = _lm()
    texts = ["the cat", "tac eht"]
    lines = model.infer(inf.ScoreRequest(texts)).lines()
    for text, line in zip(texts, lines):
        expected = model.score(text)
        assert {k: line[k] for k in expected} == expected
    assert sorted(line["rank"] for line in lines) == [1, 2]
    done = model.infer(inf.CompleteRequest("the ca", k=2))
    assert done.completions == model.complete("the ca", k=2)


def test_a_model_refuses_what_it_does_not_answer():
    with pytest.raises(ValueError, match="does not answer ClassifyRequest"):
        _lm().infer(inf.ClassifyRequest(["x"]))


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_batched_stepping_equals_separate_generate_calls(temperature):
    """Three prompts stepped as one batch, one seeded generator per row, give generate()'s text."""
    model = _lm()
    prompts, seeds, length = ["the ", "a dog", "on the l"], [1, 2, 3], 15
    state, logits = model.prime([model.encode(p) for p in prompts])  # (B, V)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    banned = model.banned_ids()
    drawn = [[] for _ in prompts]
    for _ in range(length):
        logits = logits.clone()
        logits[:, banned] = float("-inf")
        nxt = [sample_next(logits[b], temperature, None, None, gens[b]) for b in range(3)]
        for b, i in enumerate(nxt):
            drawn[b].append(i)
        logits, state = model.step(torch.tensor(nxt), state)
    for b, p in enumerate(prompts):
        expected = model.generate(p, length, temperature=temperature, seed=seeds[b])
        assert model.decode(drawn[b]) == expected


def test_select_state_and_concat_states_invert_each_other():
    model = _lm()
    state, _ = model.prime([model.encode(p) for p in ["the", "a cat", "dog"]])
    parts = [model.select_state(state, [b]) for b in range(3)]
    joined = concat_states(parts, model.state_batch_dim)
    for a, b in zip(joined, state):
        assert torch.equal(a, b)
