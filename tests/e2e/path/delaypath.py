"""Two network namespaces joined by tests/tools/delayline.c: a tun device in
each (dlA, dlB, MTU 9000), every packet passed to the other side delay_us
later. Used by test_mux_path.py and bench/rtt.py. Root only.

The namespaces carry a per-run tag and only the two addresses given (and
their loopbacks); close() stops the delay line and deletes them.
"""
import select
import signal
import subprocess
import uuid


def _ip(*args):
    subprocess.run(["ip", *args], check=True, timeout=30, capture_output=True)


class DelayPath:
    """Namespaces |prefix|-a-TAG and |prefix|-b-TAG (self.a, self.b), their
    loopbacks up; connect() joins them. Raises subprocess.CalledProcessError
    when a namespace cannot be made (having deleted what it made), with
    first_namespace true if not even the first one could be (root without
    CAP_SYS_ADMIN: a container)."""

    def __init__(self, delayline, prefix, a_addr, b_addr):
        self.delayline, self.a_addr, self.b_addr = delayline, a_addr, b_addr
        tag = uuid.uuid4().hex[:6]
        self.a, self.b = f"{prefix}-a-{tag}", f"{prefix}-b-{tag}"
        self.made, self.dl = [], None
        try:
            for ns in (self.a, self.b):
                _ip("netns", "add", ns)
                self.made.append(ns)
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException as e:
            if isinstance(e, subprocess.CalledProcessError):
                e.first_namespace = not self.made
            self.close()
            raise

    def connect(self, delay_us, cpus=None):
        """(Re)starts the delay line with delay_us each way (pinned to |cpus|
        if given) and gives the devices their addresses."""
        self._stop_line()
        cmd = [self.delayline, "--ns-a", f"/run/netns/{self.a}", "--ns-b", f"/run/netns/{self.b}",
               "--delay-us", str(int(delay_us))]
        self.dl = subprocess.Popen((["taskset", "-c", cpus] if cpus else []) + cmd,
                                   stdout=subprocess.PIPE, text=True)
        if not select.select([self.dl.stdout], [], [], 10)[0]:
            raise RuntimeError("the delay line did not start in 10 s")
        if self.dl.stdout.readline().strip() != "ready":
            raise RuntimeError("the delay line failed (its stderr above)")
        for ns, dev, me, peer in ((self.a, "dlA", self.a_addr, self.b_addr),
                                  (self.b, "dlB", self.b_addr, self.a_addr)):
            _ip("-n", ns, "addr", "add", me, "peer", peer, "dev", dev)
            _ip("-n", ns, "link", "set", dev, "mtu", "9000", "up")

    def _stop_line(self):
        if self.dl is None:
            return
        self.dl.send_signal(signal.SIGTERM)
        try:
            self.dl.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.dl.kill()
            self.dl.communicate(timeout=10)
        self.dl = None

    def close(self):
        try:
            self._stop_line()
        finally:
            for ns in self.made:
                subprocess.run(["ip", "netns", "del", ns], timeout=30)
            self.made = []
