"""The arq worker: reminder planning, the notice outbox and delivery (issue 4 builds it)."""
