import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LeaseRequest(_message.Message):
    __slots__ = ("worker_id", "queue", "max_jobs", "lease_ttl_seconds", "queues", "wait_seconds", "worker")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    MAX_JOBS_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    queue: str
    max_jobs: int
    lease_ttl_seconds: int
    queues: _containers.RepeatedScalarFieldContainer[str]
    wait_seconds: float
    worker: WorkerInfo
    def __init__(self, worker_id: _Optional[str] = ..., queue: _Optional[str] = ..., max_jobs: _Optional[int] = ..., lease_ttl_seconds: _Optional[int] = ..., queues: _Optional[_Iterable[str]] = ..., wait_seconds: _Optional[float] = ..., worker: _Optional[_Union[WorkerInfo, _Mapping]] = ...) -> None: ...

class WorkerInfo(_message.Message):
    __slots__ = ("host", "pid", "handlers")
    HOST_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    HANDLERS_FIELD_NUMBER: _ClassVar[int]
    host: str
    pid: int
    handlers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, host: _Optional[str] = ..., pid: _Optional[int] = ..., handlers: _Optional[_Iterable[str]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "type", "queue", "payload", "priority", "attempts", "max_retries", "lease_id", "lease_expires_at", "created_at", "run_at", "timeout_seconds", "parents", "workflow_id", "ref", "traceparent", "tracestate", "parent_traceparent")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    RUN_AT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    TRACESTATE_FIELD_NUMBER: _ClassVar[int]
    PARENT_TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    queue: str
    payload: str
    priority: int
    attempts: int
    max_retries: int
    lease_id: str
    lease_expires_at: _timestamp_pb2.Timestamp
    created_at: _timestamp_pb2.Timestamp
    run_at: _timestamp_pb2.Timestamp
    timeout_seconds: int
    parents: _containers.RepeatedCompositeFieldContainer[ParentResult]
    workflow_id: str
    ref: str
    traceparent: str
    tracestate: str
    parent_traceparent: str
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., queue: _Optional[str] = ..., payload: _Optional[str] = ..., priority: _Optional[int] = ..., attempts: _Optional[int] = ..., max_retries: _Optional[int] = ..., lease_id: _Optional[str] = ..., lease_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., run_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., timeout_seconds: _Optional[int] = ..., parents: _Optional[_Iterable[_Union[ParentResult, _Mapping]]] = ..., workflow_id: _Optional[str] = ..., ref: _Optional[str] = ..., traceparent: _Optional[str] = ..., tracestate: _Optional[str] = ..., parent_traceparent: _Optional[str] = ...) -> None: ...

class ParentResult(_message.Message):
    __slots__ = ("job_id", "type", "status", "ref", "result_json", "last_error")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    type: str
    status: str
    ref: str
    result_json: str
    last_error: str
    def __init__(self, job_id: _Optional[str] = ..., type: _Optional[str] = ..., status: _Optional[str] = ..., ref: _Optional[str] = ..., result_json: _Optional[str] = ..., last_error: _Optional[str] = ...) -> None: ...

class JobAck(_message.Message):
    __slots__ = ("job_id", "worker_id", "lease_id", "success", "error_message", "result_json")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    worker_id: str
    lease_id: str
    success: bool
    error_message: str
    result_json: str
    def __init__(self, job_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., success: _Optional[bool] = ..., error_message: _Optional[str] = ..., result_json: _Optional[str] = ...) -> None: ...

class AckResponse(_message.Message):
    __slots__ = ("job_id", "status", "attempts", "run_at")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    RUN_AT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    status: str
    attempts: int
    run_at: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., status: _Optional[str] = ..., attempts: _Optional[int] = ..., run_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ExtendLeaseRequest(_message.Message):
    __slots__ = ("job_id", "worker_id", "lease_id", "lease_ttl_seconds")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    worker_id: str
    lease_id: str
    lease_ttl_seconds: int
    def __init__(self, job_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., lease_ttl_seconds: _Optional[int] = ...) -> None: ...

class ExtendLeaseResponse(_message.Message):
    __slots__ = ("job_id", "status", "lease_expires_at")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    status: str
    lease_expires_at: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., status: _Optional[str] = ..., lease_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Settlement(_message.Message):
    __slots__ = ("job_id", "lease_id", "success", "error_message", "result_json")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    lease_id: str
    success: bool
    error_message: str
    result_json: str
    def __init__(self, job_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., success: _Optional[bool] = ..., error_message: _Optional[str] = ..., result_json: _Optional[str] = ...) -> None: ...

class SettleRequest(_message.Message):
    __slots__ = ("worker_id", "settlements")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SETTLEMENTS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    settlements: _containers.RepeatedCompositeFieldContainer[Settlement]
    def __init__(self, worker_id: _Optional[str] = ..., settlements: _Optional[_Iterable[_Union[Settlement, _Mapping]]] = ...) -> None: ...

class SettleResult(_message.Message):
    __slots__ = ("job_id", "outcome", "status", "attempts", "run_at", "error")
    class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OUTCOME_UNSPECIFIED: _ClassVar[SettleResult.Outcome]
        SETTLED: _ClassVar[SettleResult.Outcome]
        STALE_LEASE: _ClassVar[SettleResult.Outcome]
        NOT_FOUND: _ClassVar[SettleResult.Outcome]
        INVALID: _ClassVar[SettleResult.Outcome]
    OUTCOME_UNSPECIFIED: SettleResult.Outcome
    SETTLED: SettleResult.Outcome
    STALE_LEASE: SettleResult.Outcome
    NOT_FOUND: SettleResult.Outcome
    INVALID: SettleResult.Outcome
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    RUN_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    outcome: SettleResult.Outcome
    status: str
    attempts: int
    run_at: _timestamp_pb2.Timestamp
    error: str
    def __init__(self, job_id: _Optional[str] = ..., outcome: _Optional[_Union[SettleResult.Outcome, str]] = ..., status: _Optional[str] = ..., attempts: _Optional[int] = ..., run_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...

class SettleResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SettleResult]
    def __init__(self, results: _Optional[_Iterable[_Union[SettleResult, _Mapping]]] = ...) -> None: ...

class SettleAndLeaseRequest(_message.Message):
    __slots__ = ("lease", "settlements")
    LEASE_FIELD_NUMBER: _ClassVar[int]
    SETTLEMENTS_FIELD_NUMBER: _ClassVar[int]
    lease: LeaseRequest
    settlements: _containers.RepeatedCompositeFieldContainer[Settlement]
    def __init__(self, lease: _Optional[_Union[LeaseRequest, _Mapping]] = ..., settlements: _Optional[_Iterable[_Union[Settlement, _Mapping]]] = ...) -> None: ...

class SettleAndLeaseResponse(_message.Message):
    __slots__ = ("results", "jobs")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SettleResult]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, results: _Optional[_Iterable[_Union[SettleResult, _Mapping]]] = ..., jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...
