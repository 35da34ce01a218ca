"""Hostile programs and what the sandbox must answer to each (specs/code-rule.md §5-§6), in one table.

The same table runs through the sandbox directly (tests/sandbox/test_security.py) and can run through the
HTTP routes (``/run_code``, the ``code`` recipe): each attack is a program, its stdin, the limits it runs
under, the run status it must get, text that must (``expect``) and must never (``forbidden``) appear in its
output, and a marker that no host process may carry after the run (a daemon that must not outlive it).
Programs are templates: ``$name`` fields come from ``AttackContext`` (host facts the test sets up).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from string import Template


@dataclass(frozen=True)
class AttackContext:
    """Host facts the programs probe: a loopback server, a secret env var, files that must stay unreadable."""

    port: int  # a TCP server the test listens on at 127.0.0.1 (the program must not reach it)
    secret: str  # the value of an environment variable set in the server's process
    project_file: str  # a file of the project (absolute host path)
    model_file: str  # a file in a "model directory" the test creates under /tmp
    host_dir: str  # a host directory the program tries to write into
    marker: str  # a unique word: daemons carry it in their argv, written files in their names


@dataclass(frozen=True)
class Attack:
    name: str
    what: str  # the rule it checks
    language: str
    code: str
    status: str  # RawRun.status it must get
    stdin: str = ""
    limits: dict = field(default_factory=dict)  # Limits overrides (wall_s, cpu_s, memory_mb, ...)
    expect: tuple[str, ...] = ()  # each must appear in stdout
    forbidden: tuple[str, ...] = ("ESCAPED",)  # none may appear in stdout or stderr ($-templated too)
    daemon_marker: bool = False  # no host process may carry the marker after the run

    def program(self, ctx: AttackContext) -> str:
        return Template(self.code).substitute(vars(ctx))

    def forbidden_texts(self, ctx: AttackContext) -> tuple[str, ...]:
        return tuple(Template(text).substitute(vars(ctx)) for text in self.forbidden)


_TRY = '''
def attempt(label, fn):
    try:
        fn()
    except BaseException as error:
        print("blocked", label, type(error).__name__)
    else:
        print("ESCAPED", label)
'''

ATTACKS: tuple[Attack, ...] = (
    Attack("net_loopback", "no network: not even the host's loopback services", "python", _TRY + '''
import socket
def connect(host, port):
    s = socket.create_connection((host, port), timeout=2)
    s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
    s.recv(10)
attempt("tcp 127.0.0.1", lambda: connect("127.0.0.1", $port))
attempt("tcp localhost", lambda: connect("localhost", $port))
attempt("tcp ::1", lambda: connect("::1", $port))
''', "ok", expect=("blocked tcp 127.0.0.1",)),
    Attack("net_outside", "no network: no route anywhere, no DNS", "python", _TRY + '''
import socket
def connect(host, port):
    socket.create_connection((host, port), timeout=2).close()
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"x", ("8.8.8.8", 53))
attempt("tcp 8.8.8.8", lambda: connect("8.8.8.8", 53))
attempt("tcp 1.1.1.1:443", lambda: connect("1.1.1.1", 443))
attempt("dns", lambda: socket.getaddrinfo("pypi.org", 443))
attempt("udp", udp)
''', "ok", expect=("blocked tcp 8.8.8.8", "blocked dns", "blocked udp")),
    Attack("env_secret", "the server's environment is invisible (os.environ and every /proc/*/environ)", "python", '''
import os
print(dict(os.environ))
for pid in ["self", "1", str(os.getppid())] + [p for p in os.listdir("/proc") if p.isdigit()]:
    try:
        print(pid, open(f"/proc/{pid}/environ", "rb").read())
    except OSError as error:
        print("blocked", pid, type(error).__name__)
''', "ok", expect=("blocked",), forbidden=("$secret",)),
    Attack("read_project", "the project directory is not visible", "python", _TRY + '''
attempt("project", lambda: print(open("$project_file").read()))
import os
attempt("listdir", lambda: print(os.listdir("$project_file".rsplit("/", 1)[0])))
''', "ok", expect=("blocked project",), forbidden=("ESCAPED", "[project]")),
    Attack("read_shadow", "/etc/shadow and /root are not visible", "python", _TRY + '''
attempt("shadow", lambda: print(open("/etc/shadow").read()))
attempt("passwd", lambda: print(open("/etc/passwd").read()))
import os
attempt("root", lambda: print(os.listdir("/root")))
''', "ok", expect=("blocked shadow",)),
    Attack("read_shadow_cpp", "a C++ #include of a host file reads nothing of the host", "cpp",
           '#include "/etc/shadow"\nint main() { return 0; }\n', "compile_error", forbidden=("root:",)),
    Attack("read_model_dir", "model directories are not visible", "python", _TRY + '''
attempt("model", lambda: print(open("$model_file", "rb").read()))
''', "ok", expect=("blocked model",), forbidden=("ESCAPED", "$secret")),
    Attack("write_outside", "the root filesystem is read-only; only the private dirs are writable", "python", _TRY + '''
import os
def write(path):
    with open(path, "w") as f:
        f.write("x")
for path in ["/$marker", "/etc/$marker", "/usr/bin/$marker", "/dev/$marker", "/proc/$marker",
             "$host_dir/$marker"]:
    attempt(path, lambda: write(path))
attempt("/proc/sys", lambda: write("/proc/sys/kernel/hostname"))
write("/tmp/$marker-private")
write("$marker-workdir")
print("private ok")
''', "ok", expect=("private ok",)),
    Attack("symlink_out", "symlinks and .. out of the working directory lead nowhere on the host", "python", _TRY + '''
import os
os.symlink("/etc/shadow", "shadow")
os.symlink("$project_file", "project")
os.symlink("/proc/1/root$project_file", "viaproc")
attempt("shadow link", lambda: print(open("shadow").read()))
attempt("project link", lambda: print(open("project").read()))
attempt("proc root", lambda: print(open("viaproc").read()))
attempt("dotdot", lambda: print(open("../../../../../../../../$project_file").read()))
''', "ok", expect=("blocked shadow link", "blocked project link")),
    Attack("fork_bomb", "processes are capped (64); the bomb ends at the time limit", "python", '''
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
''', "timeout", limits={"wall_s": 2.0}),
    Attack("thread_bomb", "threads count as processes: at most 64", "python", '''
import threading, time
started = 0
try:
    for _ in range(1000):
        threading.Thread(target=time.sleep, args=(5,), daemon=True).start()
        started += 1
except RuntimeError:
    pass
print("threads", started, "capped" if started < 64 else "ESCAPED", flush=True)
import os
os._exit(0)  # the sleeping threads need not be waited for
''', "ok", expect=("capped",)),
    Attack("memory_bomb", "address space over the limit: memory_limit (a MemoryError)", "python", '''
x = bytearray(20 * 1024 ** 3)
''', "memory_limit"),
    Attack("memory_grow", "a growing allocation hits the limit: memory_limit", "python", '''
blocks = []
while True:
    blocks.append(bytearray(64 * 1024 * 1024))
''', "memory_limit", limits={"memory_mb": 512}),
    Attack("memory_cpp", "C++ bad_alloc at the limit: memory_limit", "cpp", '''
#include <vector>
#include <cstdio>
int main() { std::vector<char> v(20LL << 30); v[1] = 1; std::printf("%d", v[1]); }
''', "memory_limit"),
    Attack("cpu_spin", "CPU time past the limit: timeout, killed by RLIMIT_CPU before the wall time", "python", '''
while True:
    pass
''', "timeout", limits={"wall_s": 6.0, "cpu_s": 1.0}),
    Attack("sleep", "wall time past the limit: timeout", "python", '''
import time
time.sleep(60)
''', "timeout", limits={"wall_s": 1.0}),
    Attack("output_flood", "100 MB of output: output_limit, killed at the cap", "python", '''
import sys
chunk = "x" * (1 << 20)
for _ in range(100):
    sys.stdout.write(chunk)
''', "output_limit"),
    Attack("stderr_flood", "the cap covers stdout + stderr", "python", '''
import sys
chunk = "y" * (1 << 20)
for _ in range(100):
    sys.stderr.write(chunk)
''', "output_limit"),
    Attack("disk_fill", "files written are capped (64 MiB tmpfs)", "python", '''
import os
written = 0
try:
    with open("big", "wb") as f:
        for _ in range(200):
            f.write(b"z" * (1 << 20))
            f.flush()
            written += 1
except OSError as error:
    print("full after", written, "MiB", type(error).__name__)
try:
    with open("/dev/shm/big", "wb") as f:
        for _ in range(200):
            f.write(b"z" * (1 << 20))
            f.flush()
except OSError as error:
    print("shm full", type(error).__name__)
''', "ok", expect=("full after", "shm full")),
    Attack("kill_parent", "killing the runner is the program's runtime_error, never a sandbox failure", "python", '''
import os, signal
os.kill(os.getppid(), signal.SIGKILL)
''', "runtime_error"),
    Attack("kill_everything", "kill(-1) reaches only the sandbox", "python", '''
import os, signal
os.kill(-1, signal.SIGKILL)
''', "runtime_error"),
    Attack("ptrace_runner", "the runner is not dumpable: no ptrace, no /proc/<runner>/mem or environ", "python",
           _TRY + '''
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def ptrace():
    if libc.ptrace(16, os.getppid(), 0, 0) != 0:  # PTRACE_ATTACH
        raise OSError(ctypes.get_errno(), "ptrace")
attempt("ptrace", ptrace)
attempt("mem", lambda: open(f"/proc/{os.getppid()}/mem", "rb").read(1))
attempt("environ", lambda: open(f"/proc/{os.getppid()}/environ", "rb").read())
attempt("fds", lambda: os.listdir(f"/proc/{os.getppid()}/fd"))
''', "ok", expect=("blocked ptrace", "blocked mem", "blocked environ", "blocked fds")),
    Attack("daemon", "a child that daemonises (setsid + double fork) does not outlive the run", "python", '''
import os, sys
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv("/bin/sleep", ["/bin/sleep", "300", "$marker"])
    os._exit(0)
print("parent done")
''', "ok", expect=("parent done",), daemon_marker=True),
    Attack("keyrings", "the kernel keyrings are out of reach (a channel between tests otherwise)", "python",
           _TRY + '''
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
numbers = {"x86_64": (248, 250), "aarch64": (217, 219)}.get(os.uname().machine, (248, 250))
def add_key():
    if libc.syscall(numbers[0], b"user", b"stash", b"data", 4, -4) < 0:  # add_key to the user keyring
        raise OSError(ctypes.get_errno(), "add_key")
def read_session():
    if libc.syscall(numbers[1], 0, -3, 0) < 0:  # keyctl(KEYCTL_GET_KEYRING_ID, session keyring)
        raise OSError(ctypes.get_errno(), "keyctl")
attempt("add_key", add_key)
attempt("keyctl", read_session)
print(open("/proc/keys").read())
''', "ok", expect=("blocked add_key", "blocked keyctl"), forbidden=("ESCAPED", "stash")),
    Attack("userns", "no nested user namespace (no new root inside)", "python", _TRY + '''
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def unshare(flag):
    if libc.unshare(flag) != 0:
        raise OSError(ctypes.get_errno(), "unshare")
attempt("unshare user", lambda: unshare(0x10000000))  # CLONE_NEWUSER
attempt("unshare mount", lambda: unshare(0x00020000))  # CLONE_NEWNS
''', "ok", expect=("blocked unshare user", "blocked unshare mount")),
)
