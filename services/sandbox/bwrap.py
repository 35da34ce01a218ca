"""The bubblewrap command line of one sandbox: namespaces, what of the host is visible, the environment.

Only what the interpreter and the compiler need is bound in, read-only (``/usr/bin``, ``/usr/lib``...;
never ``/``: the project, ``/root``, model directories and ``/etc/shadow`` do not exist inside). The writable
places are one size-capped tmpfs (the working directory and ``/tmp``) and a size-capped ``/dev/shm``, both
private to the sandbox and gone with it. bwrap itself is started with the same minimal environment as the
program, because its own process (pid 1 inside) keeps the environment it was exec'd with.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from services.sandbox import runner

# The whole environment of the sandbox (bwrap, the runner, every test): nothing of the server's.
SANDBOX_ENV: dict[str, str] = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONHASHSEED": "0",  # the same set/dict order on every run: a reward is reproducible
    "PYTHONDONTWRITEBYTECODE": "1",
}

# Read-only system directories: the dynamic loader, libc, the stdlib of /usr/bin/python3, g++ and its headers.
SYSTEM_BINDS: tuple[str, ...] = ("/usr/bin", "/usr/lib", "/usr/lib64", "/usr/libexec", "/usr/include",
                                 "/usr/share/zoneinfo")
SYSTEM_FILES: tuple[str, ...] = ("/etc/ld.so.cache", "/etc/localtime", "/etc/alternatives")
# Top-level directories that merged-/usr systems make symlinks into /usr (bound as real directories elsewhere).
TOP_DIRS: tuple[str, ...] = ("/bin", "/lib", "/lib64", "/sbin")


def default_python() -> str:
    """The sandbox's interpreter: the distribution's python3 (not the server's venv), else python3 on PATH."""
    if os.path.exists("/usr/bin/python3"):
        return "/usr/bin/python3"
    return shutil.which("python3") or "/usr/bin/python3"


@dataclass(frozen=True)
class BwrapConfig:
    """How sandboxes are built; one per ``Sandbox``."""

    bwrap: str = "bwrap"
    python: str = field(default_factory=default_python)
    compiler: tuple[str, ...] = ("g++", "-O2", "-std=c++17")
    extra_binds: tuple[str, ...] = ()  # more read-only host paths (e.g. an interpreter outside /usr)
    disable_userns: bool = True  # --disable-userns (bwrap >= 0.8): no nested user namespaces for the program

    def resolved_bwrap(self) -> str | None:
        return shutil.which(self.bwrap)


def interpreter_binds(python: str) -> tuple[str, ...]:
    """Host paths an interpreter outside the system directories needs (its binary, stdlib and libpython)."""
    real = os.path.realpath(python)
    if any(real == d or real.startswith(d + "/") for d in SYSTEM_BINDS):
        return ()
    probe = ("import json, sys, sysconfig; print(json.dumps([sys.base_prefix, sysconfig.get_paths()['stdlib'],"
             " sysconfig.get_paths()['platstdlib'], sysconfig.get_config_var('LIBDIR') or '']))")
    out = subprocess.run([real, "-S", "-c", probe], capture_output=True, text=True, timeout=30, env=SANDBOX_ENV)
    if out.returncode != 0:
        return (real,)
    _, stdlib, platstdlib, libdir = json.loads(out.stdout)
    paths = {real, stdlib, platstdlib}
    if libdir and os.path.isdir(libdir):
        paths.update(str(p) for p in Path(libdir).glob("libpython*.so*"))
    return tuple(sorted(p for p in paths if p and not any(p.startswith(d + "/") for d in SYSTEM_BINDS)))


# seccomp: the kernel keyrings are shared by every process of a uid, and a key's description stays visible in
# /proc/keys until the kernel collects it: a channel between tests, so the key syscalls fail with EPERM (as in
# Docker's default profile). Syscalls of another ABI (i386 through int 0x80, x32) are refused altogether.
_SECCOMP_ARCH = {  # machine: (AUDIT_ARCH_*, (add_key, request_key, keyctl), x32 ABI bit to refuse)
    "x86_64": (0xC000003E, (248, 249, 250), 0x40000000),
    "aarch64": (0xC00000B7, (217, 218, 219), None),
}


def seccomp_filter(machine: str | None = None) -> bytes | None:
    """The classic-BPF program bwrap loads with ``--seccomp`` (None on an architecture it does not know)."""
    spec = _SECCOMP_ARCH.get(machine or os.uname().machine)
    if spec is None:
        return None
    arch, denied, x32 = spec
    ld_abs, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_JMP|JGE|K, BPF_RET|K
    checks = len(denied) + (x32 is not None)
    deny = 3 + checks + 1  # index of the EPERM return; the ALLOW return is just before it
    program = [(ld_abs, 0, 0, 4), (jeq, 0, deny - 2, arch), (ld_abs, 0, 0, 0)]  # arch, then syscall number
    if x32 is not None:
        program.append((jge, deny - len(program) - 1, 0, x32))
    for number in denied:
        program.append((jeq, deny - len(program) - 1, 0, number))
    program += [(ret, 0, 0, 0x7FFF0000), (ret, 0, 0, 0x00050000 | errno.EPERM)]  # ALLOW, ERRNO(EPERM)
    return b"".join(struct.pack("=HBBI", *instruction) for instruction in program)


def runner_argv(config: BwrapConfig, control_fd: int, code: bytes | None) -> list[str]:
    """The warm runner, talking to the server on ``control_fd``: from its bytecode (sent first on the socket)
    when the interpreter compiled it, else from source."""
    if code is None:
        return [config.python, "-c", _runner_source(), str(control_fd)]
    return [config.python, "-c", runner.BOOTSTRAP, str(control_fd), str(len(code))]


def runner_bytecode(python: str) -> bytes | None:
    """The runner compiled once by the sandbox's own interpreter (marshal is per interpreter version)."""
    compile_it = ("import marshal, sys\n"
                  "sys.stdout.buffer.write(marshal.dumps(compile(sys.stdin.read(), '<sandbox-runner>', 'exec')))\n")
    try:
        done = subprocess.run([python, "-I", "-S", "-c", compile_it], input=_runner_source().encode(),
                              capture_output=True, timeout=60, env=SANDBOX_ENV)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 and done.stdout else None


def command(config: BwrapConfig, bwrap: str, program: list[str], files_bytes: int,
            extra: tuple[str, ...] = (), seccomp_fd: int | None = None) -> list[str]:
    """bwrap's argv for one sandbox running ``program`` (the runner, or in benchmarks a bare interpreter);
    ``seccomp_fd`` reads ``seccomp_filter()``."""
    argv = [bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session",
            "--cap-drop", "ALL", "--hostname", "sandbox", "--clearenv"]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    if config.disable_userns:
        argv.append("--disable-userns")
    for name, value in SANDBOX_ENV.items():
        argv += ["--setenv", name, value]
    for path in SYSTEM_BINDS:
        argv += ["--ro-bind-try", path, path]
    for path in (*SYSTEM_FILES, *extra, *config.extra_binds):
        argv += ["--ro-bind-try", path, path]
    for top in TOP_DIRS:
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    size = str(files_bytes)
    argv += ["--proc", "/proc", "--dev", "/dev",
             "--size", size, "--tmpfs", runner.SHMDIR, "--mqueue", runner.MQUEUEDIR, "--remount-ro", "/dev",
             "--size", size, "--tmpfs", runner.BOX, "--dir", runner.WORKDIR, "--dir", runner.TMPDIR,
             "--symlink", runner.TMPDIR, "/tmp",
             "--chdir", runner.WORKDIR, "--remount-ro", "/", *program]
    return argv


_SOURCE: str | None = None


def _runner_source() -> str:
    global _SOURCE
    if _SOURCE is None:
        _SOURCE = Path(runner.__file__).read_text()
    return _SOURCE
