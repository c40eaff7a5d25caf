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
UPLOAD_STATUS_UNSPECIFIED: UploadStatus
UPLOAD_STATUS_OK: UploadStatus
UPLOAD_STATUS_EXPIRED: UploadStatus
UPLOAD_STATUS_UNKNOWN_FACE: UploadStatus
UPLOAD_STATUS_ERROR: UploadStatus
UPLOAD_STATUS_NO_LAYER: UploadStatus

class Box(_message.Message):
    __slots__ = ("x1", "y1", "x2", "y2")
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    X2_FIELD_NUMBER: _ClassVar[int]
    Y2_FIELD_NUMBER: _ClassVar[int]
    x1: float
    y1: float
    x2: float
    y2: float
    def __init__(self, x1: _Optional[float] = ..., y1: _Optional[float] = ..., x2: _Optional[float] = ..., y2: _Optional[float] = ...) -> None: ...

class Quality(_message.Message):
    __slots__ = ("probability", "face_size", "fallback")
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    FACE_SIZE_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    probability: float
    face_size: float
    fallback: bool
    def __init__(self, probability: _Optional[float] = ..., face_size: _Optional[float] = ..., fallback: _Optional[bool] = ...) -> None: ...

class FaceObservation(_message.Message):
    __slots__ = ("face_id", "camera_id", "capture_time_ms", "box", "quality", "base_layer", "format_version", "feature_backend", "track_id")
    FACE_ID_FIELD_NUMBER: _ClassVar[int]
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    BASE_LAYER_FIELD_NUMBER: _ClassVar[int]
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    FEATURE_BACKEND_FIELD_NUMBER: _ClassVar[int]
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    face_id: str
    camera_id: str
    capture_time_ms: int
    box: Box
    quality: Quality
    base_layer: bytes
    format_version: int
    feature_backend: str
    track_id: str
    def __init__(self, face_id: _Optional[str] = ..., camera_id: _Optional[str] = ..., capture_time_ms: _Optional[int] = ..., box: _Optional[_Union[Box, _Mapping]] = ..., quality: _Optional[_Union[Quality, _Mapping]] = ..., base_layer: _Optional[bytes] = ..., format_version: _Optional[int] = ..., feature_backend: _Optional[str] = ..., track_id: _Optional[str] = ...) -> None: ...

class ObservationBatch(_message.Message):
    __slots__ = ("observations",)
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    observations: _containers.RepeatedCompositeFieldContainer[FaceObservation]
    def __init__(self, observations: _Optional[_Iterable[_Union[FaceObservation, _Mapping]]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("camera_id", "agent_version")
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    camera_id: str
    agent_version: str
    def __init__(self, camera_id: _Optional[str] = ..., agent_version: _Optional[str] = ...) -> None: ...

class EnhancementUpload(_message.Message):
    __slots__ = ("request_id", "face_id", "status", "payload", "message")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FACE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    face_id: str
    status: UploadStatus
    payload: bytes
    message: str
    def __init__(self, request_id: _Optional[str] = ..., face_id: _Optional[str] = ..., status: _Optional[_Union[UploadStatus, str]] = ..., payload: _Optional[bytes] = ..., message: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("face_id", "reason", "field")
    FACE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    face_id: str
    reason: str
    field: str
    def __init__(self, face_id: _Optional[str] = ..., reason: _Optional[str] = ..., field: _Optional[str] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("face_ids", "rejected")
    FACE_IDS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    face_ids: _containers.RepeatedScalarFieldContainer[str]
    rejected: _containers.RepeatedCompositeFieldContainer[Rejection]
    def __init__(self, face_ids: _Optional[_Iterable[str]] = ..., rejected: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ...) -> None: ...

class EnhancementRequest(_message.Message):
    __slots__ = ("request_id", "face_id", "codec", "quality")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FACE_ID_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    face_id: str
    codec: str
    quality: int
    def __init__(self, request_id: _Optional[str] = ..., face_id: _Optional[str] = ..., codec: _Optional[str] = ..., quality: _Optional[int] = ...) -> None: ...

class DropTexture(_message.Message):
    __slots__ = ("face_ids",)
    FACE_IDS_FIELD_NUMBER: _ClassVar[int]
    face_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, face_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("ack", "enhancement_request", "drop_texture")
    ACK_FIELD_NUMBER: _ClassVar[int]
    ENHANCEMENT_REQUEST_FIELD_NUMBER: _ClassVar[int]
    DROP_TEXTURE_FIELD_NUMBER: _ClassVar[int]
    ack: Ack
    enhancement_request: EnhancementRequest
    drop_texture: DropTexture
    def __init__(self, ack: _Optional[_Union[Ack, _Mapping]] = ..., enhancement_request: _Optional[_Union[EnhancementRequest, _Mapping]] = ..., drop_texture: _Optional[_Union[DropTexture, _Mapping]] = ...) -> None: ...
