"""Plan diffs decide add / remove / restart / reconfigure / unchanged by fingerprint."""

from __future__ import annotations

from alphapulse.topology import PlanDiff, compile_plan, diff_plans

BASE = """\
    topology: d
    nodes:
      src:
        kind: source.counter
        params:
          rate: 10
      books:
        kind: transform.book_delta
        inputs: [cb]
        params:
          snapshot_interval: 30
      cb:
        kind: source.coinbase
      out:
        kind: sink.counter
        inputs: [src, books]
"""


def plan(load, text):
    return compile_plan(load(text), python="/py")


def test_identical_plans_change_nothing(load):
    diff = diff_plans(plan(load, BASE), plan(load, BASE))
    assert diff == PlanDiff((), (), (), (), ("books", "cb", "out", "src"))
    assert not diff.changed


def test_from_nothing_everything_is_added(load):
    diff = diff_plans(None, plan(load, BASE))
    assert diff.added == ("books", "cb", "out", "src") and diff.changed


def test_every_bucket(load):
    new = (BASE.replace("rate: 10", "rate: 99")                      # live: reconfigure src
           .replace("snapshot_interval: 30", "snapshot_interval: 5")  # live: reconfigure books
           .replace("inputs: [src, books]", "inputs: [src, books, extra]")  # wiring: restart out
           + "      extra:\n        kind: source.counter\n")
    new = new.replace("      cb:\n        kind: source.coinbase\n", "      cb:\n"
                      "        kind: source.coinbase\n        params: {feed: exchange}\n")
    diff = diff_plans(plan(load, BASE), plan(load, new))
    assert diff.added == ("extra",)
    assert diff.removed == ()
    assert diff.restart == ("cb", "out")
    assert diff.reconfigure == ("books", "src")
    assert diff.unchanged == ()


def test_removed_and_accepts_plain_dicts(load):
    old = plan(load, BASE)
    smaller = BASE.replace("inputs: [src, books]", "inputs: [books]")
    smaller = smaller.replace("      src:\n        kind: source.counter\n        params:\n"
                              "          rate: 10\n", "")
    diff = diff_plans(dict(old.data), plan(load, smaller).data)
    assert diff.removed == ("src",)
    assert diff.restart == ("out",)
    assert diff.unchanged == ("books", "cb")
    assert diff.to_dict()["removed"] == ["src"]


def test_restart_wins_over_live(load):
    new = BASE.replace("rate: 10", "rate: 11\n          count: 3")
    diff = diff_plans(plan(load, BASE), plan(load, new))
    assert diff.restart == ("src",) and diff.reconfigure == ()
