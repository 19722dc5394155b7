"""A real Kubernetes node on this machine: containerd + runc + CNI bridge, a kubelet, kube-proxy, a fake
GPU device plugin and Service DNS, joined to a test control plane.

Pods on it are real containers from images built here (tests/realnode/images.py). The recipe and its
traps (cgroup v1, no CAP_SYS_RESOURCE, offline machine) are in tests/realnode/README.md. ``RealNode``
saves every kernel setting it may change (``support.hoststate``) and restores it in ``stop()``, which
also removes containers, the bridge, iptables chains, cgroups and mounts; ``stop()`` runs on failure
and at interpreter exit too.

Only one real node can run per machine: the kubelet's device-plugin directory is a fixed path.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import shutil
import subprocess
import tempfile
import weakref
from pathlib import Path
from typing import Any

from support.controlplane import ControlPlane, free_port, rest, stop_group, wait_for
from support.hoststate import HostState, cgroup_v1_hierarchies, run, write_sysctl

#: The kubelet's device-plugin directory: compiled into the kubelet, not configurable.
DEVICE_PLUGIN_DIR = Path("/var/lib/kubelet/device-plugins")
#: Node IP: on an interface of its own (the kubelet refuses loopback), from TEST-NET-2, never routed.
NODE_IP = "198.51.100.7"
DUMMY_LINK = "stratos-rn0"
BRIDGE = "stratos-cni0"
POD_CIDR = "10.244.0.0/24"
CGROUP = "stratos-realnode"
CLUSTER_DOMAIN = "cluster.local"
GPUS = 4
REQUIRED_TOOLS = ("containerd", "runc", "ctr", "iptables", "ip", "podman")
CNI_BIN_DIR = Path("/usr/lib/cni")


class RealNodeUnavailable(RuntimeError):
    """The machine lacks something a real node needs (not root, no cgroup v1, a missing binary)."""


def missing_prerequisites(bin_dir: Path) -> list[str]:
    """What this machine lacks for a real node; [] when it can run one."""
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    missing += [f"{b} in {bin_dir}" for b in ("kubelet", "kube-proxy", "fake-gpu-plugin", "svc-dns")
                if not (bin_dir / b).exists()]  # fmt: skip
    missing += [
        f"CNI plugin {p}" for p in ("bridge", "host-local", "loopback") if not (CNI_BIN_DIR / p).exists()
    ]
    if os.geteuid() != 0:
        missing.append("root")
    if not cgroup_v1_hierarchies():
        missing.append("cgroup v1 hierarchies")
    return missing


_LIVE: weakref.WeakSet[RealNode] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for node in list(_LIVE):
        node.stop()


class RealNode:
    """One kubelet node named ``name`` on ``control_plane``; ``start()`` returns once it is Ready with
    ``GPUS`` fake ``nvidia.com/gpu``."""

    def __init__(self, bin_dir: Path, *, name: str = "realnode-0") -> None:
        self.cp: ControlPlane | None = None
        self.bin_dir = bin_dir
        self.name = name
        self.workdir = Path(tempfile.mkdtemp(prefix="stratos-realnode-"))
        self.log_dir = self.workdir / "logs"
        self.run_dir = self.workdir / "run"
        self.containerd_sock = self.run_dir / "containerd.sock"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.host: HostState | None = None
        self.leftovers: list[str] = []

    # ------------------------------------------------------------------------------------ lifecycle

    def prepare(self) -> RealNode:
        """Saves the machine's state, then makes the node's network (the dummy interface the API server
        binds to, so that pods can reach it), its cgroup and the device-plugin directory."""
        missing = missing_prerequisites(self.bin_dir)
        if missing:
            raise RealNodeUnavailable("missing: " + ", ".join(missing))
        _LIVE.add(self)
        self.host = HostState.capture()
        try:
            self._network()
            self.host.make_cgroup(CGROUP)
            self.host.make_dir(DEVICE_PLUGIN_DIR)
        except BaseException:
            self.stop()
            raise
        return self

    def start_runtime(self, pause_image: str, images: list[Path]) -> RealNode:
        """containerd (CRI, runc, CNI) with ``images`` (OCI archives) imported into its k8s.io namespace."""
        try:
            self._start_containerd(pause_image)
            for image in images:
                self.ctr("images", "import", str(image), timeout=600)
        except BaseException:
            self.stop()
            raise
        return self

    def join(self, control_plane: ControlPlane) -> RealNode:
        """Starts the kubelet, the device plugin, kube-proxy and DNS against ``control_plane`` (which
        binds to NODE_IP); returns once the node is Ready with its GPUs."""
        self.cp = control_plane
        try:
            self._start_kubelet()
            self._start("fake-gpu-plugin", [str(self.bin_dir / "fake-gpu-plugin"), f"--count={GPUS}"])
            wait_for(self._ready_with_gpus, timeout=180, interval=1, what=f"node {self.name} Ready with GPUs")
            self._start_kube_proxy()
            self._check_alive("kube-proxy")
            self._start(
                "svc-dns",
                [
                    str(self.bin_dir / "svc-dns"),
                    f"--kubeconfig={self._cp.kubeconfig}",
                    f"--listen={NODE_IP}:53",
                ],
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stops everything and puts the machine back; ``leftovers`` lists what could not be undone."""
        if self.host is None:
            return
        for name in ("svc-dns", "kube-proxy", "fake-gpu-plugin", "kubelet"):
            self._stop_process(name)
        with contextlib.suppress(Exception):
            self._remove_containers()
        self._stop_process("containerd")
        if "kube-proxy" in getattr(self, "_ran", set()):
            run(str(self.bin_dir / "kube-proxy"), "--cleanup", check=False)
        self.leftovers = self.host.restore(kill_cgroups=[CGROUP], kill_matching=[str(self.containerd_sock)])
        self.host = None
        _LIVE.discard(self)
        if not self.leftovers and not os.environ.get("STRATOS_KEEP_REALNODE"):
            self._unmount_below(self.workdir)
            shutil.rmtree(self.workdir, ignore_errors=True)

    # --------------------------------------------------------------------------------------- pieces

    _ran: set[str]

    def _start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if not hasattr(self, "_ran"):
            self._ran = set()
        log = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._procs[name] = proc
        self._ran.add(name)
        return proc

    def _stop_process(self, name: str) -> None:
        proc = self._procs.pop(name, None)
        stop_group(proc)

    def run_container(
        self, image: str, *command: str, name: str = "probe", tmp: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Runs ``command`` in a container of ``image`` straight through containerd and runc (no kubelet):
        read-only root filesystem, in the node's cgroup, the image's own user and environment; ``tmp``
        adds a writable tmpfs at /tmp (what the stage pods get as an emptyDir)."""
        cgroup = f"/{CGROUP}/{name}"
        mounts = ["--mount", "type=tmpfs,src=tmpfs,dst=/tmp,options=rw:nosuid:nodev:mode=1777"] if tmp else []
        return self.ctr(
            "run", "--rm", "--read-only", *mounts, "--cgroup", cgroup, image, name, *command,
            check=False, timeout=300,
        )  # fmt: skip

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def _network(self) -> None:
        # A port-less bridge as the node's own interface: this kernel has no dummy driver.
        run("ip", "link", "add", DUMMY_LINK, "type", "bridge")
        run("ip", "addr", "add", f"{NODE_IP}/32", "dev", DUMMY_LINK)
        run("ip", "link", "set", DUMMY_LINK, "up")
        # Pods reach Services and the node through the host: forwarding, and bridged traffic through
        # iptables (kube-proxy's DNAT of pod-to-Service-to-pod on one bridge needs it).
        write_sysctl("net/ipv4/ip_forward", "1")
        write_sysctl("net/bridge/bridge-nf-call-iptables", "1")

    def ctr(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        sock = str(self.containerd_sock)
        return run("ctr", "--address", sock, "--namespace", "k8s.io", *args, timeout=timeout, check=check)

    def _start_containerd(self, pause_image: str) -> None:
        root = self.workdir / "containerd"
        cni_conf = self.workdir / "cni"
        cni_conf.mkdir(parents=True)
        (cni_conf / "10-stratos.conflist").write_text(json.dumps(cni_config(self.workdir / "cni-state")))
        config = self.workdir / "containerd.toml"
        config.write_text(
            containerd_config(
                root=root, state=self.run_dir / "containerd", sock=self.containerd_sock,
                cni_conf=cni_conf, pause_image=pause_image,
            )
        )  # fmt: skip
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._start("containerd", ["containerd", "--config", str(config)])
        wait_for(
            lambda: (
                self.containerd_sock.exists() and self.ctr("version", timeout=10, check=False).returncode == 0
            ),
            timeout=60,
            what=f"containerd (log: {self.log_dir / 'containerd.log'})",
        )

    @property
    def _cp(self) -> ControlPlane:
        assert self.cp is not None, "start() first"
        return self.cp

    def _start_kubelet(self) -> None:
        config = self.workdir / "kubelet.yaml"
        resolv = self.workdir / "resolv.conf"
        resolv.write_text(f"nameserver {NODE_IP}\n")
        config.write_text(json.dumps(kubelet_config(self.workdir, resolv)))
        self._start(
            "kubelet",
            [
                str(self.bin_dir / "kubelet"),
                f"--config={config}",
                f"--kubeconfig={self._cp.kubeconfig}",
                f"--hostname-override={self.name}",
                f"--node-ip={NODE_IP}",
                f"--root-dir={self.workdir / 'kubelet'}",
                f"--cert-dir={self.workdir / 'kubelet-pki'}",
                "--v=1",
            ],
        )

    def _start_kube_proxy(self) -> None:
        config = self.workdir / "kube-proxy.yaml"
        config.write_text(json.dumps(kube_proxy_config(self._cp.kubeconfig, self.name)))
        self._start("kube-proxy", [str(self.bin_dir / "kube-proxy"), f"--config={config}", "--v=1"])

    def _check_alive(self, name: str) -> None:
        """Raises if ``name`` exited (a bad flag or config fails at once); gives it a moment first."""
        proc = self._procs[name]
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            return
        raise RuntimeError(f"{name} exited {proc.returncode}:\n{self.log_tail(name)}")

    def _ready_with_gpus(self) -> bool:
        for name in ("containerd", "kubelet", "fake-gpu-plugin"):
            proc = self._procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name} exited {proc.returncode}:\n{self.log_tail(name)}")
        try:
            node = rest(self._cp.api_client(), "GET", f"/api/v1/nodes/{self.name}")
        except Exception:
            return False
        status = node.get("status", {})
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
        return ready and status.get("allocatable", {}).get("nvidia.com/gpu") == str(GPUS)

    def _remove_containers(self) -> None:
        """Every pod sandbox and container of this containerd, stopped and deleted."""
        tasks = self.ctr("tasks", "ls", "-q", timeout=30, check=False).stdout.split()
        for task in tasks:
            self.ctr("tasks", "kill", "-s", "SIGKILL", task, timeout=30, check=False)
        for task in tasks:
            deleted = functools.partial(self._deleted, task)
            with contextlib.suppress(Exception):
                wait_for(deleted, timeout=30, what=f"task {task} deleted")
        for container in self.ctr("containers", "ls", "-q", timeout=30, check=False).stdout.split():
            self.ctr("containers", "delete", container, timeout=30, check=False)

    def _deleted(self, task: str) -> bool:
        return self.ctr("tasks", "delete", task, timeout=30, check=False).returncode == 0

    @staticmethod
    def _unmount_below(path: Path) -> None:
        for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
            point = line.split()[4]
            if point.startswith(str(path)):
                run("umount", "-l", point, check=False)


# ------------------------------------------------------------------------------------------ configs


def cni_config(state_dir: Path) -> dict[str, Any]:
    return {
        "cniVersion": "0.4.0",
        "name": "stratos",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "isDefaultGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]], "dataDir": str(state_dir)},
            },
            {"type": "loopback"},
        ],
    }


def containerd_config(*, root: Path, state: Path, sock: Path, cni_conf: Path, pause_image: str) -> str:
    """containerd 1.6 (Debian) CRI config: runc with cgroupfs, the locally built pause image, and
    restrict_oom_score_adj (root here lacks CAP_SYS_RESOURCE to lower a score)."""
    return f"""version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{sock}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{cni_conf}"
"""


def kubelet_config(workdir: Path, resolv: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "containerRuntimeEndpoint": f"unix://{workdir / 'run' / 'containerd.sock'}",
        # The machine offers only cgroup v1, and the kubelet runs inside someone else's cgroup tree.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{CGROUP}",
        "cgroupsPerQOS": True,
        "enforceNodeAllocatable": ["pods"],
        "failSwapOn": False,
        "oomScoreAdj": 0,  # root here lacks CAP_SYS_RESOURCE: the default -999 fails
        "address": NODE_IP,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 0,
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "clusterDNS": [NODE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(resolv),
        "staticPodPath": "",
        "serializeImagePulls": False,
        "registerNode": True,
        "podCIDR": POD_CIDR,
        "maxPods": 30,
        # A shared machine: never evict or garbage-collect images because its disk is busy.
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "localStorageCapacityIsolation": True,
        "protectKernelDefaults": False,
        "makeIPTablesUtilChains": False,
        "featureGates": {},
    }


def kube_proxy_config(kubeconfig: Path, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": node,
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "bindAddress": NODE_IP,
        "healthzBindAddress": f"127.0.0.1:{free_port()}",
        "metricsBindAddress": f"127.0.0.1:{free_port()}",
        # Leave conntrack's kernel settings alone (0: do not set).
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
    }
