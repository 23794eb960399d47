import datetime
from collections.abc import Iterable as _Iterable
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar

from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper

DESCRIPTOR: _descriptor.FileDescriptor

class LeaseRequest(_message.Message):
    __slots__ = ("lease_ttl_seconds", "max_jobs", "queue", "queues", "wait_seconds", "worker_id")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    MAX_JOBS_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    queue: str
    max_jobs: int
    lease_ttl_seconds: int
    queues: _containers.RepeatedScalarFieldContainer[str]
    wait_seconds: float
    def __init__(self, worker_id: str | None = ..., queue: str | None = ..., max_jobs: int | None = ..., lease_ttl_seconds: int | None = ..., queues: _Iterable[str] | None = ..., wait_seconds: float | None = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("attempts", "created_at", "id", "lease_expires_at", "lease_id", "max_retries", "payload", "priority", "queue", "run_at", "timeout_seconds", "type")
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
    def __init__(self, id: str | None = ..., type: str | None = ..., queue: str | None = ..., payload: str | None = ..., priority: int | None = ..., attempts: int | None = ..., max_retries: int | None = ..., lease_id: str | None = ..., lease_expires_at: datetime.datetime | _timestamp_pb2.Timestamp | _Mapping | None = ..., created_at: datetime.datetime | _timestamp_pb2.Timestamp | _Mapping | None = ..., run_at: datetime.datetime | _timestamp_pb2.Timestamp | _Mapping | None = ..., timeout_seconds: int | None = ...) -> None: ...

class JobAck(_message.Message):
    __slots__ = ("error_message", "job_id", "lease_id", "result_json", "success", "worker_id")
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
    def __init__(self, job_id: str | None = ..., worker_id: str | None = ..., lease_id: str | None = ..., success: bool | None = ..., error_message: str | None = ..., result_json: str | None = ...) -> None: ...

class AckResponse(_message.Message):
    __slots__ = ("attempts", "job_id", "run_at", "status")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    RUN_AT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    status: str
    attempts: int
    run_at: _timestamp_pb2.Timestamp
    def __init__(self, job_id: str | None = ..., status: str | None = ..., attempts: int | None = ..., run_at: datetime.datetime | _timestamp_pb2.Timestamp | _Mapping | None = ...) -> None: ...

class ExtendLeaseRequest(_message.Message):
    __slots__ = ("job_id", "lease_id", "lease_ttl_seconds", "worker_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    worker_id: str
    lease_id: str
    lease_ttl_seconds: int
    def __init__(self, job_id: str | None = ..., worker_id: str | None = ..., lease_id: str | None = ..., lease_ttl_seconds: int | None = ...) -> None: ...

class ExtendLeaseResponse(_message.Message):
    __slots__ = ("job_id", "lease_expires_at", "status")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    status: str
    lease_expires_at: _timestamp_pb2.Timestamp
    def __init__(self, job_id: str | None = ..., status: str | None = ..., lease_expires_at: datetime.datetime | _timestamp_pb2.Timestamp | _Mapping | None = ...) -> None: ...

class Settlement(_message.Message):
    __slots__ = ("error_message", "job_id", "lease_id", "result_json", "success")
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
    def __init__(self, job_id: str | None = ..., lease_id: str | None = ..., success: bool | None = ..., error_message: str | None = ..., result_json: str | None = ...) -> None: ...

class SettleRequest(_message.Message):
    __slots__ = ("settlements", "worker_id")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SETTLEMENTS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    settlements: _containers.RepeatedCompositeFieldContainer[Settlement]
    def __init__(self, worker_id: str | None = ..., settlements: _Iterable[Settlement | _Mapping] | None = ...) -> None: ...

class SettleResult(_message.Message):
    __slots__ = ("attempts", "error", "job_id", "outcome", "run_at", "status")
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
    def __init__(self, job_id: str | None = ..., outcome: SettleResult.Outcome | str | None = ..., status: str | None = ..., attempts: int | None = ..., run_at: datetime.datetime | _timestamp_pb2.Timestamp | _Mapping | None = ..., error: str | None = ...) -> None: ...

class SettleResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SettleResult]
    def __init__(self, results: _Iterable[SettleResult | _Mapping] | None = ...) -> None: ...
