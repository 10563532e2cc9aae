"""The line printed as each case ends: a failure's reason whole, brackets and all (it names the way out)."""

from __future__ import annotations

from bench.config.spec import CaseSpec, TimingPolicy
from bench.report.progress import CaseProgress
from bench.results.record import Record

REASON = (
    "engine llama.cpp needs llama_cpp and gguf, which is not installed: run pip install 'llm-bench[llamacpp]'  "
    "(builds llama-cpp-python from source: gcc and cmake, ~6 min)"
)


def test_a_skipped_case_prints_its_whole_reason_with_brackets(capsys):
    spec = CaseSpec("phi-3-tiny", "q4_0", "generate", 1, 128, 8, device="cpu", engine="llama.cpp")
    record = Record(spec=spec, status="skipped", error=REASON, policy=TimingPolicy(), device="cpu")
    with CaseProgress(1) as progress:
        progress.end_case(record)
    printed = " ".join(capsys.readouterr().out.split())  # the console wraps at its width; rejoin the words
    assert "pip install 'llm-bench[llamacpp]' (builds llama-cpp-python from source: gcc and cmake, ~6 min)" in printed
