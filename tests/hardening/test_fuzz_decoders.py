"""Short runs of the mutation fuzzer of ``bench/fuzzing.py`` (``python -m bench.reliability fuzz``
runs 100,000 inputs per target): every decoder and the server's EdgeMessage handling return or
raise their typed errors, nothing else, on a few thousand mutants of valid payloads."""

from __future__ import annotations

import pytest

from bench import fuzzing
from facecodec import enhancement
from facecodec.errors import CorruptPayloadError

SHORT = {"base_layer": 4000, "enhancement": 1500, "container": 2000, "grpc_messages": 4000}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SHORT))
def test_fuzzed_inputs_raise_only_typed_errors(name):
    rep = fuzzing.fuzz(fuzzing.TARGETS[name](), SHORT[name], seed=1)
    assert rep.crashes == 0 and rep.hangs == 0, rep.crash_examples[:2]
    assert rep.inputs == SHORT[name]
    assert rep.decoded > 0 and len(rep.outcomes) > 5  # the mutants reach past the first checks


def test_checksum_fixing_reaches_the_code_behind_the_checksum():
    target = fuzzing.base_layer_target()
    seed = target.seeds[0]
    flipped = seed[:8] + bytes([seed[8] ^ 0x55]) + seed[9:]
    with pytest.raises(CorruptPayloadError, match="checksum"):
        target.run(flipped)
    try:
        target.run(fuzzing.fix_base(flipped))  # a valid checksum over corrupt rANS data
    except CorruptPayloadError as e:
        assert "checksum" not in str(e)


@pytest.mark.parametrize("payload", fuzzing.oversized_image_payloads(), ids=fuzzing.OVERSIZED_IDS)
def test_an_image_stream_declaring_a_huge_size_is_refused_before_decoding(payload):
    with pytest.raises(CorruptPayloadError, match="declares"):  # read from the header, no pixel decoded
        enhancement.decode(payload, None)


@pytest.mark.slow
def test_fuzzed_messages_over_a_real_grpc_channel(tmp_path):
    from bench.reliability import channel_fuzz

    rep = channel_fuzz(tmp_path, 150, seed=2)
    assert rep["crashes"] == 0 and rep["hangs"] == 0 and rep["server_restarted"] == 0, rep
    assert rep["outcomes"].get("OK", 0) > 0 and rep["valid_batch_acked_after"]
