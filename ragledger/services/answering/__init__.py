"""Answer a question: record it, retrieve, stream the answer, record the outcome.

The flow is several short transactions, never one held across slow work:
QuestionAsked, then (after embedding and retrieval) ContextRetrieved, then (after the
stream) AnswerGenerated or AnswerFailed. It emits `StreamEvent`s for the transport
(SSE in the API, the terminal in the CLI) through a callback, so that a transport that
goes away (a client disconnecting) cancels the flow, which then records what was sent.

The modules, in the flow's order: `intake` (the question, checked), `record` (the
question's stream in the ledger), `context` (embedding, retrieval, ContextRetrieved),
`streaming` (the answer to the asker, AnswerGenerated) and `flow` (the whole, and its
failures).
"""

from ragledger.services.answering.context import retrieval_params
from ragledger.services.answering.flow import SERVER_SHUTDOWN, answer_question
from ragledger.services.answering.intake import (
    QuestionRequest,
    question_request,
    validate_question,
)
from ragledger.services.answering.record import QuestionRecord
from ragledger.services.answering.streaming import Emit, StreamEvent

__all__ = [
    "SERVER_SHUTDOWN",
    "Emit",
    "QuestionRecord",
    "QuestionRequest",
    "StreamEvent",
    "answer_question",
    "question_request",
    "retrieval_params",
    "validate_question",
]
