"""Rewards from running model-written programs: the sandbox, the code reward and the critique reward."""

from .code import code_reward, extract_code, score_code_responses
from .critique import critique_reward, crl_label, parse_conclusion
from .sandbox import (
    ProgramResult,
    Sandbox,
    SandboxError,
    SandboxIsolationWarning,
    TestResult,
    Verdict,
)
from .spec import TestSpec, TestSpecError

__all__ = [
    "ProgramResult",
    "Sandbox",
    "SandboxError",
    "SandboxIsolationWarning",
    "TestResult",
    "TestSpec",
    "TestSpecError",
    "Verdict",
    "code_reward",
    "critique_reward",
    "crl_label",
    "extract_code",
    "parse_conclusion",
    "score_code_responses",
]
