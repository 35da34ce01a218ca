"""The fault scenarios of issue 7, each a real run: 3 ``genrm serve`` math servers on the tiny model, one
``genrm route`` router, the real AsyncRewardClient sending ``Env.n`` single ``/v1/reward`` calls, and a
fault injected mid-run. Each returns a :class:`~tests.faults.harness.Report` whose ``facts`` hold what was
observed on the way (ejection and re-admission times, the router's view of the worker, server counters).

The math servers are shared by the scenarios (start-up is the slow part); every scenario starts its own
router, so no breaker or straggler mark carries over, and leaves the servers healthy for the next.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from services.local_stack import free_port
from tests.faults.harness import (
    Load,
    Proc,
    Report,
    build_report,
    fapo_server,
    faulty_worker,
    make_samples,
    math_server,
    metric,
    router,
    scrape,
    scripted_judge,
    wait_until,
    workers_state,
)

N = 2000  # reward calls per scenario (the number)
RATE = 400.0  # calls/s: a 2,000-call run lasts ~5 s, so faults land mid-run and recovery inside it
CONCURRENCY = 32
DEADLINE_S = 10.0


@dataclass
class Env:
    model: Path
    log_dir: Path
    n: int = N
    rate: float = RATE
    concurrency: int = CONCURRENCY
    deadline_s: float = DEADLINE_S
    servers: list[Proc] = field(default_factory=list)

    def start(self, count: int = 3) -> Env:
        self.servers = [math_server(self.model, self.log_dir, f"math-{i}") for i in range(count)]
        try:
            for s in self.servers:  # start together, wait together: they load the model in parallel
                s.spawn()
            for s in self.servers:
                s.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for s in self.servers:
            s.stop()

    def heal(self) -> None:
        """Leave every server running and ready (a scenario that failed half-way may have left one down)."""
        for s in self.servers:
            if not s.alive:
                s.start()
            else:
                s.sigcont()
                s.wait_ready(30)

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def load(self, url: str, samples: list[dict[str, Any]] | None = None, **options: Any) -> Load:
        options = {"concurrency": self.concurrency, "deadline_s": self.deadline_s, "rate": self.rate, **options}
        return Load(url, make_samples(self.n) if samples is None else samples, **options)


# -- observations ---------------------------------------------------------------------------------------


def samples_scored(url: str, recipe: str = "math") -> float:
    return metric(scrape(url), "genrm_reward_samples_total", recipe=recipe)


def worker(router_url: str, url: str) -> dict[str, Any]:
    return workers_state(router_url)[url]


def out_of_rotation(router_url: str, url: str) -> bool:
    """The router sends the worker nothing now: probes failed, or its breaker is open."""
    w = worker(router_url, url)
    return not w["ready"] or w["breaker"] == "open"


def admitted(router_url: str, url: str) -> bool:
    """The worker passes probes and its breaker lets requests through."""
    w = worker(router_url, url)
    return w["ready"] and w["breaker"] != "open"


def router_notes(router_url: str) -> tuple[list[str], dict[str, float]]:
    """The router's retries by reason and ejections by worker and cause (empty when it is gone)."""
    text = scrape(router_url)
    retries: dict[str, float] = {}
    ejections: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("genrm_router_retries_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            retries[reason] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("genrm_router_ejections_total{"):
            cause = line.split('cause="', 1)[1].split('"', 1)[0]
            port = line.split('worker="', 1)[1].split('"', 1)[0].rsplit(":", 1)[1]
            ejections[f":{port} {cause}"] = float(line.rsplit(" ", 1)[1])
    notes = []
    if retries:
        notes.append("router retries " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(retries.items())))
    if ejections:
        notes.append("ejections " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(ejections.items())))
    return notes, retries


async def run_with_router(env: Env, name: str, inject: Callable[[Load, Proc], Awaitable[Any]],
                          workers: list[str] | None = None, samples: list[dict[str, Any]] | None = None,
                          recipe: str = "math", **load_options: Any) -> tuple[Report, Proc]:
    """Start a fresh router over ``workers`` (default: the env's servers), run the load with ``inject``, and
    build the report (server-side executions = the servers' counters' growth). The router is left running
    for the caller to inspect; the caller stops it."""
    workers = workers if workers is not None else env.urls
    rt = await router(workers, env.log_dir).astart()
    before = await asyncio.to_thread(lambda: {u: samples_scored(u, recipe) for u in env.urls})
    load = env.load(rt.url, samples, **load_options)
    await load.run(lambda ld: inject(ld, rt))
    after = await asyncio.to_thread(lambda: {u: samples_scored(u, recipe) for u in env.urls})
    executions = sum(after[u] - before[u] for u in env.urls)
    notes, _ = await asyncio.to_thread(router_notes, rt.url)
    return build_report(name, load, notes, executions=executions), rt


def since(t0: float) -> float:
    return round(time.monotonic() - t0, 2)


# -- 1. kill -9 a server, restart it on the same port ---------------------------------------------------


async def kill_and_restart(env: Env) -> Report:
    victim = env.servers[0]
    facts: dict[str, Any] = {}

    async def inject(load: Load, rt: Proc) -> None:
        await load.reached(env.n // 4)
        facts["scored_before_kill"] = await asyncio.to_thread(samples_scored, victim.url)
        victim.kill9()
        t0 = time.monotonic()
        await wait_until(lambda: out_of_rotation(rt.url, victim.url), "the router to eject the killed server", 15)
        facts["ejected_after_s"] = since(t0)
        await load.reached(int(env.n * 0.4))

        async def restart() -> None:
            await victim.astart()
            await wait_until(lambda: admitted(rt.url, victim.url), "the restarted server's re-admission", 30)
            facts["readmitted_after_s"] = since(t0)

        await load.before(int(env.n * 0.8), restart())  # the last fifth goes to a full pool again

    rep, rt = await run_with_router(env, "1. kill -9 a server, restart it", inject)
    try:
        facts["served_after_restart"] = await asyncio.to_thread(samples_scored, victim.url)
        facts["final_state"] = await asyncio.to_thread(worker, rt.url, victim.url)
    finally:
        await asyncio.to_thread(rt.stop)
    # The killed process's last counts died with it: add what it had scored up to the scrape before the kill.
    rep.executions = (rep.executions or 0) + facts["scored_before_kill"]
    rep.executions_at_least = True
    rep.facts.update(facts)
    rep.notes[:0] = [f"ejected {facts['ejected_after_s']} s after the kill, re-admitted after "
                     f"{facts['readmitted_after_s']} s, then served {facts['served_after_restart']:.0f}"]
    return rep


# -- 2. SIGSTOP a server (hung, sockets open), SIGCONT later ----------------------------------------------


async def freeze_and_thaw(env: Env, deadline_s: float | None = None, name: str = "2. SIGSTOP a server, SIGCONT",
                          frozen_s: float = 3.0) -> Report:
    victim = env.servers[1]
    facts: dict[str, Any] = {}

    async def inject(load: Load, rt: Proc) -> None:
        await load.reached(env.n // 4)
        victim.sigstop()
        t0 = time.monotonic()
        try:
            await wait_until(lambda: out_of_rotation(rt.url, victim.url), "the router to eject the frozen server", 15)
            facts["ejected_after_s"] = since(t0)
            await asyncio.sleep(max(0.0, frozen_s - (time.monotonic() - t0)))
        finally:
            victim.sigcont()
        facts["frozen_s"] = since(t0)

        async def readmission() -> None:
            await wait_until(lambda: admitted(rt.url, victim.url), "the thawed server's re-admission", 30)
            facts["readmitted_after_s"] = since(t0)

        await load.before(int(env.n * 0.8), readmission())

    options = {} if deadline_s is None else {"deadline_s": deadline_s}
    rep, rt = await run_with_router(env, name, inject, **options)
    try:
        facts["final_state"] = await asyncio.to_thread(worker, rt.url, victim.url)
    finally:
        await asyncio.to_thread(rt.stop)
    rep.facts.update(facts)
    rep.notes[:0] = [f"frozen {facts['frozen_s']} s, ejected after {facts['ejected_after_s']} s, "
                     f"re-admitted {facts['readmitted_after_s']} s after the SIGSTOP"]
    return rep


# -- 3. misbehaving workers: 500, malformed JSON, truncated body, 10x slow ---------------------------------

FAULT_MODES = ("error500", "malformed", "truncated", "slow")


async def misbehaving_worker(env: Env, mode: str) -> Report:
    """A fourth worker (tests/faults/faulty_worker.py) in front of server 0: healthy at first, then, mid-run,
    it starts answering with the fault of ``mode``."""
    bad = await faulty_worker(mode, env.log_dir, upstream=env.servers[2].url).astart()
    facts: dict[str, Any] = {}

    def stats() -> dict[str, Any]:
        return httpx.get(bad.url + "/fault-stats", timeout=5).json()

    async def inject(load: Load, rt: Proc) -> None:
        await load.reached(env.n // 5)
        bad.signal(signal.SIGUSR1)  # the fault is on from now
        t0 = time.monotonic()
        if mode != "slow":  # failed attempts (the router checks reward answers): its breaker takes the worker out
            await wait_until(lambda: out_of_rotation(rt.url, bad.url), f"the router to eject the {mode} worker", 15)
            facts["ejected_after_s"] = since(t0)

    try:
        rep, rt = await run_with_router(env, f"3. worker: {mode}", inject, workers=[*env.urls, bad.url])
        try:
            facts["fault_stats"] = await asyncio.to_thread(stats)
            states = await asyncio.to_thread(workers_state, rt.url)
            facts["final_state"] = states.pop(bad.url)
            facts["latency_ms"] = {"bad": facts["final_state"]["latency_ewma_ms"],
                                   "others": sorted(w["latency_ewma_ms"] for w in states.values())}
        finally:
            await asyncio.to_thread(rt.stop)
    finally:
        await asyncio.to_thread(bad.stop)
    rep.facts.update(facts)
    st = facts["fault_stats"]
    note = f"bad worker got {st['requests']} calls, {st['faulted']} after the fault"
    if "ejected_after_s" in facts:
        note += f"; ejected {facts['ejected_after_s']} s after it"
    if mode == "slow":
        lat = facts["latency_ms"]
        note += (f"; latency EWMA {lat['bad']:.1f} ms vs {', '.join(f'{x:.1f}' for x in lat['others'])} ms, "
                 f"straggler weight {facts['final_state']['slowness']}")
    rep.notes.insert(0, note)
    return rep


# -- 4. the router restarted mid-run ------------------------------------------------------------------------


async def restart_router(env: Env, down_s: float = 0.0, name: str = "4. router kill -9, restarted",
                         **load_options: Any) -> Report:
    facts: dict[str, Any] = {}

    async def inject(load: Load, rt: Proc) -> None:
        await load.reached(int(env.n * 0.3))
        rt.kill9()
        t0 = time.monotonic()
        await asyncio.sleep(down_s)
        await rt.astart()  # same port
        facts["down_s"] = since(t0)

    rep, rt = await run_with_router(env, name, inject, **load_options)
    await asyncio.to_thread(rt.stop)
    rep.facts.update(facts)
    rep.notes.insert(0, f"router down {facts['down_s']} s (its metrics restarted: retries counted since)")
    return rep


# -- 5. the judge upstream down ------------------------------------------------------------------------------


async def judge_down(env: Env) -> Report:
    """FAPO servers on the ``openai`` engine, each with its own scripted judge: A's judge is killed mid-run
    (A's judge URL now points at a dead port) and restarted later on the same port; B's stays up; C's judge
    URL pointed at a dead port from the start, so C never becomes ready. Every right training sample is
    judged: a judge failure must come back as ``judge_ok = false`` with the rule score (counted in A's
    ``genrm_reward_judge_failures_total``), never as a 0; every 2nd group asks the judge for a flaw, so a
    judged flawed positive scores 0.0 *with* ``flawed_positive = true``."""
    logs = env.log_dir
    judge_a, judge_b = scripted_judge(logs, "judge-a"), scripted_judge(logs, "judge-b")
    procs: list[Proc] = [judge_a, judge_b]
    facts: dict[str, Any] = {}
    try:
        for j in (judge_a, judge_b):
            await j.astart()
        a, b = fapo_server(judge_a.url, logs, "fapo-a"), fapo_server(judge_b.url, logs, "fapo-b")
        c = fapo_server(f"http://127.0.0.1:{free_port()}", logs, "fapo-dead-judge")
        procs += [a, b, c]
        for s in (a, b, c):
            s.spawn()
        for s in (a, b):
            await asyncio.to_thread(s.wait_ready)
        await wait_until(lambda: httpx.get(c.url + "/health", timeout=2).status_code == 200, "the dead-judge server")
        rt = await router([a.url, b.url, c.url], logs).astart()
        procs.append(rt)

        async def inject(load: Load) -> None:
            await load.reached(env.n // 4)
            judge_a.kill9()
            t0 = time.monotonic()
            await wait_until(lambda: out_of_rotation(rt.url, a.url), "the router to take out the judge-less server",
                             15)
            facts["ejected_after_s"] = since(t0)
            await load.reached(int(env.n * 0.55))

            async def judge_back() -> None:
                await judge_a.astart()
                await wait_until(lambda: admitted(rt.url, a.url), "the server's re-admission once its judge is back",
                                 30)
                facts["readmitted_after_s"] = since(t0)

            await load.before(int(env.n * 0.8), judge_back())

        samples = make_samples(env.n, recipe="fapo", flawed_every=2)
        load = env.load(rt.url, samples)
        await load.run(inject)

        def server_facts() -> None:
            texts = {name: scrape(s.url) for name, s in (("a", a), ("b", b), ("c", c))}
            for name, text in texts.items():
                facts[f"judge_failures_{name}"] = metric(text, "genrm_reward_judge_failures_total", recipe="fapo")
                facts[f"scored_{name}"] = metric(text, "genrm_reward_samples_total", recipe="fapo")
            facts["state_c"] = worker(rt.url, c.url)

        await asyncio.to_thread(server_facts)
        notes, _ = await asyncio.to_thread(router_notes, rt.url)
        executions = facts["scored_a"] + facts["scored_b"] + facts["scored_c"]
        rep = build_report("5. judge upstream down (fapo)", load, notes, executions=executions, facts=facts)
    finally:
        for p in reversed(procs):
            await asyncio.to_thread(p.stop)
    flawed = sum(1 for o in load.outcomes if o.result and o.result.get("flawed_positive"))
    rep.notes[:0] = [f"judge_ok=false {rep.judge_failed} (server A counted {facts['judge_failures_a']:.0f}), "
                     f"judged flaws {flawed}; A out {facts['ejected_after_s']} s after its judge died, back after "
                     f"{facts['readmitted_after_s']} s; dead-judge server C scored {facts['scored_c']:.0f}"]
    return rep


# -- all of them ---------------------------------------------------------------------------------------------

SCENARIOS: dict[str, Callable[[Env], Awaitable[Report]]] = {
    "kill": kill_and_restart,
    "sigstop": freeze_and_thaw,
    "sigstop-short-deadline": lambda env: freeze_and_thaw(env, deadline_s=1.5,
                                                          name="2b. SIGSTOP, deadline 1.5 s < detection"),
    **{f"worker-{m}": (lambda env, m=m: misbehaving_worker(env, m)) for m in FAULT_MODES},
    "router-restart": restart_router,
    # The client's default 4 retries span 0.75-2.25 s of back-off: a longer outage needs more of them, and a
    # deadline with room for the back-off's later, longer sleeps (up to 5 s x 1.5 jitter).
    "router-down-3s": lambda env: restart_router(env, down_s=3.0, max_retries=10, deadline_s=15.0,
                                                 name="4b. router kill -9, down 3 s (client max_retries 10)"),
    "judge-down": judge_down,
}


async def run_all(env: Env, names: list[str] | None = None) -> list[Report]:
    reports = []
    for name in names or list(SCENARIOS):
        reports.append(await SCENARIOS[name](env))
        env.heal()  # in this thread: a server restarted from a worker thread would die with that thread
    return reports
