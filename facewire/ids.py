"""Face ids of the compact wire (facewire.v2), computed the same way by the edge and the server.

A v2 observation is named on the wire by its ``seq`` (the edge's spool sequence, never reused by one
agent); the id stored and shown everywhere is ``hex(agent_id) + hex16(seq)``: 32 lowercase hex
characters like the random ids of v1, so both kinds live side by side in the store. Written by hand
(not generated from proto/), and kept out of ``proto/generate.sh --check``.
"""

from __future__ import annotations

AGENT_ID_BYTES = 8


def face_id(agent_id: bytes, seq: int) -> str:
    """The face id of observation ``seq`` of the agent ``agent_id`` (8 bytes)."""
    if len(agent_id) != AGENT_ID_BYTES:
        raise ValueError(f"an agent id is {AGENT_ID_BYTES} bytes, not {len(agent_id)}")
    if not 0 < seq < 1 << 64:
        raise ValueError(f"a sequence number is in [1, 2**64), not {seq}")
    return f"{agent_id.hex()}{seq:016x}"


def split(face: str) -> tuple[bytes, int] | None:
    """(agent id, seq) of a v2 face id; None for any other string."""
    if len(face) != 32:
        return None
    try:
        agent, seq = bytes.fromhex(face[:16]), int(face[16:], 16)
    except ValueError:
        return None
    return (agent, seq) if seq > 0 and face == face.lower() else None
