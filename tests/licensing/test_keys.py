"""Licence keys: 80 random bits, grouped, read whatever the case, dashes or spaces, stored as a hash."""

import pytest

from paygate.licensing import keys


def test_a_new_key_is_sixteen_characters_of_crockford_base32_and_never_repeats():
    made = {keys.new() for _ in range(2000)}
    assert len(made) == 2000
    for key in list(made)[:50]:
        assert len(key) == 16 and set(key) <= set(keys.ALPHABET)
        assert keys.normal(keys.shown(key)) == key


def test_a_key_is_shown_in_groups_after_its_prefix():
    assert keys.shown("7K3QM2XD9TQFH4WN") == "PG-7K3Q-M2XD-9TQF-H4WN"


@pytest.mark.parametrize(
    "typed",
    [
        "PG-7K3Q-M2XD-9TQF-H4WN",
        "pg-7k3q-m2xd-9tqf-h4wn",
        " 7K3Q M2XD 9TQF H4WN ",
        "7k3qm2xd9tqfh4wn",
        "PG 7K3Q-M2XD 9TQF-H4WN",
    ],
)
def test_case_dashes_spaces_and_the_prefix_do_not_matter(typed):
    assert keys.normal(typed) == "7K3QM2XD9TQFH4WN"


def test_letters_people_confuse_with_digits_are_read_as_the_digits():
    assert keys.normal("PG-O1IL-M2XD-9TQF-H4WN") == "0111M2XD9TQFH4WN"


@pytest.mark.parametrize(
    "typed",
    [
        None,
        "",
        "PG-7K3Q",
        "x" * 10_000,
        "PG-7K3Q-M2XD-9TQF-H4WU",
        "\u0667K3QM2XD9TQFH4WN",
        "7K3Q\x00M2XD9TQFH4WN",
        12345,
    ],
)
def test_what_cannot_be_a_key_is_refused_without_raising(typed):
    assert keys.normal(typed) is None


def test_only_the_hash_is_compared_and_the_derived_key_depends_on_the_flow_token_and_secret():
    key = keys.derived("token-a", "secret")
    assert key == keys.derived("token-a", "secret")
    assert key not in (keys.derived("token-b", "secret"), keys.derived("token-a", "other"))
    stored = keys.digest(key)
    assert key not in stored and len(stored) == 64
    assert keys.matches(key, stored) and not keys.matches(keys.new(), stored) and not keys.matches(key, None)
    assert keys.hint(key) == key[-4:]
