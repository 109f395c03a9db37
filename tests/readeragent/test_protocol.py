"""The job protocol: sealed keys open only for their job, station and expiry; signatures bind everything."""
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from readeragent import protocol as p

KEY = bytes(range(16))


def _envelope(cms_key, station_key, **change):
    expires = int(time.time()) + 5
    script = {"version": 1, "steps": [
        {"op": "desfire.select_application", "aid": "000000"},
        {"op": "desfire.authenticate", "key_no": 0, "key": "kv-1", "key_type": "aes128"}]}
    env = {"v": 1, "job_id": "j1", "station": "ST1", "tenant": "t", "issued_at": expires - 5,
           "expires_at": expires, "card": {"uid": "04AABBCCDDEEFF", "chip_type": "desfire_ev2"},
           "script": script, "script_digest": p.script_digest(script), "signing_key_version": 1,
           "sealed_keys": p.seal_keys({"kv-1": KEY}, public_key=station_key.public_key(), job_id="j1",
                                      station="ST1", expires_at=expires)}
    env.update(change)
    return p.sign_with(env, cms_key)


def test_round_trip_opens_keys_as_bytearrays_and_wipes():
    cms, station = Ed25519PrivateKey.generate(), X25519PrivateKey.generate()
    env = _envelope(cms, station)
    p.check_envelope(env, station="ST1", cms_public_key=cms.public_key())
    keys = p.open_keys(env["sealed_keys"], private_key=station, job_id="j1", station="ST1",
                       expires_at=env["expires_at"])
    assert keys == {"kv-1": bytearray(KEY)}
    assert KEY.hex() not in p.canonical(env).decode()
    p.wipe_keys(keys)
    assert keys["kv-1"] == bytearray(16)


@pytest.mark.parametrize("field,value,reason", [
    ("station", "ST2", "signature"), ("expires_at", 0, "signature"), ("script_digest", "00", "signature")])
def test_tampered_envelope_is_refused(field, value, reason):
    cms, station = Ed25519PrivateKey.generate(), X25519PrivateKey.generate()
    env = dict(_envelope(cms, station))
    env[field] = value
    with pytest.raises(p.ProtocolError) as err:
        p.check_envelope(env, station="ST1", cms_public_key=cms.public_key())
    assert err.value.reason == reason


def test_other_station_expired_and_bad_digest():
    cms, station = Ed25519PrivateKey.generate(), X25519PrivateKey.generate()
    with pytest.raises(p.ProtocolError, match="not 'ST9'"):
        p.check_envelope(_envelope(cms, station), station="ST9", cms_public_key=cms.public_key())
    with pytest.raises(p.ProtocolError) as err:
        p.check_envelope(_envelope(cms, station), station="ST1", cms_public_key=cms.public_key(),
                         now=time.time() + 60)
    assert err.value.reason == "expired"
    with pytest.raises(p.ProtocolError) as err:
        p.check_envelope(_envelope(cms, station, script_digest="00" * 32), station="ST1",
                         cms_public_key=cms.public_key())
    assert err.value.reason == "digest"


def test_sealed_keys_bound_to_job_station_and_expiry():
    station = X25519PrivateKey.generate()
    sealed = p.seal_keys({"a": KEY}, public_key=station.public_key(), job_id="j1", station="ST1",
                         expires_at=9)
    for job, st, exp in [("j2", "ST1", 9), ("j1", "ST2", 9), ("j1", "ST1", 10)]:
        with pytest.raises(p.ProtocolError) as err:
            p.open_keys(sealed, private_key=station, job_id=job, station=st, expires_at=exp)
        assert err.value.reason == "sealed"
    with pytest.raises(p.ProtocolError):
        p.open_keys(sealed, private_key=X25519PrivateKey.generate(), job_id="j1", station="ST1", expires_at=9)


def test_script_checks_name_the_step():
    with pytest.raises(p.ProtocolError, match="step 0 .*missing \\['key'"):
        p.check_script({"version": 1, "steps": [
            {"op": "desfire.authenticate", "key_no": 0, "key_type": "aes128"}]})
    with pytest.raises(p.ProtocolError, match="unknown op"):
        p.check_script({"version": 1, "steps": [{"op": "format_everything"}]})
    refs = p.check_script({"version": 1, "steps": [
        {"op": "gp.open_scp03", "kvn": 48, "keys": {"enc": "m1", "mac": "m2", "dek": "m3"}}]})
    assert refs == ["m1", "m2", "m3"]
