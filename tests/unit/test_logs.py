from __future__ import annotations

import json
import logging

from service.logs import JsonFormatter, request_id_var


def test_json_lines_carry_time_level_request_id_and_extras() -> None:
    record = logging.LogRecord("metreg.access", logging.INFO, __file__, 1, "GET %s %s", ("/v1/catalog", 200), None)
    record.status = 200
    token = request_id_var.set("req-1")
    try:
        line = JsonFormatter().format(record)
    finally:
        request_id_var.reset(token)
    entry = json.loads(line)
    assert entry["message"] == "GET /v1/catalog 200"
    assert (entry["level"], entry["logger"], entry["request_id"], entry["status"]) == (
        "INFO",
        "metreg.access",
        "req-1",
        200,
    )
    assert entry["time"].endswith("+00:00")
