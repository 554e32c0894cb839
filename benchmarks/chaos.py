"""Chaos soak: apply a topology, ``kill -9`` random nodes, then read every consumer's accounting.

Not a speed benchmark: it checks the self-healing promise ("nothing is lost silently") on a
real supervisord with real node processes. After the kills it applies the file again (which
waits until every node serves), lets open gaps settle, and reports for every input link of
every node the gaps detected, recovered and lost and the messages lost, summed over every
process that node ran as (a killed process's counters are read just before the kill, as they
die with it), and each node's drops by reason (counted since the node last started). A lost message is
counted, never silent; this shows how many there were. The kills are chosen by ``--seed``, so
two builds can be compared on the same sequence of kills (their timing still differs a little).

    python benchmarks/chaos.py [--topology topologies/demo.yaml] [--kills 12] [--interval 4] [--seed 1]

The run directory, the demo's ports (``DEMO_*``) and its output directory are fresh ones, so a
running demo is not disturbed. The last line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if not __package__:  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alphapulse.runtime import request
from alphapulse.supervise import RunBase, load_applied_plan
from benchmarks._common import report

REPO = Path(__file__).resolve().parents[1]
DEMO_PORTS = ("DEMO_SIM_A_PORT", "DEMO_SIM_B_PORT", "DEMO_PORT", "DEMO_HTTP_PORT")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Deployment:
    def __init__(self, topology: Path, run_dir: str, output: str) -> None:
        self.topology = topology
        self.run_dir = Path(run_dir)
        self.env = {**os.environ, "ALPHAPULSE_RUN_DIR": run_dir, "DEMO_OUTPUT": output,
                    **{name: str(free_port()) for name in DEMO_PORTS}}

    def cli(self, *args: str, timeout: float = 400) -> str:
        done = subprocess.run([sys.executable, "-m", "alphapulse", *args], cwd=REPO, env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode:
            raise SystemExit(f"alphapulse {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done.stdout

    def status(self) -> dict[str, dict]:
        ((self.name, status),) = json.loads(self.cli("status", str(self.topology), "--json")).items()
        return {node["node"]: node for node in status["nodes"]}

    def stats(self, node: str) -> dict | None:
        plan = load_applied_plan(RunBase(self.run_dir), self.name)
        try:
            return request(plan["nodes"][node]["sockets"]["control"], "stats")
        except Exception:  # a node that does not answer is reported as such
            return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", type=Path, default=REPO / "topologies" / "demo.yaml")
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--interval", type=float, default=4.0, help="seconds between kills")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--settle", type=float, default=15.0, help="seconds after the last restart")
    parser.add_argument("--logs", type=Path, help="copy the nodes' logs here before the run directory goes")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="apc", dir="/tmp") as run_dir, \
            tempfile.TemporaryDirectory(prefix="apc-out") as output:
        deployment = Deployment(args.topology.resolve(), run_dir, output)
        try:
            figures = soak(deployment, args)
        finally:
            deployment.cli("down", str(deployment.topology))
            if args.logs is not None:
                shutil.copytree(Path(run_dir) / deployment.name / "logs", args.logs, dirs_exist_ok=True)
    figures["elapsed_s"] = round(time.monotonic() - started, 1)
    report(figures)


SEQUENCE_KEYS = ("gaps_detected", "gaps_recovered", "gaps_lost", "messages_lost", "open_gaps")


class Tally(dict):
    """``{"node<-upstream": {gaps_detected, ...}}`` summed over the processes added."""

    def add(self, node: str, stats: dict | None) -> None:
        for link in (stats or {}).get("inputs") or []:
            entry = self.setdefault(f"{node}<-{link['upstream']}", dict.fromkeys(SEQUENCE_KEYS, 0))
            for key in SEQUENCE_KEYS:
                entry[key] += link["sequence"][key]

    def __add__(self, other: Tally) -> Tally:
        total = Tally()
        for tally in (self, other):
            for link, sequence in tally.items():
                entry = total.setdefault(link, dict.fromkeys(SEQUENCE_KEYS, 0))
                for key in SEQUENCE_KEYS:
                    entry[key] += sequence[key]
        return total


def soak(deployment: Deployment, args: argparse.Namespace) -> dict:
    deployment.cli("apply", str(deployment.topology), "--wait", "300")
    time.sleep(5)
    names = sorted(deployment.status())
    rng = random.Random(args.seed)
    killed: list[str] = []
    retired = Tally()  # what each killed process had counted: its counters die with it
    for _ in range(args.kills):
        victim = rng.choice(names)
        pid = deployment.status()[victim]["pid"]
        if pid:
            retired.add(victim, deployment.stats(victim))  # as late as can be: a loss between this and
            os.kill(pid, signal.SIGKILL)                   # the kill would be missed, a window of ~1 ms
            killed.append(victim)
            print(f"kill -9 {victim} (pid {pid})", flush=True)
        time.sleep(args.interval)
    deployment.cli("apply", str(deployment.topology), "--wait", "120")  # every node serving again
    time.sleep(args.settle)
    status = deployment.status()
    figures: dict = {"kills": len(killed), "seed": args.seed, "killed": ",".join(killed),
                     "not_serving": ",".join(f"{n}({s['state']} {s['health']}, breaker {s['breaker']})"
                                             for n, s in status.items()
                                             if s["state"] != "RUNNING" or s.get("health") != "healthy")}
    final = Tally()
    for name in sorted(status):
        stats = deployment.stats(name)
        if stats is None:
            figures[f"{name}_stats"] = "no answer"
            continue
        final.add(name, stats)
        drops = {key: value for key, value in (stats.get("counters") or {}).items()
                 if value and key.startswith("dropped.")}
        if drops:  # what the node's kind dropped since it last started (deltas before a snapshot, ...)
            figures[f"{name}_drops"] = ",".join(f"{key.removeprefix('dropped.')}={value}"
                                                for key, value in sorted(drops.items()))
        if stats.get("publisher"):
            figures.setdefault("resends_passed_upstream", 0)
            figures["resends_passed_upstream"] += stats["publisher"].get("resends_passed_upstream", 0)
    # every incarnation of every node: the killed ones' last counters and the running ones'
    links = final + retired
    totals = dict.fromkeys(SEQUENCE_KEYS, 0)
    for link, sequence in sorted(links.items()):
        for key in totals:
            totals[key] += sequence[key] if key != "open_gaps" else final.get(link, {}).get(key, 0)
        if sequence["gaps_detected"] or final.get(link, {}).get("open_gaps"):
            figures[link] = (f"gaps {sequence['gaps_detected']} detected / {sequence['gaps_recovered']} recovered / "
                             f"{sequence['gaps_lost']} lost, {sequence['messages_lost']} messages lost")
    figures.update(totals)
    figures["restarts"] = sum(node["restarts"] for node in status.values())
    return figures


if __name__ == "__main__":
    main()
