import pytest

from smsblast.zones import zone_for_code


@pytest.mark.parametrize(
    ("code", "label"),
    [
        ("35.05", "WIB"),  # Kab. Blitar, East Java
        ("11", "WIB"),  # Aceh
        ("62.01", "WIB"),  # Central Kalimantan
        ("51.71", "WITA"),  # Denpasar
        ("64", "WITA"),  # East Kalimantan
        ("73.71", "WITA"),  # Makassar
        ("81.71", "WIT"),  # Ambon
        ("91.71", "WIT"),  # Jayapura
        ("", "WIB"),
        (None, "WIB"),
    ],
)
def test_zone_follows_the_province_of_the_code(code, label):
    assert zone_for_code(code)[1] == label
