"""Profile spec validation: errors name their JSON path; namespaces, references and limits hold."""
from __future__ import annotations

import copy

import pytest

from cards.models import Tenant
from cards.profiles import MAX_SPEC_BYTES, validate_spec
from tests.cards.fixtures import ACME_GP_PREFIX, desfire_spec, jcop_spec

MASTERS = {"cmk-master": "an10922", "amk-master": "an10922", "isd-master": "kdf3", "gp-test-key": "kdf3"}


@pytest.fixture
def tenant():
    # Unsaved: the validator only asks the tenant about its namespaces.
    return Tenant(slug="acme", gp_aid_prefix=ACME_GP_PREFIX, desfire_aid_first=0xF0A000,
                  desfire_aid_last=0xF0AFFF)


def errors_of(spec, tenant, masters=MASTERS):
    return validate_spec(spec, tenant=tenant, master_methods=masters)


def test_seed_003_desfire_profile_is_valid(tenant):
    assert errors_of(desfire_spec(), tenant) == {}


def test_seed_002_jcop_profile_is_valid(tenant):
    assert errors_of(jcop_spec(), tenant) == {}


def test_desfire_aid_outside_tenant_range_is_named_with_the_range(tenant):
    spec = desfire_spec()
    spec["applications"][0]["aid"] = "F0B001"
    assert errors_of(spec, tenant) == {
        "applications[0].aid": ["outside the tenant's DESFire AID range F0A000-F0AFFF"]}


def test_picc_level_aid_is_not_an_application(tenant):
    spec = desfire_spec()
    spec["applications"][0]["aid"] = "000000"
    assert "applications[0].aid" in errors_of(spec, tenant)


def test_access_right_naming_a_missing_key_is_refused(tenant):
    spec = desfire_spec()
    spec["applications"][0]["files"][0]["access"]["read"] = 5
    errors = errors_of(spec, tenant)
    assert list(errors) == ["applications[0].files[0].access.read"]
    assert "num_keys is 3" in errors["applications[0].files[0].access.read"][0]


@pytest.mark.parametrize("right", [14, 15])
def test_free_and_never_access_rights_are_accepted(tenant, right):
    spec = desfire_spec()
    spec["applications"][0]["files"][0]["access"]["read"] = right
    assert errors_of(spec, tenant) == {}


def test_access_right_nibble_above_15_is_refused(tenant):
    spec = desfire_spec()
    spec["applications"][0]["files"][0]["access"]["change"] = 16
    assert errors_of(spec, tenant) == {"applications[0].files[0].access.change": ["must be between 0 and 15"]}


def test_file_number_above_31_is_refused(tenant):
    spec = desfire_spec()
    spec["applications"][0]["files"][0]["file_no"] = 32
    assert errors_of(spec, tenant) == {"applications[0].files[0].file_no": ["must be between 0 and 31"]}


def test_file_number_declared_twice_is_refused(tenant):
    spec = desfire_spec()
    spec["applications"][0]["files"][1]["file_no"] = 1
    assert "applications[0].files[1].file_no" in errors_of(spec, tenant)


def test_undeclared_application_key_would_stay_default_and_is_refused(tenant):
    spec = desfire_spec()
    del spec["applications"][0]["keys"][2]
    spec["applications"][0]["files"] = []
    errors = errors_of(spec, tenant)
    assert errors == {"applications[0].keys": ["declare every key 0..2; missing [2]"]}


def test_key_number_not_below_num_keys_is_refused(tenant):
    spec = desfire_spec()
    spec["applications"][0]["keys"][2]["key_no"] = 3
    assert "applications[0].keys[2].key_no" in errors_of(spec, tenant)


def test_only_key_zero_is_the_application_master_key(tenant):
    spec = desfire_spec()
    spec["applications"][0]["keys"][1]["role"] = "amk"
    assert "applications[0].keys[1].role" in errors_of(spec, tenant)


def test_unknown_master_key_is_named(tenant):
    spec = desfire_spec()
    spec["picc"]["master_key"]["master"] = "nope"
    assert errors_of(spec, tenant) == {
        "picc.master_key.master": ["no master key named 'nope' in this tenant"]}


def test_master_key_of_another_method_is_refused(tenant):
    spec = desfire_spec()
    spec["applications"][0]["keys"][0]["master"] = "isd-master"  # a KDF3 master, not AN10922
    assert errors_of(spec, tenant) == {
        "applications[0].keys[0].master": ["master key 'isd-master' uses kdf3, not an10922"]}


def test_diversified_des_key_is_refused(tenant):
    spec = desfire_spec()
    spec["applications"][0]["key_type"] = "2k3des"
    errors = errors_of(spec, tenant)
    assert "applications[0].keys[0].policy" in errors


def test_random_key_with_a_master_is_refused(tenant):
    spec = desfire_spec()
    spec["applications"][0]["keys"][1]["master"] = "amk-master"
    assert "applications[0].keys[1].master" in errors_of(spec, tenant)


def test_value_file_initial_value_outside_its_limits_is_refused(tenant):
    spec = desfire_spec()
    spec["applications"][0]["files"][1]["initial_value"] = 100001
    assert list(errors_of(spec, tenant)) == ["applications[0].files[1].initial_value"]


def test_initial_data_longer_than_the_file_is_refused(tenant):
    spec = desfire_spec()
    spec["applications"][0]["files"][0]["size"] = 2
    assert errors_of(spec, tenant) == {
        "applications[0].files[0].initial_data_hex": ["must be at most 2 bytes"]}


def test_odd_hex_is_refused(tenant):
    spec = desfire_spec()
    spec["applications"][0]["files"][0]["initial_data_hex"] = "ABC"
    assert list(errors_of(spec, tenant)) == ["applications[0].files[0].initial_data_hex"]


def test_cyclic_record_file_needs_two_records(tenant):
    spec = desfire_spec()
    spec["applications"][0]["files"][2].update(type="cyclic_record", max_records=1)
    assert "applications[0].files[2].max_records" in errors_of(spec, tenant)


def test_duplicate_aid_in_one_profile_is_refused(tenant):
    spec = desfire_spec()
    spec["applications"].append(copy.deepcopy(spec["applications"][0]))
    assert "applications[1].aid" in errors_of(spec, tenant)


def test_unknown_field_is_named(tenant):
    spec = desfire_spec()
    spec["applications"][0]["files"][0]["colour"] = "blue"
    assert errors_of(spec, tenant) == {"applications[0].files[0].colour": ["unknown field"]}


def test_wrong_types_are_reported_not_raised(tenant):
    spec = desfire_spec(applications=[{"aid": 7, "keys": "x", "files": [3]}], picc=[])
    errors = errors_of(spec, tenant)
    assert errors["picc"] == ["must be an object"]
    assert "applications[0].aid" in errors and "applications[0].keys" in errors
    assert errors["applications[0].files[0]"] == ["must be an object"]


def test_booleans_are_not_integers(tenant):
    spec = desfire_spec()
    spec["applications"][0]["key_settings"] = True
    assert errors_of(spec, tenant) == {"applications[0].key_settings": ["must be an integer"]}


def test_schema_version_and_family_are_required(tenant):
    assert set(errors_of({"schema": 2}, tenant)) == {"schema", "chip_family"}


def test_a_spec_that_is_not_an_object_is_refused(tenant):
    assert errors_of([1, 2], tenant) == {"spec": ["must be a JSON object"]}


def test_spec_over_64_kib_is_refused(tenant):
    spec = desfire_spec()
    spec["applications"][0]["files"][0]["initial_data_hex"] = "00" * (MAX_SPEC_BYTES // 2)
    assert errors_of(spec, tenant) == {"spec": ["is larger than 64 KiB"]}


# --- JCOP ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("system_aid", ["A0000001515350", "A000000151000000", "A000000151"])
def test_jcop_system_packages_can_never_be_deleted(tenant, system_aid):
    # Seed 000: deleting the management package or the security controller bricks the card.
    errors = errors_of(jcop_spec(delete=[system_aid]), tenant)
    assert list(errors) == ["delete[0]"]
    assert "never deleted" in errors["delete[0]"][0]


def test_jcop_delete_outside_tenant_prefix_is_refused(tenant):
    errors = errors_of(jcop_spec(delete=["A00000061700BEEF000101"]), tenant)
    assert errors == {"delete[0]": [f"outside the tenant's GlobalPlatform AID prefix {ACME_GP_PREFIX}"]}


def test_jcop_delete_inside_tenant_prefix_is_accepted(tenant):
    assert errors_of(jcop_spec(delete=[ACME_GP_PREFIX + "01"]), tenant) == {}


def test_jcop_instance_outside_tenant_prefix_is_refused(tenant):
    install = [{"package_aid": "A0000006170001", "module_aid": "A000000617000101",
                "aid": "A00000061700BEEF000101", "privileges_hex": "00"}]
    assert list(errors_of(jcop_spec(install=install), tenant)) == ["install[0].aid"]


def test_jcop_instance_the_tenant_prefix_itself_is_not_inside_it(tenant):
    install = [{"package_aid": "A0000006170001", "module_aid": "A000000617000101", "aid": ACME_GP_PREFIX}]
    assert list(errors_of(jcop_spec(install=install), tenant)) == ["install[0].aid"]


def test_store_data_over_4_kib_per_dgi_is_refused(tenant):
    spec = jcop_spec(store_data=[{"dgi": "0101", "data_hex": "AB" * 4097}])
    assert errors_of(spec, tenant) == {"store_data[0].data_hex": ["must be at most 4096 bytes"]}


def test_store_data_needs_command_encryption(tenant):
    spec = jcop_spec()
    spec["isd"]["security_level"] = 0x01
    assert list(errors_of(spec, tenant)) == ["isd.security_level"]


def test_scp02_has_no_level_0x33(tenant):
    spec = jcop_spec()
    spec["isd"]["scp"] = "scp02"
    spec["isd"]["new_keys"]["key_type"] = "2k3des"
    assert list(errors_of(spec, tenant)) == ["isd.security_level"]


def test_dgi_must_be_two_bytes(tenant):
    spec = jcop_spec(store_data=[{"dgi": "01", "data_hex": "00"}])
    assert list(errors_of(spec, tenant)) == ["store_data[0].dgi"]


def test_new_isd_keys_from_an_an10922_master_are_refused(tenant):
    spec = jcop_spec()
    spec["isd"]["new_keys"]["master"] = "amk-master"
    assert list(errors_of(spec, tenant)) == ["isd.new_keys.master"]


def test_isd_aid_must_be_a_known_isd_or_the_tenants_own(tenant):
    spec = jcop_spec()
    spec["isd"]["aid"] = "A00000061700BEEF000101"
    assert list(errors_of(spec, tenant)) == ["isd.aid"]


def test_kvn_out_of_range_is_refused(tenant):
    spec = jcop_spec()
    spec["isd"]["new_keys"]["kvn"] = 0x80
    assert errors_of(spec, tenant) == {"isd.new_keys.kvn": ["must be between 1 and 127"]}
