"""The HTTP server: completions (plain and streamed) and batching equal to sequential generation."""

import asyncio
import json

import httpx
import pytest
import torch

from rnnkit.data.vocab import Vocab
from rnnkit.server import build_app
from rnnkit.tasks.language_model import LanguageModelConfig, build_language_model


@pytest.fixture()
def model():
    torch.manual_seed(0)
    vocab = Vocab("abcdefgh ")
    return build_language_model(LanguageModelConfig(hidden_size=16, embed_size=8), vocab).eval()


def _client(model, batching=True):
    transport = httpx.ASGITransport(app=build_app({"tiny": model}, batching=batching))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def test_health_models_and_bad_requests(model):
    async def go():
        async with _client(model) as c:
            assert (await c.get("/health")).json()["status"] == "ok"
            assert (await c.get("/v1/models")).json()["data"][0]["id"] == "tiny"
            r = await c.post("/v1/completions", json={"prompt": "ab", "max_tokens": -1})
            assert r.status_code == 422 and "error" in r.json()
            r = await c.post("/v1/completions", json={"model": "nope", "prompt": "ab"})
            assert r.status_code == 404 and "nope" in r.json()["error"]["message"]

    asyncio.run(go())


def test_concurrent_batched_equals_sequential_generate(model):
    prompts = ["abc", "hg", "dead beef", "a"]
    expected = [model.generate(p, length=12, temperature=0.8, seed=7) for p in prompts]

    async def go():
        async with _client(model) as c:
            async def one(p):
                r = await c.post(
                    "/v1/completions",
                    json={"prompt": p, "max_tokens": 12, "temperature": 0.8, "seed": 7},
                )
                return r.json()["choices"][0]

            return await asyncio.gather(*(one(p) for p in prompts))

    got = asyncio.run(go())
    assert [g["text"] for g in got] == expected
    assert all(g["finish_reason"] == "length" for g in got)


def test_streamed_chunks_join_to_the_greedy_text(model):
    expected = model.generate("abc", length=10, temperature=0)

    async def go():
        async with _client(model) as c:
            r = await c.post(
                "/v1/completions",
                json={"prompt": "abc", "max_tokens": 10, "temperature": 0, "stream": True},
            )
            return r.text

    lines = [ln[6:] for ln in asyncio.run(go()).splitlines() if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(ln) for ln in lines[:-1]]
    assert all(ch["object"] == "text_completion" for ch in chunks)
    assert "".join(ch["choices"][0]["text"] for ch in chunks) == expected
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
