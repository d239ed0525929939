from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorBody(_message.Message):
    __slots__ = ("code", "message", "details")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    details: bytes
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., details: _Optional[bytes] = ...) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("success", "data", "message", "correlation_id", "request_id", "timestamp", "metadata", "error")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    success: bool
    data: bytes
    message: str
    correlation_id: str
    request_id: str
    timestamp: str
    metadata: bytes
    error: ErrorBody
    def __init__(self, success: _Optional[bool] = ..., data: _Optional[bytes] = ..., message: _Optional[str] = ..., correlation_id: _Optional[str] = ..., request_id: _Optional[str] = ..., timestamp: _Optional[str] = ..., metadata: _Optional[bytes] = ..., error: _Optional[_Union[ErrorBody, _Mapping]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("id", "subject", "tenant_id", "user_id", "correlation_id", "occurred_at", "content_type", "payload")
    ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    id: str
    subject: str
    tenant_id: str
    user_id: str
    correlation_id: str
    occurred_at: str
    content_type: str
    payload: bytes
    def __init__(self, id: _Optional[str] = ..., subject: _Optional[str] = ..., tenant_id: _Optional[str] = ..., user_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., occurred_at: _Optional[str] = ..., content_type: _Optional[str] = ..., payload: _Optional[bytes] = ...) -> None: ...

class JobMessage(_message.Message):
    __slots__ = ("job_id", "kind", "tenant_id", "user_id", "correlation_id", "attempt", "payload")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    kind: str
    tenant_id: str
    user_id: str
    correlation_id: str
    attempt: int
    payload: bytes
    def __init__(self, job_id: _Optional[str] = ..., kind: _Optional[str] = ..., tenant_id: _Optional[str] = ..., user_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., attempt: _Optional[int] = ..., payload: _Optional[bytes] = ...) -> None: ...

class Body(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...
