"""JavaScript/TypeScript contexts driven by the server itself, without a Jupyter kernel process.

A wrapper kernel (a Python process importing ipykernel) between the server and the Node child
costs about 40 MiB of PSS per JavaScript context, and the javascript default context exists in
every sandbox: that alone would blow the idle memory budget. So the server talks to the Node
evaluator (js/evaluator.cjs) directly. DirectJsKernel offers the small part of jupyter_client's
manager and client interfaces that server.Context uses and produces the same message dicts
(status, execute_input, stream, execute_result, error and the execute_reply), so the execute path
is the one every other language takes.
"""
import asyncio
import json
import os
import signal
import uuid
from queue import Empty

GUEST = os.path.dirname(os.path.abspath(__file__))
NODE = os.environ.get("COVE_CI_NODE", "/opt/cove/bin/node")
EVALUATOR = os.path.join(GUEST, "js", "evaluator.cjs")
# The evaluator cuts output into 64 KiB frames; a frame line stays far below this.
FRAME_LIMIT = 16 * 1024 * 1024
# Bounded: when nobody reads (a slow client), the reader stops, the pipe fills and the Node
# child blocks in its write: backpressure instead of memory growth.
QUEUE_MAX = 256


def _msg(msg_type, content, parent_id):
    return {"msg_type": msg_type, "content": content, "parent_header": {"msg_id": parent_id}, "header": {"msg_type": msg_type}}


class DirectJsKernel:
    def __init__(self, cwd, env):
        self.cwd, self.env = cwd, env
        self.proc = None
        self.frames = None
        self.iopub = asyncio.Queue(QUEUE_MAX)
        self.shell = asyncio.Queue()
        self.cells = asyncio.Queue()
        self.runner = None
        self.execution_count = 0
        self.current = None  # msg id of the cell running now (fd 1/2 output is attributed to it)
        self.next_id = 0
        self._restart_callbacks = []

    # --- manager side -------------------------------------------------------------------

    async def start_kernel(self):
        self.iopub = asyncio.Queue(QUEUE_MAX)
        self.shell = asyncio.Queue()
        self.cells = asyncio.Queue()
        self.execution_count = 0
        await self._spawn()

    async def _spawn(self):
        r, w = os.pipe()
        env = dict(self.env, COVE_FRAME_FD=str(w))
        self.proc = await asyncio.create_subprocess_exec(
            NODE, "--max-old-space-size=1024", EVALUATOR,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            pass_fds=(w,), env=env, cwd=self.cwd,
            # Its own process group: an interrupt (SIGINT) reaches the cell's children too.
            start_new_session=True,
        )
        os.close(w)
        loop = asyncio.get_running_loop()
        self.frames = asyncio.StreamReader(limit=FRAME_LIMIT)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(self.frames), os.fdopen(r, "rb", 0))
        first = json.loads(await self.frames.readline() or b"{}")
        if first.get("t") != "ready":
            raise RuntimeError("the JavaScript evaluator did not start")
        proc = self.proc
        self.runner = asyncio.ensure_future(self._run_cells(proc))
        asyncio.ensure_future(self._forward(proc, proc.stdout, "stdout"))
        asyncio.ensure_future(self._forward(proc, proc.stderr, "stderr"))

    def add_restart_callback(self, callback, event="restart"):
        self._restart_callbacks.append(callback)

    async def is_alive(self):
        return self.proc is not None and self.proc.returncode is None

    async def interrupt_kernel(self):
        if await self.is_alive():
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass

    async def _stop(self):
        if self.runner is not None:
            self.runner.cancel()
            self.runner = None
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await self.proc.wait()
            self.proc = None

    async def restart_kernel(self, now=True):
        await self._stop()
        await self.start_kernel()

    async def shutdown_kernel(self, now=True):
        await self._stop()

    # --- client side --------------------------------------------------------------------

    def start_channels(self):
        pass

    def stop_channels(self):
        pass

    async def wait_for_ready(self, timeout=None):
        if not await self.is_alive():
            raise RuntimeError("the JavaScript evaluator is not running")

    def execute(self, code, silent=False, store_history=True, allow_stdin=False, stop_on_error=False):
        # stop_on_error is accepted for the client's signature; this evaluator never aborts a later cell.
        msg_id = uuid.uuid4().hex
        self.cells.put_nowait((msg_id, code, silent))
        return msg_id

    async def get_iopub_msg(self, timeout=None):
        try:
            return await asyncio.wait_for(self.iopub.get(), timeout)
        except asyncio.TimeoutError:
            raise Empty()

    async def get_shell_msg(self, timeout=None):
        try:
            return await asyncio.wait_for(self.shell.get(), timeout)
        except asyncio.TimeoutError:
            raise Empty()

    # --- the cell loop ------------------------------------------------------------------

    async def _publish(self, silent, msg_type, content, msg_id):
        # Silent (setup) cells show nothing, as with silent=True on a Jupyter kernel; their
        # iopub messages are not queued at all, so nothing waits on a reader for them.
        if not silent:
            await self.iopub.put(_msg(msg_type, content, msg_id))

    async def _run_cells(self, proc):
        while True:
            msg_id, code, silent = await self.cells.get()
            self.current = None if silent else msg_id
            await self._publish(silent, "status", {"execution_state": "busy"}, msg_id)
            if not silent:
                self.execution_count += 1
                await self._publish(silent, "execute_input", {"code": code, "execution_count": self.execution_count}, msg_id)
            reply = {"status": "ok", "execution_count": self.execution_count}
            self.next_id += 1
            req_id = self.next_id
            try:
                proc.stdin.write((json.dumps({"id": req_id, "code": code, "silent": silent}) + "\n").encode())
                await proc.stdin.drain()
                while True:
                    line = await self.frames.readline()
                    if not line:
                        raise ConnectionError("the JavaScript runtime exited")
                    frame = json.loads(line)
                    kind = frame.get("t")
                    if kind in ("stdout", "stderr"):
                        await self._publish(silent, "stream", {"name": kind, "text": frame.get("s", "")}, msg_id)
                    elif kind == "result" and frame.get("id") == req_id:
                        await self._publish(silent, "execute_result", {
                            "execution_count": self.execution_count, "data": frame["data"], "metadata": {},
                        }, msg_id)
                    elif kind == "error" and frame.get("id") == req_id:
                        err = {"ename": frame.get("ename", "Error"), "evalue": frame.get("evalue", ""), "traceback": frame.get("traceback", [])}
                        await self._publish(silent, "error", err, msg_id)
                        reply = {"status": "error", "execution_count": self.execution_count, **err}
                    elif kind == "done" and frame.get("id") == req_id:
                        break
            except (ConnectionError, BrokenPipeError, ConnectionResetError, ValueError) as exc:
                # Like a Jupyter kernel's restarter: the server hears of it first (the running
                # cell then ends with ContextRestarting), and cells already queued run in the
                # fresh runtime.
                for cb in self._restart_callbacks:
                    cb()
                err = {"ename": "KernelExited", "evalue": f"{exc}; its state is lost", "traceback": []}
                await self._publish(silent, "error", err, msg_id)
                reply = {"status": "error", "execution_count": self.execution_count, **err}
                await self._publish(silent, "status", {"execution_state": "idle"}, msg_id)
                self.shell.put_nowait(_msg("execute_reply", reply, msg_id))
                self.runner = None
                asyncio.ensure_future(self._respawn())
                return
            self.current = None
            await self._publish(silent, "status", {"execution_state": "idle"}, msg_id)
            self.shell.put_nowait(_msg("execute_reply", reply, msg_id))

    async def _respawn(self):
        await self._stop()
        self.execution_count = 0
        await self._spawn()

    async def _forward(self, proc, reader, name):
        # Grandchildren that inherit fd 1/2 (child_process with stdio 'inherit') still show up.
        while True:
            chunk = await reader.read(64 * 1024)
            if not chunk:
                return
            if self.current is not None and self.proc is proc:
                await self.iopub.put(_msg("stream", {"name": name, "text": chunk.decode("utf-8", "replace")}, self.current))
