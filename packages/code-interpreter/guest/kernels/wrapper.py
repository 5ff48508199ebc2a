"""Shared parts of Cove's wrapper kernels (bash): an ipykernel Kernel that drives a
persistent child process. A Jupyter interrupt is SIGINT to the kernel's process group: the child
handles it (the cell stops), while this process ignores it so its event loop is never broken."""
import signal

from ipykernel.kernelbase import Kernel


class WrapperKernel(Kernel):
    def pre_handler_hook(self):
        self.saved_sigint_handler = signal.signal(signal.SIGINT, lambda *_: None)

    def post_handler_hook(self):
        signal.signal(signal.SIGINT, self.saved_sigint_handler)

    def stream(self, name, text):
        if text:
            self.send_response(self.iopub_socket, "stream", {"name": name, "text": text})

    def ok(self):
        return {"status": "ok", "execution_count": self.execution_count, "payload": [], "user_expressions": {}}

    def fail(self, ename, evalue, traceback, silent):
        content = {"ename": ename, "evalue": evalue, "traceback": traceback}
        if not silent:
            self.send_response(self.iopub_socket, "error", content)
        return {"status": "error", "execution_count": self.execution_count, **content}
