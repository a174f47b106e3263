"""Usage rows, per-user totals and the CSV, from made-up sessions (pure functions)."""

import csv
import io
from types import SimpleNamespace

from appliance import usage
from appliance.cgroups import Reading
from appliance.events import Cause, Event, Kind
from appliance.store import UsageRecord


def server(**kw):
    base = dict(user="alice", name="", started=1000.0, profile=None,
                last_reading=Reading(1500.0, 100, 300 << 20, 42_500_000, 0))
    return SimpleNamespace(**{**base, **kw})


def test_a_stop_becomes_a_row_with_cpu_and_peak():
    rec = usage.record_of(Event(Kind.STOPPED, server(), Cause.CULLER, at=1600.0))
    assert rec == UsageRecord("alice", "", "", 1000.0, 1600.0, "culler", 42.5, 300 << 20)
    assert usage.record_of(Event(Kind.READY, server())) is None
    assert usage.record_of(Event(Kind.STOPPED, server(started=None))) is None
    unread = usage.record_of(Event(Kind.STOPPED, server(last_reading=None), Cause.CRASH))
    assert (unread.cpu_seconds, unread.peak_memory) == (None, None)


def test_totals_count_only_the_period_and_keep_the_peak():
    rows = [UsageRecord("bob", "", "", 0.0, 100.0, "user", 5.0, 10),
            UsageRecord("bob", "lab", "", 150.0, 300.0, "culler", 1.0, 30),
            UsageRecord("alice", "", "", 50.0, 60.0, "oom", None, None)]
    alice, bob = usage.totals(rows, since=50.0, until=200.0)
    assert (alice.user, alice.sessions, alice.seconds) == ("alice", 1, 10.0)
    assert (bob.sessions, bob.seconds, bob.cpu_seconds, bob.peak_memory) == (2, 100.0, 6.0, 30)


def test_csv_has_a_header_and_one_line_per_session():
    rows = [UsageRecord("a,b", "", "large", 0.0, 3600.0, "user", 1.25, 1024)]
    lines = list(csv.reader(io.StringIO(usage.to_csv(rows))))
    assert lines[0] == list(usage.COLUMNS)
    assert lines[1] == ["a,b", "", "large", "1970-01-01T00:00:00Z", "1970-01-01T01:00:00Z",
                        "user", "1.2", "1024"]
