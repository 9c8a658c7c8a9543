"""Property-based requests against the server's own ``/openapi.json`` (Schemathesis): whatever
the fuzzer sends — valid bodies, edge values, wrong types — no answer is a 5xx."""

from __future__ import annotations

import pytest
import torch

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")

from hypothesis import HealthCheck, settings  # noqa: E402

from rnnkit.data.vocab import Vocab  # noqa: E402
from rnnkit.server import build_app  # noqa: E402
from rnnkit.tasks.classifier import Classifier, ClassifierConfig, ClassifierData  # noqa: E402
from rnnkit.tasks.language_model import LanguageModelConfig, build_language_model  # noqa: E402
from rnnkit.tasks.seq2seq import Seq2Seq, Seq2SeqConfig, Seq2SeqData  # noqa: E402


def _app():
    torch.manual_seed(0)
    lm = build_language_model(
        LanguageModelConfig(hidden_size=8, embed_size=4), Vocab("abcdefgh \n")
    ).eval()
    words = Vocab.build("the cat sat on a mat".split(), level="word")
    clf = Classifier(
        ClassifierConfig(embed_size=4, hidden_size=4, dropout=0.0),
        ClassifierData(labels=["neg", "pos"]),
        words,
    ).eval()
    digits = [str(d) for d in range(10)]
    s2s = Seq2Seq(
        Seq2SeqConfig(embed_size=4, hidden_size=4, decoder_size=8, attention_size=4,
                      output_size=4, dropout=0.0),
        Seq2SeqData(source_vocab=digits, target_vocab=digits),
    ).eval()  # fmt: skip
    # small limits keep every generated request cheap on a 2-core machine
    return build_app({"tiny": lm, "sentiment": clf, "digits": s2s}, max_tokens=32,
                     max_input_chars=400, max_items=8, request_timeout_s=10)  # fmt: skip


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_5xx(case):
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, case.body, response.text[:300])
    if response.status_code >= 400:
        assert "error" in response.json(), response.text[:300]
