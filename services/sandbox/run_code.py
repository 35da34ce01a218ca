"""SandboxFusion's ``/run_code`` on the sandbox: a ``RunCodeRequest`` becomes one session with one run, and the
outcome comes back as SandboxFusion answers it (``RunCodeResponse``), so its clients (verl's ``sandbox_fusion``
reward) work unchanged.

SandboxFusion's rules, as its source applies them: Python has no compile step (a SyntaxError is the run's
exit 1); C++ reports the compiler's run and runs the program only when that exited 0; a run killed at its time
limit is ``TimeLimitExceeded`` with no return code; ``status`` is ``Success`` when every command finished with
0, ``Failed`` on a non-zero exit or a time limit, ``SandboxError`` when the sandbox itself failed.
"""

from __future__ import annotations

import base64
import binascii
import os
import posixpath
from dataclasses import dataclass

from services.sandbox.runner import MAIN
from services.sandbox.session import Language, Limits, RawRun, SandboxFailure
from trainer_client.protocol import CommandRunResult, RunCodeRequest, RunCodeResponse

LANGUAGES: dict[str, Language] = {"python": "python", "cpp": "cpp"}


@dataclass(frozen=True)
class RunCodeMaxima:
    """What a server accepts at most; a request past one is refused with a message naming the field."""

    run_timeout_s: float = 60.0
    compile_timeout_s: float = 60.0
    memory_mb: int = 4096
    code_bytes: int = 1 << 20
    stdin_bytes: int = 64 << 20
    files_bytes: int = 64 << 20  # decoded, all files together (they land in the 64 MiB private tmpfs)


class RunCodeInvalid(ValueError):
    """A request this server refuses (400); ``field`` names the request field at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def validate(request: RunCodeRequest, maxima: RunCodeMaxima,
             languages: tuple[str, ...] = ("python", "cpp")) -> dict[str, bytes]:
    """Refuse what this server will not run, naming the field (RunCodeInvalid); else the decoded ``files``."""
    if request.language not in LANGUAGES or LANGUAGES[request.language] not in languages:
        raise RunCodeInvalid("language", f"language {request.language!r} is not supported by this server "
                                         f"(supported: {', '.join(languages)})")
    for field, value, most in (("run_timeout", request.run_timeout, maxima.run_timeout_s),
                               ("compile_timeout", request.compile_timeout, maxima.compile_timeout_s)):
        if not value > 0:
            raise RunCodeInvalid(field, f"{field} must be positive (seconds), got {value:g}")
        if value > most:
            raise RunCodeInvalid(field, f"{field} {value:g}s is above this server's maximum of {most:g}s")
    if request.memory_limit_MB > maxima.memory_mb:
        raise RunCodeInvalid("memory_limit_MB", f"memory_limit_MB {request.memory_limit_MB} is above this "
                                                f"server's maximum of {maxima.memory_mb}")
    if len(request.code.encode("utf-8", "surrogatepass")) > maxima.code_bytes:
        raise RunCodeInvalid("code", f"code is larger than this server's maximum of {maxima.code_bytes} bytes")
    if request.stdin is not None and len(request.stdin.encode("utf-8", "surrogatepass")) > maxima.stdin_bytes:
        raise RunCodeInvalid("stdin", f"stdin is larger than this server's maximum of {maxima.stdin_bytes} bytes")
    files = decode_files(request, LANGUAGES[request.language])
    if sum(len(content) for content in files.values()) > maxima.files_bytes:
        raise RunCodeInvalid("files", f"files hold more than this server's maximum of {maxima.files_bytes} bytes")
    for name in request.fetch_files:
        _check_path("fetch_files", name)
    return files


def decode_files(request: RunCodeRequest, language: Language) -> dict[str, bytes]:
    """``files`` as bytes by relative path; SandboxFusion skips null contents and names with IGNORE_THIS_FILE."""
    files = {}
    for name, content in request.files.items():
        if content is None or "IGNORE_THIS_FILE" in name:
            continue
        path = _check_path("files", name)
        if path == MAIN[language]:
            raise RunCodeInvalid("files", f"files: {name!r} is the name of the program's own file")
        try:
            files[path] = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise RunCodeInvalid("files", f"files: the content of {name!r} is not valid base64") from None
    return files


def _check_path(field: str, name: str) -> str:
    path = posixpath.normpath(name)
    if not name or name.startswith("/") or path == "." or path.startswith("../") or path == ".." or "\0" in name:
        raise RunCodeInvalid(field, f"{field}: {name!r} must be a relative path inside the working directory")
    return path


def request_limits(request: RunCodeRequest, defaults: Limits) -> Limits:
    """The request's limits over the server's defaults (memory_limit_MB <= 0: the default)."""
    memory = request.memory_limit_MB if request.memory_limit_MB > 0 else defaults.memory_mb
    return defaults.with_(wall_s=float(request.run_timeout), cpu_s=None, memory_mb=memory,
                          compile_s=float(request.compile_timeout))


def _result(raw: RawRun) -> CommandRunResult:
    if raw.status == "timeout" or (raw.status == "compile_error" and raw.return_code is None):
        return CommandRunResult(status="TimeLimitExceeded", execution_time=raw.execution_time, return_code=None,
                                stdout=raw.stdout, stderr=raw.stderr)
    return CommandRunResult(status="Finished", execution_time=raw.execution_time, return_code=raw.return_code,
                            stdout=raw.stdout, stderr=raw.stderr)


def _status(*results: CommandRunResult | None) -> str:
    done = [r for r in results if r is not None]
    if any(r.status == "TimeLimitExceeded" or r.return_code != 0 for r in done):
        return "Failed"
    return "Success"


def pod_name() -> str | None:
    """Which replica answered (SandboxFusion reads MY_POD_NAME; Kubernetes sets HOSTNAME to the pod's name)."""
    return os.environ.get("MY_POD_NAME") or os.environ.get("HOSTNAME")


async def run_code(factory, request: RunCodeRequest, *, defaults: Limits | None = None,
                   maxima: RunCodeMaxima | None = None) -> RunCodeResponse:
    """Run one /run_code request on ``factory`` (a ``Sandbox``).

    Raises RunCodeInvalid (400, naming the field) and SandboxBusy (503 + Retry-After); a failure of the sandbox
    itself is the response's ``SandboxError``, as SandboxFusion reports it."""
    files = validate(request, maxima or RunCodeMaxima(), getattr(factory, "languages", ("python", "cpp")))
    language = LANGUAGES[request.language]
    limits = request_limits(request, defaults or Limits())
    try:
        async with factory.open(language, request.code, limits, files=files) as session:
            failed = await session.prepare()
            compiled = getattr(session, "compile_result", None)
            if failed is not None and language == "python":  # SandboxFusion: the SyntaxError is the run's exit 1
                run = _result(failed)
                return RunCodeResponse(status=_status(run), message="", run_result=run, executor_pod_name=pod_name())
            compile_result = _result(compiled) if compiled is not None else None
            if failed is not None:
                return RunCodeResponse(status="Failed", message="", compile_result=compile_result,
                                       executor_pod_name=pod_name())
            raw, fetched = await session.run_with_files(request.stdin or "", fetch=tuple(request.fetch_files))
    except SandboxFailure as error:
        return RunCodeResponse(status="SandboxError", message=str(error), executor_pod_name=pod_name())
    run = _result(raw)
    return RunCodeResponse(status=_status(compile_result, run), message="", compile_result=compile_result,
                           run_result=run, executor_pod_name=pod_name(),
                           files={name: base64.b64encode(data).decode() for name, data in fetched.items()})
