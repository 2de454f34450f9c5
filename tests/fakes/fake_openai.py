"""A real HTTP server on 127.0.0.1 that speaks enough of the OpenAI protocol for dermlib's tests and benchmark.

Endpoints: POST /v1/chat/completions, POST /v1/files (multipart), GET /v1/files/{id}/content,
POST /v1/batches, GET /v1/batches/{id}. Answers are deterministic: JSON that satisfies the requested schema
(enum options picked by the request's seed), or a short text note.

Fault injection, one fault per chat call, taken in order from `faults` and then from `rule(call_no, body)`:
"429" (with Retry-After), "500", "slow" (sleeps `slow_seconds`), "malformed_body" (HTTP body is not JSON),
"malformed_json" (the content is not JSON), "invalid_schema" (JSON that breaks the schema), "truncated"
(cut JSON, finish_reason=length), "refusal", "401", "403" and "400_echo" (echo the Authorization header, to test
that the key is scrubbed). Hostile modes: "drip" (headers, then the body one byte every `drip_seconds`),
"html" (HTTP 200 with an HTML login page), "int_content" (content is a number), "echo_key" (a successful answer
that quotes the Authorization header), "huge" (a 2 MB answer), "drop" (close the connection without answering,
as a server that went down). Malformed text: "surrogate" (the content carries a lone surrogate, sent as the JSON
escape \\ud800), "bad_utf8" (the HTTP body holds bytes that are not UTF-8 inside the content), "control_chars"
(the content carries control characters, a bidi override and a decomposed accent).

Like OpenAI's own API, when asked: `models` (the ids it serves; any other gets HTTP 404 "model_not_found"), and
`strict_schemas` (a strict json_schema with a keyword outside OpenAI's documented subset, or an object without
"additionalProperties": false, gets HTTP 400, as OpenAI answers "'minLength' is not permitted"). Every answer
carries a `system_fingerprint`.

Batches run all their requests at the `batch_polls`-th poll (taking the chat faults in order) and complete. As OpenAI
ends them, when asked: `batch_end` maps a batch id ("batch_1", ...) to (status, n): "expired" or "cancelled" after
running its first n requests (their answers in the output file, the others in the error file with code
"batch_expired" / "batch_cancelled"), or "failed" (the whole batch refused: `errors`, no files). With
`batch_error_file`, a request's HTTP fault ("429", "500", "400", "400_echo": quoting the batch creator's
Authorization header, "400_long": a 14 kB message quoting it, "401") goes to the error file as OpenAI writes it,
and "echo_key" quotes that header too.

Run standalone for the benchmark: `python tests/fakes/fake_openai.py --latency 0.2 --workers 8`.
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Rule = Callable[[int, dict[str, Any]], "str | None"]
BAD_UTF8_MARK = "@@not-utf8@@"  # "bad_utf8": replaced by these bytes in the HTTP body
BAD_UTF8_BYTES = b"\xff\xfe\xc3("
# keywords OpenAI's strict mode refuses (its guide's "not yet supported" list), written out here on their own so
# the fake does not borrow dermlib's checker
NOT_PERMITTED = {"minLength", "maxLength", "uniqueItems", "patternProperties", "minProperties", "maxProperties",
                 "propertyNames", "unevaluatedProperties", "unevaluatedItems", "contains", "minContains",
                 "maxContains", "allOf", "not", "if", "then", "else", "dependentRequired", "dependentSchemas", "oneOf"}


def strict_schema_error(schema: dict[str, Any], path: tuple[str, ...] = ()) -> str | None:
    """OpenAI's answer to a strict schema it refuses (None: accepted)."""
    for key in sorted(schema):
        if key in NOT_PERMITTED:
            return f"In context={path}, '{key}' is not permitted."
    if schema.get("type") == "object" and schema.get("additionalProperties") is not False:
        return f"In context={path}, 'additionalProperties' is required to be supplied and to be false."
    children = [(("properties", k), v) for k, v in (schema.get("properties") or {}).items()]
    if isinstance(schema.get("items"), dict):
        children.append((("items",), schema["items"]))
    for sub, child in children:
        error = strict_schema_error(child, path + sub)
        if error:
            return error
    return None


def _from_schema(schema: dict[str, Any], seed: int, depth: int = 0, first: bool = False) -> Any:
    """A deterministic value that satisfies a (simple) JSON schema (`first`: always the first enum option, as a
    small model under constrained decoding tends to answer)."""
    if "enum" in schema:
        return schema["enum"][0 if first else (seed + depth) % len(schema["enum"])]
    kind = schema.get("type")
    if kind == "object":
        return {k: _from_schema(v, seed, depth + i, first)
                for i, (k, v) in enumerate(schema.get("properties", {}).items())}
    if kind == "array":
        n = max(1, schema.get("minItems", 0))
        if first:
            return [schema.get("items", {}).get("enum", [None])[i] for i in range(n)]
        return [_from_schema(schema.get("items", {}), seed, depth + i) for i in range(n)]
    if kind == "string":
        text = f"Finding {seed} noted on examination with a regular border."
        return text[: schema.get("maxLength", len(text))].ljust(schema.get("minLength", 0), ".")
    if kind in ("integer", "number"):
        return seed % 10
    return None


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default backlog (5) drops connections when many clients connect at once
    daemon_threads = True


class FakeOpenAI:
    """The server; use `with FakeOpenAI(...) as fake:` and point clients at `fake.base_url`."""

    def __init__(self, *, latency: float = 0.0, faults: list[str] | None = None, rule: Rule | None = None,
                 api_key: str | None = None, retry_after: str = "1", slow_seconds: float = 3.0,
                 max_parallel: int | None = None, batch_polls: int = 1, first_option: bool = False,
                 drip_seconds: float = 1.0, models: set[str] | None = None, strict_schemas: bool = False,
                 fingerprint: str = "fp_fake0001", batch_end: dict[str, tuple[str, int]] | None = None,
                 batch_error_file: bool = False) -> None:
        self.latency, self.faults, self.rule = latency, list(faults or []), rule
        self.api_key, self.retry_after, self.slow_seconds = api_key, retry_after, slow_seconds
        self.batch_polls = batch_polls
        self.first_option = first_option
        self.drip_seconds = drip_seconds
        self.models, self.strict_schemas, self.fingerprint = models, strict_schemas, fingerprint
        self.counts: Counter = Counter()
        self.chat_bodies: list[dict[str, Any]] = []
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.batch_end, self.batch_error_file = dict(batch_end or {}), batch_error_file
        self.batch_auth: dict[str, str | None] = {}  # batch id -> the Authorization header that created it
        self.lock = threading.Lock()
        self.slots = threading.Semaphore(max_parallel) if max_parallel else None
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- behaviour -----------------------------------------------------------------------------------------
    def _next_fault(self, body: dict[str, Any]) -> str | None:
        with self.lock:
            self.counts["chat"] += 1
            self.chat_bodies.append(body)
            call_no = self.counts["chat"]
            if self.faults:
                return self.faults.pop(0)
        return self.rule(call_no, body) if self.rule else None

    def completion(self, body: dict[str, Any], fault: str | None) -> dict[str, Any]:
        """The chat completion object answering `body` (with a content-level fault applied)."""
        seed = int(body.get("seed") or 0)
        fmt = body.get("response_format") or {}
        schema = fmt.get("schema") or (fmt.get("json_schema") or {}).get("schema")
        finish, refusal = "stop", None
        if schema is not None:
            value = _from_schema(schema, seed, first=self.first_option)
            if fault == "invalid_schema":
                value = {"morphology": "banana"}
            content: str | None = json.dumps(value)
            if fault == "malformed_json":
                content = "{'morphology': macule,"
            if fault == "truncated":
                content, finish = content[: len(content) // 2], "length"
        else:
            last = body["messages"][-1]["content"][-60:]
            content = f"Synthetic note {seed}. Patient seen for: {last}. Lesion examined and documented."
        if fault == "refusal":
            content, refusal = None, "I'm sorry, I can't help with that."
        if fault == "echo_key":
            content = f"Synthetic note {seed}. Your header was {body.get('_authorization')}. Lesion documented."
        if fault == "huge":
            content = "word " * 400_000
        if fault == "int_content":
            content = 42  # type: ignore[assignment]
        if fault == "surrogate":
            content = f"Synthetic note {seed} \ud800 with a lone surrogate."
        if fault == "bad_utf8":
            content = f"Synthetic note {seed} {BAD_UTF8_MARK} with bytes that are not UTF-8."
        if fault == "control_chars":
            content = (f"Synthetic\x00 note {seed}\x1b[31m with a caf\u0065\u0301 \u202eevil\u202c bidi\x07 override.\r\n"
                       "Second\tline\x7f.")
        prompt_tokens = sum(len(m["content"].split()) for m in body["messages"])
        words = len(content.split()) if isinstance(content, str) else 1
        return {
            "id": f"chatcmpl-{seed}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "fake"), "system_fingerprint": self.fingerprint,
            "choices": [{"index": 0, "finish_reason": finish,
                         "message": {"role": "assistant", "content": content, "refusal": refusal}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": words,
                      "total_tokens": prompt_tokens + words},
        }

    def refusal(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """(status, error body) as OpenAI refuses a request for a model it does not serve or a strict schema outside
        its subset; None when the request is accepted."""
        model = body.get("model")
        if self.models is not None and model not in self.models:
            return 404, {"error": {"message": f"The model `{model}` does not exist or you do not have access to it.",
                                   "type": "invalid_request_error", "param": None, "code": "model_not_found"}}
        spec = (body.get("response_format") or {}).get("json_schema") or {}
        error = strict_schema_error(spec["schema"]) if self.strict_schemas and spec.get("strict") else None
        if error:
            return 400, {"error": {"message": f"Invalid schema for response_format '{spec.get('name')}': {error}",
                                   "type": "invalid_request_error", "param": "response_format", "code": None}}
        return None

    def _run_batch(self, batch: dict[str, Any]) -> None:
        if self.batch_error_file or batch["id"] in self.batch_end:
            return self._run_batch_as_openai(batch)
        lines = []
        for line in self.files[batch["input_file_id"]]["content"].decode().splitlines():
            request = json.loads(line)
            fault = self._next_fault(request["body"])
            if fault in ("500", "429"):
                lines.append({"id": f"r-{request['custom_id'][:8]}", "custom_id": request["custom_id"], "response":
                              {"status_code": int(fault), "body": {"error": {"message": "injected"}}}, "error": None})
                continue
            lines.append({"id": f"r-{request['custom_id'][:8]}", "custom_id": request["custom_id"], "error": None,
                          "response": {"status_code": 200, "request_id": "req", "body": self.completion(request["body"], fault)}})
        output_id = f"file-out-{batch['id']}"
        self.files[output_id] = {"content": "\n".join(json.dumps(x) for x in lines).encode(), "purpose": "batch_output",
                                 "filename": "output.jsonl"}
        batch.update(status="completed", output_file_id=output_id,
                     request_counts={"total": len(lines), "completed": len(lines), "failed": 0})

    def _run_batch_as_openai(self, batch: dict[str, Any]) -> None:
        """Run a batch and end it as OpenAI would (`batch_end`, `batch_error_file`): answers in the output file,
        failed and never-run requests in the error file, request_counts, `errors` for a batch failed as a whole."""
        requests = [json.loads(line) for line in self.files[batch["input_file_id"]]["content"].decode().splitlines()
                    if line.strip()]
        end, n_run = self.batch_end.get(batch["id"], ("completed", len(requests)))
        if end == "failed":
            batch.update(status="failed", request_counts={"total": len(requests), "completed": 0, "failed": 0},
                         errors={"object": "list", "data": [{"code": "invalid_request", "line": 1, "param": None,
                                                             "message": "injected: the input file was refused"}]})
            return
        auth = self.batch_auth.get(batch["id"])
        out, errors = [], []
        for i, request in enumerate(requests):
            line: dict[str, Any] = {"id": f"batch_req_{batch['id']}_{i}", "custom_id": request["custom_id"]}
            if i >= n_run:
                code = "batch_expired" if end == "expired" else "batch_cancelled"
                errors.append({**line, "response": None, "error": {"code": code, "message": (
                    "This request could not be executed before the completion window expired." if end == "expired"
                    else "This request was cancelled with its batch.")}})
                continue
            fault = self._next_fault(request["body"])
            if fault in ("429", "500") or (self.batch_error_file and fault in ("400", "400_echo", "400_long", "401")):
                message = f"Incorrect: {auth}" if fault == "400_echo" else f"injected HTTP {fault[:3]}"
                if fault == "400_long":
                    message = f"Incorrect: {auth} " + "detail " * 2000 + f"{auth}"
                response = {"status_code": int(fault[:3]), "request_id": "req",
                            "body": {"error": {"message": message, "type": "invalid_request_error"}}}
                (errors if self.batch_error_file else out).append({**line, "response": response, "error": None})
                continue
            body = {**request["body"], "_authorization": auth} if self.batch_error_file else request["body"]
            out.append({**line, "error": None,
                        "response": {"status_code": 200, "request_id": "req", "body": self.completion(body, fault)}})
        for kind, lines in (("output", out), ("error", errors)):
            file_id = f"file-{kind}-{batch['id']}" if lines else None
            if file_id:
                self.files[file_id] = {"content": "\n".join(json.dumps(x) for x in lines).encode(),
                                       "purpose": f"batch_{kind}", "filename": f"{kind}.jsonl"}
            batch[f"{kind}_file_id"] = file_id
        batch.update(status=end, request_counts={"total": len(requests), "completed": len(out), "failed": len(errors)})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None, raw: bytes | None = None) -> None:
                data = raw if raw is not None else json.dumps(payload).encode()
                headers = {"Content-Type": "application/json", **(headers or {})}
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _authorised(self) -> bool:
                if fake.api_key and self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                    self._send(401, {"error": {"message": f"bad key {self.headers.get('Authorization')}"}})
                    return False
                return True

            def do_GET(self) -> None:  # noqa: N802
                if not self._authorised():
                    return
                parts = self.path.strip("/").split("/")
                with fake.lock:
                    fake.counts["GET " + "/".join(parts[:2])] += 1
                if parts[:2] == ["v1", "batches"] and len(parts) == 3 and parts[2] in fake.batches:
                    batch = fake.batches[parts[2]]
                    batch["polls"] += 1
                    if batch["status"] == "in_progress" and batch["polls"] >= fake.batch_polls:
                        fake._run_batch(batch)
                    return self._send(200, {k: v for k, v in batch.items() if k != "polls"})
                if parts[:2] == ["v1", "files"] and len(parts) == 4 and parts[2] in fake.files:
                    return self._send(200, None, raw=fake.files[parts[2]]["content"])
                self._send(404, {"error": {"message": f"no such path {self.path}"}})

            def do_POST(self) -> None:  # noqa: N802
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if not self._authorised():
                    return
                if self.path == "/v1/chat/completions":
                    return self._chat(json.loads(data))
                if self.path == "/v1/files":
                    return self._upload(data)
                if self.path == "/v1/batches":
                    body = json.loads(data)
                    with fake.lock:
                        fake.counts["batches"] += 1
                        batch_id = f"batch_{fake.counts['batches']}"
                    fake.batch_auth[batch_id] = self.headers.get("Authorization")
                    fake.batches[batch_id] = {
                        "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "status": "in_progress",
                        "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
                        "created_at": int(time.time()), "output_file_id": None, "error_file_id": None, "polls": 0}
                    return self._send(200, {k: v for k, v in fake.batches[batch_id].items() if k != "polls"})
                self._send(404, {"error": {"message": f"no such path {self.path}"}})

            def _upload(self, data: bytes) -> None:
                message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                    f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + data)
                fields = {part.get_param("name", header="content-disposition"): part for part in message.iter_parts()}
                with fake.lock:
                    fake.counts["files"] += 1
                    file_id = f"file-{fake.counts['files']}"
                content = fields["file"].get_payload(decode=True)
                fake.files[file_id] = {"content": content, "purpose": fields["purpose"].get_content().strip(),
                                       "filename": fields["file"].get_filename()}
                self._send(200, {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                                 "filename": fake.files[file_id]["filename"], "purpose": fake.files[file_id]["purpose"],
                                 "status": "processed"})

            def _chat(self, body: dict[str, Any]) -> None:
                fault = fake._next_fault(body)
                if fault == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                body["_authorization"] = self.headers.get("Authorization")
                if fake.slots:
                    fake.slots.acquire()
                try:
                    time.sleep(fake.latency + (fake.slow_seconds if fault == "slow" else 0.0))
                finally:
                    if fake.slots:
                        fake.slots.release()
                if fault == "429":
                    return self._send(429, {"error": {"message": "rate limited", "type": "rate_limit"}},
                                      {"Retry-After": fake.retry_after})
                if fault == "500":
                    return self._send(500, {"error": {"message": "injected server error"}})
                refused = fake.refusal(body)
                if refused:
                    return self._send(*refused)
                if fault in ("401", "403", "400_echo"):
                    return self._send(int(fault[:3]), {"error": {"message": f"Incorrect: {self.headers.get('Authorization')}"}})
                if fault == "malformed_body":
                    return self._send(200, None, raw=b'{"id": "chatcmpl", "choices": [')
                if fault == "html":
                    page = b"<html><body><h1>Proxy login</h1><form>user</form></body></html>"
                    return self._send(200, None, {"Content-Type": "text/html"}, raw=page)
                if fault == "drip":
                    return self._drip(json.dumps(fake.completion(body, None)).encode())
                if fault == "bad_utf8":
                    data = json.dumps(fake.completion(body, fault)).encode()
                    return self._send(200, None, raw=data.replace(BAD_UTF8_MARK.encode(), BAD_UTF8_BYTES))
                self._send(200, fake.completion(body, fault))

            def _drip(self, data: bytes) -> None:
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    for i in range(len(data)):
                        self.wfile.write(data[i:i + 1])
                        self.wfile.flush()
                        time.sleep(fake.drip_seconds)
                except (BrokenPipeError, ConnectionResetError, OSError):
                    pass

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--workers", type=int, default=None, help="max requests served in parallel")
    args = parser.parse_args()
    with FakeOpenAI(latency=args.latency, max_parallel=args.workers) as fake:
        print(fake.base_url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
