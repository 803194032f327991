"""Chapter 7 LLM judge client, against a stub HTTP server on 127.0.0.1 that each test starts.

No real model server and no network beyond loopback: the stub answers as Ollama's REST API or an
OpenAI-compatible endpoint would, or misbehaves on purpose (slow, down, not JSON, no score).
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gpt_from_scratch.ch07 import (
    JudgeReplyError,
    JudgeUnavailable,
    LLMJudge,
    judge_prompt,
    judge_responses,
    parse_judge_score,
)

ENTRY = {"instruction": "Name a color.", "input": "", "output": "Blue.", "model_response": "Red."}


class StubServer:
    """A loopback HTTP server that records requests and plays back scripted replies.

    Each reply is (status, body, delay): ``body`` is a dict (sent as JSON) or a str (sent as is).
    The last reply repeats once the script is used up.
    """

    def __init__(self, replies):
        self.replies = list(replies)
        self.requests = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8") if length else None
                stub.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "json": json.loads(body) if body else None,
                    }
                )
                status, payload, delay = stub.replies.pop(0) if len(stub.replies) > 1 else stub.replies[0]
                time.sleep(delay)
                data = (json.dumps(payload) if isinstance(payload, dict) else payload).encode("utf-8")
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            do_GET = do_POST = _answer

            def log_message(self, *args):  # keep the test output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    servers = []

    def start(*replies):
        server = StubServer(replies)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def ollama_reply(text: str) -> tuple[int, dict, float]:
    return 200, {"model": "judge", "message": {"role": "assistant", "content": text}, "done": True}, 0.0


def openai_reply(text: str) -> tuple[int, dict, float]:
    return 200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}, 0.0


def free_port() -> int:
    """A loopback port where nothing listens (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- request shapes ------------------------------------------------------------------------------------


def test_ollama_request_shape_and_reply(stub):
    server = stub(ollama_reply("85"))
    judge = LLMJudge(model="llama3.2", api="ollama", base_url=server.url, seed=7)
    assert judge.chat("How good?") == "85"
    (request,) = server.requests
    assert request["method"] == "POST" and request["path"] == "/api/chat"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["json"] == {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "How good?"}],
        "stream": False,
        "options": {"temperature": 0, "seed": 7},
    }
    assert "Authorization" not in request["headers"]


def test_openai_request_shape_and_reply(stub):
    server = stub(openai_reply("Score: 70/100"))
    judge = LLMJudge(model="my-model", api="openai", base_url=server.url + "/v1/", api_key="sekrit")
    assert judge.score("How good?") == (70.0, "Score: 70/100")
    (request,) = server.requests
    assert request["method"] == "POST" and request["path"] == "/v1/chat/completions"  # trailing / handled
    assert request["headers"]["Authorization"] == "Bearer sekrit"
    body = request["json"]
    assert body["model"] == "my-model" and body["temperature"] == 0
    assert body["messages"] == [{"role": "user", "content": "How good?"}]


def test_default_urls():
    assert LLMJudge(api="ollama").base_url == "http://localhost:11434"
    assert LLMJudge(api="openai").base_url == "http://localhost:8080/v1"
    with pytest.raises(ValueError, match="api must be one of"):
        LLMJudge(api="anthropic")


def test_check_finds_the_model(stub):
    server = stub((200, {"models": [{"name": "llama3.2:latest"}, {"name": "qwen3:8b"}]}, 0.0))
    LLMJudge(model="llama3.2", base_url=server.url).check()  # ":latest" is implied
    LLMJudge(model="qwen3:8b", base_url=server.url).check()
    with pytest.raises(JudgeUnavailable, match=r"ollama pull mistral"):
        LLMJudge(model="mistral", base_url=server.url).check()
    assert {r["path"] for r in server.requests} == {"/api/tags"}
    assert {r["method"] for r in server.requests} == {"GET"}

    openai = stub((200, {"data": [{"id": "m"}]}, 0.0))
    LLMJudge(model="m", api="openai", base_url=openai.url + "/v1").check()
    assert openai.requests[0]["path"] == "/v1/models"


# ---- failures ------------------------------------------------------------------------------------------


def test_server_down_gives_one_clear_message():
    judge = LLMJudge(base_url=f"http://127.0.0.1:{free_port()}", timeout=2, retries=3, backoff=0)
    with pytest.raises(JudgeUnavailable) as err:
        judge.check()
    message = str(err.value)
    assert "no LLM judge answered" in message and "ollama serve" in message and "llama-server" in message
    with pytest.raises(JudgeUnavailable):
        judge.chat("hello")  # during a run, too: not retried forever, not mistaken for a bad reply


def test_timeout_is_retried_then_reported(stub):
    server = stub((200, {"message": {"content": "90"}}, 1.0))
    judge = LLMJudge(base_url=server.url, timeout=0.2, retries=1, backoff=0)
    with pytest.raises(JudgeReplyError, match="no reply .* within 0.2 s"):
        judge.chat("hello")
    assert len(server.requests) == 2  # one attempt plus one retry


def test_non_json_reply_is_retried_then_reported(stub):
    server = stub((200, "<html>502 Bad Gateway</html>", 0.0))
    judge = LLMJudge(base_url=server.url, retries=2, backoff=0)
    with pytest.raises(JudgeReplyError, match="not JSON"):
        judge.chat("hello")
    assert len(server.requests) == 3


def test_a_retry_recovers(stub):
    server = stub(
        (200, "not json", 0.0),
        (500, {"error": "busy"}, 0.0),
        (200, {"no": "message"}, 0.0),
        ollama_reply("Rating: 8/10"),
    )
    judge = LLMJudge(base_url=server.url, retries=3, backoff=0)
    assert judge.score("hello") == (80.0, "Rating: 8/10")
    assert len(server.requests) == 4


def test_http_error_is_reported_with_status(stub):
    server = stub((404, {"error": "model 'x' not found"}, 0.0))
    with pytest.raises(JudgeReplyError, match=r"HTTP 404 .*not found"):
        LLMJudge(base_url=server.url, retries=0).chat("hello")


def test_a_reply_without_score_is_reasked_then_missing_not_zero(stub):
    server = stub(ollama_reply("I cannot evaluate this."))
    judge = LLMJudge(base_url=server.url, retries=2, backoff=0)
    assert judge.score("hello") == (None, "I cannot evaluate this.")
    assert len(server.requests) == 3

    mixed = stub(
        ollama_reply("90"),
        ollama_reply("No idea."),
        ollama_reply("No idea."),
        ollama_reply("No idea."),
        ollama_reply("60"),
    )
    judged = judge_responses(LLMJudge(base_url=mixed.url, retries=2, backoff=0), [ENTRY, ENTRY, ENTRY])
    scores = judged["judge_score"].tolist()
    assert scores[0] == 90.0 and math.isnan(scores[1]) and scores[2] == 60.0
    assert judged["judge_score"].mean() == 75.0  # the missing score is left out, not counted as 0
    assert judged["judge_score"].isna().sum() == 1


def test_judge_responses_records_a_failed_entry_and_goes_on(stub):
    server = stub((200, "oops", 0.0), ollama_reply("70"))
    judged = judge_responses(LLMJudge(base_url=server.url, retries=0, backoff=0), [ENTRY, ENTRY])
    assert math.isnan(judged.loc[0, "judge_score"]) and "not JSON" in judged.loc[0, "judge_error"]
    assert judged.loc[1, "judge_score"] == 70.0 and judged.loc[1, "judge_error"] is None


def test_judge_prompt_holds_task_reference_and_response():
    prompt = judge_prompt({**ENTRY, "input": "a primary one"})
    for part in ("Name a color.", "a primary one", "Blue.", "Red.", "0", "100"):
        assert part in prompt
    assert "Green" in judge_prompt({**ENTRY, "other": "Green"}, key="other")


# ---- score parsing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, score",
    [
        ("85", 85.0), (" 85.\n", 85.0), ("100", 100.0), ("0", 0.0), ("Score: 85/100", 85.0),
        ("I'd rate the model response an 85 out of 100.", 85.0), ("**90**", 90.0), ("8/10", 80.0),
        ("Rating: 7.5 out of 10", 75.0), ("Score: 72", 72.0), ("My rating is 64.", 64.0),
        ("The score is 40. The response names 3 clouds.", 40.0), ("100%", 100.0),
        ("<think>The reference has 2 parts; 50 seems low.</think>\n77", 77.0),
        ("85 ... yes, 85", 85.0),
        ("Between 70 and 80.", None), ("I cannot judge this.", None), ("", None), ("N/A", None),
        ("150", None), ("Score: 150/100", None), ("GPT-4 would say 85", None),
    ],
)  # fmt: skip
def test_parse_judge_score(reply, score):
    assert parse_judge_score(reply) == score
