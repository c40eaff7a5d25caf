from facewire.v1 import ingest_pb2 as _ingest_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UploadStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UPLOAD_STATUS_UNSPECIFIED: _ClassVar[UploadStatus]
    UPLOAD_STATUS_OK: _ClassVar[UploadStatus]
    UPLOAD_STATUS_EXPIRED: _ClassVar[UploadStatus]
    UPLOAD_STATUS_UNKNOWN_FACE: _ClassVar[UploadStatus]
    UPLOAD_STATUS_ERROR: _ClassVar[UploadStatus]
    UPLOAD_STATUS_NO_LAYER: _ClassVar[UploadStatus]

class Layer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LAYER_FACE: _ClassVar[Layer]
    LAYER_CONTEXT: _ClassVar[Layer]
UPLOAD_STATUS_UNSPECIFIED: UploadStatus
UPLOAD_STATUS_OK: UploadStatus
UPLOAD_STATUS_EXPIRED: UploadStatus
UPLOAD_STATUS_UNKNOWN_FACE: UploadStatus
UPLOAD_STATUS_ERROR: UploadStatus
UPLOAD_STATUS_NO_LAYER: UploadStatus
LAYER_FACE: Layer
LAYER_CONTEXT: Layer

class Hello(_message.Message):
    __slots__ = ("camera_id", "agent_version", "agent_id", "feature_backend", "base_format", "base_model_tag", "base_step", "layers")
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURE_BACKEND_FIELD_NUMBER: _ClassVar[int]
    BASE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_TAG_FIELD_NUMBER: _ClassVar[int]
    BASE_STEP_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    camera_id: str
    agent_version: str
    agent_id: bytes
    feature_backend: str
    base_format: int
    base_model_tag: int
    base_step: int
    layers: _containers.RepeatedScalarFieldContainer[Layer]
    def __init__(self, camera_id: _Optional[str] = ..., agent_version: _Optional[str] = ..., agent_id: _Optional[bytes] = ..., feature_backend: _Optional[str] = ..., base_format: _Optional[int] = ..., base_model_tag: _Optional[int] = ..., base_step: _Optional[int] = ..., layers: _Optional[_Iterable[_Union[Layer, str]]] = ...) -> None: ...

class ObservationBatch(_message.Message):
    __slots__ = ("seq", "capture_ms", "box", "probability", "track", "bodies", "body_length", "legacy", "legacy_seq")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_MS_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    TRACK_FIELD_NUMBER: _ClassVar[int]
    BODIES_FIELD_NUMBER: _ClassVar[int]
    BODY_LENGTH_FIELD_NUMBER: _ClassVar[int]
    LEGACY_FIELD_NUMBER: _ClassVar[int]
    LEGACY_SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: _containers.RepeatedScalarFieldContainer[int]
    capture_ms: _containers.RepeatedScalarFieldContainer[int]
    box: _containers.RepeatedScalarFieldContainer[int]
    probability: _containers.RepeatedScalarFieldContainer[int]
    track: _containers.RepeatedScalarFieldContainer[int]
    bodies: bytes
    body_length: _containers.RepeatedScalarFieldContainer[int]
    legacy: _containers.RepeatedCompositeFieldContainer[_ingest_pb2.FaceObservation]
    legacy_seq: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, seq: _Optional[_Iterable[int]] = ..., capture_ms: _Optional[_Iterable[int]] = ..., box: _Optional[_Iterable[int]] = ..., probability: _Optional[_Iterable[int]] = ..., track: _Optional[_Iterable[int]] = ..., bodies: _Optional[bytes] = ..., body_length: _Optional[_Iterable[int]] = ..., legacy: _Optional[_Iterable[_Union[_ingest_pb2.FaceObservation, _Mapping]]] = ..., legacy_seq: _Optional[_Iterable[int]] = ...) -> None: ...

class EnhancementUpload(_message.Message):
    __slots__ = ("request_id", "status", "payload", "message")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    status: UploadStatus
    payload: bytes
    message: str
    def __init__(self, request_id: _Optional[str] = ..., status: _Optional[_Union[UploadStatus, str]] = ..., payload: _Optional[bytes] = ..., message: _Optional[str] = ...) -> None: ...

class EdgeMessage(_message.Message):
    __slots__ = ("hello", "observations", "enhancement")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    ENHANCEMENT_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    observations: ObservationBatch
    enhancement: EnhancementUpload
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., observations: _Optional[_Union[ObservationBatch, _Mapping]] = ..., enhancement: _Optional[_Union[EnhancementUpload, _Mapping]] = ...) -> None: ...

class Rejection(_message.Message):
    __slots__ = ("seq", "field", "reason")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    seq: int
    field: str
    reason: str
    def __init__(self, seq: _Optional[int] = ..., field: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("through", "rejected")
    THROUGH_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    through: int
    rejected: _containers.RepeatedCompositeFieldContainer[Rejection]
    def __init__(self, through: _Optional[int] = ..., rejected: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ...) -> None: ...

class EnhancementRequest(_message.Message):
    __slots__ = ("request_id", "seq", "codec", "quality", "face_id", "layer")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    FACE_ID_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    seq: int
    codec: str
    quality: int
    face_id: str
    layer: Layer
    def __init__(self, request_id: _Optional[str] = ..., seq: _Optional[int] = ..., codec: _Optional[str] = ..., quality: _Optional[int] = ..., face_id: _Optional[str] = ..., layer: _Optional[_Union[Layer, str]] = ...) -> None: ...

class DropTexture(_message.Message):
    __slots__ = ("seq", "face_id")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    FACE_ID_FIELD_NUMBER: _ClassVar[int]
    seq: _containers.RepeatedScalarFieldContainer[int]
    face_id: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, seq: _Optional[_Iterable[int]] = ..., face_id: _Optional[_Iterable[str]] = ...) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("ack", "enhancement_request", "drop_texture")
    ACK_FIELD_NUMBER: _ClassVar[int]
    ENHANCEMENT_REQUEST_FIELD_NUMBER: _ClassVar[int]
    DROP_TEXTURE_FIELD_NUMBER: _ClassVar[int]
    ack: Ack
    enhancement_request: EnhancementRequest
    drop_texture: DropTexture
    def __init__(self, ack: _Optional[_Union[Ack, _Mapping]] = ..., enhancement_request: _Optional[_Union[EnhancementRequest, _Mapping]] = ..., drop_texture: _Optional[_Union[DropTexture, _Mapping]] = ...) -> None: ...

class SpooledFace(_message.Message):
    __slots__ = ("capture_ms", "x", "y", "width", "height", "probability", "track_seq", "base_layer")
    CAPTURE_MS_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    TRACK_SEQ_FIELD_NUMBER: _ClassVar[int]
    BASE_LAYER_FIELD_NUMBER: _ClassVar[int]
    capture_ms: int
    x: int
    y: int
    width: int
    height: int
    probability: int
    track_seq: int
    base_layer: bytes
    def __init__(self, capture_ms: _Optional[int] = ..., x: _Optional[int] = ..., y: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., probability: _Optional[int] = ..., track_seq: _Optional[int] = ..., base_layer: _Optional[bytes] = ...) -> None: ...
