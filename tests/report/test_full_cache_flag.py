"""A case measured with --cache full is labelled in the results table and explained in the flags section."""

from bench.report.sections import FLAG_MEANINGS
from bench.report.tables import flag_words


def test_full_cache_reads_as_window_removed():
    assert flag_words("noisy,full_cache") == "noisy, full cache (window removed)"
    assert flag_words(["int8_outliers_unrepresentative"]) == "int8 outliers unrepresentative"
    assert "sliding window removed" in FLAG_MEANINGS["full_cache"]
