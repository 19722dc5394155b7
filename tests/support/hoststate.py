"""Save and restore what a real node changes on the machine: sysctls, iptables chains, mounts, cgroups,
network interfaces and stray processes.

Everything here is undone at teardown, also when a test fails or is interrupted: the kubelet, kube-proxy
and the CNI bridge plugin change shared kernel settings and tables, and containers live outside the test's
own process tree and cgroup.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: Every sysctl the kubelet, kube-proxy, the CNI plugins or the fixture itself may write.
SYSCTLS = (
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/forwarding",
    "net/ipv4/conf/default/forwarding",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
    "net/netfilter/nf_conntrack_tcp_be_liberal",
)
#: iptables chains that belong to a node: kube-proxy's, the kubelet's and the CNI plugins'.
CHAIN_PREFIXES = ("KUBE-", "CNI-")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def run(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=timeout)


def read_sysctl(name: str) -> str | None:
    path = Path("/proc/sys") / name
    try:
        return path.read_text().strip()
    except OSError:
        return None


def write_sysctl(name: str, value: str) -> None:
    (Path("/proc/sys") / name).write_text(value + "\n")


def mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        points.append(fields[4].replace("\\040", " "))
    return points


def cgroup_v1_hierarchies() -> list[Path]:
    """The mounted cgroup v1 hierarchies (cpu, memory, ..., name=systemd); [] on a pure cgroup v2 host."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        if post.split()[0] == "cgroup":
            out.append(Path(pre.split()[4]))
    return out


#: (save command, rule command, nft family) per address family: the kubelet and kube-proxy touch both.
FAMILIES = (("iptables-save", "iptables", "ip"), ("ip6tables-save", "ip6tables", "ip6"))


def _iptables_tables(save: str = "iptables-save") -> dict[str, list[str]]:
    """``iptables-save`` (or ``ip6tables-save``) split by table: {"nat": [lines...], ...}."""
    result = run(save, check=False)
    tables: dict[str, list[str]] = {}
    current = None
    for line in result.stdout.splitlines():
        if line.startswith("*"):
            current = line[1:]
            tables[current] = []
        elif current and line != "COMMIT" and not line.startswith("#"):
            tables[current].append(line)
    return tables


def node_chains(save: str = "iptables-save") -> list[tuple[str, str]]:
    """(table, chain) of every node chain (KUBE-*, CNI-*) now present."""
    found = []
    for table, lines in _iptables_tables(save).items():
        for line in lines:
            if line.startswith(":") and line[1:].startswith(CHAIN_PREFIXES):
                found.append((table, line[1:].split()[0]))
    return found


def tables() -> set[str]:
    """Every iptables table of both families that exists now, as "<nft family> <table>"."""
    return {f"{family} {t}" for save, _, family in FAMILIES for t in _iptables_tables(save)}


def remove_node_chains() -> None:
    """Deletes every rule that jumps to a node chain and then the chains themselves, table by table,
    in both address families.

    Rules are deleted one by one with ``iptables -D`` (never a whole-table restore), so rules others
    added meanwhile are left alone.
    """
    for save, cmd, _ in FAMILIES:
        _remove_node_chains(save, cmd)


def _remove_node_chains(save: str, cmd: str) -> None:
    for table, lines in _iptables_tables(save).items():
        for line in lines:
            if not line.startswith("-A "):
                continue
            chain = line.split()[1]
            jump = re.search(r"(?:-j|-g) (\S+)", line)
            if chain.startswith(CHAIN_PREFIXES):
                continue  # goes with its chain
            if jump and jump.group(1).startswith(CHAIN_PREFIXES):
                run(cmd, "-t", table, *_split_rule(line.replace("-A ", "-D ", 1)), check=False)
        chains = [c for t, c in node_chains(save) if t == table]
        for chain in chains:
            run(cmd, "-t", table, "-F", chain, check=False)
        for chain in chains:
            run(cmd, "-t", table, "-X", chain, check=False)


def remove_empty_tables(keep: set[str]) -> None:
    """Deletes the (nft) tables not in ``keep`` that hold no rule: iptables creates a table the first
    time anything lists it, and the node's components list them all. Needs ``nft``."""
    if shutil.which("nft") is None:
        return
    for save, _, family in FAMILIES:
        for table, lines in _iptables_tables(save).items():
            name = f"{family} {table}"
            if name not in keep and not any(line.startswith("-A ") for line in lines):
                run("nft", "delete", "table", family, table, check=False)


def _split_rule(line: str) -> list[str]:
    import shlex

    return shlex.split(line)


@dataclass
class HostState:
    """A snapshot of the machine before a node starts, and ``restore()`` to go back to it."""

    sysctls: dict[str, str] = field(default_factory=dict)
    mounts: set[str] = field(default_factory=set)
    links: set[str] = field(default_factory=set)
    tables: set[str] = field(default_factory=set)
    created_dirs: list[Path] = field(default_factory=list)
    cgroups: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @classmethod
    def capture(cls) -> HostState:
        state = cls()
        for name in SYSCTLS:
            value = read_sysctl(name)
            if value is not None:
                state.sysctls[name] = value
        state.mounts = set(mount_points())
        state.links = set(links())
        state.tables = tables()
        return state

    def make_dir(self, path: Path) -> Path:
        """mkdir -p that remembers the topmost directory it created, for removal at teardown."""
        missing = [p for p in [path, *path.parents] if not p.exists()]
        path.mkdir(parents=True, exist_ok=True)
        if missing:
            self.created_dirs.append(missing[-1])
        return path

    def make_cgroup(self, name: str) -> None:
        """``name`` in every v1 hierarchy (cpuset: with the parent's cpus and mems, else it is unusable)."""
        for hierarchy in cgroup_v1_hierarchies():
            path = hierarchy / name.strip("/")
            if not path.exists():
                path.mkdir(parents=True)
                self.cgroups.append(path)
            if (path / "cpuset.cpus").exists():
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    if not (path / knob).read_text().strip():
                        (path / knob).write_text((path.parent / knob).read_text())

    def restore(self, *, kill_cgroups: Sequence[str] = (), kill_matching: Iterable[str] = ()) -> list[str]:
        """Undoes everything; returns what could not be undone (empty when the machine is clean)."""
        for pattern in kill_matching:
            kill_processes_matching(pattern)
        for name in kill_cgroups:
            kill_cgroup(name)
        for point in sorted(set(mount_points()) - self.mounts, key=len, reverse=True):
            run("umount", "-l", point, check=False)
        for name in kill_cgroups:
            remove_cgroup(name)
        for link in set(links()) - self.links:
            run("ip", "link", "delete", link, check=False)
        remove_node_chains()
        remove_empty_tables(self.tables)
        for name, value in self.sysctls.items():
            if read_sysctl(name) != value:
                with contextlib.suppress(OSError):
                    write_sysctl(name, value)
        for path in reversed(self.created_dirs):
            shutil.rmtree(path, ignore_errors=True)
        return self.check()

    def check(self) -> list[str]:
        """What still differs from the snapshot."""
        left = [
            f"sysctl {n} = {read_sysctl(n)} (was {v})" for n, v in self.sysctls.items() if read_sysctl(n) != v
        ]
        left += [f"mount {m}" for m in sorted(set(mount_points()) - self.mounts)]
        left += [f"link {link}" for link in sorted(set(links()) - self.links)]
        left += [f"{save} {t} {c}" for save, _, _ in FAMILIES for t, c in node_chains(save)]
        left += [f"table {t}" for t in sorted(tables() - self.tables) if shutil.which("nft")]
        left += [f"cgroup {p}" for p in self.cgroups if p.exists()]
        left += [f"dir {p}" for p in self.created_dirs if p.exists()]
        return left


def links() -> list[str]:
    result = run("ip", "-o", "link", "show", check=False)
    return [line.split(":")[1].strip().split("@")[0] for line in result.stdout.splitlines() if ":" in line]


def _cgroup_pids(name: str) -> set[int]:
    pids: set[int] = set()
    for hierarchy in cgroup_v1_hierarchies():
        root = hierarchy / name.strip("/")
        if root.exists():
            for procs in root.rglob("cgroup.procs"):
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(p) for p in procs.read_text().split())
    return pids


def kill_cgroup(name: str, timeout: float = 20) -> None:
    """SIGKILL every process in cgroup ``name`` (any hierarchy), until none is left or ``timeout``."""
    deadline = time.monotonic() + timeout
    while (pids := _cgroup_pids(name)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


def remove_cgroup(name: str) -> None:
    """rmdir cgroup ``name`` and everything below it, deepest first, in every hierarchy."""
    for hierarchy in cgroup_v1_hierarchies():
        root = hierarchy / name.strip("/")
        if not root.exists():
            continue
        for path in sorted(
            (p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        ):
            with contextlib.suppress(OSError):
                path.rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()


def kill_processes_matching(needle: str) -> None:
    """SIGKILL processes whose command line contains ``needle`` (a path unique to this node)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(proc.name), signal.SIGKILL)
