"""Usable memory per card (what the driver reports as its total, with a source, or a visible assumption) and
``--memory-cap`` as a size or a card name."""

from __future__ import annotations

import pytest

from bench.config.hardware import (
    ASSUMED_RESERVE_FRACTION,
    HardwareProfile,
    Measured,
    dumps_profile,
    load_profile,
    load_profiles,
    parse_memory_cap,
    shipped_profiles_dir,
)
from bench.errors import BadInputError
from bench.units import GiB, MiB


@pytest.fixture
def shipped(monkeypatch: pytest.MonkeyPatch) -> list[HardwareProfile]:
    monkeypatch.delenv("BENCH_PROFILES_DIR", raising=False)
    return load_profiles([shipped_profiles_dir()])


def card(**extra) -> HardwareProfile:
    base = dict(name="Card 8", kind="cuda", memory_bytes=8 * GiB, memory_bandwidth_bytes_per_s=3e11)
    return HardwareProfile(**{**base, **extra})


def test_every_shipped_gpu_has_a_cited_usable_figure_or_says_why_not(shipped: list[HardwareProfile]) -> None:
    for p in shipped:
        if p.kind != "cuda":
            continue
        if p.usable_bytes is None:
            assert p.usable_note.startswith("no public nvidia-smi or deviceQuery figure found"), p.name
            assert p.usable_assumed and p.usable_source.startswith("assumed: box size minus 2.5%")
        else:
            assert 0 < p.usable_bytes <= p.memory_bytes, p.name
            assert p.sources["usable_bytes"] and p.usable_source.startswith("cited: "), p.name


def test_cited_figures_from_the_reference_and_public_logs(shipped: list[HardwareProfile]) -> None:
    by_name = {p.name: p for p in shipped}
    t4 = by_name["Tesla T4"]
    assert t4.usable_memory_bytes == 15_843_721_216 and round(15_843_721_216 / MiB) == 15110  # deviceQuery, ECC on
    assert "15360 MiB" in t4.sources["usable_bytes"]  # nvidia-smi's figure, from reference/gpus.md
    assert by_name["GeForce RTX 3060"].usable_memory_bytes == 12_587_106_304
    assert by_name["GeForce RTX 4060"].usable_bytes is None  # no public figure found: not invented


def test_usable_memory_prefers_measured_then_cited_then_assumed() -> None:
    assumed = card()
    assert assumed.usable_memory_bytes == int(8 * GiB * (1 - ASSUMED_RESERVE_FRACTION)) == 8_375_186_227
    cited = card(usable_bytes=8_000 * MiB, sources={"usable_bytes": "a log"})
    assert cited.usable_memory_bytes == 8_000 * MiB and cited.usable_source == "cited: a log"
    measured = card(usable_bytes=8_000 * MiB, measured=Measured(device_total_bytes=7_900 * MiB, source="bench profile"))
    assert measured.usable_memory_bytes == 7_900 * MiB and measured.usable_source.startswith("measured: ")
    assert not measured.usable_assumed and assumed.usable_assumed


def test_usable_bytes_round_trip_and_are_checked(tmp_path) -> None:
    path = tmp_path / "card.toml"
    path.write_text(dumps_profile(card(usable_bytes=8_000 * MiB, sources={"usable_bytes": "a log"})))
    assert load_profile(path).usable_bytes == 8_000 * MiB
    text = 'name = "X"\nmemory_bytes = 100\nmemory_bandwidth_bytes_per_s = 1\nusable_bytes = {}\n'
    bad = ((200, "at most memory_bytes"), (0, "above 0"), (1.5, "whole number"), (50, "needs a source"))
    for value, message in bad:
        path.write_text(text.format(value))
        with pytest.raises(BadInputError, match=message):
            load_profile(path)


def test_memory_cap_as_gib_or_a_card_name(shipped: list[HardwareProfile]) -> None:
    assert parse_memory_cap("7.5", shipped) == (int(7.5 * GiB), "7.5 GiB")
    cap, label = parse_memory_cap("GeForce RTX 3060", shipped)
    assert cap == 12_587_106_304 and "GeForce RTX 3060" in label and "cited" in label
    cap, label = parse_memory_cap("rtx 4060", shipped)  # case and vendor words ignored, as for --gpu
    assert cap == 8_375_186_227 and "assumed" in label


@pytest.mark.parametrize("text", ["0", "-2", "nan", "inf", " "])
def test_memory_cap_that_is_not_a_positive_size_is_refused(shipped: list[HardwareProfile], text: str) -> None:
    with pytest.raises(BadInputError, match="--memory-cap"):
        parse_memory_cap(text, shipped)


def test_unknown_card_name_lists_close_matches(shipped: list[HardwareProfile]) -> None:
    with pytest.raises(BadInputError) as info:
        parse_memory_cap("GeForce RTX 4061", shipped)
    message = str(info.value)
    assert "neither a size in GiB nor a known card" in message and "GeForce RTX 4060" in message
    assert "\n" not in message


def test_a_cpu_profile_is_not_a_card_to_cap_at() -> None:
    host = HardwareProfile(name="My Host", kind="cpu", memory_bytes=64 * GiB, memory_bandwidth_bytes_per_s=1e10)
    with pytest.raises(BadInputError, match="names a cpu profile"):
        parse_memory_cap("My Host", [host])
