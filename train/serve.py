"""Serve a checkpoint over HTTP: one model in memory, concurrent requests batched into one forward.

    python -m train.serve --model runs/quickstart/hstu --host 127.0.0.1 --port 8000
    curl -s localhost:8000/recommend -H 'content-type: application/json' \\
         -d '{"items": ["Toy Story (1995)", "Heat (1995)"], "timestamps": [978300760, 978301968], "k": 5}'

Endpoints: `POST /recommend` (body: `items` raw ids oldest first, optional `timestamps` (seconds, one per item) and
`request_time`, `k` (default 10), `session` (GeniusRec: a generated session; default false: the top-k list),
`num_return_sequences` (GeniusRec alternatives), `unknown` ("error" or "drop")) answers `{"items": [{"item_id",
"title", "score"}, ...], "notes": [...]}`; `GET /health`; `GET /items/{item_id}` (its title). Every answer comes from
`modeling_geniusrec.recommendation.recommend`, the function behind the pipeline and `train.recommend`, so the rules
are the same: the history is never recommended, a user who has seen nearly everything gets a shorter list and a note.

Bad requests get a 4xx with one line `{"error": "..."}` and never reach the model: malformed JSON (400), a body over
`--max_body_bytes` (413), a field of the wrong type or out of range, unknown items under `"unknown": "error"`, a
history longer than the model reads (422), an unknown item in `/items/{id}` (404). The server reads no path and
unpickles nothing a request sends. With `--batch_wait_ms` > 0, requests that arrive within that window (up to
`--max_batch`) share one model call; 0 serves each request alone.
"""

import asyncio
import os
import sys
import time
from dataclasses import dataclass, field

from data_scripts.arguments import make_parser, parse_args, run_cli
from modeling_geniusrec.recommendation import encode_history, model_window, parse_history, recommend

OPTIONS = {"k": int, "session": bool, "num_return_sequences": int, "unknown": str}
FIELDS = {"items", "timestamps", "request_time", *OPTIONS}


class BadRequest(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def check_request(body, model, tokenizer, max_k: int, max_alternatives: int) -> tuple[dict, dict, list]:
    """`(history as token ids, options, notes)` of a request body, or `BadRequest` naming the first problem (before any
    model call). The history is parsed and looked up once, here; the batch then runs on its token ids."""
    if not isinstance(body, dict):
        raise BadRequest(422, "the body must be a JSON object with 'items' (raw item ids, oldest first)")
    unknown_fields = sorted(set(body) - FIELDS)
    if unknown_fields:
        raise BadRequest(422, f"unknown fields {unknown_fields}; accepted: {sorted(FIELDS)}")
    options = {"k": 10, "session": False, "num_return_sequences": 1, "unknown": "error"}
    for name, kind in OPTIONS.items():
        if name in body:
            value = body[name]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise BadRequest(422, f"'{name}' must be {kind.__name__}, got {type(value).__name__}")
            options[name] = value
    num_items = model.config.vocab_size - model.config.num_special_tokens
    if not 1 <= options["k"] <= min(max_k, num_items):
        raise BadRequest(422, f"'k' must be between 1 and {min(max_k, num_items)}, got {options['k']}")
    if options["unknown"] not in ("error", "drop"):
        raise BadRequest(422, f"'unknown' must be 'error' or 'drop', got {options['unknown']!r}")
    seq2seq = getattr(model.config, "is_encoder_decoder", False)
    if options["session"] and not seq2seq:
        raise BadRequest(422, "'session': true needs a GeniusRec model; this one ranks items (drop 'session')")
    if not 1 <= options["num_return_sequences"] <= max_alternatives or (options["num_return_sequences"] > 1 and not options["session"]):
        raise BadRequest(422, f"'num_return_sequences' must be 1, or up to {max_alternatives} with 'session': true (GeniusRec)")
    history = {key: body[key] for key in ("items", "timestamps", "request_time") if key in body}
    try:
        row, notes = encode_history(tokenizer, parse_history(history, 0), 0, options["unknown"], model_window(model), truncate=False)
    except ValueError as error:
        raise BadRequest(422, str(error).replace("history 0: ", "").replace("history 0 ", "the history ")) from None
    tokens = {"tokens": row["input_ids"], "timestamps": row["timestamps"], "request_time": int(row["next_timestamp"])}
    return tokens, options, notes


class Batcher:
    """Collects requests for up to `wait` seconds (or `max_batch` of them) and answers them with one model call per
    group of equal options. Model calls run one at a time on one worker thread (torch uses every core for each), so
    the event loop keeps accepting requests and concurrent calls never oversubscribe the cores."""

    def __init__(self, model, tokenizer, wait: float, max_batch: int, candidate_count: int | None, queries=None):
        from concurrent.futures import ThreadPoolExecutor

        self.model, self.tokenizer, self.wait, self.max_batch = model, tokenizer, wait, max_batch
        self.candidate_count, self.queries = candidate_count, queries
        self.queue: asyncio.Queue | None = None
        self.calls = self.batched_requests = 0
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="geniusrec-model")

    async def call(self, histories: list[dict], options: dict) -> list[dict]:
        return await asyncio.get_running_loop().run_in_executor(self.worker, self.run, histories, options)

    def run(self, histories: list[dict], options: dict) -> list[dict]:
        self.calls += 1
        self.batched_requests += len(histories)
        extra = {"candidate_count": self.candidate_count} if options["session"] and self.candidate_count else {}
        queries = self.queries if not options["session"] else None
        return recommend(self.model, self.tokenizer, histories, warn=False, truncate=False, queries=queries, **options, **extra)

    async def submit(self, history: dict, options: dict) -> dict:
        if self.wait <= 0:
            return (await self.call([history], options))[0]
        if self.queue is None:
            self.queue = asyncio.Queue()
            asyncio.get_running_loop().create_task(self.loop())
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((history, options, future))
        return await future

    async def loop(self):
        while True:
            pending = [await self.queue.get()]
            deadline = time.monotonic() + self.wait
            while len(pending) < self.max_batch:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
                try:
                    pending.append(await asyncio.wait_for(self.queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            groups = {}
            for item in pending:
                groups.setdefault(tuple(sorted(item[1].items())), []).append(item)
            for key, members in groups.items():
                try:
                    results = await self.call([m[0] for m in members], dict(key))
                except Exception as error:  # noqa: BLE001 - a failure reaches every waiting request, never the loop
                    for member in members:
                        if not member[2].done():
                            member[2].set_exception(error)
                    continue
                for member, result in zip(members, results):
                    if not member[2].done():
                        member[2].set_result(result)


def build_app(model, tokenizer, max_body_bytes: int = 1 << 20, max_k: int = 1000, max_alternatives: int = 5, batch_wait_ms: float = 2.0,
              max_batch: int = 64, candidate_count: int | None = None, exported: bool = False):
    """The ASGI app (FastAPI) around one loaded model; every route is a thin shell over `recommend`. `exported`: top-k
    lists take the user states from the folder's `torch.export` program (`python -m train.export`) instead of the
    eager model."""
    import orjson
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    app = FastAPI(title="GeniusRec", description=__doc__.split("\n\n")[0], docs_url=None, redoc_url=None)
    batcher = Batcher(model, tokenizer, batch_wait_ms / 1000, max_batch, candidate_count, exported_queries(model) if exported else None)
    app.state.batcher = batcher
    num_items = model.config.vocab_size - model.config.num_special_tokens

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(Exception)
    async def unexpected(request, exc):  # a bug: one line, never a traceback in the answer
        return error(500, f"internal error ({exc.__class__.__name__}); the server logged it")

    @app.exception_handler(404)
    async def not_found(request, exc):
        return error(404, f"no route {request.method} {request.url.path}; routes: POST /recommend, GET /health, GET /items/{{item_id}}")

    @app.exception_handler(405)
    async def wrong_method(request, exc):
        return error(405, f"{request.method} is not accepted on {request.url.path}")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model_type": model.config.model_type, "items": num_items, "window": model_window(model),
                "batched_calls": batcher.calls, "batched_requests": batcher.batched_requests}

    @app.get("/items/{item_id:path}")
    async def item(item_id: str):
        if not tokenizer.encode_items([item_id], unknown="drop"):
            return error(404, f"item {item_id[:100]!r} is not in the model's catalog")
        return {"item_id": item_id, "title": tokenizer.item_titles.get(item_id, item_id)}

    @app.post("/recommend")
    async def recommend_route(request: Request):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body_bytes):
            return error(413, f"the body is over {max_body_bytes} bytes: send a shorter history")
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > max_body_bytes:
                return error(413, f"the body is over {max_body_bytes} bytes: send a shorter history")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return error(400, f"the body is not valid JSON ({str(exc).splitlines()[0]})")
        try:
            history, options, notes = check_request(body, model, tokenizer, max_k, max_alternatives)
        except BadRequest as exc:
            return error(exc.status, str(exc))
        result = await batcher.submit(history, options)
        answer = {"items": result["items"], "notes": notes + result["notes"]}
        if "alternatives" in result:
            answer["alternatives"] = result["alternatives"]
        return answer

    return app


def exported_queries(model):
    """User states from the checkpoint's exported encoder (`train.export`), as `recommend(queries=...)` takes them."""
    from modeling_geniusrec.export import ENCODER_FILE, load_exported

    folder = model.name_or_path
    if not os.path.isfile(os.path.join(folder, ENCODER_FILE)):
        raise ValueError(f"{folder!r} has no {ENCODER_FILE}: run `python -m train.export --model {folder}` first")
    module, _, _ = load_exported(folder)
    return lambda batch: module(batch["input_ids"], batch["attention_mask"], batch["timestamps"], batch["next_timestamps"])


def load_for_serving(path: str):
    """`(model, tokenizer)` of a checkpoint folder (its own tokenizer), in eval mode, loaded strictly."""
    from transformers import AutoTokenizer

    from .runner import load_checkpoint

    if not os.path.isfile(os.path.join(path, "tokenizer.json")):
        raise ValueError(f"{path!r} holds no tokenizer.json: serve a folder written by train.pretrain / finetune / dpo")
    tokenizer = AutoTokenizer.from_pretrained(path)
    return load_checkpoint(path, tokenizer=tokenizer).eval(), tokenizer


@dataclass
class ServeArguments:
    model: str = field(metadata={"help": "checkpoint folder to serve"})
    host: str = field(default="127.0.0.1", metadata={"help": "interface to listen on (0.0.0.0: every interface)"})
    port: int = field(default=8000, metadata={"help": "TCP port"})
    batch_wait_ms: float = field(default=2.0, metadata={"help": "how long a request waits for others to share its model call (0: none)"})
    max_batch: int = field(default=64, metadata={"help": "most requests in one model call"})
    max_body_bytes: int = field(default=1 << 20, metadata={"help": "larger bodies get 413"})
    max_k: int = field(default=1000, metadata={"help": "largest k a request may ask"})
    max_alternatives: int = field(default=5, metadata={"help": "largest num_return_sequences (GeniusRec)"})
    candidate_count: int | None = field(default=None, metadata={"help": "GeniusRec sessions through the two-stage decode over N items"})
    exported: bool = field(default=False, metadata={"help": "top-k lists from the folder's exported encoder (python -m train.export)"})
    threads: int | None = field(default=None, metadata={"help": "torch threads (default: torch's)"})
    log_level: str = field(default="warning", metadata={"help": "uvicorn's log level", "choices": ["critical", "error", "warning", "info", "debug"]})


def main(argv=None):
    parser = make_parser(ServeArguments, description=__doc__)
    (args,) = parse_args(parser, argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port must be in 1..65535, got {args.port}")
    if args.max_batch < 1 or args.batch_wait_ms < 0 or args.max_body_bytes < 64:
        parser.error("--max_batch >= 1, --batch_wait_ms >= 0 and --max_body_bytes >= 64, please")
    import torch
    import uvicorn

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_for_serving(args.model)
    app = build_app(model, tokenizer, args.max_body_bytes, args.max_k, args.max_alternatives, args.batch_wait_ms, args.max_batch,
                    args.candidate_count, args.exported)
    print(f"serving {args.model} ({model.config.model_type}, {model.config.vocab_size - model.config.num_special_tokens:,} items) on "
          f"http://{args.host}:{args.port}  (POST /recommend, GET /health, GET /items/{{id}})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=5)


if __name__ == "__main__":
    sys.exit(run_cli(main))
