"""Station identity: keys made on the station, private halves only in a 0600 file, enrolment per jobproto.md.

The CMS end of enrolment here is a small HTTP server speaking the contract (the real endpoint is
exercised end to end in tests/e2e/test_pipeline.py).
"""
from __future__ import annotations

import json
import stat
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from readeragent import protocol
from readeragent.__main__ import main
from readeragent.identity import IDENTITY_FILE, Identity, IdentityError, enroll

CMS_KEY = Ed25519PrivateKey.generate()
CMS_PUBLIC_HEX = protocol.public_bytes_ed25519(CMS_KEY.public_key()).hex()


@pytest.fixture
def cms_server():
    received: list[dict] = []
    answer = {"status": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append({"path": self.path, "body": body})
            if answer["status"] == 200:
                payload = {"station": body["code"], "status": "enrolled", "queue": f"station.{body['code']}",
                           "cms_signing_public_key": CMS_PUBLIC_HEX, "cms_signing_key_version": 3}
            else:
                payload = {"token": ["expired or already used"]}
            data = json.dumps(payload).encode()
            self.send_response(answer["status"])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", received, answer
    server.shutdown()


def test_enroll_sends_public_halves_and_keeps_private_ones_in_a_0600_file(cms_server, tmp_path, capsys):
    url, received, _ = cms_server
    home = tmp_path / "agent"
    assert main(["enroll", "--cms", url + "/", "--station", "line1-st1", "--token", "tok-secret",
                 "--home", str(home)]) == 0
    printed = json.loads(capsys.readouterr().out)

    request = received[0]
    assert request["path"] == "/api/v1/stations/enroll/"
    identity = Identity.load(home)
    assert request["body"] == {"code": "line1-st1", "token": "tok-secret",
                               "hpke_public_key": identity.hpke_public_hex,
                               "sign_public_key": identity.sign_public_hex}
    assert printed["queue"] == "station.line1-st1" and printed["sign_public_key"] == identity.sign_public_hex
    assert identity.cms_signing_keys == {3: CMS_PUBLIC_HEX}
    assert identity.cms_public_key(3) is not None and identity.cms_public_key(1) is None
    assert stat.S_IMODE((home / IDENTITY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    text = (home / IDENTITY_FILE).read_text()
    assert "tok-secret" not in text  # the one-time token is spent, never stored
    assert "hpke_private_key" not in repr(identity) and identity.sign_public_hex not in repr(identity)


def test_refused_enrolment_names_the_reason_and_saves_nothing(cms_server, tmp_path):
    url, _, answer = cms_server
    answer["status"] = 400
    with pytest.raises(IdentityError, match="HTTP 400.*expired or already used"):
        enroll(cms_url=url, station="line1-st1", token="used", home=tmp_path)
    assert not (tmp_path / IDENTITY_FILE).exists()


def test_an_enrolled_station_is_not_re_enrolled_by_accident(cms_server, tmp_path):
    url, received, _ = cms_server
    first = enroll(cms_url=url, station="st", token="t1", home=tmp_path)
    with pytest.raises(IdentityError, match="already enrolled"):
        enroll(cms_url=url, station="st", token="t2", home=tmp_path)
    assert len(received) == 1
    second = enroll(cms_url=url, station="st", token="t2", home=tmp_path, force=True)
    assert second.sign_public_hex != first.sign_public_hex


def test_identity_readable_by_others_is_refused(tmp_path):
    Identity.generate("st", "http://cms").save(tmp_path)
    (tmp_path / IDENTITY_FILE).chmod(0o644)
    with pytest.raises(IdentityError, match="readable by others"):
        Identity.load(tmp_path)


def test_unreachable_cms_and_bad_scheme_are_clear_errors(tmp_path):
    with pytest.raises(IdentityError, match="cannot reach the CMS"):
        enroll(cms_url="http://127.0.0.1:9", station="st", token="t", home=tmp_path)
    with pytest.raises(IdentityError, match="must be http"):
        enroll(cms_url="file:///etc", station="st", token="t", home=tmp_path)


def test_status_shows_identity_and_jobs_without_private_keys(tmp_path, capsys):
    from readeragent.ledger import ReplayLedger

    identity = Identity.generate("st", "http://cms")
    identity.save(tmp_path)
    ledger = ReplayLedger.in_home(tmp_path)
    assert ledger.claim("job-1") and not ledger.claim("job-1")
    ledger.finish("job-1", "succeeded")
    ledger.close()
    assert main(["--home", str(tmp_path), "status"]) == 0
    out = capsys.readouterr().out
    info = json.loads(out)
    assert info["station"] == "st" and info["jobs"] == {"succeeded": 1}
    raw = json.loads((tmp_path / IDENTITY_FILE).read_text())
    assert raw["sign_private_key"] not in out and raw["hpke_private_key"] not in out


def test_status_without_identity_says_to_enroll(tmp_path, capsys):
    assert main(["--home", str(tmp_path), "status"]) == 2
    assert "enroll" in capsys.readouterr().err
