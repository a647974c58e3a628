from __future__ import annotations

import json
import logging

from service.logs import JsonFormatter, configure_logging, request_id_var


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


def test_http_client_request_lines_are_not_logged_because_webhook_urls_carry_secrets() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, {n: logging.getLogger(n).level for n in ("httpx", "httpcore")})
    try:
        configure_logging("INFO", "json")
        # httpx writes 'HTTP Request: POST https://hooks.example/T0K3N "HTTP/1.1 200 OK"' at INFO.
        assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
        assert not logging.getLogger("httpcore").isEnabledFor(logging.INFO)
        assert logging.getLogger("httpx").isEnabledFor(logging.WARNING)
        assert logging.getLogger("metreg.worker").isEnabledFor(logging.INFO)
        configure_logging("ERROR", "text")
        assert not logging.getLogger("httpx").isEnabledFor(logging.WARNING)
    finally:
        root.handlers[:], level, levels = saved
        root.setLevel(level)
        for name, named_level in levels.items():
            logging.getLogger(name).setLevel(named_level)
