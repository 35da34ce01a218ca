"""Run a command the way a Kubernetes pod's securityContext would, with the kernel's own namespaces:
``python pod_namespaces.py SPEC_JSON -- COMMAND...``.

SPEC_JSON holds ``run_as_user``, ``capabilities`` (the ones added, after dropping ALL), ``no_new_privs``
(allowPrivilegeEscalation false), ``masked_proc`` (the runtime's masked and read-only /proc paths: procMount
Default) and ``read_only_root``. The command runs as root of a new user namespace (hostUsers: false; container
ids 1-65535 map to host ids 200001-265535, 0 stays 0 so that the test's Python under /root stays readable), with
its own pid and mount namespaces, a fresh /proc and a tmpfs /tmp (an emptyDir). The network is the host's, so
that a test reaches a server inside on 127.0.0.1. Seccomp and AppArmor profiles are not applied (Unconfined).
SIGTERM to this process reaches the command (pid 1 of the pod's pid namespace); when it exits, the kernel ends
every process left in that namespace, the sandboxes' nested ones included.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys

CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWPID = 0x10000000, 0x00020000, 0x20000000
HOST_ID_BASE = 200000  # container id N (N >= 1) is host id HOST_ID_BASE + N
# containerd's and Docker's defaults (oci spec: linux.maskedPaths / linux.readonlyPaths).
MASKED = ("/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
          "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi")
READ_ONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


def available() -> str | None:
    """Why this cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (it writes a user namespace's uid map)"
    missing = [tool for tool in ("setpriv", "mount") if shutil.which(tool) is None]
    return f"{', '.join(missing)} not installed (util-linux)" if missing else None


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def _pod_filesystem(spec: dict) -> None:
    """Inside the new mount and pid namespaces: what the runtime sets up before the container's process."""
    _mount("--make-rprivate", "/")
    _mount("-t", "proc", "proc", "/proc")
    if spec["masked_proc"]:
        for path in MASKED:
            if os.path.isdir(path):
                _mount("-t", "tmpfs", "-o", "ro", "tmpfs", path)
            elif os.path.exists(path):
                _mount("--bind", "/dev/null", path)
        for path in READ_ONLY:
            if os.path.exists(path):
                _mount("--bind", path, path)
                _mount("-o", "remount,bind,ro", path)
    if spec["read_only_root"]:
        _mount("-o", "remount,bind,ro", "/")  # this namespace's view only: the host's / stays writable
    _mount("-t", "tmpfs", "tmpfs", "/tmp")


def _container_argv(spec: dict, command: list[str]) -> list[str]:
    caps = ",".join(["-all", *(f"+{c.lower()}" for c in spec["capabilities"])])
    argv = ["setpriv", f"--bounding-set={caps}", "--inh-caps=-all"]
    if spec["no_new_privs"]:
        argv.append("--no-new-privs")
    if spec["run_as_user"] != 0:
        uid = str(spec["run_as_user"])
        argv += ["--reuid", uid, "--regid", uid, "--clear-groups"]
    return [*argv, *command]


def _forward_stops_to(pid: int) -> None:
    """SIGTERM/SIGINT here go on to ``pid``, which then stops as it would in a pod (the pod's init)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, _frame: os.kill(pid, number))


def main() -> int:
    spec, command = json.loads(sys.argv[1]), sys.argv[sys.argv.index("--") + 1:]
    libc = ctypes.CDLL(None, use_errno=True)
    unshared_r, unshared_w = os.pipe()
    mapped_r, mapped_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID) != 0:
            os.write(2, f"unshare: {os.strerror(ctypes.get_errno())}\n".encode())
            os._exit(125)
        os.write(unshared_w, b"1")
        os.read(mapped_r, 1)  # the parent has written the id maps
        init = os.fork()  # pid 1 of the new pid namespace
        if init == 0:
            os.setgid(0)
            os.setuid(0)
            _pod_filesystem(spec)
            argv = _container_argv(spec, command)
            os.execvp(argv[0], argv)
        _forward_stops_to(init)
        _, status = os.waitpid(init, 0)
        os._exit(os.waitstatus_to_exitcode(status))
    if os.read(unshared_r, 1) != b"1":
        os.waitpid(pid, 0)
        return 125
    for kind in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{kind}", "w") as f:
            f.write(f"0 0 1\n1 {HOST_ID_BASE + 1} 65535\n")
    os.write(mapped_w, b"1")
    _forward_stops_to(pid)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
