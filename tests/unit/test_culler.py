"""The culler's verdict on made-up servers (pure)."""

from types import SimpleNamespace

from appliance.config import CullerConfig
from appliance.culler import verdict

CFG = CullerConfig(enabled=True, idle_timeout=60.0, max_age=0.0, every=10.0,
                   users_exempt=("teacher",))


def server(**kw):
    return SimpleNamespace(**{"user": "alice", "started": 0.0, "last_activity": 0.0,
                              "requests_in_flight": 0, **kw})


def test_idle_is_stopped_in_words_and_use_of_any_kind_keeps_it():
    assert "stopped after 1 minute without activity" in verdict(CFG, server(), None, 100.0)
    assert verdict(CFG, server(last_activity=50.0), None, 100.0) is None  # the proxy's record
    assert verdict(CFG, server(), 50.0, 100.0) is None  # the server's own (a busy kernel)
    assert verdict(CFG, server(requests_in_flight=1), None, 100.0) is None  # a slow upload
    assert verdict(CFG, server(user="teacher"), None, 1e9) is None


def test_max_age_stops_a_busy_server():
    cfg = CullerConfig(enabled=True, idle_timeout=60.0, max_age=3600.0, every=10.0,
                       users_exempt=())
    assert "running for 1 hour" in verdict(cfg, server(), 4000.0, 4000.0)
    assert verdict(cfg, server(), 3000.0, 3000.0) is None
