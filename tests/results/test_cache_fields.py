"""The record's cache fields: defaults for older records, and a JSON round trip that keeps them equal."""

import json

from bench.results.record import Memory


def test_cache_fields_survive_json():
    memory = Memory(
        kv_cache_bytes=100_564_992,
        kv_cache_storage_bytes=100_614_144,
        kv_cache_tokens=2046,
        cache_layer_classes=("DynamicSlidingWindowLayer",),
        cache_window_tokens=2047,
        cache_policy="window",
    )
    again = Memory.from_dict(json.loads(json.dumps(memory.to_dict())))
    assert again == memory and again.cache_layer_classes == ("DynamicSlidingWindowLayer",)
    assert hash(again.cache_layer_classes) == hash(memory.cache_layer_classes)


def test_a_memory_written_before_the_cache_fields_reads_with_defaults():
    old = Memory.from_dict({"kv_cache_bytes": 147_603_456, "weights_bytes": 1})
    assert old.kv_cache_bytes == 147_603_456
    assert (old.cache_layer_classes, old.cache_policy, old.cache_window_tokens, old.kv_cache_tokens) == (
        (),
        None,
        None,
        None,
    )
