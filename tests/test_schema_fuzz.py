"""Schema fuzzing (schemathesis): requests generated from the server's own OpenAPI schema, valid and
invalid, against the app with the shipped models and small limits: no 5xx, every response conforms to the
schema (status codes, content types, bodies), every malformed request refused with a 4xx."""

import pytest
import schemathesis
from helpers import ROOT
from hypothesis import HealthCheck, given, settings

from nlp_rnn.deploy.serve import Limits, create_app, load_models

CHECKPOINTS = ROOT / "checkpoints"
LIMITS = Limits(max_texts=3, max_chars=200, max_beam=3, max_tokens=12, max_batch=8)


@pytest.fixture(scope="module")
def api_schema():
    specs = [("de-en", CHECKPOINTS / "multi30k-de-en"), ("sst2", CHECKPOINTS / "sst2")]
    specs.append(("chars", CHECKPOINTS / "shakespeare-char"))
    app = create_app(load_models(specs, "cpu", "fp32"), LIMITS)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.mark.slow
def test_the_server_keeps_its_schema_under_generated_requests(api_schema) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /translate",
        "POST /classify",
        "POST /generate",
        "POST /generate/stream",
        "GET /health",
        "GET /ready",
        "GET /metrics",
    }
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def check(case) -> None:
            case.call_and_validate()

        check()
