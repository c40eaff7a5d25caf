"""A short schemathesis run over the server's own OpenAPI document (``python -m bench.api_fuzz`` is the long one)."""

from __future__ import annotations

import pytest
from server_testkit import API_KEY

from bench.api_fuzz import documented_statuses, fuzz, merge_results

pytestmark = pytest.mark.slow


def test_generated_requests_to_every_operation_get_no_undocumented_5xx(make_server):
    server = make_server()
    result = fuzz(server.http_url, API_KEY, requests=300, seed=1)
    assert result.requests >= 300
    assert result.server_errors == 0, "\n".join(result.findings)
    assert sum(n for s, n in result.statuses.items() if 400 <= s < 500) > 0  # invalid requests were sent too


def test_only_the_documented_gateway_statuses_of_an_image_request_are_allowed(make_server):
    import httpx

    server = make_server()
    doc = httpx.get(f"{server.http_url}/openapi.json", headers={"X-API-Key": API_KEY}, timeout=10).json()
    assert {502, 503, 504} <= documented_statuses(doc, "get", "/faces/{face_id}/image")
    # Every route documents 503 (Redis unreachable: the store's answer, not a crash); no route documents
    # 500, so a crash anywhere still counts as a server error.
    assert {s for s in documented_statuses(doc, "post", "/search") if s >= 500} == {503}
    assert not any(500 in documented_statuses(doc, m, p) for p, ops in doc["paths"].items() for m in ops)


def test_results_are_merged_into_the_existing_file(tmp_path):
    out = tmp_path / "reliability.json"
    out.write_text('{"restarts": {"faces_sent": 10}, "api_fuzz": {"requests": 1}}')
    merged = merge_results(out, "api_fuzz", {"requests": 5000, "server_errors": 0})
    assert merged == {"restarts": {"faces_sent": 10}, "api_fuzz": {"requests": 5000, "server_errors": 0}}
    assert merge_results(tmp_path / "new.json", "api_fuzz", {"requests": 1}) == {"api_fuzz": {"requests": 1}}
