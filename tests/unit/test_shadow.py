"""Which shadow(5) entries bar an account, as pam_unix's account stage would judge them."""

import time

import pytest

from appliance.auth import shadow_refusal

TODAY = int(time.time() // 86400)
HASH = "$y$j9T$salt$hash"


@pytest.mark.parametrize("fields, refusal", [
    ((HASH, TODAY - 1, 0, 99999, 7, "", ""), ""),
    (("!" + HASH, TODAY - 1, 0, 99999, 7, "", ""), "is locked"),         # usermod -L
    (("!", TODAY - 1, 0, 99999, 7, "", ""), ""),                          # never had one
    (("*", "", "", "", "", "", ""), ""),
    ((HASH, TODAY - 1, 0, 99999, 7, "", 1), "has expired"),              # usermod -e 1
    ((HASH, TODAY - 1, 0, 99999, 7, "", TODAY + 3), ""),                  # expires later
    ((HASH, TODAY - 40, 0, 30, 7, 5, ""), "has a password that expired and went inactive"),
    ((HASH, TODAY - 40, 0, 30, 7, "", ""), ""),   # expired but no inactive period: PAM asks
    ((HASH, 0, 0, 30, 7, 5, ""), ""),             # 0: must change at next login, not barred
])
def test_shadow_refusal(tmp_path, fields, refusal):
    shadow = tmp_path / "shadow"
    lines = ["root:*:19000:0:99999:7:::", "alicex:" + HASH + ":19000:0:99999:7:::",
             "alice:" + ":".join(str(f) for f in fields) + ":"]
    shadow.write_text("\n".join(lines) + "\n")
    assert shadow_refusal("alice", shadow) == refusal
    assert shadow_refusal("nobody-here", shadow) == ""
