"""A node knows which code it loaded; ``apply`` restarts the nodes whose code changed since.

The end-to-end test also runs a node kind from a package of its own, found by its
``alphapulse.node_kinds`` entry point, as a user's plugin is.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from alphapulse.runtime import request
from alphapulse.runtime._code import LoadedCode, display_path, package_root
from alphapulse.supervise import RunBase, Supervisor, decide, load_applied_plan
from alphapulse.supervise._codechanges import describe_files


@pytest.fixture
def module_dir(tmp_path, monkeypatch):
    """A directory on the import path; the modules imported from it are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def bump_mtime(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))


def test_own_code_is_compared_by_content_and_other_code_by_size_and_time(module_dir, tmp_path_factory) -> None:
    (module_dir / "ap_own_pkg").mkdir()
    (module_dir / "ap_own_pkg" / "__init__.py").write_text("")
    own = module_dir / "ap_own_pkg" / "kind.py"
    own.write_text("VALUE = 1\n")
    other = module_dir / "ap_other_lib.py"
    other.write_text("VALUE = 1\n")
    importlib.import_module("ap_own_pkg.kind")
    importlib.import_module("ap_other_lib")

    loaded = LoadedCode([package_root("ap_own_pkg.kind")])
    assert str(own) in loaded._noted and str(other) in loaded._noted
    assert loaded.changed() == []

    bump_mtime(own)  # rewritten with the same bytes (a checkout): own code, compared by content
    assert loaded.changed() == []
    bump_mtime(other)  # not own code: a new time is a change (a reinstall)
    assert loaded.changed() == [str(other)]

    own.write_text("VALUE = 2\n")  # same size, other bytes
    bump_mtime(own)
    assert loaded.changed() == sorted([str(own), str(other)])
    other.unlink()
    assert loaded.changed() == sorted([str(own), str(other)])


def test_modules_imported_later_are_noted_when_first_asked(module_dir) -> None:
    loaded = LoadedCode([str(module_dir)])
    late = module_dir / "ap_late_mod.py"
    late.write_text("X = 1\n")
    importlib.import_module("ap_late_mod")
    assert loaded.changed() == [] and str(late) in loaded._noted
    late.write_text("X = 22\n")
    assert loaded.changed() == [str(late)]


def test_paths_are_shown_from_their_import_path_entry(module_dir) -> None:
    assert display_path(str(module_dir / "ap_pkg" / "mod.py")) == "ap_pkg/mod.py"
    assert display_path("/nowhere/at/all.py") == "/nowhere/at/all.py"
    assert describe_files(["a.py", "b.py"]) == "a.py, b.py"
    assert describe_files([f"{c}.py" for c in "abcdef"]) == "a.py, b.py, c.py and 3 more"


def test_a_node_whose_code_changed_is_restarted_not_reconfigured() -> None:
    def node(fingerprint: str, live: str = "l") -> dict:
        return {"fingerprint": {"restart": fingerprint, "live": live}}

    old = {"topology": "t", "nodes": {"a": node("1"), "b": node("2"), "c": node("3")}}
    new = {"topology": "t", "nodes": {"a": node("1"), "b": node("2", live="new"), "c": node("3")}}
    running = {n: {"statename": "RUNNING"} for n in "abc"}
    assert decide(old, new, running).restart == ()
    changes = decide(old, new, running, recoded=["b", "c"])
    assert changes.restart == ("b", "c")
    assert changes.reconfigure == () and changes.unchanged == ["a"]


# -- end to end: a plugin kind under a real supervisord ---------------------------------------------

PLUGIN = '''\
"""``sink.plugin_tally``: counts what it is given; a kind from a package of its own."""

import dataclasses

from alphapulse.kinds import Node, node_kind, param

VERSION = {version}


@dataclasses.dataclass(frozen=True)
class TallyParams:
    label: str = param("tally", doc="A name, for nothing but the example.", live=True)


@node_kind("sink.plugin_tally", emits=(), accepts=None)
class Tally(Node):
    """Counts the messages it is given, and says which version of its code counts them."""

    Params = TallyParams

    def __init__(self, params):
        super().__init__(params)
        self.messages = 0

    async def run(self, ctx):
        async for block in ctx.blocks():
            self.messages += len(block)

    def statistics(self):
        return {{"messages": self.messages, "version": VERSION}}
'''

TOPOLOGY = """\
topology: plug
reload: {watch: true}
nodes:
  src:
    kind: source.counter
    params: {rate: 500, batch: 5}
  tally:
    kind: sink.plugin_tally
    inputs: [src]
  other:
    kind: sink.counter
    inputs: [src]
"""


def write_plugin(root: Path, version: int) -> Path:
    package = root / "ap_tally_plugin"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text("")
    module = package / "tally.py"
    module.write_text(PLUGIN.format(version=version))
    dist = root / "ap_tally_plugin-1.0.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ap-tally-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[alphapulse.node_kinds]\ntally = ap_tally_plugin.tally\n")
    return module


@pytest.mark.slow
def test_apply_restarts_only_the_node_whose_code_changed_a_plugin_kind() -> None:
    base = Path(tempfile.mkdtemp(prefix="ap", dir="/tmp"))  # short: socket paths stay < 107 bytes
    plugin_root = base / "plugins"
    plugin_root.mkdir()
    module = write_plugin(plugin_root, version=1)
    topo = base / "plug.yaml"
    topo.write_text(TOPOLOGY)
    env = {**os.environ, "ALPHAPULSE_RUN_DIR": str(base),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(plugin_root), os.environ.get("PYTHONPATH")]))}

    def alphapulse(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "alphapulse", *args], env=env, capture_output=True,
                              text=True, timeout=300)

    def nodes() -> dict[str, dict]:
        out = alphapulse("status", str(topo), "--json")
        return {row["node"]: row for row in json.loads(out.stdout)["plug"]["nodes"]}

    def watcher_pid() -> int:
        return Supervisor(RunBase(base)).group_processes("plug").get("_watch", {}).get("pid", 0)

    def kind_stats(node: str) -> dict:
        plan = load_applied_plan(RunBase(base), "plug")
        return request(plan["nodes"][node]["sockets"]["control"], "stats")["kind_stats"]

    try:
        listed = alphapulse("kinds")
        assert "sink.plugin_tally" in listed.stdout, listed.stdout + listed.stderr  # found by its entry point
        first = alphapulse("apply", str(topo), "--wait", "240")
        assert first.returncode == 0, first.stdout + first.stderr
        before = nodes()
        assert {n: r["state"] for n, r in before.items()} == dict.fromkeys(("other", "src", "tally"), "RUNNING")
        assert all(r["code_changed"] == [] and r["problem"] == "" for r in before.values())
        deadline = time.monotonic() + 30
        while kind_stats("tally")["messages"] == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert kind_stats("tally")["version"] == 1 and kind_stats("tally")["messages"] > 0

        bump_mtime(module)  # the same bytes, rewritten: no change
        again = alphapulse("apply", str(topo))
        assert "up to date" in again.stdout, again.stdout + again.stderr

        module.write_text(PLUGIN.format(version=2))
        changed = nodes()
        assert changed["tally"]["code_changed"] == ["ap_tally_plugin/tally.py"]
        problem = changed["tally"]["problem"]
        assert "runs code that changed on disk since it started (ap_tally_plugin/tally.py)" in problem
        assert changed["src"]["code_changed"] == changed["other"]["code_changed"] == []
        table = alphapulse("status", str(topo)).stdout
        assert "tally RUNNING: runs code that changed on disk" in table, table
        dry = alphapulse("apply", str(topo), "--dry-run")
        assert "restart      tally  (its code changed since it started)" in dry.stdout, dry.stdout

        applied = alphapulse("apply", str(topo), "--wait", "120")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert "restarted    tally" in applied.stdout
        assert "tally restarted: its code changed since it started (ap_tally_plugin/tally.py)" in applied.stdout
        after = nodes()
        assert after["tally"]["pid"] != before["tally"]["pid"]
        assert {n: after[n]["pid"] for n in ("src", "other")} == {n: before[n]["pid"] for n in ("src", "other")}
        assert after["tally"]["code_changed"] == [] and after["tally"]["problem"] == ""
        assert kind_stats("tally")["version"] == 2
        assert "up to date" in alphapulse("apply", str(topo)).stdout

        # the supervised watcher: an edit after its own code changed restarts it first, and the new
        # watcher restarts the node whose code changed rather than reconfigure it live
        watcher = watcher_pid()
        module.write_text(PLUGIN.format(version=3))
        topo.write_text(TOPOLOGY.replace("kind: sink.plugin_tally", "kind: sink.plugin_tally\n    params: {label: b}"))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if kind_stats("tally")["version"] == 3:
                    break
            time.sleep(0.3)
        assert kind_stats("tally")["version"] == 3
        assert watcher_pid() not in (watcher, 0)
        log = (base / "plug" / "logs" / "_watch.out.log").read_text()
        assert "this watcher's code changed since it started (ap_tally_plugin/tally.py)" in log, log
        final = nodes()
        assert {n: final[n]["pid"] for n in ("src", "other")} == {n: before[n]["pid"] for n in ("src", "other")}
    finally:
        alphapulse("down", str(topo))
        sup = Supervisor(RunBase(base))
        if sup.is_running():
            sup.shutdown()
        shutil.rmtree(base, ignore_errors=True)
