"""Prompt coordinates in messages stay readable at any magnitude."""

from terramask.scene.prompts import _pair


def test_huge_and_tiny_coordinates_are_written_in_exponent_form():
    assert _pair([1e308, -2.5e20]) == "1e+308, -2.5e+20"
    assert _pair([3e-9]) == "3e-09"


def test_ordinary_coordinates_keep_up_to_six_decimals():
    assert _pair([500123.5, 4649876.0, 0.1234567, 0]) == "500123.5, 4649876, 0.123457, 0"
