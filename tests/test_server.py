"""The HTTP server (``rnnkit serve``): every endpoint against the model's own inference, every
error path as a 4xx JSON error, batching equal to sequential generation, sessions, limits,
metrics, and — on a real uvicorn server on loopback — the OpenAI client and client disconnects."""

from __future__ import annotations

import asyncio
import io
import json
import time

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from rnnkit.data.vocab import Vocab  # noqa: E402
from rnnkit.inference import (  # noqa: E402
    ClassifyRequest,
    CompleteRequest,
    ForecastRequest,
    ScoreRequest,
    TagRequest,
    TranslateRequest,
)
from rnnkit.server import ServerSettings, build_app  # noqa: E402
from rnnkit.tasks.language_model import LanguageModelConfig, build_language_model  # noqa: E402

TEXT = "the quick brown fox jumps over the lazy dog.\nand the cat sat on the mat!\n" * 3
WORDS = sorted(set(TEXT.split()))


def char_lm():
    torch.manual_seed(0)
    vocab = Vocab("abcdefgh \n")
    return build_language_model(LanguageModelConfig(hidden_size=16, embed_size=8), vocab).eval()


def word_lm():
    torch.manual_seed(1)
    vocab = Vocab.build(TEXT.split(), level="word")
    return build_language_model(LanguageModelConfig(hidden_size=16, embed_size=8), vocab).eval()


@pytest.fixture(scope="module")
def model():
    return char_lm()


def run(coro):
    return asyncio.run(coro)


def client(app):
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def post(app, path, body=None, **kw):
    async with client(app) as c:
        return await c.post(path, json=body, **kw)


def assert_error(r, status, *words):
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert err["code"] == status and isinstance(err["message"], str)
    for w in words:
        assert w in err["message"], err["message"]


# ---------------------------------------------------------------------------------------------
# operations and completions
# ---------------------------------------------------------------------------------------------
def test_health_models_and_routes(model):
    app = build_app({"tiny": model, "words": word_lm()})

    async def go():
        async with client(app) as c:
            health = (await c.get("/health")).json()
            listed = (await c.get("/v1/models")).json()
            one = (await c.get("/v1/models/words")).json()
            missing = await c.get("/v1/models/nope")
            route = await c.get("/v1/nowhere")
            method = await c.get("/v1/completions")
            return health, listed, one, missing, route, method

    health, listed, one, missing, route, method = run(go())
    assert health["status"] == "ok" and health["models"] == ["tiny", "words"]
    tiny = listed["data"][0]
    assert tiny["id"] == "tiny" and tiny["task"] == "lm" and tiny["level"] == "char"
    assert set(tiny["answers"]) == {"generate", "score", "complete", "sessions"}
    assert one["level"] == "word"
    assert_error(missing, 404, "nope")
    assert_error(route, 404)
    assert_error(method, 405)


def test_concurrent_batched_equals_sequential_generate(model):
    prompts = ["abc", "hg", "dead beef", "a"]
    expected = [model.generate(p, length=12, temperature=0.8, seed=7) for p in prompts]
    for batching in (True, False):
        app = build_app({"tiny": model}, batching=batching)

        async def go(app=app):
            async with client(app) as c:

                async def one(p):
                    body = {"prompt": p, "max_tokens": 12, "temperature": 0.8, "seed": 7}
                    return (await c.post("/v1/completions", json=body)).json()

                return await asyncio.gather(*(one(p) for p in prompts))

        got = run(go())
        assert [g["choices"][0]["text"] for g in got] == expected
        assert all(g["choices"][0]["finish_reason"] == "length" for g in got)
        assert got[0]["usage"] == {"prompt_tokens": 3, "completion_tokens": 12, "total_tokens": 15}


def sse(text: str) -> list:
    lines = [ln[6:] for ln in text.splitlines() if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(ln) for ln in lines[:-1]]


def test_streamed_chunks_join_to_the_greedy_text(model):
    expected = model.generate("abc", length=10, temperature=0)
    body = {"prompt": "abc", "max_tokens": 10, "temperature": 0, "stream": True}
    r = run(post(build_app({"tiny": model}), "/v1/completions", body))
    assert r.headers["content-type"].startswith("text/event-stream")
    chunks = sse(r.text)
    assert all(ch["object"] == "text_completion" for ch in chunks)
    assert "".join(ch["choices"][0]["text"] for ch in chunks) == expected
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(ch["choices"][0]["finish_reason"] is None for ch in chunks[:-1])


def test_n_prompt_lists_stop_echo_and_logprobs(model):
    app = build_app({"tiny": model})
    body = {"prompt": ["ab", "ge"], "n": 2, "max_tokens": 30, "temperature": 1.0, "seed": 3,
            "stop": ["a"], "echo": True, "logprobs": 2}  # fmt: skip
    r = run(post(app, "/v1/completions", body))
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2, 3]
    for c in choices:
        prompt = ["ab", "ge"][c["index"] // 2]
        seed = 3 + c["index"] % 2
        text, _, reason = model.sample_text(prompt, 30, 1.0, seed=seed, stop=["a"])
        assert c["text"] == prompt + text and c["finish_reason"] == reason
        lp = c["logprobs"]
        assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"])
        assert all(v <= 0 for v in lp["token_logprobs"])
        assert all(len(t) == 2 for t in lp["top_logprobs"])
    # streamed, a stop string is never shown, even when it arrives in pieces
    body = {"prompt": "ab", "max_tokens": 40, "temperature": 0, "stop": "ee", "stream": True}
    want, _, reason = model.sample_text("ab", 40, 0, stop=["ee"])
    chunks = sse(run(post(app, "/v1/completions", body)).text)
    assert "".join(ch["choices"][0]["text"] for ch in chunks) == want
    assert chunks[-1]["choices"][0]["finish_reason"] == reason


@pytest.mark.parametrize(
    "body,status,words",
    [
        ({"prompt": "ab", "max_tokens": -1}, 422, ["max_tokens"]),
        ({"model": "nope", "prompt": "ab"}, 404, ["nope"]),
        ({"prompt": "ab", "max_tokens": 5000}, 400, ["max_tokens", "2048"]),
        ({"prompt": "a" * 20_001}, 413, ["prompt"]),
        ({"prompt": "abz"}, 400, ["z"]),
        ({"prompt": "ab", "temperature": "hot"}, 422, ["temperature"]),
        ({"prompt": "ab", "colour": "red"}, 422, ["colour"]),
        ({"prompt": [], "max_tokens": 2}, 400, ["prompt"]),
        ({"prompt": "ab", "stop": ["a", "b", "c", "d", "e"]}, 400, ["stop"]),
        ({"prompt": ["a"] * 20, "n": 4}, 400, ["64"]),
    ],
)
def test_completion_errors_are_4xx_json(model, body, status, words):
    assert_error(run(post(build_app({"tiny": model}), "/v1/completions", body)), status, *words)


def test_malformed_and_oversize_bodies(model):
    app = build_app({"tiny": model}, max_body_bytes=1000)

    async def go():
        async with client(app) as c:
            bad = await c.post("/v1/completions", content=b"{not json",
                               headers={"content-type": "application/json"})  # fmt: skip
            big = await c.post("/v1/completions", json={"prompt": "a" * 2000})
            listed = await c.post("/v1/completions", json=[1, 2])
            return bad, big, listed

    bad, big, listed = run(go())
    assert_error(bad, 422)
    assert_error(big, 413, "1000 bytes")
    assert_error(listed, 422)


def test_capacity_answers_429_while_full(model):
    app = build_app({"tiny": model}, max_concurrent=1)

    async def go():
        async with client(app) as c:
            slow = asyncio.create_task(
                c.post("/v1/completions", json={"prompt": "a", "max_tokens": 400})
            )
            await asyncio.sleep(0.05)
            refused = await c.post("/v1/score", json={"texts": ["abc"]})
            first = await slow
            after = await c.post("/v1/score", json={"texts": ["abc"]})
            metrics = (await c.get("/metrics")).text
            return first, refused, after, metrics

    first, refused, after, metrics = run(go())
    assert first.status_code == 200 and after.status_code == 200
    assert_error(refused, 429, "capacity")
    assert "rnnkit_rejected_total 1.0" in metrics


def test_request_time_limit_ends_a_generation(model):
    app = build_app({"tiny": model}, request_timeout_s=0.05)
    r = run(post(app, "/v1/completions", {"prompt": "a", "max_tokens": 2000}))
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "timeout" and 0 < len(choice["text"]) < 2000


def test_metrics_count_requests_tokens_and_latencies(model):
    app = build_app({"tiny": model})

    async def go():
        async with client(app) as c:
            await c.post("/v1/completions", json={"prompt": "ab", "max_tokens": 5})
            await c.post("/v1/sessions", json={"text": "ab"})
            return await c.get("/metrics")

    r = run(go())
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'rnnkit_tokens_generated_total{model="tiny"} 5.0' in text
    assert 'rnnkit_requests_total{endpoint="/v1/completions",status="200"} 1.0' in text
    for name in ("rnnkit_request_seconds_bucket", "rnnkit_queue_seconds_count 1.0",
                 "rnnkit_token_seconds_count 4.0", "rnnkit_live_sessions 1.0",
                 "rnnkit_batch_size_count"):  # fmt: skip
        assert name in text, name


# ---------------------------------------------------------------------------------------------
# scoring, completion and keyboard sessions
# ---------------------------------------------------------------------------------------------
def test_score_and_complete_are_the_models_answers(model):
    app = build_app({"tiny": model})
    got = run(post(app, "/v1/score", {"texts": ["abc", "hhh"]})).json()
    assert got == json.loads(json.dumps(model.infer(ScoreRequest(["abc", "hhh"])).to_json()))
    got = run(post(app, "/v1/complete", {"text": "ab ca", "k": 3})).json()
    assert got == json.loads(json.dumps(model.infer(CompleteRequest("ab ca", 3)).to_json()))
    assert_error(run(post(app, "/v1/score", {"texts": "abc"})), 422, "texts")
    assert_error(run(post(app, "/v1/complete", {"text": "ab", "k": 500})), 400, "k")
    assert_error(run(post(app, "/v1/classify", {"texts": ["ab"]})), 400, "classify")


def test_session_feeds_one_step_per_keystroke_and_suggests_like_complete(model):
    app = build_app({"tiny": model})
    calls = []
    original = model.advance

    def counting(ids, state=None, chunk=512):
        calls.append(len(ids))
        return original(ids, state, chunk)

    async def go():
        async with client(app) as c:
            made = (await c.post("/v1/sessions", json={"text": "ab", "k": 3})).json()
            sid = made["id"]
            fed = []
            for ch in "c be":
                fed.append((await c.post(f"/v1/sessions/{sid}/feed", json={"text": ch})).json())
            edited = (await c.post(f"/v1/sessions/{sid}/feed",
                                   json={"text": "ab cd", "replace": True})).json()  # fmt: skip
            seen = (await c.get(f"/v1/sessions/{sid}")).json()
            gone = await c.delete(f"/v1/sessions/{sid}")
            after = await c.post(f"/v1/sessions/{sid}/feed", json={"text": "a"})
            return made, fed, edited, seen, gone, after

    model.advance = counting
    try:
        made, fed, edited, seen, gone, after = run(go())
    finally:
        del model.advance
    assert made["text"] == "ab" and len(made["suggestions"]) == 3
    assert [f["steps"] for f in fed] == [1, 1, 1, 1]
    assert fed[-1]["text"] == "abc be"
    want = model.complete("abc be", 3)
    got = fed[-1]["suggestions"]
    assert [g["word"] for g in got] == [w["word"] for w in want]
    assert np.allclose([g["log_prob"] for g in got], [w["log_prob"] for w in want], atol=1e-5)
    assert edited["steps"] == 1 + 2 + 3 and edited["text"] == "ab cd"  # re-read: it was no append
    assert seen["text"] == "ab cd"
    assert gone.status_code == 200
    assert_error(after, 404, "no session")


def test_word_session_commits_whole_words():
    lm = word_lm()
    app = build_app({"words": lm})

    async def go():
        async with client(app) as c:
            sid = (await c.post("/v1/sessions", json={"k": 2})).json()["id"]
            a = (await c.post(f"/v1/sessions/{sid}/feed", json={"text": "the qu"})).json()
            b = (await c.post(f"/v1/sessions/{sid}/feed", json={"text": "ick "})).json()
            return a, b

    a, b = run(go())
    assert a["steps"] == 1  # "the" committed, "qu" still being typed
    assert all(s["word"].startswith("qu") for s in a["suggestions"])
    assert b["steps"] == 1 and b["text"] == "the quick "
    want = lm.next_words("the quick ", 2)
    assert [s["word"] for s in b["suggestions"]] == [w["word"] for w in want]


def test_sessions_are_capped_and_expire(model):
    app = build_app({"tiny": model}, max_sessions=2, session_ttl_s=0.3)

    async def go():
        async with client(app) as c:
            ids = [(await c.post("/v1/sessions", json={})).json()["id"] for _ in range(3)]
            first = await c.get(f"/v1/sessions/{ids[0]}")
            last = await c.get(f"/v1/sessions/{ids[2]}")
            await asyncio.sleep(0.4)
            expired = await c.get(f"/v1/sessions/{ids[2]}")
            health = (await c.get("/health")).json()
            return first, last, expired, health

    first, last, expired, health = run(go())
    assert_error(first, 404)  # the least recently used one was evicted
    assert last.status_code == 200
    assert_error(expired, 404)
    assert health["sessions"] == 0


# ---------------------------------------------------------------------------------------------
# the other tasks
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def task_models():
    from rnnkit.tasks.classifier import Classifier, ClassifierConfig, ClassifierData
    from rnnkit.tasks.forecaster import Forecaster, ForecasterConfig, ForecasterData
    from rnnkit.tasks.seq2seq import Seq2Seq, Seq2SeqConfig, Seq2SeqData
    from rnnkit.tasks.tagger import Tagger, TaggerConfig, TaggerData

    torch.manual_seed(0)
    vocab = Vocab.build(WORDS, level="word")
    chars = sorted(set(TEXT.replace("\n", "").replace(" ", "")))
    clf = Classifier(
        ClassifierConfig(embed_size=8, hidden_size=6, dropout=0.0, pooling="max"),
        ClassifierData(labels=["neg", "pos"], chars=chars), vocab,
    ).eval()  # fmt: skip
    tagger = Tagger(
        TaggerConfig(embed_size=8, hidden_size=6, dropout=0.0),
        TaggerData(tags=["O", "B-X", "I-X"], chars=chars), vocab,
    ).eval()  # fmt: skip
    digits = [str(d) for d in range(10)]
    s2s = Seq2Seq(
        Seq2SeqConfig(embed_size=8, hidden_size=8, decoder_size=16, attention="additive",
                      attention_size=8, output_size=8, dropout=0.0),
        Seq2SeqData(source_vocab=digits, target_vocab=digits),
    ).eval()  # fmt: skip
    fc = Forecaster(
        ForecasterConfig(hidden_size=8, horizon=4, input_size=1, head="gaussian"),
        ForecasterData(window=12),
    ).eval()
    return {"sentiment": clf, "ner": tagger, "digits": s2s, "series": fc}


def test_task_endpoints_answer_as_infer(task_models):
    app = build_app(task_models)
    m = task_models
    cases = [
        ("/v1/classify", {"texts": ["the cat sat", "dog"]}, m["sentiment"],
         ClassifyRequest(["the cat sat", "dog"])),
        ("/v1/tag", {"texts": ["the quick fox"]}, m["ner"], TagRequest(["the quick fox"])),
        ("/v1/translate", {"texts": ["1 2 3"], "beam_size": 3, "attention": True}, m["digits"],
         TranslateRequest(["1 2 3"], beam_size=3, attention=True)),
        ("/v1/forecast", {"history": [[1.0], [2.0], [3.0], [2.5]] * 4, "level": 0.8},
         m["series"], ForecastRequest([[1.0], [2.0], [3.0], [2.5]] * 4, level=0.8)),
    ]  # fmt: skip
    for path, body, model, request in cases:
        r = run(post(app, path, body))
        assert r.status_code == 200, (path, r.text)
        want = json.loads(json.dumps(model.infer(request).to_json()))
        got = r.json()
        if path == "/v1/forecast":
            assert np.allclose(got["mean"], want["mean"])
        else:
            assert got == want, path
    translated = run(post(app, "/v1/translate", {"texts": ["1 2 3"], "attention": True})).json()
    t = translated["translations"][0]
    assert np.array(t["attention"]).shape == (len(t["tokens"]), len(t["source_tokens"]))


def test_classify_saliency_is_occlusion(task_models):
    clf = task_models["sentiment"]
    app = build_app({"sentiment": clf})
    r = run(post(app, "/v1/classify", {"texts": ["the lazy dog sat"], "saliency": True}))
    pred = r.json()["predictions"][0]
    assert [s["token"] for s in pred["saliency"]] == ["the", "lazy", "dog", "sat"]
    k = max(pred["probabilities"], key=pred["probabilities"].get)
    base = pred["probabilities"][k]
    without = clf.predict(["lazy dog sat"])[0]["probabilities"][k]
    assert abs(pred["saliency"][0]["weight"] - (base - without)) < 1e-5


def test_task_errors_are_4xx(task_models):
    app = build_app(task_models)
    assert run(post(app, "/v1/classify", {"texts": ["x"]})).status_code == 200  # the only one
    two = build_app({"a": task_models["sentiment"], "b": task_models["sentiment"]})
    assert_error(run(post(two, "/v1/classify", {"texts": ["x"]})), 400, "say which model")
    assert_error(run(post(app, "/v1/classify", {"model": "sentiment", "texts": [""]})), 400)
    assert_error(run(post(app, "/v1/translate", {"model": "digits", "texts": ["1"],
                                                  "beam_size": 0})), 400, "beam_size")  # fmt: skip
    assert_error(run(post(app, "/v1/translate", {"model": "digits", "texts": ["1"],
                                                  "beam_size": 1000})), 400, "beam_size")  # fmt: skip
    assert_error(run(post(app, "/v1/forecast", {"model": "series", "history": []})), 400)
    assert_error(run(post(app, "/v1/tag", {"model": "ner", "texts": ["a"] * 65})), 400, "64")
    assert_error(run(post(app, "/v1/classify", {"model": "ner", "texts": ["a"]})), 400, "tag")


def test_music_answers_tunes_with_notes_and_midi():
    pytest.importorskip("music21")
    from rnnkit.tasks.music import MusicModel

    torch.manual_seed(0)
    tune = "X:1\nT:A\nM:4/4\nL:1/8\nK:D\nABcd efga|bagf edcB|\n"
    vocab = Vocab.build(tune * 2)
    model = MusicModel(LanguageModelConfig(embed_size=8, hidden_size=16, dropout=0.0), vocab)
    app = build_app({"folk": model.eval()})
    body = {"prompt": "X:1\nM:4/4\nL:1/8\nK:D\n", "max_chars": 60, "seed": 0, "midi": True}
    r = run(post(app, "/v1/music", body))
    assert r.status_code == 200, r.text
    t = r.json()["tunes"][0]
    assert t["abc"].startswith("X:1")
    assert (t["notes"] is None and t["notes_error"]) or all(len(n) == 3 for n in t["notes"])
    if t["notes"] is not None:
        assert t["midi_base64"]


def test_caption_upload():
    pytest.importorskip("PIL")
    from PIL import Image

    from rnnkit.tasks.captioner import CaptionData, Captioner, CaptionerConfig

    torch.manual_seed(0)
    cfg = CaptionerConfig(encoder="small-cnn", cnn_width=4, embed_size=8, hidden_size=12,
                          feature_size=8, attention_size=8, dropout=0.0)  # fmt: skip
    model = Captioner(cfg, CaptionData(max_len=6), Vocab.build(WORDS, level="word")).eval()
    app = build_app({"photos": model})
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), np.uint8)).save(
        buf, "PNG"
    )
    files = {"file": ("cat.png", buf.getvalue(), "image/png")}
    r = run(post(app, "/v1/caption", files=files, data={"beam_size": "2"}))
    assert r.status_code == 200, r.text
    c = r.json()["captions"][0]
    assert c["image"] == "cat.png" and isinstance(c["caption"], str)
    bad = run(post(app, "/v1/caption", files={"file": ("x.png", b"not an image", "image/png")}))
    assert_error(bad, 400)
    assert_error(run(post(app, "/v1/caption", data={"beam_size": "2"})), 422, "file")


# ---------------------------------------------------------------------------------------------
# a real server on loopback
# ---------------------------------------------------------------------------------------------


def test_openai_client_streams_a_completion(model, live_server):
    openai = pytest.importorskip("openai")
    app = build_app({"tiny": model})
    expected = model.generate("abc", length=15, temperature=0)
    with live_server(app) as url:
        api = openai.OpenAI(base_url=url + "/v1", api_key="unused", timeout=20, max_retries=0)
        assert [m.id for m in api.models.list()] == ["tiny"]
        pieces, finish = [], None
        for event in api.completions.create(model="tiny", prompt="abc", max_tokens=15,
                                            temperature=0, stream=True):  # fmt: skip
            pieces.append(event.choices[0].text)
            finish = event.choices[0].finish_reason or finish
        assert "".join(pieces) == expected and finish == "length"
        plain = api.completions.create(model="tiny", prompt="abc", max_tokens=15, temperature=0)
        assert plain.choices[0].text == expected and plain.usage.completion_tokens == 15


def test_a_client_that_disconnects_stops_its_generation(model, live_server):
    app = build_app({"tiny": model})
    ctx = app.fastapi.state.ctx
    with live_server(app) as url:
        with httpx.Client(timeout=10) as c:
            body = {"prompt": "a", "max_tokens": 2000, "stream": True}
            with c.stream("POST", url + "/v1/completions", json=body) as r:
                lines = r.iter_lines()
                assert next(lines).startswith("data: ")
        deadline = time.monotonic() + 10
        while ctx.schedulers["tiny"].live and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not ctx.schedulers["tiny"].live, "the stream kept running after the disconnect"
        with httpx.Client(timeout=10) as c:
            metrics = c.get(url + "/metrics").text
    line = next(ln for ln in metrics.splitlines() if ln.startswith("rnnkit_tokens_generated_total"))
    assert float(line.split()[-1]) < 2000


def test_settings_reject_unknown_names(model):
    with pytest.raises(TypeError, match="colour"):
        build_app({"tiny": model}, colour="red")
    assert ServerSettings().max_concurrent > 0


def test_serve_verb_loads_runs_and_passes_the_settings(model, tmp_path, monkeypatch):
    import rnnkit.server as server
    from rnnkit.cli import build_parser, main

    seen = {}

    def fake_load(specs):
        seen["specs"] = specs
        return {"tiny": model}

    def fake_serve(models, host, port, settings, log_level):
        seen.update(models=models, host=host, port=port, settings=settings)

    monkeypatch.setattr(server, "load_runs", fake_load)
    monkeypatch.setattr(server, "serve", fake_serve)
    argv = ["serve", "a=runs/x", "runs/y", "--port", "8123", "--max-concurrent", "4",
            "--no-batching", "--session-ttl", "60"]  # fmt: skip
    assert main(argv) == 0
    assert seen["specs"] == ["a=runs/x", "runs/y"] and seen["host"] == "127.0.0.1"
    s = seen["settings"]
    assert seen["port"] == 8123 and s.max_concurrent == 4 and not s.batching
    assert s.session_ttl_s == 60 and s.cors_origins == []
    assert main(["serve", "runs/y", "--max-concurrent", "0"]) == 2
    assert "serve" in build_parser().format_help()


def test_load_runs_names_runs_by_folder_or_name(tmp_path, monkeypatch):
    import rnnkit.api

    monkeypatch.setattr(rnnkit.api, "load", lambda path: f"model of {path}")
    from rnnkit.server import load_runs

    assert load_runs(["runs/shakespeare/", "s=runs/sst2"]) == {
        "shakespeare": "model of runs/shakespeare/",
        "s": "model of runs/sst2",
    }
    with pytest.raises(ValueError, match="NAME=RUN"):
        load_runs(["a/x", "b/x"])
