"""train.serve on a real uvicorn server on loopback: answers equal the shared function's, batching keeps them equal, and
every bad request gets a 4xx with one line (never a 500 or a traceback)."""

import http.client
import json
import socket
import threading
import time

import pytest

from modeling_geniusrec import recommend
from train import serve

from .test_readme import tiny_checkpoints


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A uvicorn server in a thread of this process (the real ASGI server, on a loopback port)."""

    def __init__(self, folder, **options):
        import uvicorn

        self.model, self.tokenizer = serve.load_for_serving(str(folder))
        self.port = free_port()
        app = serve.build_app(self.model, self.tokenizer, **options)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                break
            time.sleep(0.05)

    def request(self, method, path, body=None, raw: bytes | None = None, headers=None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        connection.request(method, path, body=payload, headers={"content-type": "application/json", **(headers or {})})
        response = connection.getresponse()
        data = response.read()
        connection.close()
        return response.status, data

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    tiny_checkpoints(root)
    started = {name: Server(root / "runs" / "quickstart" / name, max_body_bytes=4096) for name in ("hstu", "geniusrec")}
    yield started
    for server in started.values():
        server.stop()


HISTORY = {"items": ["Toy Story (1995)", "Heat (1995)"], "timestamps": [978300760, 978301968]}


def test_answers_are_the_shared_function_s(servers):
    for name, options in (("hstu", {"k": 5}), ("geniusrec", {"k": 4, "session": True}), ("geniusrec", {"k": 3, "session": False})):
        server = servers[name]
        status, data = server.request("POST", "/recommend", {**HISTORY, **options})
        assert status == 200, data
        answer = json.loads(data)
        expected = recommend(server.model, server.tokenizer, [HISTORY], warn=False, **options)[0]
        assert answer["items"] == expected["items"] and len(answer["items"]) == options["k"]
        assert not {i["item_id"] for i in answer["items"]} & set(HISTORY["items"])
    status, data = servers["geniusrec"].request("POST", "/recommend", {**HISTORY, "k": 3, "session": True, "num_return_sequences": 2})
    answer = json.loads(data)
    assert status == 200 and len(answer["alternatives"]) == 1
    assert not {i["item_id"] for i in answer["items"]} & {i["item_id"] for i in answer["alternatives"][0]}
    status, data = servers["hstu"].request("GET", "/health")
    assert status == 200 and json.loads(data)["status"] == "ok"
    status, data = servers["hstu"].request("GET", "/items/Heat%20(1995)")
    assert status == 200 and json.loads(data) == {"item_id": "Heat (1995)", "title": "Heat (1995)"}


def test_concurrent_requests_are_batched_and_answered_alike(servers):
    server = servers["hstu"]
    histories = [{"items": [f"Movie {i} (2000)", f"Movie {i + 1} (2000)"], "k": 4} for i in range(16)]
    before = json.loads(server.request("GET", "/health")[1])["batched_calls"]
    answers = [None] * len(histories)

    def ask(index):
        answers[index] = json.loads(server.request("POST", "/recommend", histories[index])[1])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(histories))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    calls = json.loads(server.request("GET", "/health")[1])["batched_calls"] - before
    assert calls < len(histories)  # some requests shared a model call
    for history, answer in zip(histories, answers):
        expected = recommend(server.model, server.tokenizer, [{"items": history["items"]}], k=4, warn=False)[0]["items"]
        assert [i["item_id"] for i in answer["items"]] == [i["item_id"] for i in expected]


BAD = [  # (body or raw bytes, expected status, words of the one-line error)
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 422, "JSON object"),
    ({"items": []}, 422, "non-empty list"),
    ({"items": "Heat (1995)"}, 422, "non-empty list"),
    ({"items": ["No Such Movie"]}, 422, "not in the model's catalog"),
    ({"items": ["Heat (1995)"], "k": 0}, 422, "'k' must be between 1 and"),
    ({"items": ["Heat (1995)"], "k": 10**6}, 422, "'k' must be between 1 and"),
    ({"items": ["Heat (1995)"], "k": "5"}, 422, "'k' must be int"),
    ({"items": ["Heat (1995)"], "unknown": "ignore"}, 422, "'unknown' must be"),
    ({"items": ["Heat (1995)"], "timestamps": [1, 2]}, 422, "one time per item"),
    ({"items": ["Heat (1995)", "Toy Story (1995)"], "timestamps": [5, 1]}, 422, "chronological"),
    ({"items": ["Heat (1995)"], "timestamps": [1.5]}, 422, "integer seconds"),
    ({"items": ["Heat (1995)"], "session": True}, 422, "needs a GeniusRec model"),
    ({"items": [f"Movie {i % 30} (2000)" for i in range(25)]}, 422, "more than the model reads"),
    ({"items": ["Heat (1995)"], "path": "/etc/passwd"}, 422, "unknown fields"),
    (b"\x80\x04\x95" + b"x" * 40, 400, "not valid JSON"),  # a pickle is never unpickled
    ({"items": ["Heat (1995)"] * 1000}, 413, "over 4096 bytes"),
]


@pytest.mark.parametrize("body,status,words", BAD)
def test_bad_requests_get_a_4xx_with_one_line(servers, body, status, words):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    got, data = servers["hstu"].request("POST", "/recommend", raw=raw)
    answer = json.loads(data)
    assert got == status and words in answer["error"], (got, answer)
    assert set(answer) == {"error"} and "\n" not in answer["error"] and "Traceback" not in answer["error"]


def test_unknown_routes_and_items_get_a_4xx(servers):
    for method, path, status in (("GET", "/nope", 404), ("GET", "/recommend", 405), ("GET", "/items/nope", 404)):
        got, data = servers["hstu"].request(method, path)
        assert got == status and "error" in json.loads(data), (path, data)
