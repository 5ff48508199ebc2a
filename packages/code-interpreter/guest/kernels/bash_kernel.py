"""Cove's bash kernel: one persistent bash per context; each cell is sourced from a file, so
variables, functions and the working directory persist. Debian packages no bash_kernel."""
import asyncio
import os
import sys
import tempfile
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wrapper import WrapperKernel  # noqa: E402

READ_CHUNK = 64 * 1024


class BashKernel(WrapperKernel):
    implementation = "cove-bash"
    implementation_version = "1.0"
    language = "bash"
    language_version = "5"
    language_info = {"name": "bash", "mimetype": "text/x-sh", "file_extension": ".sh", "codemirror_mode": "shell"}
    banner = "bash"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.proc = None
        self.workdir = tempfile.mkdtemp(prefix="cove-bash-")

    async def ensure_bash(self):
        if self.proc is not None and self.proc.returncode is None:
            return
        self.proc = await asyncio.create_subprocess_exec(
            "bash", "--noprofile", "--norc",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        # A trap (not an ignore) so children still get SIGINT; `return` from it leaves the
        # sourced cell, which is how an interrupt stops the cell without killing the shell.
        self.proc.stdin.write(b"trap 'return 130 2>/dev/null' INT\nexport PAGER=cat TERM=dumb\n")
        await self.proc.stdin.drain()

    async def pump(self, reader, name, marker, silent):
        buf = b""
        while True:
            chunk = await reader.read(READ_CHUNK)
            if not chunk:
                return None
            buf += chunk
            at = buf.find(marker)
            if at >= 0:
                rest = buf[at + len(marker):]
                if not silent:
                    self.stream(name, buf[:at].decode("utf-8", "replace"))
                return rest
            # Hold back from the last \x1f on: it may be the start of the marker.
            cut = buf.rfind(b"\x1f")
            out, buf = (buf, b"") if cut < 0 else (buf[:cut], buf[cut:])
            if out and not silent:
                self.stream(name, out.decode("utf-8", "replace"))

    async def do_execute(self, code, silent, store_history=True, user_expressions=None, allow_stdin=False, **_):
        await self.ensure_bash()
        tag = uuid.uuid4().hex
        path = os.path.join(self.workdir, "cell.sh")
        with open(path, "w") as f:
            f.write(code)
        out_marker = f"\x1f{tag}:".encode()
        err_marker = f"\x1f{tag}\x1f".encode()
        # stdin from /dev/null: a cell reading stdin must not eat the next cell.
        self.proc.stdin.write(
            f". {path} </dev/null\nprintf '\\037{tag}:%d\\n' $? ; printf '\\037{tag}\\037' >&2\n".encode()
        )
        await self.proc.stdin.drain()
        out_task = asyncio.ensure_future(self.pump(self.proc.stdout, "stdout", out_marker, silent))
        err_task = asyncio.ensure_future(self.pump(self.proc.stderr, "stderr", err_marker, silent))
        rest, _ = await asyncio.gather(out_task, err_task)
        if rest is None:
            self.proc = None
            return self.fail("BashExited", "bash exited; a new shell starts with the next cell", [], silent)
        rc = int(rest.split(b"\n", 1)[0] or b"0")
        if rc != 0 and not silent:
            return self.fail("CalledProcessError", f"exit status {rc}", [f"bash: exit status {rc}"], silent)
        return self.ok()


if __name__ == "__main__":
    from ipykernel.kernelapp import IPKernelApp

    IPKernelApp.launch_instance(kernel_class=BashKernel)
