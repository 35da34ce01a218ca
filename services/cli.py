"""The ``genrm`` command: serve a GenRM model, run the router, start a local stack, make a tiny model.

Every setting of ``serve`` and ``route`` is a flag, a ``GENRM_SERVER_*`` / ``GENRM_ROUTER_*``
environment variable, or a key of the ``server:`` / ``router:`` section of a YAML file (``--config``),
in that order of precedence.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

try:
    from common.settings_io import SettingsError, add_settings_arguments, overrides_from_args
except ModuleNotFoundError as _missing:  # the client-only install (pip install genrm-platform): `genrm score` only
    _MISSING: ModuleNotFoundError | None = _missing
else:
    _MISSING = None

EPILOG = """examples:
  genrm up --replicas 2                       # tiny model, 2 servers + router on loopback
  genrm up --replicas 4 --model /models/FAPO-GenRM-4B --port 9000
  genrm serve --model ./tiny --port 8001
  genrm serve --engine openai --upstream-url http://127.0.0.1:8000/v1
  genrm route --workers http://127.0.0.1:8001 http://127.0.0.1:8002 --port 9000
  genrm demo                                  # start a stack, score a demo batch of rewards, print a table
  genrm score samples.jsonl -o scored.jsonl --url http://127.0.0.1:9000 --recipe math
"""


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", default=os.environ.get("GENRM_CONFIG"),
                   help="YAML file with `server:` / `router:` sections (env: GENRM_CONFIG).")


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from common.listen import bind_listener
    from services.genrm_server.engines.registry import ENGINES
    from services.genrm_server.settings import ServerSettings

    settings = ServerSettings.load(args.config, **overrides_from_args(args, ServerSettings))
    if "model" in ENGINES[settings.engine].needs:
        _check_model(settings.model or "", "--model, GENRM_SERVER_MODEL")
    if settings.sandbox_isolation != "off":
        _check_sandbox(settings)
    sock = bind_listener(settings.host, settings.port, env="GENRM_SERVER_PORT")  # before the model loads
    _setup_logging(settings.log_level)
    from services.genrm_server.app import create_app
    from services.genrm_server.shutdown import GracefulServer

    app = create_app(settings)
    host, port = sock.getsockname()[:2]
    scheme = "https" if settings.ssl_certfile else "http"
    app.state.url = f"{scheme}://{host}:{port}"  # logged once the engine is ready (port 0: the one chosen)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            access_log=settings.log_level == "debug",
                            timeout_graceful_shutdown=settings.shutdown_timeout_s,
                            ssl_certfile=settings.ssl_certfile, ssl_keyfile=settings.ssl_keyfile)
    server = GracefulServer(config, delay_s=settings.shutdown_delay_s, on_draining=app.state.begin_draining,
                            serving=lambda: app.state.engine.ready)
    server.run(sockets=[sock])  # re-raises a stop signal once stopped: Ctrl-C exits 130
    return 0


def _check_sandbox(settings: object) -> None:
    """Start one sandbox now: a server whose sandbox cannot work stops here, in one line naming the setting."""
    import asyncio

    from services.genrm_server.code_api import create_sandbox
    from services.sandbox.session import SandboxFailure

    async def check() -> None:
        sandbox = create_sandbox(settings)  # type: ignore[arg-type]
        try:
            await sandbox.check()
        finally:
            await sandbox.aclose()

    try:
        asyncio.run(check())
    except SandboxFailure as exc:
        raise SettingsError(f"invalid setting 'code_sandbox' (--code-sandbox, GENRM_SERVER_CODE_SANDBOX): the "
                            f"sandbox does not work here: {exc}. (--code-sandbox none runs programs unsandboxed: "
                            "trusted code only)") from None


def cmd_route(args: argparse.Namespace) -> int:
    from common.listen import bind_listener
    from router.server import run
    from router.settings import RouterSettings

    settings = RouterSettings.load(args.config, **overrides_from_args(args, RouterSettings))
    if not settings.workers and not settings.discovery_dns:
        raise SettingsError("invalid setting 'workers' (--workers, GENRM_ROUTER_WORKERS): at least one worker URL "
                            "or a DNS name to discover them (--discovery-dns)")
    sock = bind_listener(settings.host, settings.port, env="GENRM_ROUTER_PORT")
    _setup_logging(settings.log_level)
    return run(settings, sock)


def cmd_up(args: argparse.Namespace) -> int:
    from common.listen import check_port_free
    from services.genrm_server.engines.registry import ENGINES
    from services.local_stack import LocalStack, StackError, run_forever

    if args.replicas < 1 and args.sandbox_replicas < 1:
        raise SettingsError("invalid setting 'replicas' (--replicas): at least 1 server (or --sandbox-replicas >= 1 "
                            f"for a code-only stack), got {args.replicas}")
    # What the children will see (flag > env > --config): read here, so a bad file or setting stops `up` in one
    # line, and a model or port set in the file or the environment is the one used.
    server, router = _configured(args.config, "server"), _configured(args.config, "router")
    engine = args.engine or server.get("engine") or "transformers"
    if engine not in ENGINES:
        raise SettingsError(f"invalid setting 'engine': unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    model = args.model or server.get("model")
    needs_model = "model" in ENGINES[engine].needs and args.replicas > 0
    if needs_model and model is not None:
        _check_model(str(model), "--model, GENRM_SERVER_MODEL, server.model")
    if "upstream_url" in ENGINES[engine].needs and not (args.upstream_url or server.get("upstream_url")):
        raise SettingsError(f"invalid setting 'upstream_url' (--upstream-url): engine {engine!r} needs the "
                            "upstream's base URL, e.g. http://127.0.0.1:8000/v1")
    if args.recipe is not None:
        _check_recipe(args.recipe, server.get("recipes_file"))
    try:
        port = args.port if args.port is not None else int(router.get("port", 9000))
    except ValueError:
        raise SettingsError(f"invalid setting 'port' (GENRM_ROUTER_PORT, router.port): not a port number: "
                            f"{router['port']!r}") from None
    if port:
        check_port_free(args.host, port)
    _setup_logging(args.log_level)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the readiness polls are not news
    server_args = ["--engine", args.engine] if args.engine else []
    if args.upstream_url:
        server_args += ["--upstream-url", args.upstream_url]
    if args.recipe:
        server_args += ["--recipe", args.recipe]
    stack = LocalStack(
        args.replicas, model if needs_model else None, host=args.host, router_port=port, config_file=args.config,
        server_args=server_args, router_args=["--policy", args.policy] if args.policy else [],
        ready_timeout_s=args.ready_timeout, child_log_level="info" if args.log_level == "debug" else "warning",
        sandbox_replicas=args.sandbox_replicas, tiny_default=needs_model,
    )
    if needs_model and model is None:
        logging.getLogger("genrm.up").warning(
            "no --model given: using the embedded tiny random-weight model; its judgments are meaningless"
        )
    try:
        return run_forever(stack)
    except StackError as exc:
        print(f"genrm up: {exc}", file=sys.stderr)
        return 1


def _check_model(model: str, where: str) -> None:
    """A model directory that will not load is one line naming the setting, before anything starts."""
    from services.genrm_server.model_dir import model_dir_problem

    if problem := model_dir_problem(model):
        raise SettingsError(f"invalid setting 'model' ({where}): {problem}")


def _check_recipe(recipe: str, recipes_file: str | None) -> None:
    from services.genrm_server.settings import recipe_names

    if recipe == "code":
        raise SettingsError("invalid setting 'recipe' (--recipe): code rewards run on sandbox servers; start them "
                            "with --sandbox-replicas N (the router sends recipe=code there)")
    try:
        names = [n for n in recipe_names(recipes_file) if n != "code"]
    except ValueError as exc:
        raise SettingsError(f"invalid setting 'recipes_file': {exc}") from None
    if recipe not in names:
        raise SettingsError(f"invalid setting 'recipe' (--recipe): unknown recipe {recipe!r}; choose one of "
                            f"{', '.join(names)}")


def _configured(config: str | None, section: str) -> dict:
    """A component's settings from its env vars and its --config section (flags aside), names lower-case."""
    from common.settings_io import read_section

    prefix = f"GENRM_{section.upper()}_"
    values = read_section(Path(config), section) if config else {}
    values.update({k[len(prefix):].lower(): v for k, v in os.environ.items() if k.startswith(prefix)})
    return values


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from services.tiny_model import WARNING, write_tiny_model

    out = Path(args.dir)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise SettingsError(f"{out} exists and is not empty (use --force to overwrite)")
    write_tiny_model(out, seed=args.seed, classifier=args.classifier)
    kind = "sequence-classification reward model for the disrm recipe; " if args.classifier else ""
    print(f"wrote {out} ({kind}{WARNING})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from services.demo import run_demo
    from services.local_stack import StackError

    if args.replicas < 1:
        raise SettingsError(f"invalid setting 'replicas' (--replicas): at least 1 server, got {args.replicas}")
    if args.model is not None:
        _check_model(args.model, "--model")
    _setup_logging("warning")
    try:
        return run_demo(replicas=args.replicas, model=args.model, judge_max_tokens=args.judge_max_tokens)
    except StackError as exc:
        print(f"genrm demo: {exc}", file=sys.stderr)
        return 1


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("genrm-platform")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _whole_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from router.settings import RouterSettings
    from services.genrm_server.engines.registry import ENGINES, engines_help
    from services.genrm_server.settings import ServerSettings

    parser = argparse.ArgumentParser(
        prog="genrm", description="genrm-platform: serve generative reward models (LLM judges) to RL trainers.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="Run one GenRM model server (OpenAI API, /health, /ready, /metrics).",
                       description="Run one GenRM model server replica.")
    _config_arg(p)
    add_settings_arguments(p, ServerSettings)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("route", help="Run the router in front of GenRM servers.",
                       description="Run the load-balancing router over static and/or DNS-discovered workers.")
    _config_arg(p)
    add_settings_arguments(p, RouterSettings)
    p.set_defaults(func=cmd_route)

    p = sub.add_parser(
        "up", help="Start N servers and a router on loopback; Ctrl-C stops all.",
        description="Start N GenRM servers and a router as child processes on 127.0.0.1, wait until all are "
        "ready, print 'router ready: URL', and stop everything on Ctrl-C/SIGTERM or when a child dies.",
    )
    p.add_argument("--replicas", type=_whole_number, default=2,
                   help="GenRM (judge) server processes; 0 only with --sandbox-replicas [default: 2].")
    p.add_argument("--sandbox-replicas", type=_whole_number, default=0,
                   help="CPU-only sandbox servers for code rewards (recipe code, /run_code) behind the same "
                   "router; they need bubblewrap [default: 0].")
    p.add_argument("--model", default=None,
                   help="Local model directory; default: the embedded tiny random model (meaningless judgments).")
    p.add_argument("--port", type=int, default=None,
                   help="Router port; 0 = a free port [default: router.port of --config or GENRM_ROUTER_PORT, else "
                   "9000].")
    p.add_argument("--host", default="127.0.0.1", help="Address for all processes [default: 127.0.0.1].")
    p.add_argument("--engine", choices=list(ENGINES), default=None,
                   help=f"Server engine: {engines_help()} [default: {ServerSettings.model_fields['engine'].default}].")
    p.add_argument("--upstream-url", default=None, help="openai engine: upstream base URL.")
    p.add_argument("--recipe", default=None,
                   help="The judge servers' default recipe (a reward that names none) [default: server.recipe of "
                   "--config or GENRM_SERVER_RECIPE, else math]; code rewards need --sandbox-replicas.")
    p.add_argument("--policy", default=None,
                   help="Router policy [default: router.policy of --config or GENRM_ROUTER_POLICY, else "
                   "least_outstanding].")
    p.add_argument("--ready-timeout", type=float, default=300.0,
                   help="Seconds to wait for every process to be ready [default: 300].")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="Log level of `up` itself; the servers and the router log warnings and errors only, "
                   "everything at debug [default: info].")
    _config_arg(p)
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("tiny-model", help="Write a tiny random-weight model + offline tokenizer to DIR.",
                       description="Write a small Llama-architecture causal LM with random weights and a "
                       "tokenizer trained offline (ChatML chat template). Loads with from_pretrained. Its "
                       "outputs are meaningless; it exists so everything runs without a download or a GPU.")
    p.add_argument("dir", help="Output directory.")
    p.add_argument("--seed", type=int, default=0, help="Weight initialisation seed [default: 0].")
    p.add_argument("--force", action="store_true", help="Write into a non-empty directory.")
    p.add_argument("--classifier", action="store_true",
                   help="Write a one-label LlamaForSequenceClassification instead: a discriminative reward model "
                   "(disrm recipe).")
    p.set_defaults(func=cmd_tiny_model)

    from trainer_client import score_cli

    p = sub.add_parser("score", help="Score a JSONL file of samples through the router (JSONL out).",
                       description=score_cli.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    score_cli.add_arguments(p)
    p.set_defaults(func=score_cli.run)

    p = sub.add_parser("demo", help="Start a local stack, score a demo batch of rewards, print a table.",
                       description="Start GenRM servers and a router on loopback (logs in a temporary directory), "
                       "score 16 FAPO samples (4 prompts x 4 responses) through the router, print each score, and "
                       "stop everything. On the embedded tiny model the judge's verdicts are random noise; pass "
                       "--model DIR with a real FAPO GenRM for real judgments.")
    p.add_argument("--replicas", type=_whole_number, default=2, help="GenRM servers [default: 2].")
    p.add_argument("--model", default=None, help="Local model directory [default: the tiny model].")
    p.add_argument("--judge-max-tokens", type=int, default=48,
                   help="Tokens per judge answer [default: 48; real FAPO judges use 16384].")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if _MISSING is not None:
        if argv[:1] == ["score"]:
            from trainer_client import score_cli

            return score_cli.main(argv[1:])
        print(f"genrm: this install has the trainer client only ({_MISSING.name} is missing): `genrm score` works; "
              "for the server, the router and the rest: pip install 'genrm-platform[all]'", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SettingsError as exc:
        print(f"genrm {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
