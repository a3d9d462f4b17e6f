"""A small mesh on one machine: a control plane and pods in network
namespaces joined by a bridge, each pod with seam-init's rules, a seam sidecar
as uid 1337 and an app as uid 1000 (ECOSYSTEM.md §6). Used by the e2e test
(test_mesh.py) and by the demo (scripts/demo/mesh.sh). Root only.

Everything lives in namespaces created here (names carry a per-run tag) and
addresses only inside them (10.244.0.0/24, fd00:10:244::/64); close() ends
the processes it started by PID and deletes the namespaces, which removes the
bridge, the veths and the iptables rules with them.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
APP = os.path.join(HERE, "meshapp.py")
PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
TD = "cluster.local"
CP_PORT = 15010
APP_UID = 1000
PROXY_UID = 1337
# The build the e2e tests use (ctest sets SEAM_BUILD_DIR).
BUILD_DIR = os.environ.get("SEAM_BUILD_DIR") or os.path.join(HERE, "..", "..", "..", "build")


def root_marks(*tools):
    """pytest marks: skip unless root with setpriv and |tools| on the PATH."""
    import pytest  # only the tests need it, not the demo
    return [
        pytest.mark.skipif(os.geteuid() != 0,
                           reason="needs root: network namespaces, iptables, setpriv"),
        pytest.mark.skipif(not os.path.exists("/usr/bin/setpriv")
                           or not all(shutil.which(t) for t in tools),
                           reason="needs setpriv" + "".join(f" and {t}" for t in tools)),
    ]


def run_built(build_dir):
    """None if `seam-sidecar run` is in this build, else why not."""
    for sub in ("sidecar", ""):
        p = os.path.join(build_dir, sub, "seam-sidecar")
        if os.path.exists(p):
            r = subprocess.run([p, "run", "--help"], capture_output=True, text=True, timeout=10)
            if r.returncode == 0:
                return None
            return f"`seam-sidecar run` is not in this build: {r.stderr.strip()}"
    return f"seam-sidecar is not built under {build_dir}"


def skip_unless_lab_built(build_dir):
    """Skips the calling test unless the sidecar (with `run`), the control
    plane and seam-init are built: what a MeshLab runs."""
    import pytest
    for tool in ("seam-sidecar", "seam-control-plane", "seam-init"):
        if not any(os.path.exists(os.path.join(build_dir, sub, tool))
                   for sub in ("sidecar", "control-plane")):
            pytest.skip(f"{tool} not built under {build_dir}")
    why = run_built(build_dir)
    if why:
        pytest.skip(why)


def spiffe(ns, sa):
    return f"spiffe://{TD}/ns/{ns}/sa/{sa}"


def run(cmd, check=True, timeout=30, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                       **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({r.returncode}): "
                           f"{r.stderr.strip() or r.stdout.strip()}")
    return r


def wait_for(cond, timeout=10.0, what="condition", interval=0.05):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - not ready yet
            last = e
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}"
                       + (f" (last error: {last})" if last else ""))


def ns_prefix(netns=None, uid=None, cpus=None):
    """The command prefix that runs a program in |netns| as |uid| on |cpus|."""
    pre = ["ip", "netns", "exec", netns] if netns else []
    if uid is not None:
        pre += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    if cpus is not None:
        pre += ["taskset", "-c", str(cpus)]
    return pre


def tree_pids(root):
    """|root| and all its live descendants (by PID)."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    keep = {root} if root in parent else set()
    grew = True
    while grew:
        grew = False
        for p, pp in parent.items():
            if p not in keep and pp in keep:
                keep.add(p)
                grew = True
    return keep


def _start_time(pid):
    """Field 22 of /proc/PID/stat (start time), or None if PID is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class Proc:
    def __init__(self, args, log_path, env=None):
        self.args = [str(a) for a in args]
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.p = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=env)
        self.pid = self.p.pid

    def log(self):
        self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_log(self, needle, timeout=15.0):
        def cond():
            if needle in self.log():
                return True
            if self.p.poll() is not None:
                raise RuntimeError(f"{self.args[0]} exited {self.p.returncode}:\n{self.log()[-3000:]}")
            return False
        try:
            return wait_for(cond, timeout, what=f"{needle!r} in {self.log_path}")
        except TimeoutError:
            raise TimeoutError(f"no {needle!r} after {timeout}s in {self.log_path}:\n"
                               f"{self.log()[-3000:]}") from None

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        kids = {k: _start_time(k) for k in tree_pids(self.pid) - {self.pid}}
        if self.p.poll() is None:
            os.kill(self.pid, sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                try:
                    self.p.wait(5)
                except subprocess.TimeoutExpired:  # stuck in the kernel: the caller goes on
                    pass
        # A child the process left behind (an nginx worker whose master was
        # killed): ours to end, if the PID is still the same process.
        for pid, started in kids.items():
            if _start_time(pid) == started:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        self._log.close()
        return self.p.returncode


class Pod:
    def __init__(self, lab, name, index, k8s_ns, sa):
        self.lab = lab
        self.name = name
        self.netns = f"{lab.tag}-{name}"
        self.ip4 = f"10.244.0.{index}"
        self.ip6 = f"fd00:10:244::{index}"
        self.k8s_ns = k8s_ns
        self.sa = sa
        self.id = spiffe(k8s_ns, sa)
        self.sidecar = None
        self.app = None

    def exec(self, cmd, uid=None, check=True, timeout=30, cpus=None):
        return run(ns_prefix(self.netns, uid, cpus) + list(cmd), check=check, timeout=timeout)

    def call(self, host, port, msg, timeout=5.0):
        """The app in this pod calls host:port in plain TCP (uid 1000: captured)."""
        r = self.exec([PY, self.lab.app_script, "call", host, port, msg, timeout], uid=APP_UID,
                      check=False,
                      timeout=timeout + 10)
        return r.stdout

    def admin(self, path):
        r = self.exec(["curl", "-s", "--max-time", "5", f"http://127.0.0.1:15020{path}"],
                      check=False, timeout=15)
        return r.stdout


class MeshLab:
    def __init__(self, build_dir, workdir=None, tag=None, sidecar_args=()):
        self.build_dir = build_dir
        self.tag = tag or f"seam{os.getpid() % 100000}"
        self.dir = workdir or tempfile.mkdtemp(prefix="seam-mesh-")
        os.chmod(self.dir, 0o755)  # the sidecars (uid 1337) read the token and root files
        self.node = f"{self.tag}-node"
        self.netns = [self.node]
        self.procs = []
        self.pods = {}
        self.cp = None
        self.sidecar_args = list(sidecar_args)
        self.app_script = self.readable(APP)  # meshapp.py, as uid 1000 may read it

    # ---- binaries and files ------------------------------------------------
    # Programs run as uid 1000 (the apps) or 1337 (the sidecars) are run from
    # copies in self.dir (0755): the checkout and build tree may sit in a
    # directory only root can enter (a `mktemp -d` clone is 0700).
    def readable(self, src):
        """A world-readable copy of |src| in self.dir (made once)."""
        dst = os.path.join(self.dir, "bin", os.path.basename(src))
        if not os.path.exists(dst):
            os.makedirs(os.path.dirname(dst), mode=0o755, exist_ok=True)
            shutil.copy2(src, dst + ".tmp")
            os.chmod(dst + ".tmp", 0o755)
            os.replace(dst + ".tmp", dst)
        return dst

    def binary(self, name):
        for sub in ("sidecar", "control-plane", ""):
            p = os.path.join(self.build_dir, sub, name)
            if os.path.exists(p):
                return self.readable(p)
        raise FileNotFoundError(f"{name} not built under {self.build_dir}")

    def path(self, name):
        return os.path.join(self.dir, name)

    def write(self, name, text):
        tmp = self.path(name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.path(name))  # atomic: the control plane never reads half a file

    def start(self, args, log, netns=None, uid=None, cpus=None, env=None):
        p = Proc(ns_prefix(netns, uid, cpus) + list(args), self.path(log), env=env)
        self.procs.append(p)
        return p

    def stop(self, proc):
        """Ends one process started here before close()."""
        self.procs.remove(proc)
        return proc.stop()

    # ---- network -----------------------------------------------------------
    def setup_network(self, pods):
        """pods: list of (name, index, k8s namespace, service account)."""
        n = self.node
        # Left over by a killed run that had our PID (names carry it): ours to remove.
        existing = run(["ip", "netns", "list"]).stdout.split()
        for name in [n] + [f"{self.tag}-{p[0]}" for p in pods]:
            if name in existing:
                run(["ip", "netns", "del", name], check=False)
        run(["ip", "netns", "add", n])
        run(["ip", "-n", n, "link", "set", "lo", "up"])
        run(["ip", "-n", n, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", n, "addr", "add", "10.244.0.1/24", "dev", "br0"])
        run(["ip", "-n", n, "addr", "add", "fd00:10:244::1/64", "dev", "br0", "nodad"])
        run(["ip", "-n", n, "link", "set", "br0", "up"])
        for name, index, k8s_ns, sa in pods:
            pod = Pod(self, name, index, k8s_ns, sa)
            run(["ip", "netns", "add", pod.netns])
            self.netns.append(pod.netns)
            run(["ip", "-n", pod.netns, "link", "set", "lo", "up"])
            run(["ip", "-n", n, "link", "add", f"veth-{name}", "type", "veth", "peer", "name",
                 "eth0", "netns", pod.netns])
            run(["ip", "-n", n, "link", "set", f"veth-{name}", "master", "br0", "up"])
            run(["ip", "-n", pod.netns, "addr", "add", f"{pod.ip4}/24", "dev", "eth0"])
            run(["ip", "-n", pod.netns, "addr", "add", f"{pod.ip6}/64", "dev", "eth0", "nodad"])
            run(["ip", "-n", pod.netns, "link", "set", "eth0", "up"])
            self.pods[name] = pod
        return self.pods

    # ---- control plane -----------------------------------------------------
    def start_control_plane(self, mesh_yaml, cert_ttl="1h"):
        self.write("mesh.yaml", mesh_yaml)
        self.write("tokens.yaml", "".join(f"tok-{p.name}: {p.id}\n" for p in self.pods.values()))
        for p in self.pods.values():
            self.write(f"token-{p.name}", f"tok-{p.name}\n")
        self.cp = self.start([self.binary("seam-control-plane"),
                              "--listen", f"10.244.0.1:{CP_PORT}",
                              "--mesh", self.path("mesh.yaml"),
                              "--tokens", self.path("tokens.yaml"),
                              "--root-out", self.path("root.pem"),
                              "--server-name", "seam-control-plane",
                              "--cert-ttl", cert_ttl, "--trust-domain", TD],
                             "control-plane.log", netns=self.node)
        self.cp.wait_log("cp.ready")
        os.chmod(self.path("root.pem"), 0o644)

    def set_mesh(self, mesh_yaml):
        self.write("mesh.yaml", mesh_yaml)

    # ---- pods --------------------------------------------------------------
    def start_pod(self, name, app_ports=(8080,), extra_args=()):
        pod = self.pods[name]
        r = pod.exec([self.binary("seam-init"), "install"])
        pod.init_output = r.stdout + r.stderr
        if app_ports:
            pod.app = self.start([PY, "-u", self.app_script, "serve", f"app@{name}"]
                                 + list(app_ports), f"app-{name}.log", netns=pod.netns,
                                 uid=APP_UID)
        pod.sidecar = self.start(
            [self.binary("seam-sidecar"), "run",
             "--control-plane", f"10.244.0.1:{CP_PORT}",
             "--control-plane-trust", self.path("root.pem"),
             "--control-plane-name", "seam-control-plane",
             "--token-file", self.path(f"token-{name}"),
             "--trust-domain", TD, "--namespace", pod.k8s_ns, "--service-account", pod.sa,
             "--pod-ip", pod.ip4, "--workers", "1"] + self.sidecar_args + list(extra_args),
            f"sidecar-{name}.log", netns=pod.netns, uid=PROXY_UID)
        return pod

    def wait_ready(self, timeout=20.0):
        for pod in self.pods.values():
            if pod.sidecar is not None:
                pod.sidecar.wait_log("sidecar.ready mode=mesh dir=inbound", timeout)
            if pod.app is not None:
                pod.app.wait_log("app.ready", timeout)

    # ---- teardown ----------------------------------------------------------
    def close(self):
        codes = {}
        for p in reversed(self.procs):
            try:
                codes[p.log_path] = p.stop()
            except Exception:  # noqa: BLE001 - keep tearing down
                pass
        for ns in reversed(self.netns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        return codes

    def cleanup_dir(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def close_checked(self):
        """A test fixture's teardown: close(), remove the directory, then
        assert that no namespace is left, that every sidecar exited 0 on
        SIGTERM and that no sanitizer report is in their logs."""
        codes = self.close()
        failed = {k: v for k, v in codes.items() if "sidecar-" in k and v != 0}
        logs = {}
        for p in self.procs:
            if "sidecar-" in p.log_path:
                with open(p.log_path, errors="replace") as f:
                    logs[p.log_path] = f.read()
        leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        self.cleanup_dir()
        assert self.tag not in leftover, f"namespaces left behind: {leftover}"
        assert not failed, f"sidecars did not exit 0 on SIGTERM: {failed}"
        for text in logs.values():
            assert "Sanitizer" not in text and "runtime error" not in text, text[-4000:]
