#!/usr/bin/env python3
"""Cove's code-interpreter server: what @e2b/code-interpreter expects on port 49999.

One Jupyter kernel per context, driven with Debian's jupyter_client over the `ipc` transport
(unix sockets in a private directory: nothing but this port listens on the sandbox network,
and CRIU keeps the sockets across pause/resume). HTTP with tornado. The wire format is the
one described in shared/reference/code-interpreter.md §2; comments say where we differ.
"""
import asyncio
import datetime
import json
import logging
import math
import os
import re
import shlex
import signal
import sys
import tempfile
import time
import uuid
from queue import Empty

from jupyter_client.ioloop import AsyncIOLoopKernelManager
from tornado import httpclient, httpserver, iostream, web

from direct_js import DirectJsKernel

PORT = int(os.environ.get("COVE_CI_PORT", "49999"))
HOME = os.environ.get("HOME") or "/home/user"
GUEST = os.path.dirname(os.path.abspath(__file__))
ENVD_ENVS_URL = os.environ.get("COVE_CI_ENVD_URL", "http://localhost:49983/envs")
# A request body above this is refused with 413 (its bytes are read and discarded, never kept).
MAX_REQUEST_BYTES = int(os.environ.get("COVE_CI_MAX_REQUEST_BYTES", str(4 * 1024 * 1024)))
# Output one execution may stream; past it the cell is interrupted and the stream ends with
# an OutputLimitExceeded error line (the SDK keeps every byte in memory, and so would a proxy).
MAX_OUTPUT_BYTES = int(os.environ.get("COVE_CI_MAX_OUTPUT_BYTES", str(32 * 1024 * 1024)))
KEEPALIVE_S = float(os.environ.get("COVE_CI_KEEPALIVE_S", "5"))
KERNEL_READY_S = 90.0
# After an interrupt, how long the lock waits for the kernel to go idle before letting the next run queue behind it.
DRAIN_S = 10.0

log = logging.getLogger("code-interpreter")

# language -> Jupyter kernel spec name (ours live in share/jupyter/kernels, found via JUPYTER_PATH);
# None: driven by the server directly (direct_js.py says why).
KERNELS = {
    "python": "python3",
    "javascript": None,
    "typescript": None,
    "r": "ir",
    "bash": "bash",
}
UNAVAILABLE = {
    "java": "Java is not available in this template (Debian packages no Jupyter kernel for it)",
}


def normalize_language(value):
    lang = (value or "").strip().lower()
    return {"": "python", "js": "javascript", "ts": "typescript"}.get(lang, lang)


class HttpError(Exception):
    def __init__(self, status, body, as_json=False):
        super().__init__(body)
        self.status, self.body, self.as_json = status, body, as_json


def not_found(context_id):
    return HttpError(404, f"Context {context_id} not found")


def json_safe(value):
    """NaN/Infinity are not JSON and make the SDK's JSON.parse throw: they become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def dumps(obj):
    # ensure_ascii (the default): the SDK decodes each chunk on its own, so a multi-byte
    # character split across chunks would be corrupted; escapes keep every line ASCII.
    try:
        return json.dumps(obj, allow_nan=False)
    except ValueError:
        return json.dumps(json_safe(obj), allow_nan=False)


ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")

# MIME type -> result key; text/plain is handled apart (quotes stripped).
MIME_KEYS = {
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
    "e2b/data": "data",
    "e2b/chart": "chart",
}


def strip_quotes(text):
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def result_line(data, is_main):
    line = {"type": "result"}
    extra = {}
    for mime, value in data.items():
        if mime == "text/plain":
            line["text"] = strip_quotes(value)
        elif mime in MIME_KEYS:
            if value is not None:
                line[MIME_KEYS[mime]] = value
        else:
            extra[mime] = value
    line["extra"] = extra
    line["is_main_result"] = is_main
    return line


def error_line(name, value, traceback):
    if isinstance(traceback, list):
        # One frame per entry; joined with newlines (the reference's "" runs frames together).
        traceback = "\n".join(t.rstrip("\n") for t in traceback)
    return {"type": "error", "name": name, "value": value, "traceback": ANSI.sub("", traceback or "")}


# --- env setter cells -------------------------------------------------------------------
# Run as silent cells before and after the user's cell (not prepended to it as upstream does),
# so tracebacks keep their line numbers and values are escaped rather than pasted into code.

BASH_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def env_set_code(language, envs):
    if not envs:
        return None
    if language == "python":
        return f"__import__('os').environ.update({json.dumps(envs)})"
    if language in ("javascript", "typescript"):
        return f"Object.assign(process.env, {json.dumps(envs)});"
    if language == "r":
        pairs = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in envs.items())
        return f"invisible(do.call(Sys.setenv, list({pairs})))"
    if language == "bash":
        return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in envs.items() if BASH_NAME.match(k)) or None
    return None


def env_unset_code(language, keys):
    if not keys:
        return None
    if language == "python":
        return f"[__import__('os').environ.pop(k, None) for k in {json.dumps(keys)}] and None"
    if language in ("javascript", "typescript"):
        return f"for (const k of {json.dumps(keys)}) delete process.env[k];"
    if language == "r":
        return f"invisible(Sys.unsetenv(c({', '.join(json.dumps(k) for k in keys)})))"
    if language == "bash":
        names = [k for k in keys if BASH_NAME.match(k)]
        return ("unset " + " ".join(names)) if names else None
    return None


class ClientGone(Exception):
    pass


class Context:
    def __init__(self, language, cwd):
        self.id = str(uuid.uuid4())
        self.language = language
        self.cwd = cwd
        self.lock = asyncio.Lock()
        self.km = None
        self.kc = None
        # Bumped on every restart (asked for, or the restarter's after a crash): a run that
        # sees it move ends with ContextRestarting instead of waiting for a reply that never comes.
        self.generation = 0
        self.global_envs_loaded = False
        self.global_envs = {}

    def public(self):
        return {"id": self.id, "language": self.language, "cwd": self.cwd}

    async def start(self, runtime_dir):
        # A cwd the user cannot enter (e.g. /root) still makes a context, as upstream's failed
        # `%cd` does; the kernel then starts in the home directory.
        start_dir = self.cwd if os.path.isdir(self.cwd) and os.access(self.cwd, os.X_OK) else HOME
        env = {k: v for k, v in os.environ.items() if not k.startswith("COVE_CI_") or k == "COVE_CI_GUEST"}
        if KERNELS[self.language] is None:
            kernel = DirectJsKernel(start_dir, env)
            await kernel.start_kernel()
            kernel.add_restart_callback(self._on_restart, "restart")
            self.km = self.kc = kernel
            return
        km = AsyncIOLoopKernelManager(
            kernel_name=KERNELS[self.language],
            transport="ipc",
            connection_file=os.path.join(runtime_dir, f"kernel-{self.id}.json"),
        )
        # ipc: `ip` is the socket path prefix; the private directory keeps other users out.
        km.ip = os.path.join(runtime_dir, f"k-{self.id[:8]}")
        await km.start_kernel(cwd=start_dir, env=env)
        km.add_restart_callback(self._on_restart, "restart")
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=KERNEL_READY_S)
        except Exception:
            kc.stop_channels()
            await km.shutdown_kernel(now=True)
            raise
        self.km, self.kc = km, kc

    def _on_restart(self):
        self.generation += 1
        self.global_envs_loaded = False

    async def restart(self):
        self.generation += 1
        self.global_envs_loaded = False
        await self.km.restart_kernel(now=True)
        await self.kc.wait_for_ready(timeout=KERNEL_READY_S)

    async def shutdown(self):
        self.generation += 1
        try:
            self.kc.stop_channels()
        finally:
            await self.km.shutdown_kernel(now=True)

    async def silent(self, code, timeout=30.0):
        """Runs a setup cell that moves no execution count and shows nothing."""
        if not code:
            return
        msg_id = self.kc.execute(code, silent=True, store_history=False, allow_stdin=False, stop_on_error=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                reply = await self.kc.get_shell_msg(timeout=1.0)
            except Empty:
                continue
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                if reply["content"].get("status") != "ok":
                    log.warning("setup cell failed in %s: %s", self.id, reply["content"].get("evalue"))
                return
        log.warning("setup cell timed out in %s", self.id)


class Server:
    def __init__(self):
        self.runtime_dir = tempfile.mkdtemp(prefix="cove-ci-")  # mode 0700
        os.environ["JUPYTER_RUNTIME_DIR"] = self.runtime_dir
        self.contexts = {}  # id -> Context, in creation order (the list route keeps it)
        self.defaults = {}  # language -> id
        self.default_locks = {}
        self.ready = False

    def get(self, context_id):
        ctx = self.contexts.get(context_id)
        if ctx is None:
            raise not_found(context_id)
        return ctx

    async def create(self, language, cwd, register=True):
        if language in UNAVAILABLE:
            raise HttpError(500, f"Failed to create context: {UNAVAILABLE[language]}")
        if language not in KERNELS:
            raise HttpError(400, f"Unknown language '{language}': this template has {', '.join(sorted(KERNELS))}")
        ctx = Context(language, cwd)
        try:
            await ctx.start(self.runtime_dir)
        except Exception as exc:  # the kernel would not start
            log.exception("kernel for %s failed to start", language)
            raise HttpError(500, f"Failed to create context: {exc}")
        if register:
            self.contexts[ctx.id] = ctx
        return ctx

    async def start_defaults(self):
        # Started together, listed in a fixed order (python, then javascript).
        langs = ("python", "javascript")
        made = await asyncio.gather(*(self.create(lang, HOME, register=False) for lang in langs))
        for lang, ctx in zip(langs, made):
            self.contexts[ctx.id] = ctx
            self.defaults[lang] = ctx.id

    async def default_context(self, language):
        lock = self.default_locks.setdefault(language, asyncio.Lock())
        async with lock:
            ctx_id = self.defaults.get(language)
            if ctx_id in self.contexts:
                return self.contexts[ctx_id]
            ctx = await self.create(language, HOME)
            self.defaults[language] = ctx.id
            return ctx

    async def remove(self, context_id):
        ctx = self.get(context_id)
        del self.contexts[context_id]
        for lang, cid in list(self.defaults.items()):
            if cid == context_id:
                del self.defaults[lang]
        await ctx.shutdown()

    async def global_envs(self, access_token):
        """The sandbox's envs from envd; none when envd is absent (debug mode) or fails."""
        headers = {"X-Access-Token": access_token} if access_token else {}
        try:
            # Bounded: a reply larger than any env set is refused, not buffered.
            resp = await httpclient.AsyncHTTPClient(max_body_size=1024 * 1024).fetch(
                ENVD_ENVS_URL, headers=headers, request_timeout=3.0, raise_error=True
            )
            envs = json.loads(resp.body)
            if isinstance(envs, dict):
                return {str(k): str(v) for k, v in envs.items()}
        except Exception as exc:
            log.info("no global envs from envd: %s", exc)
        return {}


SERVER = Server()


class Handler(web.RequestHandler):
    """Base: CORS, bounded body, FastAPI-shaped validation errors."""

    def set_default_headers(self):
        self.set_header("Access-Control-Allow-Origin", "*")
        self.set_header("Access-Control-Allow-Methods", "*")
        self.set_header("Access-Control-Allow-Headers", "*")

    def options(self, *args):
        self.set_status(204)
        self.finish()

    def prepare(self):
        self._chunks = []
        self._size = 0

    def data_received(self, chunk):
        self._size += len(chunk)
        if self._size <= MAX_REQUEST_BYTES:
            self._chunks.append(chunk)
        else:
            self._chunks = None  # keep reading, keep nothing

    def body_json(self, allow_empty=False):
        if self._chunks is None:
            raise HttpError(413, {"detail": f"Request body is larger than {MAX_REQUEST_BYTES} bytes"}, as_json=True)
        raw = b"".join(self._chunks)
        if not raw.strip() and allow_empty:
            return {}
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise HttpError(422, {"detail": [{"type": "json_invalid", "loc": ["body"], "msg": f"JSON decode error: {exc}"}]}, as_json=True)
        if not isinstance(body, dict):
            raise HttpError(422, {"detail": [{"type": "model_type", "loc": ["body"], "msg": "Input should be an object"}]}, as_json=True)
        return body

    def send_error_response(self, err):
        self.set_status(err.status)
        if err.as_json:
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(err.body))
        else:
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(err.body)

    def send_json(self, value):
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value))


def field_errors(body, spec):
    """spec: name -> (required, check, type name). FastAPI's 422 detail list."""
    errors = []
    for name, (required, check, type_name) in spec.items():
        if name not in body or body[name] is None:
            if required:
                errors.append({"type": "missing", "loc": ["body", name], "msg": "Field required"})
            continue
        if not check(body[name]):
            errors.append({"type": f"{type_name}_type", "loc": ["body", name], "msg": f"Input should be a valid {type_name}"})
    if errors:
        raise HttpError(422, {"detail": errors}, as_json=True)


def is_str(v):
    return isinstance(v, str)


def is_str_dict(v):
    return isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())


@web.stream_request_body
class HealthHandler(Handler):
    def get(self):
        if not SERVER.ready:
            self.set_status(503)
            return self.finish("starting")
        self.send_json("OK")


@web.stream_request_body
class ContextsHandler(Handler):
    def get(self):
        self.send_json([c.public() for c in SERVER.contexts.values()])

    async def post(self):
        try:
            body = self.body_json(allow_empty=True)
            field_errors(body, {"language": (False, is_str, "string"), "cwd": (False, is_str, "string")})
            ctx = await SERVER.create(normalize_language(body.get("language")), body.get("cwd") or HOME)
            self.send_json(ctx.public())
        except HttpError as err:
            self.send_error_response(err)


@web.stream_request_body
class ContextHandler(Handler):
    async def delete(self, context_id):
        try:
            await SERVER.remove(context_id)
            self.send_json(None)
        except HttpError as err:
            self.send_error_response(err)


@web.stream_request_body
class RestartHandler(Handler):
    async def post(self, context_id):
        try:
            ctx = SERVER.get(context_id)
            try:
                await ctx.restart()
            except Exception as exc:
                raise HttpError(500, f"Failed to restart context {context_id}: {exc}")
            self.send_json(None)
        except HttpError as err:
            self.send_error_response(err)


@web.stream_request_body
class ExecuteHandler(Handler):
    def prepare(self):
        super().prepare()
        self.gone = asyncio.Event()

    def on_connection_close(self):
        self.gone.set()

    async def emit(self, obj):
        if self.gone.is_set():
            raise ClientGone()
        self.write(dumps(obj) + "\n")
        try:
            await self.flush()
        except iostream.StreamClosedError:
            raise ClientGone()
        self.last_write = time.monotonic()

    async def post(self):
        try:
            body = self.body_json()
            field_errors(body, {
                "code": (True, is_str, "string"),
                "context_id": (False, is_str, "string"),
                "language": (False, is_str, "string"),
                "env_vars": (False, is_str_dict, "dictionary of strings"),
            })
            if body.get("context_id") and body.get("language"):
                raise HttpError(400, "Only one of context_id or language can be provided")
            if body.get("language") is not None:
                ctx = await SERVER.default_context(normalize_language(body["language"]))
            elif body.get("context_id"):
                ctx = SERVER.get(body["context_id"])
            else:
                ctx = await SERVER.default_context("python")
        except HttpError as err:
            return self.send_error_response(err)

        env_vars = body.get("env_vars") or {}
        token = self.request.headers.get("X-Access-Token")
        async with ctx.lock:
            if SERVER.contexts.get(ctx.id) is not ctx:
                # Removed while this request waited for the lock.
                return self.send_error_response(not_found(ctx.id))
            if not ctx.global_envs_loaded:
                ctx.global_envs = await SERVER.global_envs(token)
                await ctx.silent(env_set_code(ctx.language, ctx.global_envs))
                ctx.global_envs_loaded = True
            await ctx.silent(env_set_code(ctx.language, env_vars))
            try:
                await self.stream_execution(ctx, body["code"])
            finally:
                if not self._finished:
                    try:
                        self.finish()
                    except Exception:  # the client is gone; the restore below must still run
                        pass
                if env_vars:
                    # Put back what this run changed before the next run may start.
                    globals_ = ctx.global_envs
                    back = {k: globals_[k] for k in env_vars if k in globals_}
                    await ctx.silent(env_set_code(ctx.language, back))
                    await ctx.silent(env_unset_code(ctx.language, [k for k in env_vars if k not in globals_]))

    async def stream_execution(self, ctx, code):
        self.set_status(200)
        self.set_header("Content-Type", "application/x-ndjson")
        kc = ctx.kc
        generation = ctx.generation
        # stop_on_error=False: runs on a context are serialised by its lock, so the kernel never
        # holds a queued cell of ours; ipykernel's abort-after-error would only catch the next
        # request if it raced the kernel's end of the abort window, and return it empty.
        msg_id = kc.execute(code, silent=False, store_history=True, allow_stdin=False, stop_on_error=False)
        self.last_write = time.monotonic()
        error_sent = False
        output_bytes = 0
        try:
            while True:
                if ctx.generation != generation:
                    await self.emit(error_line("ContextRestarting", "Context was restarted", ""))
                    break
                if self.gone.is_set():
                    raise ClientGone()
                try:
                    msg = await kc.get_iopub_msg(timeout=0.5)
                except Empty:
                    if time.monotonic() - self.last_write >= KEEPALIVE_S:
                        await self.emit({"type": "keepalive"})
                    if not await ctx.km.is_alive() and ctx.generation == generation:
                        await self.emit(error_line("ContextRestarting", "Kernel died", ""))
                        break
                    continue
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind == "status":
                    if content.get("execution_state") == "idle":
                        break
                elif kind == "execute_input":
                    await self.emit({"type": "number_of_executions", "execution_count": content.get("execution_count")})
                elif kind == "stream":
                    text = content.get("text", "")
                    output_bytes += len(text)
                    if output_bytes > MAX_OUTPUT_BYTES:
                        await self.output_limit(ctx, msg_id)
                        error_sent = True
                        break
                    name = "stderr" if content.get("name") == "stderr" else "stdout"
                    await self.emit({"type": name, "text": text, "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat()})
                elif kind in ("execute_result", "display_data"):
                    line = result_line(content.get("data", {}), kind == "execute_result")
                    encoded = dumps(line)
                    output_bytes += len(encoded)
                    if output_bytes > MAX_OUTPUT_BYTES:
                        await self.output_limit(ctx, msg_id)
                        error_sent = True
                        break
                    await self.emit(line)
                elif kind == "error":
                    if not error_sent:
                        error_sent = True
                        await self.emit(error_line(content.get("ename", "Error"), content.get("evalue", ""), content.get("traceback", [])))
            if not error_sent and ctx.generation == generation:
                reply = await self.shell_reply(kc, msg_id)
                if reply is not None:
                    status = reply.get("status")
                    if status == "error":
                        await self.emit(error_line(reply.get("ename", "Error"), reply.get("evalue", ""), reply.get("traceback", [])))
                    elif status == "aborted":
                        await self.emit(error_line("ExecutionAborted", "Execution was aborted", ""))
            await self.emit({"type": "end_of_execution"})
        except ClientGone:
            # Nobody reads any more: stop the cell so the context is free for the next run.
            log.info("client left during execution in %s: interrupting", ctx.id)
            await self.interrupt_and_drain(ctx, msg_id)
        except Exception as exc:
            # Our own failure (not the user's code): say so in-band and end the stream properly.
            log.exception("execution failed in %s", ctx.id)
            try:
                await self.emit(error_line("ExecutionFailed", f"the code interpreter failed: {exc}", ""))
                await self.emit({"type": "end_of_execution"})
            except ClientGone:
                pass

    async def shell_reply(self, kc, msg_id, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                reply = await kc.get_shell_msg(timeout=0.5)
            except Empty:
                continue
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                return reply["content"]
        return None

    async def output_limit(self, ctx, msg_id):
        await self.emit(error_line(
            "OutputLimitExceeded",
            f"The cell wrote more than {MAX_OUTPUT_BYTES} bytes of output; it was interrupted and the rest discarded",
            "",
        ))
        await self.interrupt_and_drain(ctx, msg_id)

    async def interrupt_and_drain(self, ctx, msg_id):
        try:
            await ctx.km.interrupt_kernel()
        except Exception as exc:
            log.warning("interrupt failed in %s: %s", ctx.id, exc)
        deadline = time.monotonic() + DRAIN_S
        while time.monotonic() < deadline:
            try:
                msg = await ctx.kc.get_iopub_msg(timeout=0.5)
            except Empty:
                continue
            if (msg.get("parent_header", {}).get("msg_id") == msg_id and msg["msg_type"] == "status"
                    and msg["content"].get("execution_state") == "idle"):
                break
        await self.shell_reply(ctx.kc, msg_id, timeout=1.0)


class NotFound(Handler):
    def prepare(self):
        super().prepare()
        raise web.HTTPError(404)


async def main():
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    app = web.Application([
        (r"/health", HealthHandler),
        (r"/execute", ExecuteHandler),
        (r"/contexts", ContextsHandler),
        (r"/contexts/([^/]+)", ContextHandler),
        (r"/contexts/([^/]+)/restart", RestartHandler),
    ], default_handler_class=NotFound)
    # Bodies are streamed and counted by the handlers (413 past MAX_REQUEST_BYTES); this
    # transport cap only stops a runaway upload from holding the connection forever.
    server = httpserver.HTTPServer(app, max_body_size=1024 * 1024 * 1024, idle_connection_timeout=3600)
    server.listen(PORT, "0.0.0.0")
    # The defaults exist before /health says 200, so the first run does not wait for a kernel.
    await SERVER.start_defaults()
    SERVER.ready = True
    log.info("ready on %d", PORT)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()
    await asyncio.gather(*(c.shutdown() for c in list(SERVER.contexts.values())), return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
