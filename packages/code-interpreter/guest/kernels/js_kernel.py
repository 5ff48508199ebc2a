"""Cove's JavaScript/TypeScript kernel: forwards cells to a persistent Node child running
js/evaluator.cjs (vm context, imports, top-level await, TypeScript annotations stripped).
Requests go on the child's stdin as JSON lines; frames come back on a dedicated pipe."""
import asyncio
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from wrapper import WrapperKernel  # noqa: E402

NODE = os.environ.get("COVE_CI_NODE", "/opt/cove/bin/node")
EVALUATOR = os.path.join(os.path.dirname(HERE), "js", "evaluator.cjs")
# The evaluator cuts output into small frames, so a frame line stays far below this.
FRAME_LIMIT = 16 * 1024 * 1024


class JavaScriptKernel(WrapperKernel):
    implementation = "cove-javascript"
    implementation_version = "1.0"
    language = "javascript"
    language_version = "20"
    language_info = {"name": "javascript", "mimetype": "application/javascript", "file_extension": ".js"}
    banner = "Node.js"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.proc = None
        self.frames = None
        self.next_id = 0

    async def ensure_node(self):
        if self.proc is not None and self.proc.returncode is None:
            return
        r, w = os.pipe()
        env = dict(os.environ, COVE_FRAME_FD=str(w))
        self.proc = await asyncio.create_subprocess_exec(
            NODE, "--max-old-space-size=1024", EVALUATOR,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            pass_fds=(w,), env=env,
        )
        os.close(w)
        loop = asyncio.get_running_loop()
        self.frames = asyncio.StreamReader(limit=FRAME_LIMIT)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(self.frames), os.fdopen(r, "rb", 0))
        # Grandchildren that inherit fd 1/2 (child_process with stdio 'inherit') still show up.
        asyncio.ensure_future(self.forward(self.proc.stdout, "stdout"))
        asyncio.ensure_future(self.forward(self.proc.stderr, "stderr"))
        first = json.loads(await self.frames.readline() or b"{}")
        if first.get("t") != "ready":
            raise RuntimeError("the JavaScript evaluator did not start")

    async def forward(self, reader, name):
        while True:
            chunk = await reader.read(64 * 1024)
            if not chunk:
                return
            self.stream(name, chunk.decode("utf-8", "replace"))

    async def do_execute(self, code, silent, store_history=True, user_expressions=None, allow_stdin=False, **_):
        try:
            await self.ensure_node()
        except Exception as exc:
            return self.fail("KernelError", str(exc), [], silent)
        self.next_id += 1
        req_id = self.next_id
        self.proc.stdin.write((json.dumps({"id": req_id, "code": code, "silent": silent}) + "\n").encode())
        await self.proc.stdin.drain()
        reply = self.ok()
        while True:
            line = await self.frames.readline()
            if not line:
                self.proc = None
                return self.fail("KernelExited", "the JavaScript runtime exited; its state is lost and a new one starts with the next cell", [], silent)
            frame = json.loads(line)
            kind = frame.get("t")
            if kind in ("stdout", "stderr"):
                if not silent:
                    self.stream(kind, frame.get("s", ""))
            elif kind == "result" and frame.get("id") == req_id:
                if not silent:
                    self.send_response(self.iopub_socket, "execute_result", {
                        "execution_count": self.execution_count, "data": frame["data"], "metadata": {},
                    })
            elif kind == "error" and frame.get("id") == req_id:
                reply = self.fail(frame.get("ename", "Error"), frame.get("evalue", ""), frame.get("traceback", []), silent)
            elif kind == "done" and frame.get("id") == req_id:
                return reply


if __name__ == "__main__":
    from ipykernel.kernelapp import IPKernelApp

    IPKernelApp.launch_instance(kernel_class=JavaScriptKernel)
