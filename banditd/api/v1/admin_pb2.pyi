from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListPoliciesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PolicyInfo(_message.Message):
    __slots__ = ("name", "declared", "stored")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DECLARED_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    name: str
    declared: bool
    stored: bool
    def __init__(self, name: _Optional[str] = ..., declared: bool = ..., stored: bool = ...) -> None: ...

class ListPoliciesResponse(_message.Message):
    __slots__ = ("policies",)
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[PolicyInfo]
    def __init__(self, policies: _Optional[_Iterable[_Union[PolicyInfo, _Mapping]]] = ...) -> None: ...

class ListArmsRequest(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: str
    def __init__(self, policy: _Optional[str] = ...) -> None: ...

class LearnedArm(_message.Message):
    __slots__ = ("segment", "arm_id", "pulls")
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    ARM_ID_FIELD_NUMBER: _ClassVar[int]
    PULLS_FIELD_NUMBER: _ClassVar[int]
    segment: str
    arm_id: str
    pulls: int
    def __init__(self, segment: _Optional[str] = ..., arm_id: _Optional[str] = ..., pulls: _Optional[int] = ...) -> None: ...

class ListArmsResponse(_message.Message):
    __slots__ = ("policy", "arms", "learned")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    LEARNED_FIELD_NUMBER: _ClassVar[int]
    policy: str
    arms: _containers.RepeatedScalarFieldContainer[str]
    learned: _containers.RepeatedCompositeFieldContainer[LearnedArm]
    def __init__(self, policy: _Optional[str] = ..., arms: _Optional[_Iterable[str]] = ..., learned: _Optional[_Iterable[_Union[LearnedArm, _Mapping]]] = ...) -> None: ...

class ArmRequest(_message.Message):
    __slots__ = ("policy", "arm_id")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    ARM_ID_FIELD_NUMBER: _ClassVar[int]
    policy: str
    arm_id: str
    def __init__(self, policy: _Optional[str] = ..., arm_id: _Optional[str] = ...) -> None: ...

class ResetPolicyRequest(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: str
    def __init__(self, policy: _Optional[str] = ...) -> None: ...

class ResetPolicyResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: int
    def __init__(self, models: _Optional[int] = ...) -> None: ...

class ExportPolicyRequest(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: str
    def __init__(self, policy: _Optional[str] = ...) -> None: ...

class ModelState(_message.Message):
    __slots__ = ("segment", "fingerprint", "version")
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    segment: str
    fingerprint: str
    version: int
    def __init__(self, segment: _Optional[str] = ..., fingerprint: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class ArmSums(_message.Message):
    __slots__ = ("segment", "arm_id", "n", "b", "s_upper", "decay_epoch")
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    ARM_ID_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    S_UPPER_FIELD_NUMBER: _ClassVar[int]
    DECAY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    segment: str
    arm_id: str
    n: int
    b: _containers.RepeatedScalarFieldContainer[float]
    s_upper: _containers.RepeatedScalarFieldContainer[float]
    decay_epoch: int
    def __init__(self, segment: _Optional[str] = ..., arm_id: _Optional[str] = ..., n: _Optional[int] = ..., b: _Optional[_Iterable[float]] = ..., s_upper: _Optional[_Iterable[float]] = ..., decay_epoch: _Optional[int] = ...) -> None: ...

class PolicyState(_message.Message):
    __slots__ = ("policy", "models", "arms")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    policy: str
    models: _containers.RepeatedCompositeFieldContainer[ModelState]
    arms: _containers.RepeatedCompositeFieldContainer[ArmSums]
    def __init__(self, policy: _Optional[str] = ..., models: _Optional[_Iterable[_Union[ModelState, _Mapping]]] = ..., arms: _Optional[_Iterable[_Union[ArmSums, _Mapping]]] = ...) -> None: ...

class ImportPolicyRequest(_message.Message):
    __slots__ = ("policy", "state", "replace")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    policy: str
    state: PolicyState
    replace: bool
    def __init__(self, policy: _Optional[str] = ..., state: _Optional[_Union[PolicyState, _Mapping]] = ..., replace: bool = ...) -> None: ...

class ImportPolicyResponse(_message.Message):
    __slots__ = ("arms",)
    ARMS_FIELD_NUMBER: _ClassVar[int]
    arms: int
    def __init__(self, arms: _Optional[int] = ...) -> None: ...

class ListSegmentsRequest(_message.Message):
    __slots__ = ("policy", "offset", "limit")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    policy: str
    offset: int
    limit: int
    def __init__(self, policy: _Optional[str] = ..., offset: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class SegmentInfo(_message.Message):
    __slots__ = ("segment", "last_used_unix_s", "arms", "version")
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    segment: str
    last_used_unix_s: float
    arms: int
    version: int
    def __init__(self, segment: _Optional[str] = ..., last_used_unix_s: _Optional[float] = ..., arms: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...

class ListSegmentsResponse(_message.Message):
    __slots__ = ("policy", "segments", "total")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    policy: str
    segments: _containers.RepeatedCompositeFieldContainer[SegmentInfo]
    total: int
    def __init__(self, policy: _Optional[str] = ..., segments: _Optional[_Iterable[_Union[SegmentInfo, _Mapping]]] = ..., total: _Optional[int] = ...) -> None: ...

class DeleteSegmentRequest(_message.Message):
    __slots__ = ("policy", "segment")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    policy: str
    segment: str
    def __init__(self, policy: _Optional[str] = ..., segment: _Optional[str] = ...) -> None: ...

class DeleteSegmentResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: bool = ...) -> None: ...
