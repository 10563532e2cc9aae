"""`bench compare` and `bench advise` read at the default terminal width of 80 columns: no line is wider and
no cell wraps (each row's key cells stand on one line)."""

from rich.console import Console
from synthetic_records import encode_record, generate_record, suite_records

from bench.config.hardware import HardwareProfile, Measured, get_profile, load_profiles
from bench.predict.advisor import advise
from bench.report.advice import hand_entered_notes, render_table
from bench.report.comparison import format_value, render_terminal, short_verdict
from bench.track.compare import compare_records
from bench.track.gate_verdicts import COMPARED
from bench.track.settings import CompareSettings
from bench.units import GiB

WIDTH = 80


def _render(renderable_or_comparison) -> list[str]:
    console = Console(width=WIDTH, record=True, color_system=None)
    if hasattr(renderable_or_comparison, "cases"):
        render_terminal(renderable_or_comparison, console, everything=True)
    else:
        console.print(renderable_or_comparison)
    return console.export_text().splitlines()


def _comparison():
    long = dict(model="phi-3-mini-2l", precision="nf4-dq", context=4032, batch=8)
    base = [*suite_records(seed=1), generate_record(seed=5, reps=3, **long), encode_record(seed=7)]
    cur = [
        *suite_records(seed=2, slowdown=1.3, run_id="run-cur")[:-1],
        generate_record(seed=6, reps=3, slowdown=1.4, run_id="run-cur", peak_bytes=9 * GiB, **long),
    ]
    return compare_records(base, cur, CompareSettings(bootstrap_resamples=200))


def test_the_comparison_fits_80_columns_and_no_cell_wraps():
    comparison = _comparison()
    lines = _render(comparison)
    assert max(len(line) for line in lines) <= WIDTH
    rows = 0
    for case in comparison.cases:
        if case.status != COMPARED:
            assert any(case.label in line and case.verdict in line for line in lines), case.label
            continue
        assert any(line.startswith(case.label) and case.device_name in line for line in lines), case.label
        for m in case.metrics:
            cells = (
                m.info.label,
                format_value(m.baseline, m.info.unit),
                format_value(m.current, m.info.unit),
                short_verdict(m.verdict),
            )
            assert any(all(c in line for c in cells) for line in lines), cells
            rows += 1
    assert rows > 40  # every metric of every compared case was checked
    text = " ".join(" ".join(lines).split())
    assert "Mann-Whitney U on 10+10 repetitions" in text and "inconclusive" in text


def _cards():
    return [
        HardwareProfile(name="GeForce RTX 4060 Ti 16 GB", memory_bytes=16 * GiB, memory_bandwidth_bytes_per_s=288e9),
        HardwareProfile(name="Small 6", memory_bytes=6 * GiB, memory_bandwidth_bytes_per_s=300e9),
        HardwareProfile(name="Big 141", memory_bytes=141 * GiB, memory_bandwidth_bytes_per_s=4.8e12),
    ]


def test_the_advice_table_fits_80_columns_and_no_cell_wraps():
    fits = advise(_cards(), ["phi-3-mini"], ["fp16", "int8", "nf4", "nf4-dq", "fp4-dq"], [1024, 4096])
    lines = _render(render_table(fits, notes=["a note that is long enough to need wrapping at eighty columns " * 2]))
    assert max(len(line) for line in lines) <= WIDTH
    for f in fits:
        word = {"fits": "fits", "tight": "tight", "no": "no"}[f.verdict]
        margin = f"{f.margin_bytes / GiB:+.1f} GiB"
        assert any(f.precision in line and word in line and margin in line for line in lines), (f.gpu, f.precision)
    for card in _cards():
        assert sum(card.name in line for line in lines) == 1  # named once, on its first row, never cut


def test_several_models_get_one_table_each_within_80_columns():
    fits = advise(_cards(), ["phi-3-mini", "bert-base"], ["fp16"], [512])
    lines = _render(render_table(fits))
    assert max(len(line) for line in lines) <= WIDTH
    assert sum("What fits where (predicted): phi-3-mini" in line for line in lines) == 1
    assert sum("What fits where (predicted): bert-base" in line for line in lines) == 1


# --- labels: hand-entered figures are not measurements -----------------------------------------


def test_the_shipped_h200_figures_are_labelled_hand_entered():
    h200 = get_profile("H200")
    assert h200.measured is not None and h200.measured.hand_entered is True
    assert "not bench profile output" in h200.measured.source
    assert h200.bandwidth_basis == "hand-entered"
    notes = hand_entered_notes(load_profiles())
    assert notes == [
        "H200: its bandwidth (4.3 TB/s) is a hand-entered approximation from one run, not 'bench profile' output"
    ]
    fits = advise([h200], ["phi-3-mini"], ["fp16"], [4096])
    text = " ".join(" ".join(_render(render_table(fits, notes=notes))).split())
    assert "hand-entered approximation" in text


def test_figures_written_by_bench_profile_stay_measured():
    measured = Measured(memory_bandwidth_bytes_per_s=4.1e12, source="bench profile: 1024 MiB device-to-device copy")
    card = HardwareProfile(name="Mine", memory_bytes=80 * GiB, memory_bandwidth_bytes_per_s=4.8e12, measured=measured)
    assert card.bandwidth_basis == "measured" and hand_entered_notes([card]) == []
    assert "hand_entered" not in card.to_dict()["measured"]
