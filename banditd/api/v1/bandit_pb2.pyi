from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeedbackStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEEDBACK_STATUS_UNSPECIFIED: _ClassVar[FeedbackStatus]
    FEEDBACK_STATUS_APPLIED: _ClassVar[FeedbackStatus]
    FEEDBACK_STATUS_DUPLICATE: _ClassVar[FeedbackStatus]
FEEDBACK_STATUS_UNSPECIFIED: FeedbackStatus
FEEDBACK_STATUS_APPLIED: FeedbackStatus
FEEDBACK_STATUS_DUPLICATE: FeedbackStatus

class Context(_message.Message):
    __slots__ = ("text", "features", "categorical", "embedding")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class CategoricalEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    CATEGORICAL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    text: str
    features: _containers.ScalarMap[str, float]
    categorical: _containers.ScalarMap[str, str]
    embedding: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, text: _Optional[str] = ..., features: _Optional[_Mapping[str, float]] = ..., categorical: _Optional[_Mapping[str, str]] = ..., embedding: _Optional[_Iterable[float]] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("id", "features", "cost", "expected_latency_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    id: str
    features: _containers.RepeatedScalarFieldContainer[float]
    cost: float
    expected_latency_ms: float
    def __init__(self, id: _Optional[str] = ..., features: _Optional[_Iterable[float]] = ..., cost: _Optional[float] = ..., expected_latency_ms: _Optional[float] = ...) -> None: ...

class RouteRequest(_message.Message):
    __slots__ = ("policy", "segment", "context", "candidates", "replica")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    policy: str
    segment: str
    context: Context
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    replica: str
    def __init__(self, policy: _Optional[str] = ..., segment: _Optional[str] = ..., context: _Optional[_Union[Context, _Mapping]] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., replica: _Optional[str] = ...) -> None: ...

class ArmScore(_message.Message):
    __slots__ = ("arm_id", "estimate", "bonus", "penalty", "score", "propensity", "pulls")
    ARM_ID_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    BONUS_FIELD_NUMBER: _ClassVar[int]
    PENALTY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    PULLS_FIELD_NUMBER: _ClassVar[int]
    arm_id: str
    estimate: float
    bonus: float
    penalty: float
    score: float
    propensity: float
    pulls: int
    def __init__(self, arm_id: _Optional[str] = ..., estimate: _Optional[float] = ..., bonus: _Optional[float] = ..., penalty: _Optional[float] = ..., score: _Optional[float] = ..., propensity: _Optional[float] = ..., pulls: _Optional[int] = ...) -> None: ...

class RouteResponse(_message.Message):
    __slots__ = ("decision_id", "arm_id", "propensity", "scores", "model_version", "algorithm", "degraded", "pipeline_fingerprint", "feedback_deadline_unix_s", "paging")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    ARM_ID_FIELD_NUMBER: _ClassVar[int]
    PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_DEADLINE_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    PAGING_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    arm_id: str
    propensity: float
    scores: _containers.RepeatedCompositeFieldContainer[ArmScore]
    model_version: int
    algorithm: str
    degraded: bool
    pipeline_fingerprint: str
    feedback_deadline_unix_s: float
    paging: PagingAdvice
    def __init__(self, decision_id: _Optional[str] = ..., arm_id: _Optional[str] = ..., propensity: _Optional[float] = ..., scores: _Optional[_Iterable[_Union[ArmScore, _Mapping]]] = ..., model_version: _Optional[int] = ..., algorithm: _Optional[str] = ..., degraded: bool = ..., pipeline_fingerprint: _Optional[str] = ..., feedback_deadline_unix_s: _Optional[float] = ..., paging: _Optional[_Union[PagingAdvice, _Mapping]] = ...) -> None: ...

class PagingAdvice(_message.Message):
    __slots__ = ("replica", "must_load", "paging_latency_ms", "paging_penalty", "epoch", "directives")
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    MUST_LOAD_FIELD_NUMBER: _ClassVar[int]
    PAGING_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    PAGING_PENALTY_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    DIRECTIVES_FIELD_NUMBER: _ClassVar[int]
    replica: str
    must_load: bool
    paging_latency_ms: float
    paging_penalty: float
    epoch: int
    directives: _containers.RepeatedCompositeFieldContainer[PagingDirective]
    def __init__(self, replica: _Optional[str] = ..., must_load: bool = ..., paging_latency_ms: _Optional[float] = ..., paging_penalty: _Optional[float] = ..., epoch: _Optional[int] = ..., directives: _Optional[_Iterable[_Union[PagingDirective, _Mapping]]] = ...) -> None: ...

class PagingDirective(_message.Message):
    __slots__ = ("action", "adapter_id")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[PagingDirective.Action]
        ACTION_LOAD: _ClassVar[PagingDirective.Action]
        ACTION_EVICT: _ClassVar[PagingDirective.Action]
    ACTION_UNSPECIFIED: PagingDirective.Action
    ACTION_LOAD: PagingDirective.Action
    ACTION_EVICT: PagingDirective.Action
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    action: PagingDirective.Action
    adapter_id: str
    def __init__(self, action: _Optional[_Union[PagingDirective.Action, str]] = ..., adapter_id: _Optional[str] = ...) -> None: ...

class AdapterResidency(_message.Message):
    __slots__ = ("adapter_id", "resident", "size_bytes", "load_ms")
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOAD_MS_FIELD_NUMBER: _ClassVar[int]
    adapter_id: str
    resident: bool
    size_bytes: int
    load_ms: float
    def __init__(self, adapter_id: _Optional[str] = ..., resident: bool = ..., size_bytes: _Optional[int] = ..., load_ms: _Optional[float] = ...) -> None: ...

class ReportResidencyRequest(_message.Message):
    __slots__ = ("replica", "adapters", "capacity_slots", "capacity_bytes")
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_SLOTS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    replica: str
    adapters: _containers.RepeatedCompositeFieldContainer[AdapterResidency]
    capacity_slots: int
    capacity_bytes: int
    def __init__(self, replica: _Optional[str] = ..., adapters: _Optional[_Iterable[_Union[AdapterResidency, _Mapping]]] = ..., capacity_slots: _Optional[int] = ..., capacity_bytes: _Optional[int] = ...) -> None: ...

class GetPagingPlanRequest(_message.Message):
    __slots__ = ("replica",)
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    replica: str
    def __init__(self, replica: _Optional[str] = ...) -> None: ...

class PagingPlan(_message.Message):
    __slots__ = ("replica", "epoch", "directives", "resident", "capacity_slots", "capacity_bytes")
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    DIRECTIVES_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_SLOTS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    replica: str
    epoch: int
    directives: _containers.RepeatedCompositeFieldContainer[PagingDirective]
    resident: _containers.RepeatedScalarFieldContainer[str]
    capacity_slots: int
    capacity_bytes: int
    def __init__(self, replica: _Optional[str] = ..., epoch: _Optional[int] = ..., directives: _Optional[_Iterable[_Union[PagingDirective, _Mapping]]] = ..., resident: _Optional[_Iterable[str]] = ..., capacity_slots: _Optional[int] = ..., capacity_bytes: _Optional[int] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("decision_id", "reward", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    reward: float
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, decision_id: _Optional[str] = ..., reward: _Optional[float] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("status", "arm_id", "reward", "model_version")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ARM_ID_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    status: FeedbackStatus
    arm_id: str
    reward: float
    model_version: int
    def __init__(self, status: _Optional[_Union[FeedbackStatus, str]] = ..., arm_id: _Optional[str] = ..., reward: _Optional[float] = ..., model_version: _Optional[int] = ...) -> None: ...

class FeedbackBatchRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[FeedbackRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[FeedbackRequest, _Mapping]]] = ...) -> None: ...

class FeedbackBatchResult(_message.Message):
    __slots__ = ("decision_id", "code", "error", "response")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    code: int
    error: str
    response: FeedbackResponse
    def __init__(self, decision_id: _Optional[str] = ..., code: _Optional[int] = ..., error: _Optional[str] = ..., response: _Optional[_Union[FeedbackResponse, _Mapping]] = ...) -> None: ...

class FeedbackBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[FeedbackBatchResult]
    def __init__(self, results: _Optional[_Iterable[_Union[FeedbackBatchResult, _Mapping]]] = ...) -> None: ...
