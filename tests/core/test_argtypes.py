"""Every sub-command refuses a bad option value in the same words (prodlens._argtypes)."""

from __future__ import annotations

import pytest

from prodlens.cli import build_parser


@pytest.mark.parametrize(("argv", "message"), [
    (["slice", "--alpha", "2", "x"], "'2': expected a number between 0 and 1"),
    (["slice", "--min-units", "0", "x"], "'0': expected a number >= 1"),
    (["slice", "--limit", "ten", "x"], "'ten': expected a whole number"),
    (["watch", "--confirm", "0", "x"], "'0': expected a number >= 1"),
    (["watch", "--min-lift", "0", "x"], "'0': expected a number above 0"),
    (["watch", "--alpha", "1", "x"], "'1': expected a number between 0 and 1"),
    (["rules", "--factor", "x"], "'x': expected a number"),
    (["rules", "--min-ratio", "two%"], "'two': expected a number"),
])
def test_bad_option_values_are_refused_with_what_is_expected(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_good_values_are_parsed_to_numbers() -> None:
    args = build_parser().parse_args(["watch", "--alpha", "0.001", "--min-lift", "1.5",
                                      "--confirm", "4", "x"])
    assert (args.alpha, args.min_lift, args.confirm) == (0.001, 1.5, 4)
    assert build_parser().parse_args(["rules", "--min-ratio", "2%"]).min_ratio == 0.02
