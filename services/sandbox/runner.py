"""The warm runner inside one sandbox: prepares one program, then forks one child per test.

This file runs inside the sandbox on the sandbox's own interpreter, so it imports only cheap standard modules
(C modules, nothing that pulls in ``re`` or ``json``: its start-up is paid once per sample) and nothing of the
server. The server imports it too, for the framing (``pack``/``unpack_header``) and the paths, so both ends
speak one protocol. The server sends it as compiled bytecode (``BOOTSTRAP``): no source to parse per sandbox.

A session costs one sandbox: the runner starts once, receives the program (``setup``: a Python syntax check,
or a C++ compile), then runs each test in a fresh child process: a fork of the runner for Python (no
interpreter start-up; the program runs as ``python3 main.py`` would, with the standard modules it imports
already loaded), a fork + exec of the compiled binary for C++. After every test every other process of the
sandbox's PID namespace is killed and the private directories are put back as they were, so tests never see
each other.

Wire: each message is ``!I`` header length, a header (a dict as a Python literal), then the header's ``blobs``
(byte lengths) as raw bytes back to back. The runner talks on the control socket only (never on fds 0/1/2,
which the tests own).
"""

import atexit
import builtins
import gc
import io
import os
import resource
import select
import signal
import struct
import sys
import time

BOX = "/box"  # the session's private tmpfs (size-capped): the working dir and /tmp live in it
WORKDIR = BOX + "/work"
TMPDIR = BOX + "/tmp"
SHMDIR = "/dev/shm"
MQUEUEDIR = "/dev/mqueue"  # the IPC namespace's POSIX message queues, mounted so the reset can remove them
SCRATCH = (WORKDIR, TMPDIR, SHMDIR, MQUEUEDIR)  # what a test may write; reset after each test
MAIN = {"python": "main.py", "cpp": "main.cpp"}
CPP_BINARY = TMPDIR + "/main"
EXTRA_PROCESSES = 2  # bwrap's init (pid 1) and this runner share the sandbox's process count with the program
COMPILE_MEMORY_MB = 4096  # g++'s address space: cc1plus maps far more than it touches
OPEN_FILES = 1024  # per process, as a login shell's default: 64 processes cannot pin the kernel's memory
# Standard modules a Python program's child finds already imported when the program imports them: the runner
# imports them once at setup (a fresh python3 pays ~1-20 ms for each on every test). Only these: each is
# deterministic and silent at import (never `this`, `antigravity`, nor the program's own modules), and `random`
# re-seeds itself in every forked child.
PRELOADABLE = frozenset((
    "abc", "array", "bisect", "cmath", "collections", "contextlib", "copy", "dataclasses", "datetime", "decimal",
    "enum", "fractions", "functools", "heapq", "io", "itertools", "json", "math", "numbers", "operator",
    "pprint", "queue", "random", "re", "statistics", "string", "struct", "textwrap", "threading", "time",
    "traceback", "types", "typing", "unicodedata"))
_HEADER = struct.Struct("!I")


# ------------------------------------------------------------------------------------------------
# Framing (shared with the server)


def pack(header, blobs=()):
    """One message: the header (with the blobs' lengths) then the blobs."""
    header = dict(header, blobs=[len(b) for b in blobs])
    head = repr(header).encode("utf-8", "surrogatepass")
    return b"".join([_HEADER.pack(len(head)), head, *blobs])


def unpack_header(head):
    """The server's reading of a runner's header: literals only (ast.literal_eval), never code."""
    import ast

    return ast.literal_eval(head.decode("utf-8", "surrogatepass"))


# Runs the runner from its bytecode, read from the control socket (fd argv[1], argv[2] bytes): ``python3 -c``.
BOOTSTRAP = ("import marshal, os, sys\n"
             "fd, n = int(sys.argv[1]), int(sys.argv[2])\n"
             "code = b''\n"
             "while len(code) < n:\n"
             "    chunk = os.read(fd, n - len(code))\n"
             "    if not chunk:\n"
             "        raise SystemExit('runner: the server closed the control socket')\n"
             "    code += chunk\n"
             "exec(marshal.loads(code), {'__name__': '__main__', '__builtins__': __builtins__})\n")


class _Suppress:
    """contextlib.suppress without importing contextlib (and what it imports)."""

    def __init__(self, *kinds):
        self.kinds = kinds

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        return kind is not None and issubclass(kind, self.kinds)


def _read_exactly(fd, n):
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _recv(fd):
    size = _read_exactly(fd, _HEADER.size)
    if size is None:
        return None
    head = _read_exactly(fd, _HEADER.unpack(size)[0])
    if head is None:
        return None
    header = eval(head.decode("utf-8", "surrogatepass"), {"__builtins__": {}})  # the server's own literal
    blobs = []
    for n in header["blobs"]:
        blob = _read_exactly(fd, n) if n else b""
        if blob is None:
            return None
        blobs.append(blob)
    return header, blobs


def _send(fd, header, blobs=()):
    view = memoryview(pack(header, blobs))
    while view:
        view = view[os.write(fd, view):]


# ------------------------------------------------------------------------------------------------
# Process control


_LIBC = []


def _libc():
    if not _LIBC:
        import ctypes

        _LIBC.append(ctypes.CDLL(None, use_errno=True))
    return _LIBC[0]


def _set_dumpable(flag):
    """PR_SET_DUMPABLE: a non-dumpable runner cannot be ptraced nor its /proc files read by the program."""
    if _libc().prctl(4, int(flag), 0, 0, 0) != 0:
        raise OSError("prctl(PR_SET_DUMPABLE) failed")


def _clear_kernel_state():
    """What a test may leave in the kernel rather than in files: SysV IPC objects (keyrings are out of reach:
    the sandbox's seccomp filter refuses the key syscalls)."""
    libc = _libc()
    for kind, remove in (("shm", lambda i: libc.shmctl(i, 0, None)), ("sem", lambda i: libc.semctl(i, 0, 0)),
                         ("msg", lambda i: libc.msgctl(i, 0, None))):  # IPC_RMID
        try:
            with open("/proc/sysvipc/" + kind) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            remove(int(row.split()[1]))


def _others():
    """Every process of the sandbox's PID namespace but bwrap's init and this runner."""
    me = os.getpid()
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]


def _kill_others():
    """SIGKILL every other process (setsid or double fork cannot escape the namespace); wait until gone."""
    deadline = time.monotonic() + 5.0
    while True:
        pids = _others()
        if not pids:
            return
        for pid in pids:  # the runner's child is reaped already; orphans go to bwrap's init, which reaps them
            with _Suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {pids} survive SIGKILL")
        time.sleep(0.0005)


def _limit(kind, soft, hard=None):
    resource.setrlimit(kind, (soft, soft if hard is None else hard))


def _apply_limits(lim, memory_mb):
    cpu = max(1, int(-(-lim["cpu_s"] // 1)))  # whole seconds, rounded up; the fraction is checked after
    _limit(resource.RLIMIT_CPU, cpu, cpu + 1)
    memory = memory_mb * 1024 * 1024
    _limit(resource.RLIMIT_AS, memory)
    stack_hard = resource.getrlimit(resource.RLIMIT_STACK)[1]
    _limit(resource.RLIMIT_STACK, min(memory, stack_hard), stack_hard)
    _limit(resource.RLIMIT_NPROC, lim["processes"] + EXTRA_PROCESSES)
    _limit(resource.RLIMIT_NOFILE, min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], OPEN_FILES))
    _limit(resource.RLIMIT_CORE, 0)


def _child_fds(stdin_fd, out_w, err_w, keep=()):
    """The test's stdin on 0, the output pipes on 1 and 2, and nothing else of the runner's."""
    os.dup2(stdin_fd, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 16)


def _supervise(pid, out_r, err_r, lim, started):
    """Read stdout/stderr under the cap until the child exits or the wall time runs out; kill the rest."""
    deadline = started + lim["wall_s"]
    cap = lim["output_bytes"]
    data = {out_r: bytearray(), err_r: bytearray()}
    poller = select.poll()
    for fd in data:
        poller.register(fd, select.POLLIN)
    try:
        pidfd = os.pidfd_open(pid)
        poller.register(pidfd, select.POLLIN)
    except (AttributeError, OSError):  # kernels before 5.3: poll the child's state instead
        pidfd = None
    status = rusage = None
    verdict = None
    total = 0
    while status is None:
        left = deadline - time.monotonic()
        if left <= 0:
            verdict = "timeout"
            break
        events = poller.poll(min(left, 0.01 if pidfd is None else left) * 1000 + 1)
        for fd, _ in events:
            if fd == pidfd:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                poller.unregister(fd)
                continue
            room = cap - total
            data[fd] += chunk[:room]
            total += len(chunk)
            if total > cap:
                verdict = "output_limit"
                break
        if verdict:
            break
        got, st, ru = os.wait4(pid, os.WNOHANG)
        if got:
            status, rusage = st, ru
    elapsed = time.monotonic() - started
    if pidfd is not None:
        os.close(pidfd)
    if status is None:  # killed by the runner: the whole tree goes, then the child is reaped
        for other in _others():
            with _Suppress(ProcessLookupError):
                os.kill(other, signal.SIGKILL)
        _, status, rusage = os.wait4(pid, 0)
    # What the child (and anything it left behind) wrote before it ended is in the pipes: read it, bounded.
    for fd in (out_r, err_r):
        os.set_blocking(fd, False)
    _kill_others()
    for fd in (out_r, err_r):
        while total <= cap:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            data[fd] += chunk[: cap - total]
            total += len(chunk)
        os.close(fd)
    if total > cap and verdict is None:
        verdict = "output_limit"
    return verdict, status, rusage, elapsed, bytes(data[out_r]), bytes(data[err_r])


def _classify(verdict, status, rusage, lim, stderr, memory_flag):
    """A run's status and return code (negative: the signal that ended it; None: killed at a time limit)."""
    cpu = rusage.ru_utime + rusage.ru_stime
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    if verdict == "output_limit":
        return verdict, code
    if verdict == "timeout" or code == -signal.SIGXCPU or cpu >= lim["cpu_s"]:
        return "timeout", None
    if memory_flag or _out_of_memory(code, stderr, rusage.ru_maxrss * 1024, lim["memory_mb"] << 20):
        return "memory_limit", code
    return ("ok" if code == 0 else "runtime_error"), code


def _out_of_memory(code, stderr, peak, limit):
    """A crash the memory limit caused: C++'s bad_alloc, a fatal MemoryError, or the kernel's OOM killer (a
    SIGKILL the runner did not send, those are verdicts, to a process that held much of its allowance)."""
    tail = stderr[-4096:]
    if code == -signal.SIGABRT and (b"std::bad_alloc" in tail or b"MemoryError" in tail):
        return True
    return code == -signal.SIGKILL and peak >= limit // 2


# ------------------------------------------------------------------------------------------------
# The program's process


def _python_child(state, st_w):
    """Run the program as `python3 main.py` would, in this forked interpreter: never returns."""
    def stream(fd, mode, like, name):
        raw = io.FileIO(fd, mode, closefd=False)
        raw.name = name
        buffered = io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
        text = io.TextIOWrapper(buffered, encoding=like.encoding, errors=like.errors, newline="\n",
                                line_buffering=like.line_buffering, write_through=like.write_through)
        text.mode = mode
        return text

    sys.stdin = sys.__stdin__ = stream(0, "r", state["stdio"][0], "<stdin>")
    sys.stdout = sys.__stdout__ = stream(1, "w", state["stdio"][1], "<stdout>")
    sys.stderr = sys.__stderr__ = stream(2, "w", state["stdio"][2], "<stderr>")
    path = WORKDIR + "/" + MAIN["python"]
    sys.argv = [path]
    sys.path[0] = WORKDIR
    main = type(sys)("__main__")
    main.__dict__.update(__file__=path, __cached__=None, __builtins__=builtins, __spec__=None)
    sys.modules["__main__"] = main
    atexit._clear()
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    sys.setrecursionlimit(sys.getrecursionlimit() + depth)  # the runner's frames are not the program's
    code = 0
    try:
        exec(state["code"], main.__dict__)
    except SystemExit as exit_:
        code = _exit_code(exit_)
    except BaseException as error:
        if _is_memory_error(error):
            os.write(st_w, b"m")
        if error.__traceback__ is not None:  # the traceback starts at the program, not at this runner
            error.__traceback__ = error.__traceback__.tb_next
        sys.excepthook(type(error), error, error.__traceback__)
        code = -signal.SIGINT if isinstance(error, KeyboardInterrupt) else 1
    code = _finalize(code, main)
    if code == -signal.SIGINT:  # python3 ends an uncaught KeyboardInterrupt by SIGINT, as the shell expects
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


def _exit_code(exit_):
    code = exit_.code
    if code is None:
        return 0
    if isinstance(code, int):
        return (code if -(2**63) <= code < 2**63 else -1) & 0xFF  # a C long, as exit() takes it
    with _Suppress(BaseException):
        if sys.stderr is not None:
            sys.stderr.write(str(code) + "\n")
    return 1


def _is_memory_error(error):
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, MemoryError):
            return True
        error, seen = error.__context__, seen + 1
    return False


def _finalize(code, main):
    """Interpreter shutdown, as Py_FinalizeEx does it: threads, atexit, flush, the module's objects, flush."""
    threading = sys.modules.get("threading")
    with _Suppress(BaseException):
        if threading is not None:
            threading._shutdown()
    with _Suppress(BaseException):
        atexit._run_exitfuncs()
    code = _flush(code)
    with _Suppress(BaseException):
        main.__dict__.clear()
        gc.collect()  # files the program left open are closed (and flushed) as at interpreter exit
    return _flush(code)


def _flush(code):
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name, None)
        if stream is None:
            continue
        try:
            stream.flush()
        except BaseException:
            if name == "stdout" and code == 0:
                code = 120  # what python3 exits with when stdout cannot be flushed
    return code


def _exec_child(argv, binary_fd, env):
    """exec the program (or the compiler); only reached in the child after fork."""
    if binary_fd is not None:
        os.execve(binary_fd, argv, env)
    os.execvpe(argv[0], argv, env)


# ------------------------------------------------------------------------------------------------
# Commands


def _run(state, stdin, lim, argv=None, memory_mb=None):
    """One process with this stdin under the limits: (status, return code, stdout, stderr, seconds)."""
    memory_mb = memory_mb or lim["memory_mb"]
    stdin_fd = os.memfd_create("stdin", os.MFD_CLOEXEC)
    os.write(stdin_fd, stdin)
    os.lseek(stdin_fd, 0, os.SEEK_SET)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    st_r, st_w = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            binary_fd = state.get("binary_fd") if argv is None else None
            keep = [st_w] + ([binary_fd] if binary_fd is not None else [])
            _child_fds(stdin_fd, out_w, err_w, keep)
            _apply_limits(lim, memory_mb)
            _set_dumpable(True)
            if argv is None and state["language"] == "python":
                _python_child(state, st_w)
            _exec_child(argv or ["./main"], binary_fd, dict(os.environ))
        except BaseException as error:  # the program never ran: tell the runner through the exit status
            try:
                os.write(2, f"sandbox runner: cannot start the program: {error!r}\n".encode())
            finally:
                os._exit(126)
    for fd in (stdin_fd, out_w, err_w, st_w):
        os.close(fd)
    verdict, status, rusage, elapsed, out, err = _supervise(pid, out_r, err_r, lim, started)
    os.set_blocking(st_r, False)
    try:
        memory_flag = bool(os.read(st_r, 1))
    except BlockingIOError:
        memory_flag = False
    os.close(st_r)
    run_status, code = _classify(verdict, status, rusage, lim, err, memory_flag)
    return run_status, code, out, err, elapsed


def _write_files(files):
    for name, content in files:
        path = os.path.join(WORKDIR, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content)


def _snapshot():
    """What the scratch directories hold now: every entry's inode, mode and change time (which no program can
    set back: restoring a file's mtime still moves its ctime)."""
    found = []
    for top in SCRATCH:
        st = os.lstat(top)
        found.append((top, st.st_ino, st.st_mode, st.st_ctime_ns))
        for root, dirs, names in os.walk(top):
            for name in dirs + names:
                path = os.path.join(root, name)
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue
                found.append((path, st.st_ino, st.st_mode, st.st_ctime_ns))
    return sorted(found)


def _wipe(top):
    """Remove everything under ``top`` (the program may have made a directory unreadable: undo that first)."""
    os.chmod(top, 0o755)
    for name in os.listdir(top):
        path = os.path.join(top, name)
        if os.path.isdir(path) and not os.path.islink(path):
            _wipe(path)
            os.rmdir(path)
        else:
            os.unlink(path)


def _reset(state):
    """Put the scratch directories back as they were after setup, if the test changed anything."""
    if _snapshot() == state["snapshot"]:
        return
    for top in SCRATCH:
        _wipe(top)
    _write_files(state["files"])
    state["snapshot"] = _snapshot()


def _format_compile_error(error):
    """The error as python3 main.py prints it: the interpreter's own display, not the traceback module's."""
    saved, sys.stderr = sys.stderr, io.StringIO()
    try:
        sys.__excepthook__(type(error), error.with_traceback(None), None)
        return sys.stderr.getvalue()
    finally:
        sys.stderr = saved


def _setup(state, header, blobs):
    language = header["language"]
    names = header["files"]
    files = list(zip(names, blobs))  # noqa: B905 - the runner stays runnable on python3 < 3.10
    state.update(language=language, files=files)
    _write_files(files)
    main = MAIN[language]
    source = dict(files)[main]
    reply = {"op": "setup", "status": "ok"}
    if language == "python":
        try:
            state["code"] = compile(source, WORKDIR + "/" + main, "exec", dont_inherit=True)
        except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as error:
            reply.update(status="compile_error", return_code=1, time=0.0)
            return reply, [b"", _format_compile_error(error).encode()]
        _preload(source)
        gc.freeze()  # the runner's objects stay out of every child's collections (and its pages stay shared)
    else:
        lim = header["limits"]
        compile_lim = dict(lim, wall_s=lim["compile_s"], cpu_s=lim["compile_s"])
        argv = [*header["compiler"], main, "-o", CPP_BINARY]
        status, code, out, err, elapsed = _run(state, b"", compile_lim, argv=argv, memory_mb=COMPILE_MEMORY_MB)
        reply.update(return_code=code, time=elapsed)
        if status != "ok":
            reply["status"] = "compile_error"
        else:
            state["binary_fd"] = _sealed_copy(CPP_BINARY)
        _reset_all(state)
        return reply, [out, err]  # the compiler's own output, warnings included
    _reset_all(state)
    return reply, []


def _reset_all(state):
    for top in SCRATCH:
        _wipe(top)
    _write_files(state["files"])
    state["snapshot"] = _snapshot()


def _sealed_copy(path):
    """The compiled binary in a sealed memfd, held read-only: no test can change what the next one runs."""
    import fcntl

    fd = os.memfd_create("main", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    with open(path, "rb") as f:
        data = f.read()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
    # exec refuses a file open for writing: reopen it read-only (through /proc, dumpable for that moment only:
    # no program runs during setup).
    _set_dumpable(True)
    try:
        ro = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        _set_dumpable(False)
    os.close(fd)
    return ro


def _run_test(state, header, blobs):
    lim = header["limits"]
    status, code, out, err, elapsed = _run(state, blobs[0], lim)
    fetched = _fetch(header.get("fetch", ()), lim["output_bytes"])
    _reset(state)
    _clear_kernel_state()
    reply = {"op": "run", "status": status, "return_code": code, "time": elapsed,
             "fetched": [name for name, _ in fetched]}
    return reply, [out, err, *[content for _, content in fetched]]


def _fetch(names, cap):
    """Files the caller asked back (SandboxFusion's ``fetch_files``), read before the reset; missing ones skipped."""
    found, total = [], 0
    for name in names:
        path = os.path.realpath(os.path.join(WORKDIR, name))
        if not path.startswith(BOX + "/") or not os.path.isfile(path):  # no FIFO, device or /proc file
            continue
        try:
            with open(path, "rb") as f:
                content = f.read(cap - total + 1)
        except OSError:
            continue
        total += len(content)
        if total > cap:
            break
        found.append((name, content))
    return found


def _preload(source):
    """Import the pre-loadable standard modules the program imports (read from its import statements)."""
    import importlib

    found = set()
    for line in source.splitlines():
        words = line.replace(b",", b" ").replace(b";", b" ; ").split()
        if len(words) > 1 and words[0] in (b"import", b"from"):
            names = words[1:2] if words[0] == b"from" else [w for w in words[1:] if w != b"as"]
            found.update(name.split(b".")[0].decode("ascii", "replace") for name in names)
    for name in sorted(found & PRELOADABLE):
        with _Suppress(ImportError):
            importlib.import_module(name)


def main():
    control = int(sys.argv[1])
    # The kernel's OOM killer takes sandboxed processes first (limits are per process: 64 of them together can
    # still press the host), never the server. Raising one's own score needs no privilege.
    with _Suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")
    _set_dumpable(False)
    os.chdir(WORKDIR)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    state = {"stdio": (sys.__stdin__, sys.__stdout__, sys.__stderr__)}
    _send(control, {"op": "ready", "python": sys.version.split()[0]})
    handlers = {"setup": _setup, "run": _run_test}
    while True:
        message = _recv(control)
        if message is None:  # the server closed the session
            os._exit(0)
        header, blobs = message
        try:
            reply, out = handlers[header["op"]](state, header, blobs)
        except Exception as error:
            import traceback

            told = traceback.format_exception(type(error), error, error.__traceback__)
            _send(control, {"op": "error", "message": "".join(told)[-4000:]})
            os._exit(1)
        _send(control, reply, out)


if __name__ == "__main__":
    main()
