"""An enhancement request for a learned codec without a quality gets one of its rate points,
not the JPEG-style default (which no learned codec has)."""

from __future__ import annotations

from edge_agent.client import answer_enhancement
from edge_agent.texture import TextureStore
from facecodec import enhancement
from facecodec.image_codecs import CODECS
from facewire.v1 import ingest_pb2 as pb


def test_a_learned_codec_request_without_quality_is_answered_at_a_registered_rate_point(tmp_path, sample_faces):
    from facecodec import base_layer

    face = sample_faces[0][1]
    store = TextureStore(tmp_path / "tex.db", max_bytes=1 << 20, retention_s=3600)
    store.put("f1", face.chip[19:131, 19:131], base_layer.encode(face.feature))
    try:
        for codec in ("learned", "conditional"):
            up = answer_enhancement(pb.EnhancementRequest(request_id=codec, face_id="f1", codec=codec), store,
                                    default_codec="webp", default_quality=75)
            assert up.status == pb.UPLOAD_STATUS_OK, up.message
            assert enhancement.read_header(up.payload).quality in CODECS[codec].qualities
        up = answer_enhancement(pb.EnhancementRequest(request_id="w", face_id="f1"), store, "webp", 75)
        assert up.status == pb.UPLOAD_STATUS_OK and enhancement.read_header(up.payload).quality == 75
    finally:
        store.close()
